"""Static checks of a candidate against the rules of its stage, on the AST, before any GPU time.

A stage's TOML names the rules it applies (`[constraints] rules = [...]`, or the flag fields micro's
file uses, see `StageConstraints.rule_ids`); every stage also gets `GENERIC_RULES`. `check_constraints`
returns one `Violation` per broken clause, its message written for the LLM. docs/stages.md gives the
operational definition of every rule; the docstring of each check below says the same in short.

Vocabulary. A kernel is a `@...jit` function that the code launches as `kernel[grid](...)`. Its *runs*
are the ways it is started: for an autotuned kernel, each `triton.Config` merged with the keywords of
each launch site; for a plain kernel, each launch site. A keyword's value is kept as text, a local name
resolved to the assignments that reach the launch (`BLOCK=BLOCK` reads `min(...)`), and, where
it can be read, as the set of ints it may take (`8 if big else 4` -> {4, 8}). num_warps and num_stages
take Triton's defaults (4 and 3) when absent. Reading these facts is agent/source/kernel_facts.py.
"""

from __future__ import annotations

import ast
import copy
import difflib
from collections import Counter
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from agent.source.anticheat_rules import TENSOR_COMPUTE, TORCH_ALLOWED
from agent.source.kernel_facts import Facts, Run, config_calls, facts
from agent.source.variants import (
    DEFAULT_NUM_STAGES,
    DEFAULT_NUM_WARPS,
    decorator_name,
    dotted_name,
)

if TYPE_CHECKING:  # the rules read a stage's fields; the stage's loader checks rule names against RULES
    from agent.prompt.stages import Stage


class ConstraintError(ValueError):
    """The check itself cannot run: the parent does not parse, or a stage names an unknown rule."""


class Violation(BaseModel):
    """One broken rule, with a message meant for the LLM's next prompt."""

    rule: str = Field(description="'<stage>.<rule id>', e.g. 'micro.block-sizes'.")
    message: str


# ------------------------------------------------------------ the rules (the facts:
# agent/source/kernel_facts.py)

_PID_CALLS = {"program_id", "num_programs"}
# Calls that keep an expression "index arithmetic" for the grid-mapping rule (no loads, no reductions).
_INDEX_CALLS = {"arange", "cdiv", "minimum", "maximum", "multiple_of", "max_contiguous", "to", "min", "max"}


@dataclass
class _Ctx:
    stage: Stage
    parent: Facts
    cand: Facts
    ran: Collection[str] | None
    chosen: dict[str, dict[str, Any]]

    def parent_kernels(self) -> list[str]:
        """The parent's kernels in the stage's scope: launched, and run at the evaluated size when known."""
        return [k for k in self.parent.launched if self.ran is None or k in self.ran]

    def cand_kernels(self) -> list[str]:
        """The candidate's launched kernels, less those the parent had but did not run."""
        skip = set(self.parent.kernels) - set(self.parent_kernels()) if self.ran is not None else set()
        return [k for k in self.cand.launched if k not in skip]

    def parent_runs(self, kernel: str) -> list[Run]:
        runs = self.parent.runs.get(kernel)
        return runs if isinstance(runs, list) else []  # unreadable parent configs: nothing to compare with


def _fmt(values: Collection[Any]) -> str:
    ordered = sorted(values, key=lambda v: (isinstance(v, str), v if not isinstance(v, str) else 0, str(v)))
    return "{" + ", ".join(str(v) for v in ordered) + "}"


def _blocks_text(blocks: tuple[tuple[str, str], ...]) -> str:
    return ", ".join(f"{k}={v}" for k, v in blocks) or "no BLOCK sizes"


def _pairs(ctx: _Ctx) -> Iterator[tuple[str, list[Run], list[Run]]]:
    """(kernel, parent runs, candidate runs) per parent kernel in scope whose runs both sides give.
    A kernel gone or with unreadable configs is skipped: kernels-kept and literal-configs report it."""
    for k in ctx.parent_kernels():
        p, c = ctx.parent_runs(k), ctx.cand.runs.get(k)
        if p and isinstance(c, list):
            yield k, p, c


