"""Source-level variants of a kernel: the same code with other num_warps / num_stages.

The built-in search proposes real source files (a user can take any of them away), made by editing the
candidate's text at the positions Python's AST gives, so formatting and comments are kept:
- for an autotuned kernel, every `triton.Config(...)` of its `@triton.autotune(configs=[...])` list;
- for a plain `@triton.jit` kernel, every launch `kernel[grid](..., num_warps=..., num_stages=...)`.
The tiling stage's BLOCK sizes and grid multipliers are edited the same way, by agent/source/tiling_space.py.
"""

from __future__ import annotations

import ast
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from agent.records import LaunchConfig

DEFAULT_NUM_WARPS = 4
DEFAULT_NUM_STAGES = 3  # triton.Config's and a plain launch's default


class VariantError(ValueError):
    """The source cannot be varied as asked (no such kernel, unparseable code...)."""


def dotted_name(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{dotted_name(node.value)}.{node.attr}"
    return ""


def decorator_name(dec: ast.expr) -> str:
    return dotted_name(dec.func if isinstance(dec, ast.Call) else dec)


def find_kernels(tree: ast.Module) -> dict[str, ast.FunctionDef]:
    """Every function decorated with a `...jit` decorator, by name."""
    out = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and any(
            decorator_name(d).endswith("jit") for d in node.decorator_list
        ):
            out[node.name] = node
    return out


def scope_nodes(scope: ast.AST) -> Iterator[ast.AST]:
    """The nodes of a scope's own code: not inside nested functions, lambdas or classes."""
    todo = list(ast.iter_child_nodes(scope))
    while todo:
        n = todo.pop()
        yield n
        if not isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda | ast.ClassDef):
            todo.extend(ast.iter_child_nodes(n))


def parse_source(source: str) -> ast.Module:
    try:
        return ast.parse(source)
    except SyntaxError as e:
        raise VariantError(f"source does not parse: {e.msg} (line {e.lineno})") from None


def autotune_configs(fn: ast.FunctionDef) -> list[ast.Call] | None:
    for dec in fn.decorator_list:
        if isinstance(dec, ast.Call) and decorator_name(dec).endswith("autotune"):
            configs = next((k.value for k in dec.keywords if k.arg == "configs"), None)
            if configs is None and dec.args:
                configs = dec.args[0]
            if isinstance(configs, ast.List | ast.Tuple):
                return [
                    c
                    for c in configs.elts
                    if isinstance(c, ast.Call) and dotted_name(c.func).endswith("Config")
                ]
            raise VariantError(f"autotune configs of {fn.name} are not a literal list")
    return None


def launch_sites(tree: ast.Module, kernel: str) -> list[ast.Call]:
    """Calls of the form kernel[grid](...)."""
    sites = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Subscript)
            and dotted_name(node.func.value) == kernel
        ):
            sites.append(node)
    return sites


def _sites(source: str, kernel: str) -> tuple[list[ast.Call], bool]:
    tree = parse_source(source)
    kernels = find_kernels(tree)
    if kernel not in kernels:
        raise VariantError(
            f"no @triton.jit kernel named {kernel!r} (found: {', '.join(sorted(kernels)) or 'none'})"
        )
    configs = autotune_configs(kernels[kernel])
    if configs is not None:
        return configs, True
    sites = launch_sites(tree, kernel)
    if not sites:
        raise VariantError(f"kernel {kernel!r} is never launched as {kernel}[grid](...) in this source")
    return sites, False


def _int_kw(call: ast.Call, name: str) -> int | None:
    for k in call.keywords:
        if k.arg == name and isinstance(k.value, ast.Constant) and isinstance(k.value.value, int):
            return k.value.value
    return None


def launch_values(source: str, kernel: str, name: str) -> set[int] | None:
    """The values every config / launch of `kernel` gives `name` (Triton's default where absent); None when
    one is computed at run time (it may be anything there)."""
    sites, _ = _sites(source, kernel)
    default = DEFAULT_NUM_WARPS if name == "num_warps" else DEFAULT_NUM_STAGES
    out = set()
    for s in sites:
        kw = next((k.value for k in s.keywords if k.arg == name), None)
        if kw is not None and not (isinstance(kw, ast.Constant) and type(kw.value) is int):
            return None
        out.add(kw.value if kw is not None else default)  # type: ignore[union-attr]
    return out


def current_config(source: str, kernel: str) -> LaunchConfig:
    """The kernel's current (num_warps, num_stages): the most common value over its configs or launches."""
    sites, _ = _sites(source, kernel)
    warps = Counter(_int_kw(s, "num_warps") or DEFAULT_NUM_WARPS for s in sites)
    stages = Counter(_int_kw(s, "num_stages") or DEFAULT_NUM_STAGES for s in sites)
    return LaunchConfig(num_warps=warps.most_common(1)[0][0], num_stages=stages.most_common(1)[0][0])


def _line_offsets(source: str) -> list[int]:
    offsets, pos = [], 0
    for line in source.splitlines(keepends=True):
        offsets.append(pos)
        pos += len(line)
    offsets.append(pos)
    return offsets


