"""The stage rules on kernels and their launches (agent/source/stage_rules.py has the table): block sizes,
the grid mapping, num_stages, autotune, config count and the original config, kernel signatures and bodies."""

from __future__ import annotations

import ast
import difflib
from collections import Counter
from collections.abc import Iterator

from agent.source.kernel_facts import Run, config_calls
from agent.source.rule_context import RuleContext, values_text
from agent.source.variants import (
    DEFAULT_NUM_STAGES,
    DEFAULT_NUM_WARPS,
    decorator_name,
    dotted_name,
)

# ------------------------------------------------------------ the rules (the facts:
# agent/source/kernel_facts.py)

_PID_CALLS = {"program_id", "num_programs"}
# Calls that keep an expression "index arithmetic" for the grid-mapping rule (no loads, no reductions).
_INDEX_CALLS = {"arange", "cdiv", "minimum", "maximum", "multiple_of", "max_contiguous", "to", "min", "max"}


def _blocks_text(blocks: tuple[tuple[str, str], ...]) -> str:
    return ", ".join(f"{k}={v}" for k, v in blocks) or "no BLOCK sizes"


def _pairs(ctx: RuleContext) -> Iterator[tuple[str, list[Run], list[Run]]]:
    """(kernel, parent runs, candidate runs) per parent kernel in scope whose runs both sides give.
    A kernel gone or with unreadable configs is skipped: kernels-kept and literal-configs report it."""
    for k in ctx.parent_kernels():
        p, c = ctx.parent_runs(k), ctx.cand.runs.get(k)
        if p and isinstance(c, list):
            yield k, p, c


def rule_block_sizes(ctx: RuleContext) -> Iterator[str]:
    """Per kernel, the set of BLOCK*-named values over its runs equals the parent's."""
    tail = "; BLOCK sizes must stay as they are (extra configs may vary num_warps/num_stages only)"
    for k, p, c in _pairs(ctx):
        known, kept = {r.blocks for r in p}, {r.blocks for r in c}
        told: set[tuple[tuple[str, str], ...]] = set()
        # Align the two config lists, so that an edited config reads "changed from 256 to 512 in config 1"
        # and a dropped one "no longer runs with ...".
        matcher = difflib.SequenceMatcher(a=[r.blocks for r in p], b=[r.blocks for r in c], autojunk=False)
        for op, i1, i2, j1, j2 in matcher.get_opcodes():
            if op == "equal":
                continue
            olds, news = p[i1:i2], c[j1:j2]
            for q, r in zip(olds, news, strict=False):
                lost = q.blocks not in kept and q.blocks not in told
                if lost or (r.blocks not in known and r.blocks not in told):
                    told |= {q.blocks, r.blocks}
                    yield f"{_block_changes(dict(q.blocks), dict(r.blocks))} in {r.where}{tail}"
            for q in olds[len(news) :]:
                if q.blocks not in kept and q.blocks not in told:
                    told.add(q.blocks)
                    yield f"{k} no longer runs with {_blocks_text(q.blocks)}{tail}"
            for r in news[len(olds) :]:
                if r.blocks not in known and r.blocks not in told:
                    told.add(r.blocks)
                    yield f"{r.where} uses {_blocks_text(r.blocks)}, which the current code does not{tail}"


def _block_changes(old: dict[str, str], new: dict[str, str]) -> str:
    return ", ".join(
        f"{n} changed from {old[n]} to {new[n]}"
        if n in old and n in new
        else f"{n}={new[n]} was added"
        if n in new
        else f"{n} (was {old[n]}) was removed"
        for n in sorted(old.keys() | new.keys())
        if old.get(n) != new.get(n)
    )


def _index_only(expr: ast.AST) -> bool:
    return all(_call_name(n) in _INDEX_CALLS | _PID_CALLS for n in ast.walk(expr) if isinstance(n, ast.Call))


def _call_name(node: ast.AST) -> str | None:
    """'arange' for tl.arange(...), 'to' for x.to(...); None if `node` is no call."""
    return dotted_name(node.func).rsplit(".", 1)[-1] if isinstance(node, ast.Call) else None


def _has_pid(expr: ast.AST) -> bool:
    return any(_call_name(n) in _PID_CALLS for n in ast.walk(expr))


def _names(expr: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(expr) if isinstance(n, ast.Name)}


def _targets(stmt: ast.stmt) -> set[str]:
    targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]  # type: ignore[attr-defined]
    return {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}