def _rule_block_sizes(ctx: _Ctx) -> Iterator[str]:
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


def _rule_grid_mapping(ctx: _Ctx) -> Iterator[str]:
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


def _rule_num_stages(ctx: _Ctx) -> Iterator[str]:
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
                    f"{_fmt(base)}; change num_stages by at most ±{delta}"
                )


def _rule_autotune_wraps_jit(ctx: _Ctx) -> Iterator[str]:
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


def _rule_config_count(ctx: _Ctx) -> Iterator[str]:
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


def _rule_original_config(ctx: _Ctx) -> Iterator[str]:
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


def _rule_kernel_signatures(ctx: _Ctx) -> Iterator[str]:
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


def _rule_kernel_bodies(ctx: _Ctx) -> Iterator[str]:
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


def _signature(cls: ast.ClassDef, method: str) -> str | None:
    fn = next((n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == method), None)
    if fn is None:
        return "(self)" if method == "__init__" else None
    args = copy.deepcopy(fn.args)
    for a in (*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg):
        if a is not None:
            a.annotation = None
    return f"({ast.unparse(args)})"


def _rule_model_interface(ctx: _Ctx) -> Iterator[str]:
    """ModelNew's __init__ and forward take the same arguments (names, order, defaults) as the parent's
    ModelNew, or the reference's Model when the parent has no ModelNew; annotations may differ."""
    old, new = ctx.parent.model, ctx.cand.model
    if old is None or new is None or ctx.cand.model_name != "ModelNew":
        return
    for method in ("__init__", "forward"):
        a, b = _signature(old, method), _signature(new, method)
        if a != b:
            yield (
                f"ModelNew.{method}{b or ' is missing'} differs from {ctx.parent.model_name}.{method}{a}; "
                "keep the same arguments"
            )


_NUMERIC_MODULES = {"math", "tl", "triton", "triton.language", "builtins"}
_MODULE_OK = {"Parameter", "ParameterList", "ParameterDict", "Identity"}


def _forward_functions(facts: Facts) -> list[ast.FunctionDef]:
    """ModelNew.forward and every module function or ModelNew method it calls, transitively."""
    methods = {n.name: n for n in facts.model.body if isinstance(n, ast.FunctionDef)}  # type: ignore[union-attr]
    functions = {
        n.name: n for n in facts.tree.body if isinstance(n, ast.FunctionDef) and n.name not in facts.kernels
    }
    todo, seen = [methods["forward"]] if "forward" in methods else [], []
    while todo:
        fn = todo.pop()
        if fn in seen:
            continue
        seen.append(fn)
        for call in (n for n in ast.walk(fn) if isinstance(n, ast.Call)):
            name = dotted_name(call.func)
            if name in functions:
                todo.append(functions[name])
            elif name.startswith("self.") and name[5:] in methods:
                todo.append(methods[name[5:]])
    return seen