def offsets_of(source: str) -> Callable[[int, int], int]:
    """(line, col) of an AST node -> offset into `source`. Refuses non-ASCII sources: ast columns are UTF-8
    byte offsets, and an edit must land on the same characters."""
    if not source.isascii():
        raise VariantError("non-ASCII source: refusing to edit by AST byte offsets")
    offsets = _line_offsets(source)
    return lambda line, col: offsets[line - 1] + col


def node_span(pos: Callable[[int, int], int], node: ast.AST) -> tuple[int, int]:
    return pos(node.lineno, node.col_offset), pos(node.end_lineno, node.end_col_offset)  # type: ignore[attr-defined]


def apply_edits(source: str, edits: list[tuple[int, int, str]]) -> str:
    """Replace each (start, end) span with its text; at one position the first edit ends up first."""
    # Right to left, so earlier offsets stay valid.
    for _, (start, end, text) in sorted(enumerate(edits), key=lambda e: (e[1][0], e[0]), reverse=True):
        source = source[:start] + text + source[end:]
    ast.parse(source)  # an edit that breaks the syntax is a bug here, not the user's
    return source


def keyword_edit(
    source: str, call: ast.Call, pos: Callable[[int, int], int], name: str, text: str
) -> tuple[int, int, str]:
    """The edit that sets keyword `name` of `call` to `text`: its value replaced, or the keyword added."""
    kw = next((k for k in call.keywords if k.arg == name), None)
    if kw is not None:
        return (*node_span(pos, kw.value), text)
    return keyword_insertion(source, call, pos, f"{name}={text}")


def _apply(source: str, kernel: str, values: Callable[[ast.Call], dict[str, int]]) -> str:
    """Set keywords on every config / launch of `kernel`; `values(site)` says which, to what."""
    pos = offsets_of(source)
    sites, _ = _sites(source, kernel)
    edits = [
        keyword_edit(source, call, pos, name, str(value))
        for call in sites
        for name, value in values(call).items()
    ]
    return apply_edits(source, edits)


def with_launch_config(source: str, kernel: str, config: LaunchConfig) -> str:
    """The source with every config / launch of `kernel` set to `config`'s num_warps and num_stages."""
    return _apply(source, kernel, lambda _: {"num_warps": config.num_warps, "num_stages": config.num_stages})


@dataclass(frozen=True)
class LaunchMove:
    """A point of the micro space: one num_warps for every config, each config's num_stages moved by delta."""

    num_warps: int
    stage_delta: int

    def label(self, kernel: str, stages_now: set[int]) -> str:
        if len(stages_now) == 1:
            stages = f"num_stages={next(iter(stages_now)) + self.stage_delta}"
        else:
            stages = f"num_stages{self.stage_delta:+d}" if self.stage_delta else "num_stages as they are"
        return f"{kernel}: num_warps={self.num_warps} {stages}"


def site_stages(source: str, kernel: str) -> list[int]:
    """num_stages of each config / launch of the kernel (Triton's default where none is given)."""
    sites, _ = _sites(source, kernel)
    return [_int_kw(s, "num_stages") or DEFAULT_NUM_STAGES for s in sites]


def apply_move(source: str, kernel: str, move: LaunchMove) -> str:
    return _apply(
        source,
        kernel,
        lambda site: {
            "num_warps": move.num_warps,
            "num_stages": (_int_kw(site, "num_stages") or DEFAULT_NUM_STAGES) + move.stage_delta,
        },
    )


def stage_moves(
    source: str, kernel: str, warps: list[int], stages: list[int], max_delta: int = 1
) -> list[LaunchMove]:
    """A stage's launch space for one kernel: any allowed num_warps; each config's num_stages moved by at
    most `max_delta` (micro: ±1), where every moved value is allowed (delta 0 keeps the parent's own)."""
    now = site_stages(source, kernel)
    deltas = [d for d in range(-max_delta, max_delta + 1) if d == 0 or all(s + d in stages for s in now)]
    return [LaunchMove(num_warps=w, stage_delta=d) for w in warps for d in deltas]


def keyword_insertion(source: str, call: ast.Call, pos, text: str) -> tuple[int, int, str]:
    """Where and how to add a keyword to a call, in the call's own layout (one line, or one per line)."""
    closing = pos(call.end_lineno, call.end_col_offset) - 1
    items = [*call.args, *call.keywords]
    if not items:
        return closing, closing, text
    last = max(items, key=lambda n: (n.end_lineno, n.end_col_offset))
    after_last = pos(last.end_lineno, last.end_col_offset)
    between = source[after_last:closing]
    if "\n" not in between:  # single-line call, or closing paren on the last argument's line
        comma = between.find(",")
        if comma >= 0:
            return after_last + comma + 1, after_last + comma + 1, f" {text},"
        return after_last, after_last, f", {text}"
    line_start = source.rfind("\n", 0, after_last) + 1
    indent = source[line_start:after_last][
        : len(source[line_start:after_last]) - len(source[line_start:after_last].lstrip())
    ]
    comma = between.find(",")
    if comma >= 0:
        at = after_last + comma + 1
        return at, at, f"\n{indent}{text},"
    return after_last, after_last, f",\n{indent}{text}"
