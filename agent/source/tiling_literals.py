"""Finding, in a kernel's source, the integer literals a tiling space moves (agent/source/tiling_space.py):
literals, names and `self.` attributes bound once to one, capped run-time blocks, blocks a call computes
at run time (`ScaledSlot`), what a grid reads, and the names multiplying the SM count in a grid."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from dataclasses import dataclass

from agent.source.kernel_facts import Resolver, function_params
from agent.source.variants import (
    DEFAULT_NUM_WARPS,
    dotted_name,
    keyword_insertion,
    node_span,
    offsets_of,
    scope_nodes,
)

_SM_COUNT = re.compile(r"^_?(get_)?((n|num|number_of)_?)?sms?(_count)?$")  # num_sms, NUM_SMS, sm_count


@dataclass(frozen=True)
class Slot:
    """One integer literal of the base source that an axis edits (or where an absent num_warps goes)."""

    start: int
    end: int
    value: int
    text: str = "{}"  # replaces [start, end) with "{}" filled in: the value, or an inserted keyword

    def edit(self, value: int) -> tuple[int, int, str]:
        return self.start, self.end, self.text.replace("{}", str(value))


RUNTIME_ONE = 4  # a run-time BLOCK size's own value, on the axis' scale: 1..16 is its result /4..x4
RUNTIME_ALLOWED = (1, 2, 4, 8, 16)


@dataclass(frozen=True)
class ScaledSlot(Slot):
    """A BLOCK size computed at run time (`triton.next_power_of_2(n)`, a settings helper's result): the
    edit multiplies or divides the expression's result by a power of two. `name` set: the value comes from
    a tuple assignment (`BLOCK, num_warps = settings(n)`), and a statement scaling the name follows it."""

    expr: str = ""
    name: str = ""
    indent: str = ""

    def edit(self, value: int) -> tuple[int, int, str]:
        if self.name:
            return self.start, self.end, f"\n{self.indent}{self.name} = {_scale_text(self.name, value)}"
        return self.start, self.end, _scale_text(f"({self.expr})", value)


def _scale_text(expr: str, value: int) -> str:
    if value >= RUNTIME_ONE:
        return f"{expr} * {value // RUNTIME_ONE}"
    return f"max({expr} // {RUNTIME_ONE // value}, 1)"


class LiteralFinder:
    """Reads a source for the integer literals a tiling space can move."""

    def __init__(self, tree: ast.Module, source: str):
        self.tree, self.source = tree, source
        self.res = Resolver(tree)
        self.parent = self.res.parent
        self.pos = offsets_of(source)

    def slot(self, node: ast.AST, value: int) -> Slot:
        return Slot(*node_span(self.pos, node), value)

    def insertion(self, call: ast.Call, name: str) -> Slot:
        at, _, text = keyword_insertion(self.source, call, self.pos, f"{name}={{}}")
        return Slot(at, at, DEFAULT_NUM_WARPS, text)

    def up(self, node: ast.AST, kinds) -> ast.AST | None:
        while (node := self.parent.get(id(node))) is not None:  # type: ignore[assignment]
            if isinstance(node, kinds):
                return node
        return None

    # ---- a name or self.attribute bound once to an integer literal

    def named_literal(self, node: ast.expr, runtime: bool = False) -> tuple[Slot, str] | str:
        """(the literal's slot, the name) for a name bound once to an int literal (or, with `runtime`, to a
        call computing it at run time), else why not."""
        text = ast.unparse(node)
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self":
            cls = self.up(node, ast.ClassDef)
            if cls is None:
                return f"`{text}` is used outside a class"
            stores = [
                n
                for n in ast.walk(cls)
                if isinstance(n, ast.Attribute)
                and isinstance(n.ctx, ast.Store)
                and n.attr == node.attr
                and isinstance(n.value, ast.Name)
                and n.value.id == "self"
            ]
            stores += [n for n in scope_nodes(cls) if _stores_name(n, node.attr)]
            return self._single_literal(stores, text)
        if not isinstance(node, ast.Name):
            return f"`{text}` is computed at run time"
        scope: ast.AST | None = node
        while (scope := self.up(scope, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)) is not None:
            if node.id in function_params(scope):  # type: ignore[arg-type]
                return f"`{node.id}` is a parameter of {getattr(scope, 'name', 'a lambda')}"
            stores = [n for n in scope_nodes(scope) if _stores_name(n, node.id)]
            if stores:
                return self._single_literal(stores, text, runtime)
        stores = [n for n in scope_nodes(self.tree) if _stores_name(n, node.id)]
        return self._single_literal(stores, text, runtime)

    def _single_literal(
        self, stores: list[ast.AST], text: str, runtime: bool = False
    ) -> tuple[Slot, str] | str:
        stores = [s for s in stores if isinstance(getattr(s, "ctx", None), ast.Store)]
        if not stores:
            return f"`{text}` is not assigned in this source"
        if len(stores) > 1:
            return f"`{text}` is assigned {len(stores)} times"
        assign = self.parent.get(id(stores[0]))
        if isinstance(assign, ast.Tuple):  # BLOCK, num_warps = settings(n)
            assign = self.parent.get(id(assign))
        value = getattr(assign, "value", None)
        single = (isinstance(assign, ast.Assign) and len(assign.targets) == 1) or isinstance(
            assign, ast.AnnAssign
        )
        if single and isinstance(value, ast.Constant) and type(value.value) is int:
            return self.slot(value, value.value), text
        if single and (cap := _cap(value)) is not None:  # min(<run-time value>, 4096): the cap moves
            return self.slot(cap, cap.value), text
        if runtime and isinstance(value, ast.Call):  # next_power_of_2(n), a settings helper: its result moves
            return self.runtime_slot(value, assign, stores[0]), text
        shown = ast.unparse(value) if isinstance(value, ast.expr) else "not a plain assignment"
        return f"`{text}` is computed at run time (`{shown}`)"

    def runtime_slot(self, value: ast.Call, assign: ast.AST | None, store: ast.AST) -> ScaledSlot:
        """The slot scaling a run-time BLOCK size: the expression itself, or after a tuple assignment."""
        start, end = node_span(self.pos, value)
        if isinstance(assign, ast.Assign) and isinstance(assign.targets[0], ast.Tuple):
            at = node_span(self.pos, assign)[1]
            name = store.id  # type: ignore[attr-defined]
            return ScaledSlot(
                at, at, RUNTIME_ONE, expr=ast.unparse(value), name=name, indent=" " * assign.col_offset
            )
        return ScaledSlot(start, end, RUNTIME_ONE, expr=ast.unparse(value))

    def literal_or_named(self, node: ast.expr, runtime: bool = False) -> tuple[Slot, str | None] | str:
        """The slot of a BLOCK value; with `runtime`, also one computed at run time by a call."""
        if isinstance(node, ast.Constant) and type(node.value) is int:
            return self.slot(node, node.value), None
        if isinstance(node, ast.Name | ast.Attribute):
            found = self.named_literal(node, runtime)
            return found if isinstance(found, str) else (found[0], found[1])
        if runtime and isinstance(node, ast.Call):
            return self.runtime_slot(node, None, node), None
        return f"`{ast.unparse(node)}` is computed at run time"

    # ---- what a grid expression reads

    def grid_nodes(self, expr: ast.AST, depth: int = 0) -> Iterator[ast.AST]:
        """Every node of the grid expression, local names followed to their assignments."""
        for n in ast.walk(expr):
            yield n
            if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load) and depth < 6:
                for d in self.res.definitions(n):
                    if isinstance(d, ast.expr):
                        yield from self.grid_nodes(d, depth + 1)

    def multipliers(self, expr: ast.AST, depth: int = 0) -> Iterator[ast.expr]:
        """Names multiplying the SM count in the grid, through tuples, min/max and local names."""
        if depth > 6:
            return
        if isinstance(expr, ast.Tuple | ast.List):
            for e in expr.elts:
                yield from self.multipliers(e, depth + 1)
        elif isinstance(expr, ast.Lambda):
            yield from self.multipliers(expr.body, depth + 1)
        elif isinstance(expr, ast.Call) and dotted_name(expr.func).rsplit(".", 1)[-1] in _MIN_MAX:
            for a in expr.args:
                yield from self.multipliers(a, depth + 1)
        elif isinstance(expr, ast.BinOp) and isinstance(expr.op, ast.Mult):
            for side, other in ((expr.left, expr.right), (expr.right, expr.left)):
                if is_name(side) and self.mentions_sms(other):
                    yield side
                yield from self.multipliers(side, depth + 1)
        elif isinstance(expr, ast.Name):
            for d in self.res.definitions(expr):
                if isinstance(d, ast.expr):
                    yield from self.multipliers(d, depth + 1)

    def mentions_sms(self, expr: ast.AST) -> bool:
        for n in self.grid_nodes(expr):
            ident = n.attr if isinstance(n, ast.Attribute) else n.id if isinstance(n, ast.Name) else ""
            if ident == "multi_processor_count" or _SM_COUNT.match(ident.lower()):
                return True
        return False


_MIN_MAX = {"min", "max", "minimum", "maximum"}


def _cap(value: ast.AST | None) -> ast.Constant | None:
    """The integer literal of `min(<expression>, <int>)` (either order), else None."""
    if not (isinstance(value, ast.Call) and dotted_name(value.func) == "min") or value.keywords:
        return None
    ints = [a for a in value.args if isinstance(a, ast.Constant) and type(a.value) is int]
    return ints[0] if len(value.args) == 2 and len(ints) == 1 else None


def _stores_name(node: ast.AST, name: str) -> bool:
    return isinstance(node, ast.Name) and node.id == name and isinstance(node.ctx, ast.Store)


def is_name(node: ast.AST) -> bool:
    return isinstance(node, ast.Name) or (
        isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self"
    )
