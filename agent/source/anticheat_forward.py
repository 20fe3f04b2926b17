"""The source anti-cheat rules of the forward paths (agent/source/anticheat.py, "Scope"): `torch-compute`
and `result-cache` on every method of ModelNew but `__init__` and what they refer to, transitively."""

from __future__ import annotations

import ast

from agent.source.anticheat_rules import (
    CACHE_DECORATORS,
    NN_CONTAINERS,
    TENSOR_ALLOWED,
    TENSOR_COMPUTE,
    TORCH_ALLOWED,
    TORCH_ALLOWED_PREFIXES,
    TORCH_MODULE_PREFIXES,
    TORCH_REF_COMPUTE,
)
from agent.source.anticheat_scan import ModuleScan, decorator_base
from agent.source.variants import scope_nodes


class ForwardRules(ModuleScan):
    """The rules of the forward paths, on top of the module's bindings."""

    def _forward_rules(self) -> None:
        top_funcs, classes, module_state = self._module_level()
        model = classes.get("ModelNew")
        if model is None:
            return
        own_classes = self._class_chain(model, classes)
        methods: dict[str, ast.FunctionDef] = {}
        for cls in reversed(own_classes):  # a subclass's method replaces its base's
            for item in cls.body:
                if isinstance(item, ast.FunctionDef):
                    methods[item.name] = item
        layers = self._layer_attributes(own_classes)
        cached = self._cached_functions(top_funcs, methods)
        roots = self._forward_roots(own_classes, methods, top_funcs)
        for node in self._forward_path(roots, top_funcs, classes, model, methods):
            self._scan_forward(node, layers, module_state, cached, methods)

    def _module_level(self) -> tuple[dict[str, ast.AST], dict[str, ast.ClassDef], set[str]]:
        """The module's top-level functions (lambdas bound to a name included), its classes, and the names
        bound to module state (values that are not a known torch or triton object)."""
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
        return top_funcs, classes, module_state

    def _forward_roots(
        self,
        own_classes: list[ast.ClassDef],
        methods: dict[str, ast.FunctionDef],
        top_funcs: dict[str, ast.AST],
    ) -> list[ast.AST]:
        """Where the forward paths start: ModelNew's methods but `__init__`, the class bodies' other
        statements, and the decorator calls of the Triton kernels (autotune configs, heuristics)."""
        roots: list[ast.AST] = [m for n, m in methods.items() if n != "__init__"]
        for cls in own_classes:
            roots += [s for s in cls.body if not isinstance(s, ast.FunctionDef | ast.ClassDef)]
        for fn in top_funcs.values():
            if self._is_kernel(fn):
                for dec in fn.decorator_list:
                    if isinstance(dec, ast.Call):
                        roots.append(dec)
        return roots

    def _forward_path(
        self,
        roots: list[ast.AST],
        top_funcs: dict[str, ast.AST],
        classes: dict[str, ast.ClassDef],
        model: ast.ClassDef,
        methods: dict[str, ast.FunctionDef],
    ) -> list[ast.AST]:
        """Everything the roots refer to, transitively: top-level functions, other classes' bodies and
        `self.` methods; Triton kernels are not followed (their bodies run on the GPU)."""
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
        return path

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
                canon = self.resolve(decorator_base(dec)) or ""
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
                        self.resolve(decorator_base(dec)) or ""
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
            self._torch_call(node, canon)
        elif isinstance(func, ast.Attribute) and canon is None:
            self._method_call(node, func, layers)
        self._cache_key_call(node, func, cached, params)

    def _torch_call(self, node: ast.Call, canon: str) -> None:
        """`torch-compute`: a torch function or Tensor method that computes, unless allowed."""
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

    def _method_call(self, node: ast.Call, func: ast.Attribute, layers: dict[str, str]) -> None:
        """`torch-compute`: a method of an unknown receiver named as tensor compute, or a torch.nn layer
        held in `self`."""
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

    def _cache_key_call(
        self, node: ast.Call, func: ast.expr, cached: dict[str, bool], params: set[str]
    ) -> None:
        """`result-cache`: results keyed by object identity or data pointer, or forward's arguments passed
        to a functools-cached function."""
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
