"""The candidate's side of an evaluation: the candidate session (`CandidateSession`) imports the untrusted
module (fresh module name, fresh temporary directory), builds ModelNew, and calls it with output poisoning,
Triton launch recording and the run-time guards (`agent.evaluation.guards`) on, reporting outputs, launches
and guard findings. The judge reaches it through a runner (agent/evaluation/runners.py).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.evaluation.verdicts import Rejected, candidate_raised, classify, describe, exit_note
from agent.evaluation.weights import matched_state
from agent.records import Check, Status

if TYPE_CHECKING:  # guards imports torch: the session imports it where it runs
    from agent.evaluation.guards import GuardReport


@dataclass
class CallResult:
    """One candidate call, as the judge sees it."""

    outputs: list[Any]
    inputs_after: list[Any]
    launches: dict[str, int]
    own_kernels: list[str]
    checks: list[Check]  # guard findings: torch-compute, side-stream, threads, tensor-subclass, tamper
    aliasing: list[tuple[int, int]]
    max_configs: int = 1
    work: dict[str, float] | None = None  # host_ms (thread CPU time outside launches), ops (the candidate's)


class CandidateSession:
    """One candidate in this process: import, build ModelNew, call it under the guards."""

    def __init__(self, device: str, workdir: Path, watch: Any = None):
        from agent.evaluation import guards as runtime_guards
        from agent.evaluation import triton_hooks

        triton_hooks.install()
        runtime_guards.install()
        self.device = device
        self.workdir = workdir
        self.module: Any = None
        self.models: dict[str, Any] = {}
        self.inputs: dict[str, list[Any]] = {}
        self.thread_baseline = runtime_guards.baseline_threads()
        self.weights = ""  # how the last build matched the reference's weights (agent.evaluation.weights)
        if watch is None:
            from agent.evaluation.tamper import TamperWatch

            watch = TamperWatch()
        self.watch = watch

    @property
    def file(self) -> str | None:
        return getattr(self.module, "__file__", None)

    def load(self, source: str, allow_torch: list[str] | None = None) -> None:
        """Import the candidate; `allow_torch`: the torch-op policy its calls are guarded under (set on
        every load: a reused worker keeps no earlier candidate's policy)."""
        from agent.evaluation import guards as runtime_guards
        from agent.evaluation import triton_hooks
        from agent.evaluation.candidate import CandidateError, load_candidate
        from agent.evaluation.torch_policy import guard_ops
        from agent.problem import source_hash

        runtime_guards.set_allowed_ops(guard_ops(allow_torch or []))

        triton_hooks.STATE.autotuners.clear()
        triton_hooks.STATE.modules.clear()
        triton_hooks.STATE.launches.clear()
        triton_hooks.select_config(0)
        runtime_guards.begin_candidate(str(self.workdir / f"candidate_{source_hash(source)}.py"))
        try:
            self.module = load_candidate(source, self.workdir)
        except CandidateError as e:
            raise Rejected(Status.COMPILE_ERROR, str(e)) from None
        except BaseException as e:
            status, rule = classify(e)
            raise Rejected(
                status if rule else Status.COMPILE_ERROR,
                f"importing it raised {describe(e)}{exit_note(rule)}",
                rule,
            ) from None

    def build(self, key: str, seed: int, init_inputs: list[Any], state_dict: dict[str, Any]) -> Any:
        import torch

        from agent.problem import default_device

        torch.manual_seed(seed)
        try:
            with default_device(self.device):
                model = self.module.ModelNew(*init_inputs)
            model = model.to(self.device)
            loaded, self.weights = matched_state(state_dict, model.state_dict())
            if loaded is not None:
                model.load_state_dict(loaded)
        except BaseException as e:
            raise candidate_raised(e, f"seed {seed}: building ModelNew raised ", self.file) from None
        self.models[key] = model
        return model

    def call(
        self, key: str, inputs: list[Any], where: str, config: int = 0, poison: bool = True
    ) -> CallResult:
        from agent.evaluation import guards as runtime_guards
        from agent.evaluation import triton_hooks

        model = self.models[key]
        self.inputs[key] = inputs
        triton_hooks.select_config(config)
        report = runtime_guards.GuardReport()
        with _poisoning(poison, report):
            out, launches = self._guarded_call(model, inputs, where, report)
        return self._result(out, inputs, launches, report)

    def _guarded_call(
        self, model: Any, inputs: list[Any], where: str, report: GuardReport
    ) -> tuple[Any, dict[str, int]]:
        """ModelNew called under the run-time guards with its Triton launches recorded; a Rejected if it
        raises."""
        import torch

        from agent.evaluation import guards as runtime_guards
        from agent.evaluation import triton_hooks

        triton_hooks.start_recording()
        try:
            with torch.no_grad(), runtime_guards.guarded(report, self.device, self.thread_baseline):
                out = model(*inputs)
            if self.device == "cuda":
                torch.cuda.synchronize()  # asynchronous errors surface here, inside the check
        except BaseException as e:
            _, rule = classify(e)
            if rule is None and report.threads:  # starting a process or thread failed (the sandbox blocks it)
                raise Rejected(
                    Status.CHEATING,
                    f"threads failed ({where}): {report.threads[0]}; then it raised {describe(e, self.file)}",
                    "threads",
                ) from None
            raise candidate_raised(e, f"{where}: the candidate raised ", self.file) from None
        finally:
            launches = triton_hooks.stop_recording()
        return out, launches

    def _result(
        self, out: Any, inputs: list[Any], launches: dict[str, int], report: GuardReport
    ) -> CallResult:
        """The call's outputs and what the guards, the tamper watch and the launch record found."""
        from agent.evaluation import tensor_checks, triton_hooks
        from agent.problem import flatten_outputs

        plain, subclass_check = _plain_outputs(flatten_outputs(out))
        checks = [subclass_check, *report.checks(plain, self.module.__name__), self.watch.check()]
        modules = triton_hooks.launch_modules()
        own = sorted(k for k in launches if modules.get(k) == self.module.__name__)
        return CallResult(
            outputs=plain,
            inputs_after=inputs,
            launches=dict(launches),
            own_kernels=own,
            checks=checks,
            aliasing=tensor_checks.aliased([o for o in plain if o is not None], inputs),
            max_configs=triton_hooks.max_configs(),
            work={"host_ms": report.work.host_s * 1e3, "ops": float(report.work.ops)},
        )

    def clean(self) -> tuple[bool, str]:
        """Whether this process may serve another candidate: nothing patched, no candidate thread left."""
        from agent.evaluation import guards as runtime_guards

        changed = self.watch.changed()
        if changed:
            return False, f"tampered with {', '.join(changed[:5])}"
        threads = runtime_guards.threads_started_so_far() + runtime_guards.candidate_threads_alive(
            self.thread_baseline
        )
        if threads:
            return False, threads[0]
        if runtime_guards.STATE.generated:
            return False, runtime_guards.STATE.generated[0]
        return True, ""

    def unload(self) -> None:
        from agent.evaluation import guards as runtime_guards

        runtime_guards.end_candidate()
        if self.module is not None:
            sys.modules.pop(self.module.__name__, None)
        self.module = None
        self.models.clear()
        self.inputs.clear()


@contextmanager
def _poisoning(poison: bool, report: GuardReport) -> Iterator[None]:
    """Deterministic algorithms and NaN-filled torch.empty on (`poison`) or off for one call, restored after;
    a candidate that changed them is reported as tampering. Poisoned calls and plain ones are drawn by the
    judge in secret, so the flags tell the candidate nothing about which calls are checked."""
    import torch
    import torch.utils.deterministic

    det = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    fill = torch.utils.deterministic.fill_uninitialized_memory
    torch.use_deterministic_algorithms(poison, warn_only=True)
    torch.utils.deterministic.fill_uninitialized_memory = poison
    try:
        yield
    finally:
        if (
            torch.utils.deterministic.fill_uninitialized_memory,
            torch.are_deterministic_algorithms_enabled(),
        ) != (
            poison,
            poison,
        ):
            report.tamper.append("the candidate changed the deterministic-algorithms or poisoning flags")
        torch.use_deterministic_algorithms(det, warn_only=warn_only)
        torch.utils.deterministic.fill_uninitialized_memory = fill


def _plain_outputs(outs: list[Any]) -> tuple[list[Any], Check]:
    """The outputs with any tensor subclass replaced by None, and the check that says whether there was one
    (a subclass could compare equal to anything)."""
    import torch

    subclassed = [
        f"output {i} is a {type(o).__qualname__}" for i, o in enumerate(outs) if type(o) is not torch.Tensor
    ]
    plain = [o if type(o) is torch.Tensor else None for o in outs]
    check = Check(
        name="tensor-subclass",
        passed=not subclassed,
        detail="; ".join(subclassed) + " (outputs must be plain torch.Tensor)"
        if subclassed
        else "outputs are plain torch.Tensor",
    )
    return plain, check
