"""A plain `@triton.jit` kernel wrapped in `@triton.autotune` with a few configs around its launch, as the
micro stage's "Autotune Tip" says (3-6 configs, the original among them). The built-in search proposes it in
micro for kernels launched without autotune: the autotuner then picks num_warps and num_stages on the GPU.

- The configs: the launch's own (num_warps, num_stages) (Triton's 4 and 3 where absent), num_warps halved
  and doubled, num_stages -1 and +1, where the stage allows them. A num_warps computed at run time (a
  settings helper's) is not known here: the configs are then every allowed num_warps at the launch's
  num_stages, and the autotuner picks among them.
- The launch's num_warps / num_stages keywords move into the configs (the autotuner refuses both).
- `key`: the kernel's run-time arguments that are neither pointers nor strides (the sizes).
- A kernel whose benchmark runs would change what it reads: `reset_to_zero` for what it updates atomically,
  `restore_value` for what it loads and stores in place.
"""

from __future__ import annotations

import ast

from agent.source.variants import (
    DEFAULT_NUM_STAGES,
    DEFAULT_NUM_WARPS,
    VariantError,
    apply_edits,
    dotted_name,
    find_kernels,
    launch_sites,
    node_span,
    offsets_of,
    parse_source,
)

MIN_CONFIGS, MAX_CONFIGS = 3, 6
LAUNCH_ONLY = ("num_warps", "num_stages")


def _pointer(expr: ast.expr) -> str | None:
    """The base of a pointer expression `x_ptr + offs * stride`: the leftmost name."""
    while isinstance(expr, ast.BinOp):
        expr = expr.left
    return expr.id if isinstance(expr, ast.Name) else None


def memory_params(fn: ast.FunctionDef) -> tuple[set[str], set[str], set[str]]:
    """(pointers the kernel loads, pointers it stores, pointers it updates atomically) among its params."""
    params = {a.arg for a in fn.args.args}
    loads, stores, atomics = set(), set(), set()
    for node in ast.walk(fn):
        if not (isinstance(node, ast.Call) and node.args):
            continue
        name, ptr = dotted_name(node.func).rsplit(".", 1)[-1], _pointer(node.args[0])
        if ptr not in params:
            continue
        if name == "load":
            loads.add(ptr)
        elif name == "store":
            stores.add(ptr)
        elif name.startswith("atomic_"):
            atomics.add(ptr)
    return loads, stores, atomics  # type: ignore[return-value]


def size_params(fn: ast.FunctionDef) -> list[str]:
    """Run-time arguments that are sizes: not constexpr, not a pointer it reads or writes, not a stride."""
    loads, stores, atomics = memory_params(fn)
    pointers = loads | stores | atomics
    return [
        a.arg
        for a in fn.args.args
        if not (a.annotation is not None and "constexpr" in ast.unparse(a.annotation))
        and a.arg not in pointers
        and "stride" not in a.arg.lower()
        and not a.arg.lower().endswith("ptr")
    ]


def _launch_value(sites: list[ast.Call], name: str, default: int) -> int | None:
    """The one literal value every launch gives `name` (the default where absent); None when computed."""
    values = set()
    for site in sites:
        kw = next((k.value for k in site.keywords if k.arg == name), None)
        if kw is None:
            values.add(default)
        elif isinstance(kw, ast.Constant) and type(kw.value) is int:
            values.add(kw.value)
        else:
            return None
    return values.pop() if len(values) == 1 else None


def around(
    warps: int | None, stages: int | None, allowed_warps: list[int], allowed_stages: list[int]
) -> list[tuple[int, int]]:
    """The (num_warps, num_stages) configs around a launch, the original first."""
    s = stages if stages is not None else DEFAULT_NUM_STAGES
    if warps is None:
        return [(w, s) for w in allowed_warps][:MAX_CONFIGS]
    wanted = [(warps, s), (warps // 2, s), (warps * 2, s), (warps, s - 1), (warps, s + 1)]
    out = [wanted[0]] + [(w, t) for w, t in wanted[1:] if w in allowed_warps and t in allowed_stages]
    return list(dict.fromkeys(out))[:MAX_CONFIGS]


def wrapped(source: str, kernel: str, allowed_warps: list[int], allowed_stages: list[int]) -> tuple[str, str]:
    """The source with `kernel` autotuned around its launch, and a label saying what the configs are.
    Raises VariantError when the kernel is autotuned already, not launched here, or gives too few configs."""
    tree = parse_source(source)
    fn = find_kernels(tree).get(kernel)
    sites = launch_sites(tree, kernel)
    if fn is None or not sites:
        raise VariantError(f"{kernel} is not a kernel launched in this source")
    if any(isinstance(d, ast.Call) and dotted_name(d.func).endswith("autotune") for d in fn.decorator_list):
        raise VariantError(f"{kernel} is autotuned already")
    warps = _launch_value(sites, "num_warps", DEFAULT_NUM_WARPS)
    stages = _launch_value(sites, "num_stages", DEFAULT_NUM_STAGES)
    configs = around(warps, stages, allowed_warps, allowed_stages)
    if len(configs) < MIN_CONFIGS:
        raise VariantError(f"{kernel}: fewer than {MIN_CONFIGS} configs around its launch are allowed")
    pos = offsets_of(source)
    edits = [_decorator(source, fn, configs, pos)]
    for site in sites:
        edits += [_drop_keyword(source, site, kw, pos) for kw in site.keywords if kw.arg in LAUNCH_ONLY]
    shown = "/".join(f"{w}w{s}s" for w, s in configs)
    origin = "" if warps is not None else " (its num_warps is computed at run time)"
    return apply_edits(source, edits), f"{kernel}: autotune around the launch{origin}: {shown}"


def _decorator(source: str, fn: ast.FunctionDef, configs: list[tuple[int, int]], pos) -> tuple[int, int, str]:
    loads, stores, atomics = memory_params(fn)
    indent = " " * fn.col_offset
    items = "".join(
        f"{indent}        triton.Config({{}}, num_warps={w}, num_stages={s}),\n" for w, s in configs
    )
    extra = ""
    if atomics:
        extra += f", reset_to_zero={sorted(atomics)!r}"
    if in_place := (loads & stores) - atomics:
        extra += f", restore_value={sorted(in_place)!r}"
    text = (
        f"@triton.autotune(\n{indent}    configs=[\n{items}{indent}    ],\n"
        f"{indent}    key={size_params(fn)!r}{extra},\n{indent})\n{indent}"
    ).replace("'", '"')
    first = fn.decorator_list[0]
    at = pos(first.lineno, first.col_offset) - 1  # the "@" of the first decorator
    return at, at, text


def _drop_keyword(source: str, call: ast.Call, kw: ast.keyword, pos) -> tuple[int, int, str]:
    """Removes `name=value` and the comma (and spaces) before it."""
    start, end = node_span(pos, kw)
    before = source[:start].rstrip()
    if before.endswith(","):
        start = len(before) - 1
    return start, end, ""
