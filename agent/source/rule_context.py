"""What a stage rule reads (agent/source/stage_rules.py): the stage, the parent's and the candidate's
facts (agent/source/kernel_facts.py), the kernels the parent ran and the configs it chose."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agent.source.kernel_facts import Facts, Run

if TYPE_CHECKING:  # the rules read a stage's fields; the stage's loader checks rule names against RULES
    from agent.prompt.stages import Stage


@dataclass
class RuleContext:
    """One check of a candidate against its parent under one stage."""

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


def values_text(values: Collection[Any]) -> str:
    """A set of values as `{a, b}`, numbers in order before names."""
    ordered = sorted(values, key=lambda v: (isinstance(v, str), v if not isinstance(v, str) else 0, str(v)))
    return "{" + ", ".join(str(v) for v in ordered) + "}"
