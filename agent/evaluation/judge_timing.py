"""The judge's timing (agent/evaluation/judge.py): on the GPU, the accepted candidate timed against eager
and `torch.compile` (agent/evaluation/timing.py) with the baselines a warm worker keeps, the outputs of
timed calls drawn at random and checked, and the re-tuning of autotuned kernels by the judge's own timing
(agent/evaluation/retune.py)."""

from __future__ import annotations

from typing import Any

from agent.evaluation import baseline_cache, retune, timing, triton_hooks
from agent.evaluation.judge_draws import JudgeState, match_check
from agent.evaluation.verdicts import Rejected, describe
from agent.problem import flatten_outputs
from agent.records import Check, Status, Timings

CPU_TIMING_SKIPPED = "no GPU: correctness only, in Triton's interpreter; times are not measured"


class JudgeTiming(JudgeState):
    """Mixed into `Judge`: timing, the timed calls' checks and re-tuning."""

    device: str
    bytes_moved: int
    retuned: Any
    rule: Any

    _phase: Any

    def _time(self) -> Timings:
        if self.device != "cuda":
            return Timings(skipped_reason=CPU_TIMING_SKIPPED)
        if not self.req.time:
            return Timings(skipped_reason="timing not requested")
        from agent.evaluation import tamper  # deferred: it imports torch at import

        assert self.last is not None
        model, new_model, inputs = self.last
        try:
            with self._phase("baselines"):
                compiled = None
                if self.req.baselines:
                    seed = (self.req.seeds or [0])[-1]
                    text = self.req.problem.reference_path.read_text()
                    key = baseline_cache.cache_key(self.req.problem.name, text, seed, inputs)
                    env = tamper.triton_environment()
                    model, compiled = baseline_cache.baselines_for(key, model, inputs)
                    watch = getattr(getattr(self.runner, "session", None), "watch", None)
                    if watch is not None and tamper.triton_environment() != env:
                        watch.accept([tamper.TRITON_ENV])  # torch.compile's own settings, not the candidate's
            sampler = _TimedSampler(new_model, self.rng)
            with self._phase("timing"):
                t = timing.time_models(
                    sampler,
                    model,
                    inputs,
                    reps=self.req.timing_reps,
                    baselines=self.req.baselines,
                    bytes_moved=self.bytes_moved,
                    flops=self._flops(),
                    compiled=compiled,
                )
        except BaseException as e:
            raise Rejected(Status.CRASHED, f"while timing: {describe(e)}") from None
        t.retuned = self.retuned
        self.ledger.add("timing", timing.plausibility(t))
        self._check_timed(model, inputs, sampler)
        return t

    def _check_timed(self, model: Any, inputs: list[Any], sampler: _TimedSampler) -> None:
        """Outputs of timed calls drawn at random, against the reference: a candidate honest only while
        checked is wrong here."""
        if not sampler.kept:
            return
        refs = self._reference(model, inputs, "timed calls")
        for i, out in sampler.kept:
            comparison = self._compare(flatten_outputs(out), refs)
            self.ledger.add(
                f"timed call {i}", match_check("timed-calls", comparison, "matches the reference")
            )
        self._stop_on_failure()

    def _retune(self, model: Any, new_model: Any, inputs: list[Any]) -> None:
        """Re-choose each autotuned kernel's config by the judge's own timing (`agent.evaluation.retune`)."""
        if new_model is None:
            return
        import torch

        refs: list[Any] = []

        def check(out: Any) -> str | None:
            if not refs:
                refs.extend(self._reference(model, inputs, "re-tuning"))
            failed = [c for c in self._compare(flatten_outputs(out), refs).checks if not c.passed]
            return f"{failed[0].name}: {failed[0].detail}" if failed else None

        try:
            with torch.no_grad():
                self.retuned, problem = retune.retune(
                    list(triton_hooks.STATE.autotuners), lambda: new_model(*inputs), check
                )
        except Rejected:
            raise
        except BaseException as e:
            raise Rejected(Status.CRASHED, f"while re-tuning its autotune configs: {describe(e)}") from None
        if problem is not None:
            self.rule = "autotune-config"
            self.ledger.add("re-tuning", Check(name="autotune-config", passed=False, detail=problem))
            raise Rejected(
                Status.INCORRECT,
                f"autotune-config failed (re-tuning at the full size): {problem}; the autotuner may pick "
                "this config in another process",
                "autotune-config",
            )

    def _flops(self) -> float | None:
        expr = self.req.problem.flops
        if not expr:
            return None
        try:
            return float(eval(expr, {}, dict(vars(self.ref_module))))
        except Exception:
            return None


class _TimedSampler:
    """The candidate as the timing loop calls it; keeps the outputs of up to 3 calls drawn at random."""

    def __init__(self, model: Any, rng: Any, keep: int = 3, chance: float = 0.05):
        self.model, self.rng, self.keep, self.chance = model, rng, keep, chance
        self.calls = 0
        self.kept: list[tuple[int, Any]] = []

    def __call__(self, *args: Any) -> Any:
        out = self.model(*args)
        self.calls += 1
        if len(self.kept) < self.keep and self.rng.random() < self.chance:
            self.kept.append((self.calls, [o.clone() for o in flatten_outputs(out)]))
        return out
