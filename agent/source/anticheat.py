"""Anti-cheat checks of a candidate's source, on its AST (no regex), run in the parent before any worker.

Each violation names a rule (see `RULES` in agent/source/anticheat_rules.py, with the name tables the checker
resolves against; docs/anticheat.md says what each catches and what it misses).
They are cheap (no process, no GPU) and they see code that never runs during a check: a fallback
branch, a thread started later, a patch applied at import. The run-time guards of the worker
(`agent.evaluation.guards`) and the judge's checks back them up; neither trusts the other.

Scope. Most rules apply to the whole module. `torch-compute` and `result-cache` apply to the *forward
paths*: every method of ModelNew (and of base classes defined in the module) except `__init__`, and,
transitively, the module's functions, classes and lambdas they refer to, plus the callables inside the
decorators of Triton kernels (autotune pre-hooks and the like), which run at launch. Triton kernels
themselves (`@triton.jit`) are the sanctioned place for the work and are not scanned for torch calls.
An `if __name__ == "__main__":` block never runs in the worker and is ignored.

Names are resolved through the module's imports and simple aliases (`F = torch.nn.functional`,
`mean = torch.mean`, `getattr(torch, "mean")`), so renaming an import does not hide a call. What the
AST cannot resolve (a tensor method called on an unknown object, an attribute looked up by a computed
name) is judged by name (`.sum()` is compute) or rejected (`dynamic-access`).
"""

from __future__ import annotations

import ast
from collections.abc import Iterable

from agent.evaluation.torch_policy import allowed_python
from agent.source.anticheat_rules import (
    BANNED_PREFIXES,
    BUILTIN_RULES,
    CACHE_DECORATORS,
    DYNAMIC_ATTRS,
    FRAME_ATTRS,
    IMPORTLIB_ALLOWED,
    IMPORTLIB_MODULES,
    NN_CONTAINERS,
    OS_PREFIX_RULES,
    REFERENCE_NAMES,
    STREAM_METHODS,
    SUBCLASS_ATTRS,
    TENSOR_ALLOWED,
    TENSOR_BASES,
    TENSOR_COMPUTE,
    TORCH_ALLOWED,
    TORCH_ALLOWED_PREFIXES,
    TORCH_MODULE_PREFIXES,
    TORCH_REF_COMPUTE,
    StaticReport,
    Violation,
)
from agent.source.variants import scope_nodes


def check_source(
    source: str, reference_names: Iterable[str] = (), allow_torch: Iterable[str] = ()
) -> StaticReport:
    """Check a candidate's source. `reference_names`: module names the problem's reference goes by
    (e.g. the reference file's stem), besides the usual `reference`. `allow_torch`: the torch-op policy's
    names (agent.evaluation.torch_policy), whose callables the forward path may call."""
    try:
        tree = ast.parse(source)
    except SyntaxError as e:
        return StaticReport(syntax_error=f"syntax error at line {e.lineno}: {e.msg}")
    return _Checker(tree, set(reference_names), allowed_python(allow_torch)).run()


# --- the checker -------------------------------------------------------------------------------------


