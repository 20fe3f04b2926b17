"""The judge's draws beyond the seeds (a part of `agent.evaluation.judge.Judge`): calls repeated well past
any small counter, new values in the same tensors and in fresh ones (result caches), another value
distribution, another shape, one draw per dimension at its real size and above each size threshold in the
source (`agent.evaluation.draws`)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from agent.evaluation import draws
from agent.evaluation.verdicts import Rejected
from agent.problem import ProblemError, build_model, flatten_outputs, load_reference
from agent.records import Check

if TYPE_CHECKING:
    from agent.evaluation.candidate_session import CallResult

WARNING_SKIPPED = "warning: not checked: "
# The other value distributions, x * scale + shift for floating inputs, tried in order.
DISTRIBUTIONS = ((100.0, 3.0), (4.0, 1.0))


class JudgeState:
    """What the parts of `Judge` mixed into it (ExtraDraws, JudgeTiming) use of it: its request, runner,
    ledger, random source and call helpers."""

    req: Any
    runner: Any
    ledger: Any
    rng: Any
    last: Any
    ref_module: Any

    _reference: Any
    _compare: Any
    _stop_on_failure: Any


class ExtraDraws(JudgeState):
    """Mixed into `Judge`: the draws beyond the seeds."""

    ref_mutates: bool
    call_s: float | None
    calls: int

    _draw: Any
    _call: Any
    _guard_checks: Any

    # --- extra draws: result caches, another value distribution, another shape ---

    def _extra_checks(self) -> None:
        if self.ref_mutates:
            self._skip("result-cache", "the reference changes its inputs, so extra draws are not made")
            return
        assert self.last is not None
        model, _, inputs = self.last
        # 1. New values written into the very tensors of the last call (same objects, same pointers).
        import torch

        new = self._draw(self.ref_module, "result-cache, same tensors")
        for x, n in zip(inputs, new, strict=True):
            if isinstance(x, torch.Tensor):
                x.copy_(n)
        del new
        self._extra(
            "result-cache", model, "main", inputs, "same input tensors refilled with new values", refresh=True
        )
        # 2. Fresh tensors (new objects, new values).
        fresh = self._draw(self.ref_module, "result-cache, new tensors")
        self._extra("result-cache", model, "main", fresh, "new input tensors with new values")
        del fresh
        # 3. Another value distribution (floating inputs only): the first of DISTRIBUTIONS on which the
        #    reference stays finite (x * 100 + 3 overflows an fp16 matmul, for one).
        self._other_distribution(model)
        # 4. Another shape.
        self._other_shape()

    def _other_distribution(self, model: Any) -> None:
        import torch

        for scale, shift in DISTRIBUTIONS:
            what = f"floating inputs drawn as x * {scale:g} + {shift:g}"
            scaled = self._draw(self.ref_module, f"other-distribution x * {scale:g} + {shift:g}")
            floats = [t for t in scaled if isinstance(t, torch.Tensor) and t.is_floating_point()]
            if not floats:
                self._skip("other-distribution", "no floating inputs")
                return
            for t in floats:
                t.mul_(scale).add_(shift)
            refs = self._reference(model, scaled, what)
            if all(bool(torch.isfinite(r).all()) for r in refs if r.is_floating_point()):
                atol = self._own_error_atol(model, scaled, refs)
                if atol is not None:
                    what += f" (atol {atol:.3g}: 8x PyTorch's own error against float64 there)"
                self._extra("other-distribution", model, "main", scaled, what, refs=refs, atol=atol)
                return
            del scaled, floats, refs
        self._skip("other-distribution", "the reference is not finite on any of the scaled distributions")

    def _own_error_atol(self, model: Any, inputs: list[Any], refs: list[Any]) -> float | None:
        """An absolute tolerance for a draw whose values make summation order matter (x * 100 + 3 through a
        matmul cancels terms of ~1e5 into results of ~1): 8 times the largest error of PyTorch's own
        float32 result against the same Model in float64, when that exceeds the problem's tolerance; None
        when it does not, or when the reference cannot run in float64. An approximation (an fp16
        accumulator, a polynomial in place of exp) errs by orders of magnitude more than reordering does."""
        import copy

        import torch

        from agent.evaluation import compare as verify

        floats = [r for r in refs if isinstance(r, torch.Tensor) and r.dtype == torch.float32]
        if not floats or len(floats) != len(refs):
            return None
        try:
            with torch.no_grad():
                wide = copy.deepcopy(model).double()
                args = [
                    t.double() if isinstance(t, torch.Tensor) and t.is_floating_point() else t for t in inputs
                ]
                refs64 = flatten_outputs(wide(*args))
            own = max(float((r.double() - w).abs().max()) for r, w in zip(refs, refs64, strict=True))
        except Exception:
            return None
        base, _ = verify.tolerance(torch.float32, self.req.problem.atol, self.req.problem.rtol)
        return 8 * own if 8 * own > base else None

    def _extra(
        self,
        name: str,
        model: Any,
        key: str,
        inputs: list[Any],
        what: str,
        refresh: bool = False,
        refs: list[Any] | None = None,
        poison: bool | None = None,
        mode: str = "new",
        atol: float | None = None,
    ) -> None:
        if refs is None:
            refs = self._reference(model, inputs, what)
        c = self._call(key, inputs, 0, f"{name} ({what})", "refresh" if refresh else mode, poison)
        self._guard_checks(f"{name} ({what})", c)
        if not c.own_kernels:
            self.ledger.add(
                f"{name} ({what})",
                Check(
                    name="no-triton-kernel",
                    passed=False,
                    detail="no Triton kernel defined in the candidate ran",
                ),
            )
        self.ledger.add(
            what,
            match_check(name, self._compare(c.outputs, refs, atol), f"outputs match the reference ({what})"),
        )
        self._stop_on_failure()

    def _repeat(self) -> None:
        """Calls go on well past any small counter, and how many is drawn: up to 50 to 66 calls in all (at
        least 16 more), at a tiny shape (every shape global at most `draws.TINY`) when the reference runs
        there, 3 of them (and the last) compared; the extra draws that follow come later still."""
        assert self.last is not None
        model, _, inputs = self.last
        key = "main"
        tiny = draws.tiny(dict(self.req.problem.small_shapes)) if self.req.small else None
        if tiny is not None:
            prepared = self._prepare_shape(
                "repeated calls", tiny, ", ".join(f"{k}={v}" for k, v in tiny.items())
            )
            if prepared is not None:
                model, inputs, key = prepared[0], prepared[1], "alt"
        n = max(16, self.rng.randint(50, 66) - self.calls)  # 50 to 66 calls in all, at least 16 more
        compared = set(self.rng.sample(range(n - 1), 3)) | {n - 1}
        refs: list[Any] = []
        for i in range(n):
            where = f"repeated calls, call {i + 1} of {n}"
            # the very tensors again, untouched: what a timing loop does (a cache keyed on the tensor hits)
            c = self._call(key, inputs, 0, where, "again" if i else "new")
            self._guard_checks(where, c)
            self.ledger.add(where, kernel_check(c))
            self._stop_on_failure()
            if i not in compared:
                continue
            if not refs:
                refs = self._reference(model, inputs, "repeated calls")
            ok = f"{n} more calls; calls {', '.join(str(k + 1) for k in sorted(compared))} match"
            self.ledger.add(where, match_check("repeated-calls", self._compare(c.outputs, refs), ok))
            self._stop_on_failure()

    def _larger_draws(self) -> None:
        """One draw per dimension at its real size (the others small) and one above each threshold the
        source compares against, within the bounds of `agent.evaluation.draws`."""
        import torch

        spec = self.req.problem
        if not self.req.small or not spec.small_shapes or self.last is None:
            return
        try:
            real = {k: getattr(load_reference(spec, small=False), k) for k in spec.small_shapes}
        except (ProblemError, AttributeError) as e:
            self._skip("larger-shape", f"the reference's real sizes could not be read ({e})")
            return
        in_bytes = sum(t.nbytes for t in self.last[2] if isinstance(t, torch.Tensor))
        deadline = getattr(self.runner, "deadline", None)  # the evaluation's time limit, when it has one
        budget = draws.draw_budget_s()
        if deadline is not None:
            budget = min(budget, (deadline - time.monotonic()) * 0.5)
        for why, shape in draws.plans(
            dict(spec.small_shapes), real, draws.thresholds(self.req.candidate_source)
        ):
            start = time.monotonic()
            small, call_s = dict(spec.small_shapes), self.call_s or 1.0
            skip = draws.affordable(small, shape, in_bytes, call_s, budget)
            if skip and "real size" in why:  # the largest size of that dimension that fits, instead
                shape, why = draws.fitting(small, shape, call_s, budget, why)
                skip = draws.affordable(small, shape, in_bytes, call_s, budget) if shape else skip
            if skip or not shape:
                self._skip("larger-shape", f"{why}: {skip}")
                continue
            self._shape_draw("larger-shape", shape, why, calls=2)
            budget -= time.monotonic() - start

    def _skip(self, name: str, why: str) -> None:
        self.ledger.add("extra draws", Check(name=name, passed=True, detail=f"{WARNING_SKIPPED}{why}"))

    def _alt_shapes(self) -> dict[str, int | float] | None:
        spec = self.req.problem
        if not spec.small_shapes:
            return None
        if not self.req.small:
            return dict(spec.small_shapes)  # the full-size run: the small shapes are the other shape
        alt: dict[str, int | float] = {}
        for k, v in spec.small_shapes.items():
            alt[k] = v + v // 3 + 1 if isinstance(v, int) and not isinstance(v, bool) and v > 0 else v
        return alt if alt != dict(spec.small_shapes) else None

    def _other_shape(self) -> None:
        alt = self._alt_shapes()
        if alt is None:
            self._skip("other-shape", "the problem names no shape globals to vary (small_shapes)")
            return
        self._shape_draw("other-shape", alt, ", ".join(f"{k}={v}" for k, v in alt.items()))

    def _prepare_shape(
        self, name: str, shape: dict[str, int | float], what: str
    ) -> tuple[Any, list[Any], str] | None:
        """The reference Model, inputs and the candidate's "alt" model at other shape globals, or None (and a
        warning) when the reference fails there."""
        try:
            module = load_reference(self.req.problem, small=False)
            for k, v in shape.items():
                setattr(module, k, v)
            seed = (self.req.seeds or [0])[0]
            model, init_inputs = build_model(module, self.req.problem.reference_path, self.device, seed)
            inputs = self._draw(module, f"{name} {what}")
            self._reference(model, inputs, f"{name} {what}")
        except (ProblemError, Rejected) as e:
            self._skip(name, f"the reference fails at {what} ({e})")
            return None
        self.runner.build("alt", seed, init_inputs, model.state_dict())
        return model, inputs, "alt"

    def _shape_draw(self, name: str, shape: dict[str, int | float], what: str, calls: int = 1) -> None:
        """The candidate at other shape globals, against the reference there (`calls` calls, one poisoned)."""
        prepared = self._prepare_shape(name, shape, what)
        if prepared is None:
            return
        model, inputs, _ = prepared
        refs = self._reference(model, inputs, f"{name} {what}")
        poison = self.rng.random() < 0.5
        for i in range(calls):
            self._extra(
                name,
                model,
                "alt",
                inputs,
                what,
                refs=refs,
                poison=poison != (i == 1),
                mode="same" if i else "new",
            )


def match_check(name: str, comparison: Any, ok: str) -> Check:
    """A check named `name` that passes when every check of `comparison` did, else names the first failure."""
    failed = [ch for ch in comparison.checks if not ch.passed]
    return Check(
        name=name, passed=not failed, detail=f"{failed[0].name}: {failed[0].detail}" if failed else ok
    )


def kernel_check(c: CallResult) -> Check:
    return Check(
        name="no-triton-kernel",
        passed=bool(c.own_kernels),
        detail=f"launched {', '.join(c.own_kernels)}"
        if c.own_kernels
        else "no Triton kernel defined in the candidate ran in forward"
        + (f" (other kernels: {', '.join(sorted(c.launches))})" if c.launches else ""),
    )