def _rule_no_torch_compute(ctx: _Ctx) -> Iterator[str]:
    """forward (and what it calls) computes nothing with PyTorch: no torch.*/F.* call but allocation,
    metadata and views, no tensor compute method (.sum(), .exp(), ...), no `@`, no nn.Module call. What
    counts as either is the anti-cheat's tables (agent/source/anticheat_rules.py): one list for both."""
    if ctx.cand.model is None:
        return
    model = ctx.cand.model
    init = next((n for n in model.body if isinstance(n, ast.FunctionDef) and n.name == "__init__"), None)
    submodules = {
        t.attr
        for n in (ast.walk(init) if init else ())
        if isinstance(n, ast.Assign)
        and isinstance(n.value, ast.Call)
        and dotted_name(n.value.func).split(".")[-2:-1] == ["nn"]
        and dotted_name(n.value.func).rsplit(".", 1)[-1] not in _MODULE_OK
        for t in n.targets
        if isinstance(t, ast.Attribute)
    }
    tail = "; in this stage your Triton kernels do the work (torch may only allocate and reshape)"
    for fn in _forward_functions(ctx.cand):
        for n in ast.walk(fn):
            if isinstance(n, ast.BinOp) and isinstance(n.op, ast.MatMult):
                yield f"`{ast.unparse(n)}` in {fn.name} is a PyTorch matmul{tail}"
            if not isinstance(n, ast.Call):
                continue
            name = dotted_name(n.func)
            head, _, last = name.rpartition(".")
            torch_call = name.startswith("torch.") and not name.startswith("torch.cuda.")
            torch_call = torch_call and name not in TORCH_ALLOWED
            functional = head in ("F", "nn.functional", "torch.nn.functional")
            method = isinstance(n.func, ast.Attribute) and last in TENSOR_COMPUTE
            method = method and head not in _NUMERIC_MODULES
            submodule = name.startswith("self.") and name[5:] in submodules
            if torch_call or functional or method or submodule:
                yield f"`{ast.unparse(n)[:100]}` in {fn.name} computes with PyTorch{tail}"


def _rule_model_new(ctx: _Ctx) -> Iterator[str]:
    """The code defines a top-level `class ModelNew`."""
    if ctx.cand.model_name != "ModelNew":
        yield "the code defines no top-level `class ModelNew(nn.Module)`; the evaluator imports ModelNew"


def _rule_jit_kernel(ctx: _Ctx) -> Iterator[str]:
    """At least one @triton.jit kernel, launched as kernel[grid](...)."""
    if not ctx.cand.kernels:
        yield "the code has no @triton.jit kernel; the work must be done by Triton kernels"
    elif not ctx.cand.launched:
        yield "no @triton.jit kernel is launched as kernel[grid](...); ModelNew must launch your kernels"


def _rule_parameter_values(ctx: _Ctx) -> Iterator[str]:
    """Every keyword a run writes out that matches a stage parameter with listed values (fnmatch pattern,
    e.g. `BLOCK_*`) takes one of those values or a value the parent used there; unreadable values pass."""
    for param in (p for p in ctx.stage.parameters if p.values):
        allowed = {v for v in param.values if isinstance(v, int | float)}
        for k in ctx.cand_kernels():
            runs = ctx.cand.runs[k]
            for r in runs if isinstance(runs, list) else ():  # unreadable: literal-configs says it
                for name in sorted(n for n in r.explicit if fnmatchcase(n, param.name)):
                    kept = {
                        v for q in ctx.parent_runs(k) if name in q.values for v in q.values[name].ints or ()
                    }
                    bad = sorted(v for v in r.values[name].ints or () if v not in allowed | kept)
                    if bad:
                        yield f"{name}={bad[0]} in {r.where} is not one of this stage's {_fmt(param.values)}"


def _rule_literal_configs(ctx: _Ctx) -> Iterator[str]:
    """Every launched autotuned kernel lists its configs literally: `configs=[triton.Config({...}, ...)]`
    with a literal dict, so the rules that read configs can check them (added for those rules)."""
    for k in ctx.cand_kernels():
        if isinstance(ctx.cand.runs[k], str):
            yield ctx.cand.runs[k]  # type: ignore[misc]


def _rule_kernels_kept(ctx: _Ctx) -> Iterator[str]:
    """Every kernel the parent launches (and ran, when known) is still launched, under the same name
    (added for the rules that compare a kernel with the parent's)."""
    for k in ctx.parent_kernels():
        if k not in ctx.cand.launched:
            yield f"kernel {k} is no longer launched as {k}[grid](...); this stage keeps the current kernels"


def _no_check(ctx: _Ctx) -> Iterator[str]:
    """The candidate parses as Python (checked before every other rule)."""
    return iter(())


