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
from agent.source.anticheat_forward import ForwardRules
from agent.source.anticheat_rules import (
    BUILTIN_RULES,
    DYNAMIC_ATTRS,
    FRAME_ATTRS,
    REFERENCE_NAMES,
    STREAM_METHODS,
    SUBCLASS_ATTRS,
    TENSOR_BASES,
    StaticReport,
)
from agent.source.anticheat_scan import is_main_guard


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


class _Checker(ForwardRules):
    """Every rule over one module: the module-wide rules here, the forward paths' in ForwardRules."""

    # --- passes ---

    def run(self) -> StaticReport:
        uses_name = any(
            isinstance(n, ast.Name) and n.id == "__name__" and isinstance(n.ctx, ast.Store)
            for n in ast.walk(self.tree)
        )
        if not uses_name:
            self.tree.body = [s for s in self.tree.body if not is_main_guard(s)]
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
