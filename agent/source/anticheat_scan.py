"""The base of the source anti-cheat checker (agent/source/anticheat.py): the module's bindings and import
aliases, resolving an expression to its canonical dotted name, the banned-name table lookup, and where a
violation is recorded."""

from __future__ import annotations

import ast

from agent.source.anticheat_rules import (
    BANNED_PREFIXES,
    IMPORTLIB_ALLOWED,
    IMPORTLIB_MODULES,
    OS_PREFIX_RULES,
    Violation,
)


def _dotted(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return f"{base}.{node.attr}" if base else None
    return None


def is_main_guard(node: ast.stmt) -> bool:
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


def decorator_base(dec: ast.expr) -> ast.expr:
    return dec.func if isinstance(dec, ast.Call) else dec


class ModuleScan:
    """One module's bindings and aliases, and the violations found in it so far."""

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
            base = decorator_base(dec)
            canon = self.resolve(base) or _dotted(base) or ""
            if canon.endswith("jit") and canon.split(".")[0] in ("triton", "jit"):
                return True
        return False
