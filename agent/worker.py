"""The evaluation worker: `python -m agent.worker REQUEST.json RESULT.json`, run by `agent.sandbox`.

One process per candidate: it imports the untrusted candidate, so nothing else may share it. Per seed,
the reference Model and inputs are built on the device, ModelNew is built with the same seed (and given
Model's weights when its state_dict matches), then called candidate -> reference -> candidate on the
same inputs. Candidate calls run with uninitialized memory poisoned (NaN) and Triton launches recorded.
Under Triton's interpreter (the CPU), the first seed is checked once per autotune config. On the GPU the
accepted candidate is then timed against eager and torch.compile (see `agent.timing`).

Whatever happens, the worker writes one `EvalResult` and exits with `os._exit(0)`, so threads or
atexit handlers the candidate left behind cannot hang or alter the exit. The result file starts with
the token the sandbox sent on stdin (read before the candidate exists), so the parent can tell it from
a file the candidate wrote.
"""

from __future__ import annotations

import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from agent.models import Check, EvalRequest, EvalResult, Status, Timings

MAX_TEXT = 2000
CPU_TIMING_SKIPPED = "no GPU: correctness only, in Triton's interpreter; times are not measured"
_COMPILE_ERRORS = {"CompilationError", "OutOfResources", "PTXASError"}
_CHEATING_CHECKS = ("no-triton-kernel", "tamper")


class _Rejected(Exception):
    """Stops the evaluation with a status (raised from anywhere below `Evaluation.run`)."""

    def __init__(self, status: Status, reason: str):
        super().__init__(reason)
        self.status, self.reason = status, reason


def describe(e: BaseException, candidate_file: str | None = None) -> str:
    """`Type: message`, where it was raised, and the deepest line of the candidate's file on the way."""
    try:
        msg = str(e)
    except Exception:
        msg = "<message could not be printed>"
    if len(msg) > MAX_TEXT:
        msg = msg[:MAX_TEXT] + f" [... {len(msg) - MAX_TEXT} chars]"
    text = f"{type(e).__name__}: {msg}"
    frames = traceback.extract_tb(e.__traceback__)
    if frames:
        last = frames[-1]
        text += f" (at {Path(last.filename).name}:{last.lineno} in {last.name}: {last.line or ''})"
        own = [f for f in frames if candidate_file and f.filename == candidate_file]
        if own and own[-1] is not last:
            text += f" (from the candidate's line {own[-1].lineno} in {own[-1].name}: {own[-1].line or ''})"
    return text


def _status_for(e: BaseException) -> Status:
    names = {c.__name__ for c in type(e).__mro__}
    return Status.COMPILE_ERROR if names & _COMPILE_ERRORS else Status.CRASHED


class Ledger:
    """Every check made, with where; summarised per check name for the result."""

    def __init__(self) -> None:
        self.entries: dict[str, list[tuple[str, Check]]] = {}

    def add(self, where: str, check: Check) -> None:
        self.entries.setdefault(check.name, []).append((where, check))

    def failures(self) -> list[tuple[str, Check]]:
        return [(w, c) for items in self.entries.values() for w, c in items if not c.passed]

    def summary(self, max_failures: int = 3) -> list[Check]:
        from agent.verify import WARNING

        out = []
        for name, items in self.entries.items():
            failed = [(w, c) for w, c in items if not c.passed]
            if failed:
                out += [
                    Check(name=name, passed=False, detail=f"{w}: {c.detail}")
                    for w, c in failed[:max_failures]
                ]
                continue
            w, c = next(((w, c) for w, c in items if c.detail.startswith(WARNING)), items[-1])
            out.append(Check(name=name, passed=True, detail=f"{len(items)} passed; {w}: {c.detail}"))
        return out


