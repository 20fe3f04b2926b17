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
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from agent.source.kernel_facts import facts
from agent.source.rule_context import RuleContext
from agent.source.stage_rules_kernels import (
    rule_autotune_wraps_jit,
    rule_block_sizes,
    rule_config_count,
    rule_grid_mapping,
    rule_kernel_bodies,
    rule_kernel_signatures,
    rule_num_stages,
    rule_original_config,
)
from agent.source.stage_rules_model import (
    rule_jit_kernel,
    rule_kernels_kept,
    rule_literal_configs,
    rule_model_interface,
    rule_model_new,
    rule_no_torch_compute,
    rule_parameter_values,
    rule_parses,
)

if TYPE_CHECKING:  # the rules read a stage's fields; the stage's loader checks rule names against RULES
    from agent.prompt.stages import Stage


class ConstraintError(ValueError):
    """The check itself cannot run: the parent does not parse, or a stage names an unknown rule."""


class Violation(BaseModel):
    """One broken rule, with a message meant for the LLM's next prompt."""

    rule: str = Field(description="'<stage>.<rule id>', e.g. 'micro.block-sizes'.")
    message: str


@dataclass(frozen=True)
class Rule:
    id: str
    check: Callable[[RuleContext], Iterator[str]]
    needs: tuple[str, ...] = ()  # rules checked first, so that this one can skip what they report

    @property
    def summary(self) -> str:
        return " ".join((self.check.__doc__ or "").split())


RULES: dict[str, Rule] = {
    r.id: r
    for r in (
        Rule("parses", rule_parses),
        Rule("model-new", rule_model_new),
        Rule("jit-kernel", rule_jit_kernel),
        Rule("literal-configs", rule_literal_configs),
        Rule("kernels-kept", rule_kernels_kept),
        Rule("parameter-values", rule_parameter_values, ("literal-configs",)),
        Rule("block-sizes", rule_block_sizes, ("literal-configs", "kernels-kept")),
        Rule("grid-mapping", rule_grid_mapping, ("kernels-kept",)),
        Rule("num-stages", rule_num_stages, ("literal-configs", "kernels-kept")),
        Rule("autotune-wraps-jit", rule_autotune_wraps_jit),
        Rule("config-count", rule_config_count, ("literal-configs",)),
        Rule("original-config", rule_original_config, ("literal-configs", "kernels-kept")),
        Rule("kernel-signatures", rule_kernel_signatures, ("kernels-kept",)),
        Rule("kernel-bodies", rule_kernel_bodies, ("kernels-kept",)),
        Rule("model-interface", rule_model_interface),
        Rule("no-torch-compute", rule_no_torch_compute),
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
    ctx = RuleContext(stage, parent, facts(tree), parent_launched, parent_chosen or {})
    return [
        Violation(rule=f"{stage.name}.{rule}", message=f"{stage.name} stage: {message}")
        for rule in ids
        for message in RULES[rule].check(ctx)
    ]


def violations_text(violations: list[Violation]) -> str:
    """The violations as one block for a prompt or a record: one '- message [rule]' line each."""
    return "\n".join(f"- {v.message} [{v.rule}]" for v in violations)
