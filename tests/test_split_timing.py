"""The split layout's timing protocol, on the CPU: the judge times the baselines in its own process, the
candidate is timed in its worker, in turns (agent/evaluation/timing_sides.py). On a GPU the clocks are CUDA
events; here `JudgeTiming.HOST_TIMING` runs the same protocol with the host clock, so every message, turn
and check below runs as it does on the GPU (the GPU run is `test_gpu_split_layout_times_like_one_process`).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.evaluation import timing
from agent.evaluation.evaluate import evaluate
from agent.evaluation.judge_timing import JudgeTiming
from agent.evaluation.timing_sides import TURN_ROUNDS, in_turns
from agent.problem import load_problem
from agent.records import ProblemSpec, Status

HERE = Path(__file__).parent
TIMING = HERE / "adversarial" / "timing"


@pytest.fixture(scope="module")
def l1() -> ProblemSpec:
    return load_problem("kernels/l1_norm")


@pytest.fixture
def host_timing(monkeypatch):
    """Time on the CPU with the host clock; torch.compile's baseline is left out (it needs a C compiler)."""
    monkeypatch.setattr(JudgeTiming, "HOST_TIMING", True)
    monkeypatch.setattr(timing, "compile_baseline", lambda ref, inputs: (None, "not compiled in this test"))
    monkeypatch.setattr(timing, "BUDGET_S", 0.3)
    monkeypatch.setattr(timing, "MIN_WINDOW_S", 0.05)
    # the larger draws are another check's; a small budget keeps these evaluations short
    monkeypatch.setenv("NCU_AGENT_DRAW_BUDGET_S", "1")


def _timed_on_cpu(problem: ProblemSpec, path: Path, **kwargs):
    return evaluate(problem, path.read_text(), "cpu", seeds=(0,), timing_reps=6, **kwargs)


class _FakeSide:
    def __init__(self, names, log):
        self.names, self.log = names, log

    def timed(self, names, rounds):
        self.log.append((tuple(names), rounds))
        return {n: [1.0] * rounds for n in names}


def test_two_sides_take_turns_and_get_the_same_rounds():
    log: list = []
    local, remote = _FakeSide(["eager", "compiled"], log), _FakeSide(["candidate"], log)
    out = in_turns([local, remote])(["eager", "compiled", "candidate"], 20)
    assert {n: len(t) for n, t in out.items()} == {"eager": 20, "compiled": 20, "candidate": 20}
    # turns of TURN_ROUNDS, the judge's side first, never two sides at once
    assert log == [
        (("eager", "compiled"), TURN_ROUNDS),
        (("candidate",), TURN_ROUNDS),
        (("eager", "compiled"), TURN_ROUNDS),
        (("candidate",), TURN_ROUNDS),
        (("eager", "compiled"), 4),
        (("candidate",), 4),
    ]
    log.clear()
    in_turns([local])(["eager"], 20)
    assert log == [(("eager",), 20)]  # one process: all its rounds at once, as before


def test_split_layout_times_the_candidate_in_its_worker_and_the_baselines_here(l1, host_timing):
    result = _timed_on_cpu(l1, HERE / "candidates" / "simple_l1.py")
    assert result.status == Status.ACCEPTED, result.reason
    t = result.timings
    assert t is not None and t.layout == "split" and t.candidate is not None and t.eager is not None
    assert t.compiled is None and t.compile_error == "not compiled in this test"
    assert t.candidate.n == t.eager.n >= 6  # interleaved: every round has one call of each
    assert "own process" in t.candidate.method
    assert t.candidate.median_ms > 0 and t.eager.median_ms > 0
    checks = {c.name: c for c in result.checks}
    assert checks["timed-launches"].passed, checks["timed-launches"].detail
    assert "of its own kernels" in checks["timed-launches"].detail


def test_a_candidate_that_serves_a_cache_while_timed_is_caught(l1, host_timing):
    result = _timed_on_cpu(l1, TIMING / "honest_while_checked.py", static=False)
    assert result.status == Status.CHEATING, result.reason
    assert result.rule == "timed-launches", result.reason
    # once per input tensor: the values of every timed call are right, only the launches give it away
    assert "1 launch of its own kernels in" in result.reason


