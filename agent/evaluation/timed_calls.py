"""The candidate as the timing loop calls it, wherever it runs (its worker in the split layout, the judge's
process in the one-process layout): each call counted, the Triton launches of the candidate's own kernels
counted, and the outputs of up to `keep` calls drawn at random kept for the judge to compare.

Which calls are kept is decided after each call has returned, from the operating system's randomness, so
the candidate cannot know during a call whether its outputs will be looked at. The launch count lets the
judge see that every timed call did the work its checked calls did: a candidate honest while checked
and serving a cached result while timed launches nothing in the timed calls.
"""

from __future__ import annotations

import secrets
from typing import Any

from agent.evaluation import triton_hooks
from agent.problem import flatten_outputs


class TimedCalls:
    """`model(*inputs)` for the timing loop, with its launches recorded and a few outputs kept."""

    def __init__(self, model: Any, module_name: str, keep: int = 3, chance: float = 0.05):
        self.model = model
        self.module_name = module_name
        self.keep = keep
        self.chance = chance
        self.rng = secrets.SystemRandom()
        self.calls = 0
        self.kept: list[tuple[int, list[Any]]] = []
        triton_hooks.start_recording()
        triton_hooks.STATE.recording = False  # on during the candidate's calls only, not the baselines'

    def __call__(self, *inputs: Any) -> Any:
        triton_hooks.STATE.recording = True
        try:
            out = self.model(*inputs)
        finally:
            triton_hooks.STATE.recording = False
        self.calls += 1
        if len(self.kept) < self.keep and self.rng.random() < self.chance:
            self.kept.append((self.calls, [o.clone() for o in flatten_outputs(out)]))
        return out

    def own_launches(self) -> int:
        """Launches of kernels defined in the candidate's module, over every call so far."""
        modules = triton_hooks.launch_modules()
        launches = dict(triton_hooks.STATE.launches)
        return sum(n for name, n in launches.items() if modules.get(name) == self.module_name)

    def close(self) -> None:
        triton_hooks.STATE.recording = False