def _dotted(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return f"{base}.{node.attr}" if base else None
    return None


def _is_main_guard(node: ast.stmt) -> bool:
    if not isinstance(node, ast.If) or not isinstance(node.test, ast.Compare):
        return False
    t = node.test
    sides = [t.left, *t.comparators]
    return (
        len(t.ops) == 1
        and isinstance(t.ops[0], ast.Eq)
        and any(isinstance(s, ast.Name) and s.id == "__name__" for s in sides)
        and any(isinstance(s, ast.Constant) and s.value == "__main__" for s in sides)
    )


def _decorator_base(dec: ast.expr) -> ast.expr:
    return dec.func if isinstance(dec, ast.Call) else dec


class _Checker:
    def __init__(self, tree: ast.Module, reference_names: set[str], allowed: frozenset[str] = frozenset()):
        self.tree = tree
        self.allowed = allowed  # callables the torch-op policy allows in the forward path
        self.reference_modules = {"reference", *reference_names}
        self.found: dict[tuple[str, int, str], Violation] = {}
        self.aliases: dict[str, str] = {}
        self.parents: dict[int, ast.AST] = {}
        self.bound: set[str] = set()
        self.defined: set[str] = set()  # names the module defines itself (not imports)

    # --- helpers ---

    def flag(self, rule: str, node: ast.AST | int, message: str) -> None:
        line = node if isinstance(node, int) else getattr(node, "lineno", 0)
        if rule == "process-exit":
            message += (
                ": ending the worker early, as if the checks had passed, is not allowed (a result not "
                "written by the evaluator is never trusted)"
            )
        self.found.setdefault((rule, line, message), Violation(rule, line, message))

    def resolve(self, node: ast.AST) -> str | None:
        """The canonical dotted name of an expression built from imported names, else None."""
        if isinstance(node, ast.Name):
            return self.aliases.get(node.id)
        if isinstance(node, ast.Attribute):
            base = self.resolve(node.value)
            return f"{base}.{node.attr}" if base else None
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "getattr"
            and "getattr" not in self.bound
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
        ):
            base = self.resolve(node.args[0])
            return f"{base}.{node.args[1].value}" if base else None
        return None

    def banned(self, name: str) -> str | None:
        if (
            name in IMPORTLIB_ALLOWED
            or name in IMPORTLIB_MODULES
            or any(name.startswith(f"{a}.") for a in IMPORTLIB_ALLOWED if a != "importlib")
        ):
            return (
                None  # importing installed packages by name (version checks); nothing loaded from elsewhere
            )
        parts = name.split(".")
        for i in range(len(parts), 0, -1):
            rule = BANNED_PREFIXES.get(".".join(parts[:i]))
            if rule:
                return rule
        for prefix, rule in OS_PREFIX_RULES.items():
            if name.startswith(prefix):
                return rule
        if any(p in self.reference_modules for p in parts) and parts[0] not in ("torch", "triton"):
            return "reference-import"
        return None

    # --- passes ---

    def run(self) -> StaticReport:
        uses_name = any(
            isinstance(n, ast.Name) and n.id == "__name__" and isinstance(n.ctx, ast.Store)
            for n in ast.walk(self.tree)
        )
        if not uses_name:
            self.tree.body = [s for s in self.tree.body if not _is_main_guard(s)]
        for node in ast.walk(self.tree):
            for child in ast.iter_child_nodes(node):
                self.parents[id(child)] = node
        self._collect_bindings()
        has_modelnew = "ModelNew" in self.bound
        self._module_rules()
        self._forward_rules()
        if not self._has_triton_kernel():
            self.flag(
                "no-triton-kernel",
                1,
                "the module defines no @triton.jit kernel: the work must be done by "
                "Triton kernels it defines",
            )
        return StaticReport(violations=list(self.found.values()), missing_modelnew=not has_modelnew)

    def _collect_bindings(self) -> None:
        for node in ast.walk(self.tree):
            if isinstance(node, ast.Import):
                for a in node.names:
                    if a.asname:
                        self.aliases[a.asname] = a.name
                    else:
                        root = a.name.split(".")[0]
                        self.aliases[root] = root
                    self.bound.add(a.asname or a.name.split(".")[0])
            elif isinstance(node, ast.ImportFrom):
                mod = "." * node.level + (node.module or "")
                for a in node.names:
                    self.aliases[a.asname or a.name] = f"{mod}.{a.name}" if mod else a.name
                    self.bound.add(a.asname or a.name)
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                self.bound.add(node.name)
                self.defined.add(node.name)
            elif isinstance(node, ast.arg):
                self.bound.add(node.arg)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                self.bound.add(node.id)
                self.defined.add(node.id)
        # Simple aliases (x = torch.mean, F = torch.nn.functional), to a fixpoint.
        changed = True
        while changed:
            changed = False
            for node in ast.walk(self.tree):
                if isinstance(node, ast.Assign | ast.AnnAssign) and node.value is not None:
                    targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                    canon = self.resolve(node.value)
                    for t in targets:
                        if canon and isinstance(t, ast.Name) and t.id not in self.aliases:
                            self.aliases[t.id] = canon
                            changed = True

    def _has_triton_kernel(self) -> bool:
        for node in ast.walk(self.tree):
            if isinstance(node, ast.FunctionDef) and self._is_kernel(node):
                return True
        return False

    def _is_kernel(self, fn: ast.AST) -> bool:
        if not isinstance(fn, ast.FunctionDef):
            return False
        for dec in fn.decorator_list:
            base = _decorator_base(dec)
            canon = self.resolve(base) or _dotted(base) or ""
            if canon.endswith("jit") and canon.split(".")[0] in ("triton", "jit"):
                return True
        return False

    def _module_rules(self) -> None:
        for node in ast.walk(self.tree):
            if isinstance(node, ast.Import):
                for a in node.names:
                    self._check_module_name(a.name, node)
            elif isinstance(node, ast.ImportFrom):
                mod = node.module or ""
                if node.level:
                    self.flag(
                        "reference-import",
                        node,
                        f"relative import from {'.' * node.level}{mod}: a "
                        "candidate is one file and imports nothing beside it",
                    )
                for a in node.names:
                    if a.name in REFERENCE_NAMES:
                        self.flag(
                            "reference-import", node, f"imports {a.name} (a name of the reference module)"
                        )
                    self._check_module_name(f"{mod}.{a.name}" if mod else a.name, node)
            elif isinstance(node, ast.Try) or type(node).__name__ == "TryStar":
                self.flag(
                    "try-except",
                    node,
                    "try/except is not allowed in candidates: a fallback can hide a "
                    "failing kernel (let errors surface)",
                )
            elif isinstance(node, ast.ClassDef):
                self._check_class(node)
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                if node.name in ("__torch_function__", "__torch_dispatch__"):
                    self.flag("tensor-subclass", node, f"defines {node.name} (intercepts torch calls)")
                if isinstance(node, ast.AsyncFunctionDef):
                    self.flag("threads", node, f"async def {node.name}: no concurrency in candidates")
            elif isinstance(node, ast.Attribute):
                self._check_attribute(node)
            elif isinstance(node, ast.Name):
                self._check_name(node)
            elif isinstance(node, ast.Assign | ast.AugAssign | ast.AnnAssign | ast.Delete):
                targets = node.targets if isinstance(node, ast.Assign | ast.Delete) else [node.target]
                for t in targets:
                    for sub in ast.walk(t) if isinstance(t, ast.Tuple | ast.List) else [t]:
                        self._check_store(sub, node)
            elif isinstance(node, ast.Call):
                self._check_call(node)
            elif isinstance(node, ast.Global | ast.Nonlocal):
                pass  # judged in the forward paths (result-cache)

    def _check_module_name(self, name: str, node: ast.AST) -> None:
        rule = self.banned(name)
        if rule:
            self.flag(rule, node, f"imports {name}")

    def _check_class(self, node: ast.ClassDef) -> None:
        for base in node.bases:
            canon = self.resolve(base)
            if canon in TENSOR_BASES:
                self.flag("tensor-subclass", node, f"class {node.name} subclasses {canon}")
            elif isinstance(base, ast.Name) and base.id in REFERENCE_NAMES and base.id not in self.defined:
                self.flag("reference-import", node, f"class {node.name} inherits the reference's {base.id}")
        for item in node.body:
            if isinstance(item, ast.FunctionDef) and item.name in ("__exit__", "__aexit__"):
                self.flag("try-except", item, f"{node.name}.{item.name} can swallow exceptions")

    def _check_attribute(self, node: ast.Attribute) -> None:
        if node.attr in FRAME_ATTRS:
            self.flag("frame-peeking", node, f"uses .{node.attr} (frame, code or interpreter internals)")
        elif node.attr in DYNAMIC_ATTRS:
            self.flag(
                "dynamic-access", node, f"uses .{node.attr} (attribute access the checks cannot follow)"
            )
        elif node.attr in SUBCLASS_ATTRS:
            self.flag("tensor-subclass", node, f"uses .{node.attr} (makes tensor subclasses)")
        elif node.attr in STREAM_METHODS:
            self.flag("side-stream", node, f"uses .{node.attr} (work on other CUDA streams)")
        if isinstance(self.parents.get(id(node)), ast.Attribute):
            return  # judge the longest chain only
        canon = self.resolve(node)
        if canon:
            rule = self.banned(canon)
            if rule:
                self.flag(rule, node, f"uses {canon}")

    def _check_name(self, node: ast.Name) -> None:
        if not isinstance(node.ctx, ast.Load):
            return
        if node.id in BUILTIN_RULES and node.id not in self.bound:
            rule = BUILTIN_RULES[node.id]
            self.flag(rule, node, f"uses {node.id}")
        elif node.id in REFERENCE_NAMES and node.id not in self.defined:
            self.flag("reference-import", node, f"uses {node.id}, a name of the reference module")
        canon = self.aliases.get(node.id)
        if canon and not isinstance(self.parents.get(id(node)), ast.Attribute):
            rule = self.banned(canon)
            if rule:
                self.flag(rule, node, f"uses {canon} (as {node.id})")

    def _check_store(self, target: ast.AST, stmt: ast.AST) -> None:
        if isinstance(target, ast.Attribute):
            if target.attr == "__class__":
                self.flag("tensor-subclass", stmt, "assigns __class__ (swaps an object's type)")
                return
            base = self.resolve(target.value)
            if base:
                self.flag(
                    "monkey-patch", stmt, f"assigns {base}.{target.attr} (patching {base.split('.')[0]})"
                )
        elif isinstance(target, ast.Subscript):
            base = self.resolve(target.value)
            if base:
                self.flag("monkey-patch", stmt, f"writes into {base}[...] (patching {base.split('.')[0]})")
            elif (
                isinstance(target.value, ast.Call)
                and isinstance(target.value.func, ast.Name)
                and target.value.func.id in ("globals", "vars", "locals")
            ):
                self.flag("frame-peeking", stmt, f"writes into {target.value.func.id}()")
        elif isinstance(target, ast.Name) and target.id in ("__name__", "__builtins__", "__file__"):
            self.flag("monkey-patch", stmt, f"assigns {target.id}")

    def _check_call(self, node: ast.Call) -> None:
        func = node.func
        name = func.id if isinstance(func, ast.Name) and func.id not in self.bound else None
        if name in ("setattr", "delattr") and node.args:
            base = self.resolve(node.args[0])
            if base:
                self.flag("monkey-patch", node, f"{name}() on {base} (patching {base.split('.')[0]})")
            elif len(node.args) < 2 or not isinstance(node.args[1], ast.Constant):
                self.flag("dynamic-access", node, f"{name}() with a computed attribute name")
        elif name == "getattr" and len(node.args) >= 2 and not isinstance(node.args[1], ast.Constant):
            self.flag("dynamic-access", node, "getattr() with a computed attribute name")
        elif name == "type" and len(node.args) == 3:
            bases = node.args[1].elts if isinstance(node.args[1], ast.Tuple | ast.List) else []
            if any(self.resolve(b) in TENSOR_BASES for b in bases):
                self.flag("tensor-subclass", node, "type() makes a torch.Tensor subclass")
            else:
                self.flag("code-generator", node, "type() with three arguments makes a class at run time")
        canon = self.resolve(func)
        if canon in ("os.kill", "os.killpg"):
            target = node.args[0] if node.args else None
            own = isinstance(target, ast.Call) and self.resolve(target.func) == "os.getpid"
            if not own:
                self.flag("process-exit", node, f"{canon}() of another process")

    # --- forward paths ---

    def _forward_rules(self) -> None:
        top_funcs: dict[str, ast.AST] = {}
        classes: dict[str, ast.ClassDef] = {}
        module_state: set[str] = set()
        for stmt in self.tree.body:
            if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef):
                top_funcs[stmt.name] = stmt
            elif isinstance(stmt, ast.ClassDef):
                classes[stmt.name] = stmt
            elif isinstance(stmt, ast.Assign | ast.AnnAssign) and stmt.value is not None:
                targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
                for t in targets:
                    if isinstance(t, ast.Name):
                        if isinstance(stmt.value, ast.Lambda):
                            top_funcs[t.id] = stmt.value
                        elif not self.resolve(stmt.value):
                            module_state.add(t.id)
        model = classes.get("ModelNew")
        if model is None:
            return
        own_classes = self._class_chain(model, classes)
        methods: dict[str, ast.FunctionDef] = {}
        for cls in reversed(own_classes):
            for item in cls.body:
                if isinstance(item, ast.FunctionDef):
                    methods[item.name] = item
        layers = self._layer_attributes(own_classes)
        cached = self._cached_functions(top_funcs, methods)

        roots: list[ast.AST] = [m for n, m in methods.items() if n != "__init__"]
        for cls in own_classes:
            roots += [s for s in cls.body if not isinstance(s, ast.FunctionDef | ast.ClassDef)]
        for fn in top_funcs.values():
            if self._is_kernel(fn):
                for dec in fn.decorator_list:
                    if isinstance(dec, ast.Call):
                        roots.append(dec)
        seen: set[int] = set()
        queue = list(roots)
        path: list[ast.AST] = []
        while queue:
            node = queue.pop()
            if id(node) in seen or self._is_kernel(node):
                continue
            seen.add(id(node))
            path.append(node)
            for sub in ast.walk(node):
                if isinstance(sub, ast.Name) and isinstance(sub.ctx, ast.Load):
                    if sub.id in top_funcs:
                        queue.append(top_funcs[sub.id])
                    elif sub.id in classes and classes[sub.id] is not model:
                        queue += [s for s in classes[sub.id].body]
                elif (
                    isinstance(sub, ast.Attribute)
                    and isinstance(sub.value, ast.Name)
                    and sub.value.id == "self"
                    and sub.attr in methods
                ):
                    queue.append(methods[sub.attr])
        for node in path:
            self._scan_forward(node, layers, module_state, cached, methods)

    @staticmethod
    def _class_chain(cls: ast.ClassDef, classes: dict[str, ast.ClassDef]) -> list[ast.ClassDef]:
        out, todo = [], [cls]
        while todo:
            c = todo.pop(0)
            if c in out:
                continue
            out.append(c)
            todo += [classes[b.id] for b in c.bases if isinstance(b, ast.Name) and b.id in classes]
        return out

    def _layer_attributes(self, own: list[ast.ClassDef]) -> dict[str, str]:
        """self.<attr> -> nn class, for attributes assigned a torch.nn compute layer."""
        out = {}
        for cls in own:
            for node in ast.walk(cls):
                if not isinstance(node, ast.Assign) or not isinstance(node.value, ast.Call):
                    continue
                canon = self.resolve(node.value.func) or ""
                leaf = canon.rsplit(".", 1)[-1]
                if canon.startswith("torch.nn.") and leaf[:1].isupper() and leaf not in NN_CONTAINERS:
                    for t in node.targets:
                        if (
                            isinstance(t, ast.Attribute)
                            and isinstance(t.value, ast.Name)
                            and t.value.id == "self"
                        ):
                            out[t.attr] = canon
        return out

    def _cached_functions(
        self, top: dict[str, ast.AST], methods: dict[str, ast.FunctionDef]
    ) -> dict[str, bool]:
        """Names of functools-cached functions -> whether they are methods (cached per instance)."""
        out = {}
        for name, fn in [*top.items(), *methods.items()]:
            if not isinstance(fn, ast.FunctionDef):
                continue
            for dec in fn.decorator_list:
                canon = self.resolve(_decorator_base(dec)) or ""
                if canon in CACHE_DECORATORS:
                    out[name] = fn in methods.values()
        return out

    def _scan_forward(
        self,
        root: ast.AST,
        layers: dict[str, str],
        module_state: set[str],
        cached: dict[str, bool],
        methods: dict[str, ast.FunctionDef],
    ) -> None:
        params = set()
        if isinstance(root, ast.FunctionDef | ast.Lambda):
            params = {a.arg for a in [*root.args.posonlyargs, *root.args.args, *root.args.kwonlyargs]} - {
                "self"
            }
            if isinstance(root, ast.FunctionDef):
                for dec in root.decorator_list:
                    if (
                        self.resolve(_decorator_base(dec)) or ""
                    ) in CACHE_DECORATORS and root in methods.values():
                        self.flag("result-cache", root, f"{root.name} is cached with a functools cache")
        call_funcs = set()
        for node in ast.walk(root):
            if isinstance(node, ast.Call):
                call_funcs.add(id(node.func))
        for node in ast.walk(root):
            if isinstance(node, ast.Call):
                self._forward_call(node, layers, cached, params)
            elif (
                isinstance(node, ast.BinOp)
                and isinstance(node.op, ast.MatMult)
                and "torch.matmul" not in self.allowed
            ):
                self.flag("torch-compute", node, "uses the @ operator (a torch matmul)")
            elif isinstance(node, ast.Global | ast.Nonlocal):
                self.flag(
                    "result-cache",
                    node,
                    f"declares {' '.join(node.names)} "
                    f"{type(node).__name__.lower()} in the forward path (state kept across calls)",
                )
            elif isinstance(node, ast.Attribute | ast.Name) and id(node) not in call_funcs:
                self._forward_reference(node)
        self._return_state(root, module_state)

    def _forward_call(
        self, node: ast.Call, layers: dict[str, str], cached: dict[str, bool], params: set[str]
    ) -> None:
        func = node.func
        canon = self.resolve(func)
        if canon and canon.startswith("torch.") and not self.banned(canon):
            if canon in self.allowed:
                ok = True
            elif canon.startswith("torch.Tensor."):
                ok = canon.split(".")[2] in TENSOR_ALLOWED
            else:
                ok = canon in TORCH_ALLOWED or canon.startswith(TORCH_ALLOWED_PREFIXES)
            if not ok:
                self.flag(
                    "torch-compute",
                    node,
                    f"calls {canon} in the forward path (the work must be done "
                    "by the candidate's Triton kernels)",
                )
        elif isinstance(func, ast.Attribute) and canon is None:
            receiver = self.resolve(func.value)
            allowed = f"torch.Tensor.{func.attr}" in self.allowed
            if receiver is None and func.attr in TENSOR_COMPUTE and not allowed:
                self.flag(
                    "torch-compute",
                    node,
                    f"calls .{func.attr}() in the forward path (tensor compute outside Triton)",
                )
            if (
                isinstance(func.value, ast.Name)
                and func.value.id == "self"
                and func.attr in layers
                and layers[func.attr] not in self.allowed
            ):
                self.flag(
                    "torch-compute",
                    node,
                    f"calls self.{func.attr}, a {layers[func.attr]} layer, in the forward path",
                )
        if isinstance(func, ast.Name) and func.id == "id" and "id" not in self.bound:
            self.flag(
                "result-cache", node, "calls id() in the forward path (results keyed by object identity)"
            )
        if isinstance(func, ast.Attribute) and func.attr == "data_ptr" and self._in_key_position(node):
            self.flag("result-cache", node, "uses data_ptr() as a key (results cached by data pointer)")
        if isinstance(func, ast.Name) and func.id in cached and not cached[func.id]:
            # the arguments themselves (tensors), not scalars derived from them (x.numel(), x.shape)
            args = [*node.args, *(k.value for k in node.keywords)]
            direct = {a.id for a in args if isinstance(a, ast.Name)} | {
                e.id
                for a in args
                if isinstance(a, ast.Tuple | ast.List)
                for e in a.elts
                if isinstance(e, ast.Name)
            }
            if direct & params:
                self.flag(
                    "result-cache",
                    node,
                    f"passes forward's arguments to {func.id}, a functools-cached function (results cached "
                    "across calls)",
                )

    def _in_key_position(self, node: ast.AST) -> bool:
        child, parent = node, self.parents.get(id(node))
        while parent is not None:
            if isinstance(parent, ast.Subscript) and child is parent.slice:
                return True
            if isinstance(parent, ast.Compare):
                return True
            if isinstance(parent, ast.Dict) and any(child is k for k in parent.keys):
                return True
            if isinstance(parent, ast.Call) and (
                (isinstance(parent.func, ast.Name) and parent.func.id == "hash")
                or (
                    isinstance(parent.func, ast.Attribute)
                    and parent.func.attr in ("get", "setdefault", "pop")
                )
            ):
                return True
            if isinstance(parent, ast.Assign):
                # key = (x.data_ptr(), ...): follow the name into key positions
                names = {t.id for t in parent.targets if isinstance(t, ast.Name)}
                return bool(names) and self._names_in_key_position(names)
            if not isinstance(
                parent, ast.Tuple | ast.List | ast.BinOp | ast.JoinedStr | ast.FormattedValue | ast.Call
            ):
                return False
            child, parent = parent, self.parents.get(id(parent))
        return False

    def _names_in_key_position(self, names: set[str]) -> bool:
        for node in ast.walk(self.tree):
            if isinstance(node, ast.Name) and node.id in names and isinstance(node.ctx, ast.Load):
                parent = self.parents.get(id(node))
                if isinstance(parent, ast.Subscript) and parent.slice is node:
                    return True
                if isinstance(parent, ast.Compare):
                    return True
                if (
                    isinstance(parent, ast.Call)
                    and isinstance(parent.func, ast.Attribute)
                    and parent.func.attr
                    in (
                        "get",
                        "setdefault",
                        "pop",
                    )
                ):
                    return True
        return False

    def _forward_reference(self, node: ast.Attribute | ast.Name) -> None:
        if not isinstance(node.ctx, ast.Load) or isinstance(self.parents.get(id(node)), ast.Attribute):
            return
        canon = self.resolve(node)
        if not canon or not canon.startswith("torch.") or self.banned(canon):
            return
        leaf = canon.rsplit(".", 1)[-1]
        if canon in TORCH_ALLOWED or canon in self.allowed:
            return
        if leaf in TORCH_REF_COMPUTE or (canon.startswith(TORCH_MODULE_PREFIXES) and leaf[:1].islower()):
            self.flag("torch-compute", node, f"refers to {canon} in the forward path (torch compute)")

    def _return_state(self, root: ast.AST, module_state: set[str]) -> None:
        """Flag forward code that returns objects kept across calls (on self or in module globals)."""

        def stateful(expr: ast.AST) -> bool:
            if (
                isinstance(expr, ast.Attribute)
                and isinstance(expr.value, ast.Name)
                and expr.value.id == "self"
            ):
                return True
            if isinstance(expr, ast.Subscript):
                return stateful(expr.value) or (
                    isinstance(expr.value, ast.Name) and expr.value.id in module_state
                )
            if (
                isinstance(expr, ast.Call)
                and isinstance(expr.func, ast.Attribute)
                and expr.func.attr
                in (
                    "get",
                    "setdefault",
                    "pop",
                )
            ):
                base = expr.func.value
                return stateful(base) or (isinstance(base, ast.Name) and base.id in module_state)
            return False

        kept: set[str] = set()
        stored: set[str] = set()
        for node in scope_nodes(root):
            if isinstance(node, ast.Assign):
                if stateful(node.value):
                    kept |= {t.id for t in node.targets if isinstance(t, ast.Name)}
                for t in node.targets:
                    if stateful(t) or (
                        isinstance(t, ast.Subscript)
                        and isinstance(t.value, ast.Name)
                        and t.value.id in module_state
                    ):
                        stored |= {n.id for n in ast.walk(node.value) if isinstance(n, ast.Name)}
        for node in scope_nodes(root):
            if not isinstance(node, ast.Return) or node.value is None:
                continue
            values = node.value.elts if isinstance(node.value, ast.Tuple | ast.List) else [node.value]
            for v in values:
                if stateful(v) or (isinstance(v, ast.Name) and (v.id in kept or v.id in stored)):
                    self.flag(
                        "result-cache",
                        node,
                        "forward returns an object kept across calls (stored on "
                        "self or in a module-level container): every call must compute a fresh output",
                    )
