"""The judge: decides on one candidate, with the reference on its side and the candidate behind a runner.

The judge is kept apart from the candidate session (`agent.evaluation.candidate_session`), so that the code
deciding a
verdict never has to trust the code being judged.

The **judge** (`Judge`) builds the reference Model and draws the inputs, computes the reference outputs,
and compares: values, unwritten (poisoned) elements, NaN/Inf, shape/dtype/device, input mutation,
determinism, plus the extra draws (in-place refreshed inputs and fresh tensors against result caches,
a scaled value distribution, another shape). It talks to the candidate through a runner
(`agent.evaluation.runners`: `RemoteRunner` to a worker process, `InProcessRunner` in its own process;
where each is used is in `agent.evaluation.worker`).

Per seed: the reference Model and ModelNew are built with the seed, the inputs drawn with a secret seed
the candidate cannot know (so nothing computed in `__init__` can match them), then candidate -> reference
-> candidate. Under Triton's interpreter (the CPU) the first seed is checked once per autotune config.
On the GPU the accepted candidate is then timed (see `agent.evaluation.timing`), after the judge re-tunes its
autotuned kernels (`agent.evaluation.retune`); both are in agent/evaluation/judge_timing.py.
"""

from __future__ import annotations

import contextlib
import secrets
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.evaluation import draws, triton_hooks
from agent.evaluation.judge_draws import ExtraDraws, kernel_check
from agent.evaluation.judge_timing import JudgeTiming
from agent.evaluation.verdicts import Ledger, Rejected, describe
from agent.problem import (
    ProblemError,
    _call,
    build_model,
    check_inputs,
    default_device,
    flatten_outputs,
    load_reference,
)
from agent.records import Check, EvalRequest, EvalResult, Status, Timings

if TYPE_CHECKING:
    from agent.evaluation.candidate_session import CallResult

# Failed checks that make a rejection CHEATING rather than INCORRECT.
CHEATING_CHECKS = (
    "process-exit",
    "forged-result",
    "tamper",
    "code-generator",
    "tensor-subclass",
    "side-stream",
    "threads",
    "torch-compute",
    "no-triton-kernel",
    "result-cache",
    "launch-covers-output",
    "host-compute",
    "timed-launches",
)


# --- building the problem's side (the judge) -------------------------------------------------------


def full_fp32() -> None:
    """Float32 matmuls and convolutions in full float32 in this process, for every phase alike.

    cuDNN runs float32 convolutions in TF32 by default (`torch.backends.cudnn.allow_tf32`), ~1e-3 off: an
    exact float32 kernel failed a level-1 conv1d at the float32 tolerance on an H200 against such a
    reference. One setting for the reference, the candidate (its allowed torch ops), the timed calls, eager
    and torch.compile: a setting that changed between checking and timing would tell a candidate which
    phase it is in, and eager would be timed at another precision than the one its outputs are held to.
    The tamper watch checks that the candidate leaves both flags as they are."""
    import torch

    torch.set_float32_matmul_precision("highest")
    torch.backends.cudnn.allow_tf32 = False


def draw_inputs(module: Any, path: Path, device: str, seed: int) -> list[Any]:
    import torch

    torch.manual_seed(seed)
    with default_device(device):
        inputs = check_inputs(path, _call(path, "get_inputs()", module.get_inputs))
    return [x.to(device) if isinstance(x, torch.Tensor) else x for x in inputs]


# --- the judge --------------------------------------------------------------------------------------