@dataclass(frozen=True)
class Rule:
    id: str
    check: Callable[[_Ctx], Iterator[str]]
    needs: tuple[str, ...] = ()  # rules checked first, so that this one can skip what they report

    @property
    def summary(self) -> str:
        return " ".join((self.check.__doc__ or "").split())


RULES: dict[str, Rule] = {
    r.id: r
    for r in (
        Rule("parses", _no_check),
        Rule("model-new", _rule_model_new),
        Rule("jit-kernel", _rule_jit_kernel),
        Rule("literal-configs", _rule_literal_configs),
        Rule("kernels-kept", _rule_kernels_kept),
        Rule("parameter-values", _rule_parameter_values, ("literal-configs",)),
        Rule("block-sizes", _rule_block_sizes, ("literal-configs", "kernels-kept")),
        Rule("grid-mapping", _rule_grid_mapping, ("kernels-kept",)),
        Rule("num-stages", _rule_num_stages, ("literal-configs", "kernels-kept")),
        Rule("autotune-wraps-jit", _rule_autotune_wraps_jit),
        Rule("config-count", _rule_config_count, ("literal-configs",)),
        Rule("original-config", _rule_original_config, ("literal-configs", "kernels-kept")),
        Rule("kernel-signatures", _rule_kernel_signatures, ("kernels-kept",)),
        Rule("kernel-bodies", _rule_kernel_bodies, ("kernels-kept",)),
        Rule("model-interface", _rule_model_interface),
        Rule("no-torch-compute", _rule_no_torch_compute),
    )
}
GENERIC_RULES: tuple[str, ...] = ("parses", "model-new", "jit-kernel", "parameter-values")


def stage_rules(stage: Stage) -> tuple[str, ...]:
    """The ids of the rules a candidate of `stage` must keep, in the order they are checked: the generic
    ones (parameter-values only if the stage lists parameter values), then the stage's own, each rule
    preceded by the rules it needs."""
    wanted = [
        r
        for r in (*GENERIC_RULES, *stage.constraints.rule_ids())
        if r != "parameter-values" or any(p.values for p in stage.parameters)
    ]
    unknown = [r for r in wanted if r not in RULES]
    if unknown:
        raise ConstraintError(f"stage {stage.name!r} names unknown rule(s) {', '.join(unknown)}")
    return tuple(dict.fromkeys(n for r in wanted for n in (*RULES[r].needs, r)))


def check_constraints(
    stage: Stage,
    parent_source: str,
    candidate_source: str,
    *,
    parent_launched: Collection[str] | None = None,
    parent_chosen: dict[str, dict[str, Any]] | None = None,
) -> list[Violation]:
    """The rules of `stage` that `candidate_source` breaks, compared with `parent_source`; [] if none.

    `parent_launched` (the parent's EvalResult.kernels_launched) limits the per-kernel rules to kernels
    the parent ran at the evaluated size; `parent_chosen` (its EvalResult.chosen_configs) names the config
    each autotuned kernel ran with, which `original-config` then requires. Without them, every kernel the
    parent launches somewhere is in scope and any one of its configs counts as the original.
    """
    ids = stage_rules(stage)
    try:
        parent = facts(ast.parse(parent_source))
    except SyntaxError as e:
        raise ConstraintError(f"the parent source does not parse: {e.msg} (line {e.lineno})") from None
    try:
        tree = ast.parse(candidate_source)
    except SyntaxError as e:
        return [
            Violation(
                rule=f"{stage.name}.parses",
                message=f"{stage.name} stage: the code does not parse: {e.msg} (line {e.lineno})",
            )
        ]
    ctx = _Ctx(stage, parent, facts(tree), parent_launched, parent_chosen or {})
    return [
        Violation(rule=f"{stage.name}.{rule}", message=f"{stage.name} stage: {message}")
        for rule in ids
        for message in RULES[rule].check(ctx)
    ]


def violations_text(violations: list[Violation]) -> str:
    """The violations as one block for a prompt or a record: one '- message [rule]' line each."""
    return "\n".join(f"- {v.message} [{v.rule}]" for v in violations)
