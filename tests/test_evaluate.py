"""The evaluator against good and adversarial candidates (tests/candidates/), on the CPU interpreter.

Each `evaluate` call starts a worker process (~4 s on the CPU: importing torch and triton dominates).
The comparison functions of `agent.evaluation.compare` are tested directly, without a worker.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import pytest
import torch

from agent.evaluation import compare as verify
from agent.evaluation import tensor_checks
from agent.evaluation.evaluate import evaluate, fault_result
from agent.evaluation.sandbox import WorkerOutcome, is_secret, read_tail, worker_env
from agent.problem import load_problem
from agent.records import ProblemSpec, Status

CANDIDATES = Path(__file__).parent / "candidates"


@pytest.fixture(scope="module")
def l1() -> ProblemSpec:
    return load_problem("kernels/l1_norm")


def source(name: str) -> str:
    return (CANDIDATES / name).read_text()


def failed(result) -> set[str]:
    return {c.name for c in result.checks if not c.passed}


# --- whole evaluations, one per candidate ------------------------------------------------------------


@pytest.mark.slow
def test_starting_kernel_is_accepted(l1):
    result = evaluate(l1, l1.kernel_path.read_text(), "cpu")
    assert result.status == Status.ACCEPTED, result.reason
    assert result.kernels_launched == {"l1_norm_kernel_autotune": 1}
    assert not failed(result)
    names = {c.name for c in result.checks}
    assert {
        "values",
        "written",
        "nan-inf",
        "input-mutation",
        "output-aliases-input",
        "deterministic",
        "no-triton-kernel",
        "shape",
        "dtype",
        "device",
        "output-count",
    } <= names
    # the values: seed 0 under each of the 5 autotune configs, seeds 1 and 2 under config 0; two calls each
    values = next(c for c in result.checks if c.name == "values")
    assert values.detail.startswith("14 passed")
    # and a Triton kernel ran in every call, the judge's repeated calls and extra draws too (50 to 66 in all)
    no_triton = next(c for c in result.checks if c.name == "no-triton-kernel")
    assert int(no_triton.detail.split()[0]) >= 14 + 16
    assert result.interpreter and result.device == "cpu"
    assert result.timings is not None and result.timings.candidate is None
    assert "no GPU" in (result.timings.skipped_reason or "")
    assert result.max_abs_err is not None and result.max_abs_err < 1e-4
    assert result.wall_s > 0


def test_plain_kernel_is_accepted(l1):
    result = evaluate(l1, source("simple_l1.py"), "cpu", seeds=(0,))
    assert result.status == Status.ACCEPTED, result.reason
    assert result.kernels_launched == {"l1_rows": 1}


@pytest.mark.slow
def test_raising_candidate_crashes(l1):
    result = evaluate(l1, source("raises.py"), "cpu", seeds=(0,))
    assert result.status == Status.CRASHED
    assert "ValueError: this candidate always fails" in result.reason
    assert "forward" in result.reason  # names the frame it came from


@pytest.mark.slow
def test_hanging_candidate_times_out_and_the_next_evaluation_works(l1):
    start = time.perf_counter()
    result = evaluate(l1, source("hangs.py"), "cpu", seeds=(0,), timeout_s=8)
    assert result.status == Status.TIMEOUT
    assert "killed after 8 s" in result.reason
    assert time.perf_counter() - start < 8 + 5
    assert evaluate(l1, source("simple_l1.py"), "cpu", seeds=(0,)).status == Status.ACCEPTED


@pytest.mark.slow
def test_wrong_values_are_incorrect(l1):
    result = evaluate(l1, source("wrong_values.py"), "cpu", seeds=(0,))
    assert result.status == Status.INCORRECT
    assert "values" in failed(result)
    assert result.reason.startswith("values failed")
    assert result.max_rel_err is not None and result.max_rel_err == pytest.approx(0.01, rel=1e-3)


def test_syntax_error_is_a_compile_error(l1):
    result = evaluate(l1, "import torch\ndef broken(:\n    pass\n", "cpu", seeds=(0,))
    assert result.status == Status.COMPILE_ERROR
    assert "syntax error at line 2" in result.reason


def test_missing_modelnew_is_a_compile_error(l1):
    result = evaluate(l1, source("no_modelnew.py"), "cpu", seeds=(0,))
    assert result.status == Status.COMPILE_ERROR
    assert "ModelNew" in result.reason


def test_torch_only_candidate_is_cheating(l1):
    result = evaluate(l1, source("torch_only.py"), "cpu", seeds=(0,))
    assert result.status == Status.CHEATING
    assert "no-triton-kernel" in failed(result)


@pytest.mark.slow
def test_unwritten_tail_is_incorrect(l1):
    result = evaluate(l1, source("unwritten_tail.py"), "cpu", seeds=(0,))
    assert result.status == Status.INCORRECT
    assert "written" in failed(result)
    written = next(c for c in result.checks if c.name == "written" and not c.passed)
    assert "9 of 15009" in written.detail  # 3 rows x 3 elements
    assert "(0, 5000)" in written.detail


@pytest.mark.slow
def test_input_mutation_is_incorrect(l1):
    result = evaluate(l1, source("mutates_input.py"), "cpu", seeds=(0,))
    assert result.status == Status.INCORRECT
    assert "input-mutation" in failed(result)
    assert "values" not in failed(result)  # its outputs are right; only the input is wrong


@pytest.mark.slow
def test_returning_the_input_is_rejected(l1):
    result = evaluate(l1, source("returns_input.py"), "cpu", seeds=(0,))
    assert not result.accepted
    assert {"output-aliases-input", "input-mutation"} <= failed(result)


@pytest.mark.slow
def test_segfault_is_a_crash_naming_the_signal(l1):
    result = evaluate(l1, source("segfaults.py"), "cpu", seeds=(0,))
    assert result.status == Status.CRASHED
    assert "SIGSEGV" in result.reason
    assert "line 29 in forward" in result.reason  # faulthandler's traceback names the frame


@pytest.mark.slow
def test_stdout_flood_is_bounded(l1):
    result = evaluate(l1, source("floods_stdout.py"), "cpu", seeds=(0,))
    assert result.status == Status.ACCEPTED, result.reason
    assert "bytes before" in result.log_tail
    assert len(result.log_tail) < 12_000


@pytest.mark.slow
def test_secrets_are_hidden_from_the_candidate(l1, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-real-key")
    result = evaluate(l1, source("reads_secret.py"), "cpu", seeds=(0,))
    assert result.status == Status.ACCEPTED, result.reason


def test_patching_torch_is_cheating(l1):
    result = evaluate(l1, source("patches_torch.py"), "cpu", seeds=(0,))
    assert result.status == Status.CHEATING
    assert "torch.allclose" in result.reason


def test_forged_result_file_is_cheating(l1):
    result = evaluate(l1, source("forges_result.py"), "cpu", seeds=(0,))
    assert result.status == Status.CHEATING
    assert "not written by the evaluator" in result.reason


@pytest.mark.gpu
def test_gpu_evaluation_checks_and_times_the_starting_kernel(l1):
    result = evaluate(l1, l1.kernel_path.read_text(), "cuda", small=True, seeds=(0, 1), timing_reps=20)
    assert result.status == Status.ACCEPTED, result.reason
    assert not result.interpreter and result.device == "cuda"
    assert result.kernels_launched == {"l1_norm_kernel_autotune": 1}
    assert "l1_norm_kernel_autotune" in result.chosen_configs
    t = result.timings
    assert t is not None and t.skipped_reason is None
    # at least the rounds asked for; more (up to 500) while they fit in ~1 s: these calls take ~0.05 ms
    assert t.candidate is not None and 20 <= t.candidate.n <= 500 and t.candidate.median_ms > 0
    assert t.eager is not None and t.eager.n == t.candidate.n and (t.compiled is not None or t.compile_error)
    assert t.copy_bandwidth_gbps and t.copy_bandwidth_gbps > 100
    assert t.bytes_moved == 2 * 3 * 5003 * 4
    assert t.roofline_ms and t.roofline_ms > 0
    assert t.device_name


@pytest.mark.gpu
def test_gpu_poisoning_catches_unwritten_outputs(l1):
    result = evaluate(l1, source("unwritten_tail.py"), "cuda", small=True, seeds=(0,), time=False)
    assert result.status == Status.INCORRECT
    assert "written" in failed(result)


# --- sandbox helpers ---------------------------------------------------------------------------------


def test_worker_env_drops_secrets():
    env = worker_env(
        {"EXTRA": "1"},
        base={
            "PATH": "/bin",
            "OPENAI_API_KEY": "x",
            "HF_HOME": "/h",
            "MY_TOKEN": "t",
            "db_password": "p",
            "AWS_REGION": "r",
            "HOME": "/root",
            "TRITON_INTERPRET": "1",
            "NCU_AGENT_API_KEY": "k",
            "SOMETHING_NEW": "s",  # not on the allow-list: not passed on
        },
        box=Path("/w/box"),
    )
    assert set(env) == {
        *("PATH", "PYTHONPATH", "PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE", "EXTRA", "TRITON_INTERPRET"),
        *("HOME", "TMPDIR", "XDG_CACHE_HOME", "TRITON_CACHE_DIR", "TORCHINDUCTOR_CACHE_DIR", "USER"),
    }
    assert env["HOME"] == "/w/box" and env["TRITON_CACHE_DIR"].startswith("/w/box/")
    assert env["PYTHONPATH"] == str(Path(__file__).resolve().parent.parent)
    assert is_secret("ANTHROPIC_BASE_URL") and is_secret("GITHUB_TOKEN") and not is_secret("TRITON_INTERPRET")


def test_a_worker_that_gave_no_answer_is_named_for_how_it_ended():
    assert fault_result(WorkerOutcome(returncode=-9, timed_out=True), 7).reason == "killed after 7 s"
    fault = "Fatal Python error: Segmentation fault\n\nCurrent thread 0x1 (most recent call first):\n"
    fault += (
        '  File "/tmp/w/candidate_ab.py", line 9 in forward\n  File "/x/module.py", line 3 in _call_impl\n'
    )
    died = fault_result(WorkerOutcome(returncode=-11, signal="SIGSEGV", stderr_tail=fault), 7)
    assert died.status == Status.CRASHED
    assert died.reason == (
        "the worker died from SIGSEGV; Fatal Python error: Segmentation fault; "
        "innermost frame: candidate_ab.py, line 9 in forward"
    )
    exited = fault_result(WorkerOutcome(returncode=3, stderr_tail="boom\n"), 7)
    assert exited.status == Status.CRASHED and "code 3 without a result; boom" in exited.reason
    assert fault_result(WorkerOutcome(returncode=0, forged=True), 7).status == Status.CHEATING
    assert fault_result(WorkerOutcome(returncode=0), 7).rule == "process-exit"


def test_read_tail_is_bounded(tmp_path):
    p = tmp_path / "log"
    p.write_text("a" * 10_000 + "END")
    tail = read_tail(p, 100)
    assert tail.endswith("END") and "9903 bytes before" in tail and len(tail) < 150
    assert read_tail(tmp_path / "missing") == ""


# --- verify, directly --------------------------------------------------------------------------------


def checks_by_name(cmp: verify.Comparison) -> dict[str, bool]:
    return {c.name: c.passed for c in cmp.checks}


def test_tolerance_table_and_overrides():
    assert verify.tolerance(torch.float32) == (1e-4, 1e-4)
    assert verify.tolerance(torch.float16) == (1e-2, 1e-2)
    assert verify.tolerance(torch.bfloat16) == (2e-2, 2e-2)
    assert verify.tolerance(torch.float64) == (1e-7, 1e-7)
    assert verify.tolerance(torch.int32) == (0.0, 0.0)
    assert verify.tolerance(torch.bool) == (0.0, 0.0)
    assert verify.tolerance(torch.float32, atol=1e-3) == (1e-3, 1e-4)


def l1_norm(x: torch.Tensor) -> torch.Tensor:
    return x / torch.mean(torch.abs(x), dim=1, keepdim=True)


def test_fp32_problem_computed_in_fp16_fails():
    torch.manual_seed(0)
    x = torch.randn(64, 4096)
    ref = l1_norm(x)
    assert verify.compare_outputs([l1_norm(x.double()).float()], [ref]).passed
    half = verify.compare_outputs([l1_norm(x.half()).float()], [ref])
    assert not checks_by_name(half)["values"]
    a, b = torch.randn(256, 512), torch.randn(512, 256)
    assert not verify.compare_outputs([(a.half() @ b.half()).float()], [a @ b]).passed
    assert verify.compare_outputs([(a.double() @ b.double()).float()], [a @ b]).passed


def test_values_report_worst_element_and_errors():
    ref = torch.arange(1.0, 13.0).reshape(3, 4)
    out = ref.clone()
    out[2, 1] += 0.5
    cmp = verify.compare_outputs([out], [ref])
    values = next(c for c in cmp.checks if c.name == "values")
    assert not values.passed and "1 of 12" in values.detail and "worst at (2, 1)" in values.detail
    assert cmp.max_abs_err == pytest.approx(0.5) and cmp.max_rel_err == pytest.approx(0.5 / 10)


def test_chunked_comparison_matches_whole():
    torch.manual_seed(0)
    ref = torch.randn(37, 11)
    out = ref + 1e-5 * torch.randn(37, 11)
    out[20, 3] = float("nan")
    whole = verify.compare_outputs([out], [ref])
    chunked = verify.compare_outputs([out], [ref], chunk=7)
    assert [c.model_dump() for c in whole.checks] == [c.model_dump() for c in chunked.checks]
    assert whole.max_abs_err == chunked.max_abs_err


def test_unwritten_and_nonfinite_elements():
    ref = torch.tensor([1.0, float("nan"), float("inf"), 4.0])
    assert verify.compare_outputs([ref.clone()], [ref]).passed
    poisoned = ref.clone()
    poisoned[3] = float("nan")
    r = checks_by_name(verify.compare_outputs([poisoned], [ref]))
    assert not r["written"] and r["nan-inf"]
    flipped = ref.clone()
    flipped[2] = -math.inf
    r = checks_by_name(verify.compare_outputs([flipped], [ref]))
    assert not r["nan-inf"] and r["written"]


def test_integers_compare_exactly():
    ref = torch.arange(10, dtype=torch.int64)
    assert verify.compare_outputs([ref.clone()], [ref]).passed
    off = ref.clone()
    off[4] += 1
    assert not checks_by_name(verify.compare_outputs([off], [ref]))["values"]


def test_contract_checks():
    ref = torch.zeros(2, 3)
    assert not checks_by_name(verify.compare_outputs([], [ref]))["output-count"]
    assert not checks_by_name(verify.compare_outputs([torch.zeros(3, 2)], [ref]))["shape"]
    assert not checks_by_name(verify.compare_outputs([torch.zeros(2, 3, dtype=torch.float64)], [ref]))[
        "dtype"
    ]
    sub = torch.zeros(2, 3).as_subclass(torch.nn.Parameter)
    assert not checks_by_name(verify.compare_outputs([sub], [ref]))["type"]


def test_aliasing_and_mutation():
    x = torch.randn(4, 4)
    assert not tensor_checks.check_aliasing([x[1:]], [x]).passed
    assert tensor_checks.check_aliasing([x.clone()], [x]).passed
    pristine = tensor_checks.clone_inputs([x, 3])
    assert tensor_checks.changed_inputs([x, 3], pristine) == []
    x[0, 0] = -0.0 if x[0, 0] == 0 else 0.0
    assert tensor_checks.changed_inputs([x, 3], pristine) == [0]
    tensor_checks.restore_inputs([x, 3], pristine, [0])
    assert tensor_checks.bitwise_equal(x, pristine[0])
    assert not tensor_checks.bitwise_equal(torch.tensor([0.0]), torch.tensor([-0.0]))


def test_determinism_check():
    a = torch.randn(100)
    assert "bitwise" in tensor_checks.check_deterministic([a], [a.clone()]).detail
    near = tensor_checks.check_deterministic([a], [a + 1e-7])
    assert near.passed and "within tolerance" in near.detail
    assert not tensor_checks.check_deterministic([a], [a + 1.0]).passed


def test_degenerate_reference_is_flagged_not_failed():
    tiny = tensor_checks.check_reference_signal([torch.full((10,), 1e-3)])
    assert tiny.passed and tiny.detail.startswith(verify.WARNING)
    constant = tensor_checks.check_reference_signal([torch.full((10,), 5.0)])
    assert constant.passed and constant.detail.startswith(verify.WARNING)
    normal = tensor_checks.check_reference_signal([torch.randn(1000)])
    assert normal.passed and not normal.detail.startswith(verify.WARNING)


def test_float32_is_full_float32_in_every_phase_of_a_worker():
    """cuDNN's TF32 default made a float32 conv reference ~1e-3 off on an H200, failing an exact kernel;
    a worker sets full float32 once, before any candidate, so no phase differs from another."""
    import subprocess
    import sys

    code = (
        "import torch; torch.backends.cudnn.allow_tf32 = True; torch.set_float32_matmul_precision('high')\n"
        "from agent.evaluation import worker_setup\n"
        "worker_setup.preload(gpu=False)\n"
        "print(torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32,"
        " torch.backends.cuda.matmul.allow_tf32)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["highest", "False", "False"]
