"""The judge's timing (agent/evaluation/judge.py): on the GPU, the accepted candidate timed against eager
and `torch.compile` (agent/evaluation/timing.py), with the baselines this process keeps between candidates.
In the split layout the baselines are timed here and the candidate in its worker, in turns
(agent/evaluation/timing_sides.py). The timed calls' launches are counted and the outputs of a few drawn at
random are checked. Autotuned kernels are re-tuned by the judge's own timing (agent/evaluation/retune.py),
in the worker in the split layout."""

from __future__ import annotations

from typing import Any

from agent.evaluation import baseline_cache, retune, timing, triton_hooks
from agent.evaluation.judge_draws import JudgeState, match_check
from agent.evaluation.timed_calls import TimedCalls
from agent.evaluation.timing_sides import RemoteSide
from agent.evaluation.verdicts import Rejected, describe
from agent.problem import flatten_outputs
from agent.records import Check, Status, Timings

CPU_TIMING_SKIPPED = "no GPU: correctness only, in Triton's interpreter; times are not measured"


class JudgeTiming(JudgeState):
    """Mixed into `Judge`: timing, the timed calls' checks and re-tuning."""

    HOST_TIMING = False  # time on the CPU too, with the host clock (the split protocol's tests)
    device: str
    own_per_call: int | None
    chosen: dict[str, Any]
    bytes_moved: int
    retuned: Any
    rule: Any

    _phase: Any

    def _time(self) -> Timings:
        if self.device != "cuda" and not self.HOST_TIMING:
            return Timings(skipped_reason=CPU_TIMING_SKIPPED)
        if not self.req.time:
            return Timings(skipped_reason="timing not requested")
        assert self.last is not None
        model, new_model, inputs = self.last
        try:
            with self._phase("baselines"):
                compiled = None
                if self.req.baselines:
                    model, compiled = self._baselines(model, inputs)
            if self.runner.in_process:
                calls = TimedCalls(new_model, self.runner.session.module.__name__)
                candidate: Any = calls
            else:
                self.runner.time_start("main", inputs)
                candidate = RemoteSide(self.runner)
            with self._phase("timing"):
                t = timing.time_models(
                    candidate,
                    model,
                    inputs,
                    reps=self.req.timing_reps,
                    baselines=self.req.baselines,
                    bytes_moved=self.bytes_moved,
                    flops=self._flops(),
                    compiled=compiled,
                    device=self.device,
                )
            if self.runner.in_process:
                calls.close()
                counted = (calls.calls, calls.own_launches(), calls.kept)
            else:
                ended, outs = self.runner.time_end()
                counted = (ended.calls, ended.own_launches, list(zip(ended.kept, outs, strict=True)))
                self.chosen = ended.chosen
        except Rejected:
            raise
        except BaseException as e:
            raise Rejected(Status.CRASHED, f"while timing: {describe(e)}") from None
        t.retuned = self.retuned
        self.ledger.add("timing", timing.plausibility(t))
        self._check_timed(model, inputs, *counted)
        return t

    def _baselines(self, model: Any, inputs: list[Any]) -> tuple[Any, Any]:
        """The eager Model and its torch.compile, kept by this process between candidates of one problem."""
        from agent.evaluation import tamper  # deferred: it imports torch at import

        seed = (self.req.seeds or [0])[-1]
        text = self.req.problem.reference_path.read_text()
        key = baseline_cache.cache_key(self.req.problem.name, text, seed, inputs)
        env = tamper.triton_environment()
        kept = baseline_cache.baselines_for(key, model, inputs)
        watch = getattr(getattr(self.runner, "session", None), "watch", None)
        if watch is not None and tamper.triton_environment() != env:
            watch.accept([tamper.TRITON_ENV])  # torch.compile's own settings, not the candidate's
        return kept

    def _check_timed(
        self, model: Any, inputs: list[Any], calls: int, own_launches: int, kept: list[tuple[int, Any]]
    ) -> None:
        """Every timed call launched the candidate's own kernels as its checked calls did, and the outputs
        of timed calls drawn at random match the reference: a candidate honest only while checked fails
        here."""
        need = calls * (self.own_per_call or 0)
        self.ledger.add(
            "timed calls",
            Check(
                name="timed-launches",
                passed=own_launches >= need,
                detail=f"{own_launches} launch{'' if own_launches == 1 else 'es'} of its own kernels in "
                f"{calls} timed calls"
                + (
                    f", fewer than the {self.own_per_call} per call of its checked calls (a result served "
                    "without the work while timed?)"
                    if own_launches < need
                    else f" (its checked calls: {self.own_per_call} per call)"
                ),
            ),
        )
        if kept:
            refs = self._reference(model, inputs, "timed calls")
            for i, out in kept:
                comparison = self._compare(flatten_outputs(out), refs)
                self.ledger.add(
                    f"timed call {i}", match_check("timed-calls", comparison, "matches the reference")
                )
        self._stop_on_failure()

    def _retune(self, model: Any, new_model: Any, inputs: list[Any]) -> None:
        """Re-choose each autotuned kernel's config by the judge's own timing (`agent.evaluation.retune`):
        here, or in the candidate's worker (then its pinned configs are checked with one more call)."""
        if not self.runner.in_process:
            self._retune_remote(model, inputs)
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
            self._wrong_config(problem)

    def _retune_remote(self, model: Any, inputs: list[Any]) -> None:
        reply = self.runner.retune("main")
        self.retuned, self.chosen = reply.notes, reply.chosen
        switched = [n for n in reply.notes if n.chosen != n.autotuner_choice]
        if not switched:
            return
        result = self._call("main", inputs, 0, "re-tuning", "same")
        for c in result.checks:
            self.ledger.add("re-tuning", c)
        refs = self._reference(model, inputs, "re-tuning")
        failed = [c for c in self._compare(result.outputs, refs).checks if not c.passed]
        if failed:
            names = ", ".join(f"{n.chosen} of {n.kernel}" for n in switched)
            self._wrong_config(f"autotune config {names}: {failed[0].name}: {failed[0].detail}")
        self._stop_on_failure()

    def _wrong_config(self, problem: str) -> None:
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