def test_a_candidate_that_patches_the_workers_clock_while_timed_is_caught(l1, host_timing):
    result = _timed_on_cpu(l1, TIMING / "patches_the_clock.py", static=False)
    assert result.status == Status.CHEATING, result.reason
    assert result.rule == "tamper" and "while timing" in result.reason
    assert "timing_sides" in result.reason


# --- the GPU ---


@pytest.mark.gpu
def test_gpu_split_layout_times_like_one_process():
    # matmul_fp16: autotuned (re-tuned in the worker), 2 x 128 MiB inputs; l1_norm's 8 GiB at full size
    # does not fit an 80 GiB card twice over
    spec = load_problem(HERE.parent / "kernels" / "matmul_fp16")
    source = spec.kernel_path.read_text()
    split = evaluate(spec, source, "cuda", seeds=(0,))
    one = evaluate(spec, source, "cuda", seeds=(0,), split=False)
    assert split.accepted and one.accepted, (split.reason, one.reason)
    assert (split.timings.layout, one.timings.layout) == ("split", "one-process")
    assert "matmul_kernel" in split.chosen_configs
    assert split.chosen_configs["matmul_kernel"] == split.timings.retuned[0].chosen
    checks = {c.name: c for c in split.checks}
    assert checks["timed-launches"].passed, checks["timed-launches"].detail
    print("transport:", checks["transport"].detail)  # CUDA IPC, or files and why IPC did not work
    assert checks["transport"].detail.startswith(("CUDA IPC", "files"))
    # the same kernel against the same eager baseline: the two layouts' speedups within 15%
    ratio = split.timings.speedup_eager / one.timings.speedup_eager
    assert 0.85 < ratio < 1.15, (split.timings, one.timings)


@pytest.mark.gpu
def test_gpu_a_candidate_that_serves_a_cache_while_timed_is_caught():
    spec = load_problem(HERE.parent / "kernels" / "l1_norm")
    source = (TIMING / "honest_while_checked.py").read_text()
    result = evaluate(spec, source, "cuda", seeds=(0,), static=False, small=True)
    assert result.status == Status.CHEATING and result.rule == "timed-launches", result.reason


# --- CUDA IPC: what the judge accepts from the worker (no GPU needed) ---


def test_ipc_messages_take_only_well_formed_handles_and_known_dtypes():
    from pydantic import ValidationError

    from agent.evaluation import cuda_ipc

    ok = {"handle": "ab" * 64, "nbytes": 16, "dtype": "float32", "size": [4], "stride": [1]}
    assert cuda_ipc.SharedTensor(**ok).nbytes == 16
    for bad in ({"handle": "ab" * 63}, {"handle": "zz" * 64}, {"nbytes": -1}, {"offset": -4}):
        with pytest.raises(ValidationError):
            cuda_ipc.SharedTensor(**{**ok, **bad})
    with pytest.raises(cuda_ipc.IpcError, match="cannot cross"):
        cuda_ipc.dtype_of("object")


def test_the_judge_sizes_a_buffer_for_the_workers_tensor_within_its_limit():
    from agent.evaluation import cuda_ipc

    exported = cuda_ipc.Exported()
    # the worker says a size: over the limit, or negative, and the judge allocates nothing
    with pytest.raises(cuda_ipc.IpcError, match="over the 1024 allowed"):
        exported.empty(cuda_ipc.TensorMeta(dtype="float32", size=[1 << 20, 1 << 20]), limit=1024)
    with pytest.raises(cuda_ipc.IpcError, match="negative size"):
        exported.empty(cuda_ipc.TensorMeta(dtype="float32", size=[-1, 4]), limit=1 << 30)
    with pytest.raises(cuda_ipc.IpcError, match="cannot cross"):
        exported.empty(cuda_ipc.TensorMeta(dtype="qint8", size=[4]), limit=1 << 30)
    assert exported.ptrs == []