def grid_mapping_code(fn: ast.FunctionDef) -> list[str]:
    """The lines of a kernel that map program ids to data (docs/stages.md, rule grid-mapping).

    Every program_id/num_programs call; every assignment that is index arithmetic (no calls but arange,
    cdiv, min/max, multiple_of, max_contiguous, .to) over a program id or a name already derived from
    one, to a fixed point; and every if/while test and for-loop range that reads such a name.
    """
    kinds = ast.Assign | ast.AugAssign | ast.AnnAssign
    assigns = [n for n in ast.walk(fn) if isinstance(n, kinds) and n.value is not None]
    derived: set[str] = set()
    mapping: dict[int, ast.stmt] = {}
    grew = True
    while grew:
        grew = False
        for st in assigns:
            if _index_only(st.value) and (_has_pid(st.value) or _names(st.value) & derived):  # type: ignore[arg-type]
                mapping[id(st)] = st
                if not _targets(st) <= derived:
                    derived |= _targets(st)
                    grew = True
    out = [ast.unparse(st) for st in mapping.values()]
    for n in ast.walk(fn):
        head = n.test if isinstance(n, ast.If | ast.While) else n.iter if isinstance(n, ast.For) else None
        if head is not None and (_has_pid(head) or _names(head) & derived):
            out.append(f"{type(n).__name__.lower()} {ast.unparse(head)}")
        if _call_name(n) in _PID_CALLS:
            out.append(ast.unparse(n))
    return out


def rule_grid_mapping(ctx: RuleContext) -> Iterator[str]:
    """Each launch's grid expression and each kernel's program-id mapping code are unchanged."""
    for k in ctx.parent_kernels():
        if k not in ctx.cand.grids:
            continue  # kernels-kept says it
        old, new = ctx.parent.grids[k], ctx.cand.grids[k]
        if old != new:
            was, now = (" / ".join(sorted(g)) for g in (old, new))
            yield f"the grid of {k} changed from `{was}` to `{now}`; launch it over the same grid"
        before = Counter(grid_mapping_code(ctx.parent.kernels[k]))
        after = Counter(grid_mapping_code(ctx.cand.kernels[k]))
        if before != after:
            gone = [f"`{s}`" for s in (before - after).elements()][:3]
            added = [f"`{s}`" for s in (after - before).elements()][:3]
            what = "; ".join(
                x
                for x in (
                    f"removed or changed {', '.join(gone)}" if gone else "",
                    f"added {', '.join(added)}" if added else "",
                )
                if x
            )
            yield (
                f"in {k}, the code that maps program ids to data changed ({what}); "
                "keep the grid mapping as it is"
            )


def rule_num_stages(ctx: RuleContext) -> Iterator[str]:
    """Each run's num_stages is within ±delta of the parent's for the same BLOCK sizes (else the kernel's)."""
    delta = ctx.stage.constraints.num_stages_max_delta or 0
    for _, p, c in _pairs(ctx):
        for r in c:
            got = r.values["num_stages"]
            if got.ints is None:
                yield f"num_stages in {r.where} is `{got.text}`, which this check cannot read; write a number"
                continue
            refs = [q for q in p if q.blocks == r.blocks] or p
            base = {v for q in refs for v in (q.values["num_stages"].ints or ())}
            bad = sorted(v for v in got.ints if base and all(abs(v - b) > delta for b in base))
            if bad:
                yield (
                    f"num_stages={bad[0]} in {r.where} is more than {delta} away from the current "
                    f"{values_text(base)}; change num_stages by at most ±{delta}"
                )


def rule_autotune_wraps_jit(ctx: RuleContext) -> Iterator[str]:
    """Every launched kernel has @triton.autotune(...) as its outer decorator, directly above @triton.jit
    (only @triton.heuristics may sit between them)."""
    for k in ctx.cand_kernels():
        names = [decorator_name(d) for d in ctx.cand.kernels[k].decorator_list]
        jit = next(i for i, n in enumerate(names) if n.endswith("jit"))
        tune = next((i for i, n in enumerate(names) if n.endswith("autotune")), None)
        if tune is None:
            yield (
                f"{k} is launched without autotuning; put @triton.autotune(configs=[...], key=[...]) "
                "directly above its @triton.jit"
            )
        elif tune > jit:
            yield f"in {k}, @triton.autotune is below @triton.jit; autotune must be the outer decorator"
        elif any(not n.endswith("heuristics") for n in names[tune + 1 : jit]):
            yield f"in {k}, put @triton.autotune directly above @triton.jit"