class Evaluation:
    def __init__(self, request: EvalRequest, workdir: Path):
        self.req = request
        self.device = request.device
        self.workdir = workdir
        self.ledger = Ledger()
        self.kernels: dict[str, int] = {}
        self.max_abs: float | None = None
        self.max_rel: float | None = None
        self.bytes_moved = 0
        self.last: tuple[Any, Any, list[Any]] | None = None

    def _result(self, status: Status, reason: str = "", timings: Timings | None = None) -> EvalResult:
        return EvalResult(
            status=status,
            reason=reason,
            checks=self.ledger.summary(),
            timings=timings,
            kernels_launched=self.kernels,
            max_abs_err=self.max_abs,
            max_rel_err=self.max_rel,
        )

    def run(self) -> EvalResult:
        from agent import triton_hooks

        triton_hooks.install()
        from agent import verify
        from agent.candidate import CandidateError, load_candidate
        from agent.problem import ProblemError, load_reference

        try:
            self.ref_module = load_reference(self.req.problem, self.req.small)
        except ProblemError as e:
            return self._result(Status.CRASHED, f"the problem's reference failed: {e}")
        self.watch = verify.TamperWatch()
        try:
            self.cand = load_candidate(self.req.candidate_source, self.workdir)
        except CandidateError as e:
            return self._result(Status.COMPILE_ERROR, str(e))
        except BaseException as e:
            return self._result(Status.COMPILE_ERROR, f"importing it raised {describe(e)}")
        try:
            for i, seed in enumerate(self.req.seeds or [0]):
                self._check_seed(i, seed)
            timings = self._time()
        except _Rejected as r:
            return self._result(r.status, r.reason)
        result = self._result(Status.ACCEPTED, timings=timings)
        if not triton_hooks.interpreting():
            result.chosen_configs = triton_hooks.chosen_configs()
        return result

    # --- correctness -----------------------------------------------------------------------------

    def _check_seed(self, index: int, seed: int) -> None:
        from agent import triton_hooks
        from agent.problem import ProblemError, build

        self.last = None  # free the previous seed's tensors before building this one's
        try:
            model, inputs = build(self.ref_module, self.req.problem.reference_path, self.device, seed)
        except ProblemError as e:
            raise _Rejected(Status.CRASHED, f"seed {seed}: the problem's reference failed: {e}") from None
        new_model = self._candidate_model(model, seed)
        if triton_hooks.interpreting():
            k, n = 0, 1
            while k < n:  # every autotune config on the first seed; config 0 on the others
                triton_hooks.select_config(k)
                self._check_once(model, new_model, inputs, f"seed {seed}, config {k}")
                if index == 0:
                    n = triton_hooks.max_configs()  # known once the candidate's kernels exist
                k += 1
            triton_hooks.select_config(0)
        else:
            self._check_once(model, new_model, inputs, f"seed {seed}")
        self.last = (model, new_model, inputs)

    def _candidate_model(self, model: Any, seed: int) -> Any:
        import torch

        from agent.problem import default_device

        torch.manual_seed(seed)
        try:
            with default_device(self.device):
                init_inputs = list(self.ref_module.get_init_inputs())
                new_model = self.cand.ModelNew(*init_inputs)
            new_model = new_model.to(self.device)
            ref_sd, new_sd = model.state_dict(), new_model.state_dict()
            if (
                ref_sd
                and ref_sd.keys() == new_sd.keys()
                and all(ref_sd[k].shape == new_sd[k].shape for k in ref_sd)
            ):
                new_model.load_state_dict(ref_sd)
        except BaseException as e:
            raise _Rejected(
                _status_for(e), f"seed {seed}: building ModelNew raised {self._describe(e)}"
            ) from None
        return new_model

    def _describe(self, e: BaseException) -> str:
        return describe(e, getattr(getattr(self, "cand", None), "__file__", None))

    def _call_candidate(
        self, new_model: Any, inputs: list[Any], where: str
    ) -> tuple[list[Any], dict[str, int]]:
        import torch
        import torch.utils.deterministic

        from agent import triton_hooks
        from agent.problem import flatten_outputs

        det = torch.are_deterministic_algorithms_enabled()
        warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
        fill = torch.utils.deterministic.fill_uninitialized_memory
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.utils.deterministic.fill_uninitialized_memory = True  # torch.empty now holds NaN
        triton_hooks.start_recording()
        try:
            with torch.no_grad():
                out = new_model(*inputs)
            if self.device == "cuda":
                torch.cuda.synchronize()  # asynchronous errors surface here, inside the check
        except BaseException as e:
            raise _Rejected(_status_for(e), f"{where}: the candidate raised {self._describe(e)}") from None
        finally:
            launches = triton_hooks.stop_recording()
            torch.use_deterministic_algorithms(det, warn_only=warn_only)
            torch.utils.deterministic.fill_uninitialized_memory = fill
        return flatten_outputs(out), launches

    def _call_reference(self, model: Any, inputs: list[Any], where: str) -> list[Any]:
        import torch

        from agent.problem import flatten_outputs

        try:
            with torch.no_grad():
                out = model(*inputs)
            if self.device == "cuda":
                torch.cuda.synchronize()
        except Exception as e:
            raise _Rejected(Status.CRASHED, f"{where}: the reference Model raised {describe(e)}") from None
        return flatten_outputs(out)

    def _check_once(self, model: Any, new_model: Any, inputs: list[Any], where: str) -> None:
        from agent import triton_hooks, verify

        pristine = verify.clone_inputs(inputs)
        out1, launches1 = self._call_candidate(new_model, inputs, f"{where}, call 1")
        changed1 = verify.changed_inputs(inputs, pristine)
        verify.restore_inputs(inputs, pristine, changed1)
        refs = self._call_reference(model, inputs, where)
        ref_changed = verify.changed_inputs(inputs, pristine)
        verify.restore_inputs(inputs, pristine, ref_changed)
        out2, launches2 = self._call_candidate(new_model, inputs, f"{where}, call 2")
        changed2 = verify.changed_inputs(inputs, pristine)
        verify.restore_inputs(inputs, pristine, changed2)
        del pristine

        add = self.ledger.add
        add(where, self.watch.check())  # before comparing: a patched torch could fake the comparison
        modules = triton_hooks.launch_modules()
        for call, launches in (("call 1", launches1), ("call 2", launches2)):
            own = sorted(k for k in launches if modules.get(k) == self.cand.__name__)
            add(
                f"{where}, {call}",
                Check(
                    name="no-triton-kernel",
                    passed=bool(own),
                    detail=f"launched {', '.join(own)}"
                    if own
                    else "no Triton kernel defined in the candidate ran in forward"
                    + (f" (other kernels: {', '.join(sorted(launches))})" if launches else ""),
                ),
            )
        if not self.kernels:  # the second call: the first may include autotuning's benchmark launches
            self.kernels = dict(launches2)
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
            add(f"{where}, call 1", verify.check_input_mutation(changed1))
            add(f"{where}, call 2", verify.check_input_mutation(changed2))
        ref_aliases = bool(verify.aliased(refs, inputs))
        spec = self.req.problem
        comparable = True
        for call, outs in (("call 1", out1), ("call 2", out2)):
            try:
                cmp = verify.compare_outputs(outs, refs, spec.atol, spec.rtol)
            except Exception as e:
                cmp = verify.Comparison(
                    [Check(name="values", passed=False, detail=f"could not compare: {describe(e)}")]
                )
            for c in cmp.checks:
                add(f"{where}, {call}", c)
            comparable &= all(
                c.passed for c in cmp.checks if c.name in ("output-count", "type", "shape", "dtype")
            )
            self.max_abs = _max(self.max_abs, cmp.max_abs_err)
            self.max_rel = _max(self.max_rel, cmp.max_rel_err)
            if not ref_aliases:
                add(f"{where}, {call}", verify.check_aliasing(outs, inputs))
        if comparable:
            add(where, verify.check_deterministic(out1, out2, spec.atol, spec.rtol))
        add(where, verify.check_reference_signal(refs))
        self.bytes_moved = sum(t.nbytes for t in verify.tensors(inputs)) + sum(t.nbytes for t in refs)
        self._stop_on_failure()

    def _stop_on_failure(self) -> None:
        failures = self.ledger.failures()
        if not failures:
            return
        cheat = [(w, c) for w, c in failures if c.name in _CHEATING_CHECKS]
        where, check = (cheat or failures)[0]
        raise _Rejected(
            Status.CHEATING if cheat else Status.INCORRECT, f"{check.name} failed ({where}): {check.detail}"
        )

    # --- timing ----------------------------------------------------------------------------------

    def _time(self) -> Timings:
        if self.device != "cuda":
            return Timings(skipped_reason=CPU_TIMING_SKIPPED)
        if not self.req.time:
            return Timings(skipped_reason="timing not requested")
        from agent import timing

        assert self.last is not None
        model, new_model, inputs = self.last
        try:
            t = timing.time_models(
                new_model,
                model,
                inputs,
                reps=self.req.timing_reps,
                baselines=self.req.baselines,
                bytes_moved=self.bytes_moved,
                flops=self._flops(),
            )
        except BaseException as e:
            raise _Rejected(Status.CRASHED, f"while timing: {self._describe(e)}") from None
        self.ledger.add("timing", timing.plausibility(t))
        return t

    def _flops(self) -> float | None:
        expr = self.req.problem.flops
        if not expr:
            return None
        try:
            return float(eval(expr, {}, dict(vars(self.ref_module))))
        except Exception:
            return None


def _max(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else max(a, b)


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    req_path, res_path = Path(args[0]), Path(args[1])
    token = sys.stdin.readline().strip()
    start = time.perf_counter()
    request = EvalRequest.model_validate_json(req_path.read_text())
    # Triton reads TRITON_INTERPRET when kernels are defined: set it before anything imports triton.
    if request.device == "cpu":
        os.environ["TRITON_INTERPRET"] = "1"
    else:
        os.environ.pop("TRITON_INTERPRET", None)
    try:
        result = Evaluation(request, Path.cwd()).run()
    except BaseException as e:
        result = EvalResult(status=Status.CRASHED, reason=f"the evaluator itself failed: {describe(e)}")
    result.device = request.device
    result.interpreter = request.device == "cpu"
    result.wall_s = time.perf_counter() - start
    tmp = res_path.with_suffix(".tmp")
    tmp.write_text(f"{token}\n{result.model_dump_json()}")
    tmp.replace(res_path)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