class Judge(ExtraDraws, JudgeTiming):
    """Decides on one candidate, with the reference on its side and the candidate behind a runner."""

    def __init__(self, request: EvalRequest, runner: Any, ref_module: Any = None):
        self.req = request
        self.device = request.device
        self.runner = runner
        self.ref_module = ref_module
        self.ledger = Ledger()
        self.kernels: dict[str, int] = {}
        self.max_abs: float | None = None
        self.max_rel: float | None = None
        self.bytes_moved = 0
        self.last: tuple[Any, Any, list[Any]] | None = None
        self.draws: list[str] = []
        self.ref_mutates = False
        self.rule: str | None = None
        self.phases: dict[str, float] = {}
        self.retuned: list[Any] = []
        self.chosen: dict[str, Any] = {}  # each autotuned kernel's config in the timed calls (split layout)
        self.own_per_call: int | None = None  # launches of its own kernels in each checked call, the fewest
        self.rng = (
            secrets.SystemRandom()
        )  # which calls are poisoned, how many calls: the candidate can't know
        self.samples: list[draws.Sample] = []
        self.small_calls: list[float] = []  # seconds of each candidate call at the small shape
        self.calls = 0
        self.started = time.monotonic()

    @property
    def interpreting(self) -> bool:
        return self.device == "cpu"

    def _result(self, status: Status, reason: str = "", timings: Timings | None = None) -> EvalResult:
        return EvalResult(
            status=status,
            reason=reason,
            rule=self.rule if status != Status.ACCEPTED else None,
            checks=self.ledger.summary(),
            phases_s={k: round(v, 4) for k, v in self.phases.items()},
            timings=timings,
            kernels_launched=self.kernels,
            max_abs_err=self.max_abs,
            max_rel_err=self.max_rel,
        )

    def run(self) -> EvalResult:
        full_fp32()
        if self.ref_module is None:
            try:
                self.ref_module = load_reference(self.req.problem, self.req.small)
            except ProblemError as e:
                return self._result(Status.CRASHED, f"the problem's reference failed: {e}")
        try:
            with self._phase("load"):
                quick = self.device == "cuda" and self.req.time  # the judge re-tunes its autotuned kernels
                self.runner.load(self.req.candidate_source, self.req.problem.allow_torch, quick)
            self.ledger.add("load", Check(name="transport", passed=True, detail=self.runner.transport))
            for i, seed in enumerate(self.req.seeds or [0]):
                with self._phase(f"seed {seed}"):
                    self._check_seed(i, seed)
                if i == 0 and self.device == "cuda" and self.req.time and self.last is not None:
                    # Re-tune now, so the config that will be timed is the one the other seeds and the
                    # extra draws check at this shape (agent/evaluation/retune.py).
                    with self._phase("retune"):
                        self._retune(*self.last)
            if self.last is not None:
                with self._phase("repeated calls"):
                    self._repeat()
            if self.req.extra_checks:
                with self._phase("extra draws"):
                    self._extra_checks()
                with self._phase("larger draws"):
                    self._larger_draws()
                self.ledger.add("work", draws.scaling_check(self.samples))
                self._stop_on_failure()
            self.ledger.add("inputs", Check(name="input-draws", passed=True, detail="; ".join(self.draws)))
            timings = self._time()
        except Rejected as r:
            self.rule = r.rule or self.rule
            if r.rule and r.rule not in {c.name for _, c in self.ledger.failures()}:
                self.ledger.add("candidate", Check(name=r.rule, passed=False, detail=r.reason))
            return self._result(r.status, r.reason)
        result = self._result(Status.ACCEPTED, timings=timings)
        if self.device == "cuda":
            result.chosen_configs = triton_hooks.chosen_configs() if self.runner.in_process else self.chosen
        return result

    @contextlib.contextmanager
    def _phase(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.phases[name] = self.phases.get(name, 0.0) + time.perf_counter() - start

    # --- drawing and building ---

    @property
    def call_s(self) -> float | None:
        """The median candidate call at the small shape (the first ones compile and autotune), to bound
        the larger draws."""
        return statistics.median(self.small_calls) if self.small_calls else None

    def _draw(self, module: Any, label: str) -> list[Any]:
        seed = secrets.randbits(48)
        self.draws.append(f"{label}: input seed {seed}")
        try:
            with self._phase("of which: drawing inputs"):
                return draw_inputs(module, self.req.problem.reference_path, self.device, seed)
        except ProblemError as e:
            raise Rejected(Status.CRASHED, f"{label}: the problem's reference failed: {e}") from None

    def _build(self, module: Any, key: str, seed: int) -> Any:
        try:
            model, init_inputs = build_model(module, self.req.problem.reference_path, self.device, seed)
        except ProblemError as e:
            raise Rejected(Status.CRASHED, f"seed {seed}: the problem's reference failed: {e}") from None
        how = self.runner.build(key, seed, init_inputs, model.state_dict())
        self.ledger.add(f"seed {seed}", Check(name="weights", passed=True, detail=how or "not reported"))
        return model

    def _call(
        self, key: str, inputs: list[Any], config: int, where: str, mode: str, poison: bool | None = None
    ) -> CallResult:
        """mode: "new" (inputs the candidate has not seen), "same" (the very tensors of its last call, holding
        the values sent), "refresh" (those tensors, refilled in place with new values). `poison`: whether
        torch.empty holds NaN in this call (drawn at random when not given)."""
        import torch

        poison = self.rng.random() < 0.5 if poison is None else poison
        start = time.perf_counter()
        with self._phase("of which: candidate calls"):
            result = self.runner.call(key, inputs, mode, config, where, poison)
        spent = time.perf_counter() - start
        if key == "main":
            self.small_calls.append(spent)
        self.calls += 1
        work = result.work or {}
        self.samples.append(
            draws.Sample(
                where=where.split(", call")[0],
                elements=sum(x.numel() for x in inputs if isinstance(x, torch.Tensor)),
                out_bytes=sum(o.nbytes for o in result.outputs if isinstance(o, torch.Tensor)),
                host_ms=float(work.get("host_ms", 0.0)),
                ops=float(work.get("ops", 0.0)),
            )
        )
        return result

    def _reference(self, model: Any, inputs: list[Any], where: str) -> list[Any]:
        import torch

        try:
            with torch.no_grad(), self._phase("of which: reference calls"):
                out = model(*inputs)
                if self.device == "cuda":
                    torch.cuda.synchronize()
        except Exception as e:
            raise Rejected(Status.CRASHED, f"{where}: the reference Model raised {describe(e)}") from None
        return flatten_outputs(out)

    # --- correctness ---

    def _check_seed(self, index: int, seed: int) -> None:
        self.last = None  # free the previous seed's tensors before building this one's
        model = self._build(self.ref_module, "main", seed)
        inputs = self._draw(self.ref_module, f"seed {seed}")
        if self.interpreting:
            k, n = 0, 1
            while k < n:  # every autotune config on the first seed; config 0 on the others
                found = self._check_once(model, inputs, f"seed {seed}, config {k}", k, fresh=k == 0)
                if index == 0:
                    n = found  # known once the candidate's kernels exist
                k += 1
        else:
            self._check_once(model, inputs, f"seed {seed}", 0, fresh=True)
        self.last = (model, self.runner.model("main") if self.runner.in_process else None, inputs)

    def _count_own(self, c: CallResult) -> None:
        """The fewest launches of its own kernels in a checked call: what every timed call must match."""
        own = sum(c.launches.get(k, 0) for k in c.own_kernels)
        self.own_per_call = own if self.own_per_call is None else min(self.own_per_call, own)

    def _guard_checks(self, where: str, result: CallResult) -> None:
        for c in result.checks:
            self.ledger.add(where, c)

    def _check_once(self, model: Any, inputs: list[Any], where: str, config: int, fresh: bool) -> int:
        from agent.evaluation import tensor_checks

        pristine = tensor_checks.clone_inputs(inputs)
        poison = self.rng.random() < 0.5  # one call of the two poisoned, which one drawn in secret
        c1 = self._call("main", inputs, config, f"{where}, call 1", "new" if fresh else "same", poison)
        changed1 = tensor_checks.changed_inputs(c1.inputs_after, pristine)
        if self.runner.in_process:
            tensor_checks.restore_inputs(inputs, pristine, changed1)
        refs = self._reference(model, inputs, where)
        ref_changed = tensor_checks.changed_inputs(inputs, pristine)
        tensor_checks.restore_inputs(inputs, pristine, ref_changed)
        self.ref_mutates |= bool(ref_changed)
        c2 = self._call("main", inputs, config, f"{where}, call 2", "same", not poison)
        changed2 = tensor_checks.changed_inputs(c2.inputs_after, pristine)
        if self.runner.in_process:
            tensor_checks.restore_inputs(inputs, pristine, changed2)
        del pristine

        add = self.ledger.add
        for call, c in (("call 1", c1), ("call 2", c2)):
            self._guard_checks(f"{where}, {call}", c)
        for call, c in (("call 1", c1), ("call 2", c2)):
            add(f"{where}, {call}", kernel_check(c))
        if not self.kernels:  # the second call: the first may include autotuning's benchmark launches
            self.kernels = dict(c2.launches)
        self._count_own(c2)
        ref_aliases = bool(tensor_checks.aliased(refs, inputs))
        if not ref_aliases:  # before input-mutation: returning the input is the more telling finding
            for call, c in (("call 1", c1), ("call 2", c2)):
                add(f"{where}, {call}", tensor_checks.aliasing_check(c.aliasing))
        if ref_changed:
            add(
                where,
                Check(
                    name="input-mutation",
                    passed=True,
                    detail="not checked: the reference itself changes its inputs",
                ),
            )
        else:
            add(f"{where}, call 1", tensor_checks.check_input_mutation(changed1))
            add(f"{where}, call 2", tensor_checks.check_input_mutation(changed2))
        spec = self.req.problem
        comparable = True
        for call, c in (("call 1", c1), ("call 2", c2)):
            cmp = self._compare(c.outputs, refs)
            for check in cmp.checks:
                add(f"{where}, {call}", check)
            comparable &= all(
                ch.passed for ch in cmp.checks if ch.name in ("output-count", "type", "shape", "dtype")
            )
            self.max_abs = _max(self.max_abs, cmp.max_abs_err)
            self.max_rel = _max(self.max_rel, cmp.max_rel_err)
        if comparable:
            add(where, tensor_checks.check_deterministic(c1.outputs, c2.outputs, spec.atol, spec.rtol))
        add(where, tensor_checks.check_reference_signal(refs))
        self.bytes_moved = sum(t.nbytes for t in tensor_checks.tensors(inputs)) + sum(t.nbytes for t in refs)
        self._stop_on_failure()
        return c1.max_configs

    def _compare(self, outs: list[Any], refs: list[Any], atol: float | None = None) -> Any:
        from agent.evaluation import compare as verify

        spec = self.req.problem
        try:
            with self._phase("of which: comparing outputs"):
                return verify.compare_outputs(outs, refs, spec.atol if atol is None else atol, spec.rtol)
        except Exception as e:
            return verify.Comparison(
                [Check(name="values", passed=False, detail=f"could not compare: {describe(e)}")]
            )

    def _stop_on_failure(self) -> None:
        failures = self.ledger.failures()
        if not failures:
            return
        cheat = [(w, c) for w, c in failures if c.name in CHEATING_CHECKS]
        # An unwritten element shows as the poison in the poisoned call and as stale memory (wrong values)
        # in the plain one: "written" says why.
        unwritten = [(w, c) for w, c in failures if c.name == "written"]
        where, check = (cheat or unwritten or failures)[0]
        self.rule = check.name
        raise Rejected(
            Status.CHEATING if cheat else Status.INCORRECT,
            f"{check.name} failed ({where}): {check.detail}",
            check.name,
        )


def _max(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else max(a, b)
