"""The stage rules on the module and its model (agent/source/stage_rules.py has the table): ModelNew's
interface, no torch compute in the first version, a jit kernel, parameter values, literal configs, kernels
kept."""

from __future__ import annotations

import ast
import copy
from collections.abc import Iterator
from fnmatch import fnmatchcase

from agent.source.anticheat_rules import TENSOR_COMPUTE, TORCH_ALLOWED
from agent.source.kernel_facts import Facts
from agent.source.rule_context import RuleContext, values_text
from agent.source.variants import dotted_name


def _signature(cls: ast.ClassDef, method: str) -> str | None:
    fn = next((n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == method), None)
    if fn is None:
        return "(self)" if method == "__init__" else None
    args = copy.deepcopy(fn.args)
    for a in (*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg):
        if a is not None:
            a.annotation = None
    return f"({ast.unparse(args)})"


def rule_model_interface(ctx: RuleContext) -> Iterator[str]:
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


def rule_no_torch_compute(ctx: RuleContext) -> Iterator[str]:
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


def rule_model_new(ctx: RuleContext) -> Iterator[str]:
    """The code defines a top-level `class ModelNew`."""
    if ctx.cand.model_name != "ModelNew":
        yield "the code defines no top-level `class ModelNew(nn.Module)`; the evaluator imports ModelNew"


def rule_jit_kernel(ctx: RuleContext) -> Iterator[str]:
    """At least one @triton.jit kernel, launched as kernel[grid](...)."""
    if not ctx.cand.kernels:
        yield "the code has no @triton.jit kernel; the work must be done by Triton kernels"
    elif not ctx.cand.launched:
        yield "no @triton.jit kernel is launched as kernel[grid](...); ModelNew must launch your kernels"


def rule_parameter_values(ctx: RuleContext) -> Iterator[str]:
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
                        yield (
                            f"{name}={bad[0]} in {r.where} is not one of this stage's "
                            f"{values_text(param.values)}"
                        )


def rule_literal_configs(ctx: RuleContext) -> Iterator[str]:
    """Every launched autotuned kernel lists its configs literally: `configs=[triton.Config({...}, ...)]`
    with a literal dict, so the rules that read configs can check them (added for those rules)."""
    for k in ctx.cand_kernels():
        if isinstance(ctx.cand.runs[k], str):
            yield ctx.cand.runs[k]  # type: ignore[misc]


def rule_kernels_kept(ctx: RuleContext) -> Iterator[str]:
    """Every kernel the parent launches (and ran, when known) is still launched, under the same name
    (added for the rules that compare a kernel with the parent's)."""
    for k in ctx.parent_kernels():
        if k not in ctx.cand.launched:
            yield f"kernel {k} is no longer launched as {k}[grid](...); this stage keeps the current kernels"


def rule_parses(ctx: RuleContext) -> Iterator[str]:
    """The candidate parses as Python (checked before every other rule)."""
    return iter(())