def rule_config_count(ctx: RuleContext) -> Iterator[str]:
    """Every launched autotuned kernel has between the stage's min and max configs; more where the parent
    runs more BLOCK-size combinations than the max (a stage that keeps BLOCK sizes must keep them all)."""
    lo = ctx.stage.constraints.autotune_min_configs
    hi = ctx.stage.constraints.autotune_max_configs
    for k in ctx.cand_kernels():
        runs = ctx.cand.runs[k]
        if isinstance(runs, str):
            continue  # literal-configs says it
        configs = config_calls(ctx.cand.tree, ctx.cand.kernels[k])
        n = len(configs) if configs is not None else None
        combos = len({r.blocks for r in ctx.parent_runs(k)})
        most = max(hi, combos) if hi is not None else None
        if n is not None and ((lo is not None and n < lo) or (most is not None and n > most)):
            upper = (
                "any number"
                if most is None
                else f"{most}"
                if most == hi
                else f"{most} (the BLOCK-size combinations it runs now)"
            )
            yield f"{k} has {n} autotune configs; use {lo if lo is not None else 1} to {upper}"


def rule_original_config(ctx: RuleContext) -> Iterator[str]:
    """The candidate still starts each kernel with an original config: the one its autotuner chose when
    known, else at least one of the parent's runs (all the num_warps/num_stages values it may take)."""
    for k, p, c in _pairs(ctx):
        have = set().union(*(r.combos() for r in c))
        chosen = ctx.chosen.get(k)
        if chosen:
            blocks = tuple(sorted((n, str(v)) for n, v in chosen.items() if n.upper().startswith("BLOCK")))
            warps = chosen.get("num_warps", DEFAULT_NUM_WARPS)
            want = (blocks, warps, chosen.get("num_stages", DEFAULT_NUM_STAGES))
            if want not in have:
                yield (
                    f"the config {k} runs with now ({_blocks_text(blocks)}, num_warps={want[1]}, "
                    f"num_stages={want[2]}) is missing; always include the original kernel config"
                )
        elif not any(r.combos() <= have for r in p):
            r = p[0]
            yield (
                f"none of the current configs of {k} is kept as it is (e.g. {_blocks_text(r.blocks)}, "
                f"num_warps={r.values['num_warps'].text}, num_stages={r.values['num_stages'].text}); "
                "always include the original kernel config"
            )


def _runtime_args(fn: ast.FunctionDef) -> list[str]:
    a = fn.args
    return [
        x.arg
        for x in (*a.posonlyargs, *a.args, *a.kwonlyargs)
        if x.annotation is None or not dotted_name(x.annotation).endswith("constexpr")
    ]


def rule_kernel_signatures(ctx: RuleContext) -> Iterator[str]:
    """The same kernels are launched, each with the same non-constexpr arguments in the same order."""
    for k in ctx.parent_kernels():
        if k not in ctx.cand.launched:
            continue  # kernels-kept says it
        old, new = _runtime_args(ctx.parent.kernels[k]), _runtime_args(ctx.cand.kernels[k])
        if old != new:
            yield (
                f"the arguments of {k} changed from ({', '.join(old)}) to ({', '.join(new)}); keep its "
                "non-constexpr arguments (tl.constexpr ones may change)"
            )
    for k in ctx.cand_kernels():
        if k not in ctx.parent.kernels:
            yield f"{k} is a new kernel; this stage keeps the same kernels"


def _body_lines(fn: ast.FunctionDef) -> list[str]:
    body = fn.body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]  # the docstring
    return "\n".join(ast.unparse(st) for st in body).splitlines()


def rule_kernel_bodies(ctx: RuleContext) -> Iterator[str]:
    """Each kernel's body (docstring and comments aside) is unchanged; decorators may change."""
    for k in ctx.parent_kernels():
        if k not in ctx.cand.kernels:
            continue  # kernels-kept says it
        old, new = _body_lines(ctx.parent.kernels[k]), _body_lines(ctx.cand.kernels[k])
        if old != new:
            ops = difflib.SequenceMatcher(a=old, b=new, autojunk=False).get_opcodes()
            _, i1, i2, j1, j2 = next(op for op in ops if op[0] != "equal")
            was, now = (f"`{lines[0].strip()}`" if lines else "nothing" for lines in (old[i1:i2], new[j1:j2]))
            yield (
                f"the body of {k} changed (first change: {was} became {now}); in this stage kernel bodies "
                "stay as they are: change launch parameters, configs and the grid only"
            )
