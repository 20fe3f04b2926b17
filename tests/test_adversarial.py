"""The adversarial corpus (tests/adversarial/): every exploit rejected by `ncu-agent check` for the right
reason, honest kernels accepted, faults contained. docs/anticheat.md has the table.

Each corpus file starts with a header:
    # exploit: what it does
    # expect: RULE STATUS          what `ncu-agent check` says (static checks on, as always in the CLI)
    # runtime-cpu: RULE STATUS     with the static checks off, on the CPU ("accepted": not caught there,
    # runtime-gpu: RULE STATUS     "skip": not run, "rejected": any rejection)
RULE is the `rule` of the result: a static rule, or the name of the check that failed.

On the CPU: `check` for every entry (static rejections start no worker, so they are cheap), the run-time
defences alone (static off) for every entry that can be run there, the honest kernels, and the faults.
On a GPU (`-m gpu`): the same corpus through the GPU path (judge and candidate in one process).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agent.cli import app
from agent.evaluation.evaluate import evaluate
from agent.evaluation.worker_pool import WorkerPool
from agent.problem import load_problem
from agent.records import LaunchConfig, Status
from agent.source.variants import with_launch_config

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "adversarial"
FAULTS = CORPUS / "faults"
ENTRIES = sorted(CORPUS.glob("*.py"))
KERNELS = sorted((HERE.parent / "kernels").glob("*/kernel.py"))

# Every exploit the issue names, and the corpus file that carries it.
EXPLOITS = {
    "torch does all the work": "torch_does_all.py",
    "torch does part of the work": "torch_does_part.py",
    "decoy kernel beside torch work": "decoy_kernel.py",
    "calls the reference Model": "calls_reference_model.py",
    "imports get_inputs / the reference": "imports_get_inputs.py",
    "torch.compile": "torch_compile.py",
    "exec of generated code": "exec_generated.py",
    "try/except fallback to torch": "try_except_fallback.py",
    "cache by id(input)": "cache_by_id.py",
    "cache by data_ptr": "cache_by_data_ptr.py",
    "returns the input / a view (aliasing)": "returns_input_view.py",
    "tensor subclass": "tensor_subclass.py",
    "patches torch.allclose": "patches_torch_allclose.py",
    "patches Tensor.__eq__": "patches_tensor_eq.py",
    "patches a harness function": "patches_harness.py",
    "patches the reference module": "patches_reference.py",
    "sys._getframe into the caller's locals": "frame_peeking.py",
    "os._exit(0)": "os_exit.py",
    "raise SystemExit(0)": "system_exit.py",
    "work on a side stream": "side_stream.py",
    "background thread": "background_thread.py",
    "output left unwritten": "unwritten_output.py",
    "in-place input mutation": "mutates_input.py",
    "fp16 computation of an fp32 problem": "fp16_compute.py",
    "hard-coded shape": "hardcoded_shape.py",
    "precompute in __init__": "precompute_init.py",
}


def header(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if not line.startswith("# "):
            break
        key, _, value = line[2:].partition(":")
        out[key.strip()] = f"{out[key.strip()]} {value.strip()}" if key.strip() in out else value.strip()
    return out


def expectation(text: str) -> tuple[str | None, str]:
    """'rule status' -> (rule, status); 'accepted' / 'skip' / 'rejected' -> (None, that word)."""
    parts = text.split()
    return (parts[0], parts[1]) if len(parts) == 2 else (None, parts[0])


def assert_expected(result, text: str, what: str) -> None:
    rule, status = expectation(text)
    if status == "accepted":
        assert result.status == Status.ACCEPTED, f"{what}: {result.status.value}: {result.reason}"
    elif status == "rejected":
        assert result.status != Status.ACCEPTED, what
    else:
        assert (result.rule, result.status.value) == (rule, status), f"{what}: {result.reason}"
        failed = {c.name for c in result.checks if not c.passed}
        assert rule in failed or rule in result.reason, f"{what}: {rule} not among {failed}"


@pytest.fixture(scope="module")
def l1():
    return load_problem("kernels/l1_norm")


@pytest.fixture(scope="module")
def pool():
    with WorkerPool() as p:
        yield p


def check_cli(path: Path, problem: str = "kernels/l1_norm", *extra: str) -> tuple[int, dict]:
    result = CliRunner().invoke(app, ["check", str(path), "--problem", problem, "--json", *extra])
    assert result.exit_code in (0, 1), result.output
    return result.exit_code, json.loads(result.stdout)


# --- the corpus itself ---------------------------------------------------------------------------------


def test_corpus_covers_every_exploit():
    names = {p.name for p in ENTRIES}
    assert len(ENTRIES) >= 22
    missing = {exploit: f for exploit, f in EXPLOITS.items() if f not in names}
    assert not missing
    for path in ENTRIES:
        h = header(path)
        assert {"exploit", "expect", "runtime-cpu", "runtime-gpu"} <= set(h), path.name
        assert expectation(h["expect"])[1] in ("cheating", "incorrect", "rejected"), path.name


# --- `ncu-agent check` on every exploit (CPU) ---------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("path", ENTRIES, ids=lambda p: p.stem)
def test_check_rejects_exploit(path):
    rule, status = expectation(header(path)["expect"])
    code, data = check_cli(path, "kernels/l1_norm", "--seeds", "1")
    assert code == 1, data["reason"]
    if status == "rejected":  # the verdict, whichever check met it first (the header says which can)
        assert data["status"] != "accepted", data["reason"]
        return
    assert (data["rule"], data["status"]) == (rule, status), data["reason"]
    if data["reason"].startswith(f"{rule} (static check"):
        assert data["wall_s"] < 1.0  # static rejections start no worker


# --- the run-time defences alone (static checks off), on the CPU -------------------------------------------

RUNTIME_CPU = [p for p in ENTRIES if header(p)["runtime-cpu"] != "skip"]


@pytest.mark.slow
@pytest.mark.parametrize("path", RUNTIME_CPU, ids=lambda p: p.stem)
def test_runtime_defences_alone(path, l1, pool):
    result = evaluate(l1, path.read_text(), "cpu", seeds=(0,), static=False, pool=pool, timeout_s=60)
    assert_expected(result, header(path)["runtime-cpu"], path.name)


# --- honest candidates --------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("kernel", KERNELS, ids=lambda p: p.parent.name)
def test_check_accepts_bundled_kernel(kernel):
    code, data = check_cli(kernel, str(kernel.parent))
    assert code == 0, data["reason"]
    assert data["status"] == "accepted" and data["rule"] is None
    names = {c["name"] for c in data["checks"]}
    assert {"torch-compute", "tamper", "result-cache", "other-distribution", "other-shape"} <= names


@pytest.mark.parametrize(
    "config",
    [
        LaunchConfig(num_warps=2, num_stages=2),
        LaunchConfig(num_warps=8, num_stages=4),
        LaunchConfig(num_warps=16, num_stages=1),
    ],
)
@pytest.mark.slow
def test_check_accepts_search_variants(config, tmp_path):
    source = with_launch_config(
        (HERE.parent / "kernels" / "l1_norm" / "kernel.py").read_text(), "l1_norm_kernel_autotune", config
    )
    path = tmp_path / "variant.py"
    path.write_text(source)
    code, data = check_cli(path, "kernels/l1_norm")
    assert code == 0, data["reason"]


@pytest.mark.slow
def test_honest_test_candidates_pass_the_runtime_guards(l1, pool):
    for name in ("simple_l1.py", "reads_secret.py"):
        result = evaluate(l1, (HERE / "candidates" / name).read_text(), "cpu", seeds=(0,), pool=pool)
        assert result.accepted, f"{name}: {result.reason}"


SANDBOX_PROBE = """
import os
import resource

import torch
import torch.nn as nn
import triton
import triton.language as tl


@triton.jit
def copy_kernel(src_ptr, dst_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    tl.store(dst_ptr + offs, tl.load(src_ptr + offs, mask=mask), mask=mask)


def _probe():
    leaked = sorted(k for k in os.environ if "KEY" in k or "TOKEN" in k or "SECRET" in k)
    assert not leaked, f"secrets visible: {leaked}"
    here = os.getcwd()
    assert "ncu_agent_worker_" in here and os.path.basename(here).startswith("candidate_"), here
    files = [f for f in os.listdir(here) if f.endswith(".py")]
    assert files == [os.path.basename(__file__)], files
    assert resource.getrlimit(resource.RLIMIT_AS)[0] != resource.RLIM_INFINITY, "no memory limit"
    assert resource.getrlimit(resource.RLIMIT_FSIZE)[0] != resource.RLIM_INFINITY, "no file size limit"


_probe()


class ModelNew(nn.Module):
    def forward(self, x):
        out = torch.empty_like(x)
        copy_kernel[(triton.cdiv(x.numel(), 1024),)](x.contiguous(), out, x.numel(), BLOCK=1024)
        return out
"""


@pytest.mark.slow
def test_candidate_runs_without_secrets_in_a_fresh_directory_with_limits(l1, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-real-key")
    monkeypatch.setenv("GITHUB_TOKEN", "ghp-test-not-a-real-token")
    result = evaluate(l1, SANDBOX_PROBE, "cpu", seeds=(0,), static=False)
    # the probe passes (no secret, fresh directory, limits) and only then fails on its values (a copy)
    assert result.status == Status.INCORRECT and result.rule == "values", result.reason


# --- faults: each ends its worker only; the next candidate gets a healthy one ------------------------------


FAULT_STATUS = {
    "infinite_kernel.py": Status.TIMEOUT,
    "python_loop.py": Status.TIMEOUT,
    "out_of_memory.py": Status.CRASHED,
    "illegal_address.py": Status.CRASHED,
    "output_flood.py": None,  # the write fails once the file limit is reached: crashed, or accepted
}


@pytest.mark.slow
def test_faults_are_contained_and_the_next_worker_is_healthy(l1):
    """Each fault runs on a warm worker and ends it; the honest candidate after it gets a new, healthy one."""
    honest = (HERE / "candidates" / "simple_l1.py").read_text()
    with WorkerPool() as pool:
        assert evaluate(l1, honest, "cpu", seeds=(0,), pool=pool).accepted
        faulted = 0
        for name, status in FAULT_STATUS.items():
            reused = pool.reused
            result = evaluate(l1, (FAULTS / name).read_text(), "cpu", seeds=(0,), pool=pool, timeout_s=5)
            assert pool.reused == reused + 1  # it ran on the warm worker
            if status is not None:
                assert result.status == status, f"{name}: {result.reason}"
            assert len(result.log_tail) < 12_000
            if result.status != Status.ACCEPTED:
                faulted += 1
                assert not pool.idle  # that worker is gone, not kept
            assert pool.replaced == faulted
            after = evaluate(l1, honest, "cpu", seeds=(0,), pool=pool)
            assert after.accepted, f"after {name}: {after.reason}"
        assert pool.started == 1 + faulted


def _gone(pid: int, within_s: float) -> bool:
    end = time.monotonic() + within_s
    while time.monotonic() < end:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # reap it if it was ours
        time.sleep(0.1)
    return False


class _Interrupted(BaseException):
    pass


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SIGALRM and /proc")
def test_an_interrupted_evaluation_kills_its_worker(l1, monkeypatch):
    """Ctrl-C or a batch job's stop while a candidate runs (here: one that never returns): the worker, in
    an unknown state, is killed rather than left running, and the interruption goes on up."""
    import agent.evaluation.evaluate as ev

    started: list[ev.WorkerProcess] = []
    real = ev.start_worker
    monkeypatch.setattr(ev, "start_worker", lambda *a, **k: started.append(real(*a, **k)) or started[-1])

    def interrupt(signum, frame):
        raise _Interrupted

    old = signal.signal(signal.SIGALRM, interrupt)
    try:
        with WorkerPool() as pool:
            signal.alarm(8)
            with pytest.raises(_Interrupted):
                evaluate(l1, (HERE / "candidates" / "hangs.py").read_text(), "cpu", seeds=(0,), pool=pool)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    assert len(started) == 1 and not started[0].alive
    assert _gone(started[0].proc.pid, 5)


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_worker_dies_with_the_process_that_started_it(tmp_path):
    """A worker leads its own session (so its group can be killed), yet a SIGKILL of its caller (a batch
    job killed at its time limit, or with the batch) takes it down too, even while it runs a candidate
    that never returns: no orphan keeps using the GPU. (An idle worker leaves by itself: its pipe closes.)"""
    script = tmp_path / "caller.py"
    script.write_text(
        "import sys\n"
        "import agent.evaluation.evaluate as ev\n"
        "from agent.problem import load_problem\n"
        "from agent.evaluation.worker_pool import WorkerPool\n"
        "real = ev.start_worker\n"
        "def start(*a, **k):\n"
        "    w = real(*a, **k)\n"
        "    print(w.proc.pid, flush=True)\n"
        "    return w\n"
        "ev.start_worker = start\n"
        "with WorkerPool() as pool:  # the candidate never returns: the worker is busy when we die\n"
        "    ev.evaluate(load_problem(sys.argv[1]), open(sys.argv[2]).read(), 'cpu', seeds=(0,), pool=pool)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(HERE.parent)}
    hangs = HERE / "candidates" / "hangs.py"
    caller = subprocess.Popen(
        [sys.executable, str(script), str(HERE.parent / "kernels" / "l1_norm"), str(hangs)],
        stdout=subprocess.PIPE,
        env=env,
    )
    try:
        assert caller.stdout is not None
        worker_pid = int(caller.stdout.readline())
        assert not _gone(worker_pid, 5)  # it runs (the candidate's endless loop, after its import)
    finally:
        caller.kill()
        caller.wait()
    assert _gone(worker_pid, 10)


def test_tamper_watch_covers_the_judge_and_the_candidate_session():
    """The judge's, the verdicts' and the session's modules are the harness too (`tamper._AGENT_MODULES`):
    replacing one of their functions or methods is seen."""
    from agent.evaluation import candidate_session, judge, runners, verdicts, worker
    from agent.evaluation.tamper import TamperWatch

    targets = {
        "agent.evaluation.verdicts.describe": (verdicts, "describe"),
        "agent.evaluation.judge.Judge._compare": (judge.Judge, "_compare"),
        "agent.evaluation.verdicts.Ledger.summary": (verdicts.Ledger, "summary"),
        "agent.evaluation.candidate_session.CandidateSession.call": (
            candidate_session.CandidateSession,
            "call",
        ),
        "agent.evaluation.runners.RemoteRunner.call": (runners.RemoteRunner, "call"),
        "agent.evaluation.worker.evaluate_in_process": (worker, "evaluate_in_process"),
    }
    watch = TamperWatch()
    saved = {label: vars(owner)[name] for label, (owner, name) in targets.items()}
    try:
        for owner, name in targets.values():
            setattr(owner, name, lambda *args, **kwargs: None)
        changed = watch.changed()
    finally:
        for label, (owner, name) in targets.items():
            setattr(owner, name, saved[label])
    assert set(targets) <= set(changed), changed
    assert not watch.changed()


@pytest.mark.slow
def test_warm_worker_is_reused_only_after_clean_candidates(l1):
    with WorkerPool() as pool:
        honest = (HERE / "candidates" / "simple_l1.py").read_text()
        first = evaluate(l1, honest, "cpu", seeds=(0,), pool=pool)
        second = evaluate(l1, honest, "cpu", seeds=(0,), pool=pool)
        assert first.accepted and second.accepted
        assert (pool.started, pool.reused) == (1, 1)
        patched = evaluate(
            l1, (CORPUS / "patches_tensor_eq.py").read_text(), "cpu", seeds=(0,), pool=pool, static=False
        )
        assert patched.rule == "tamper"
        assert pool.replaced == 1 and not pool.idle  # never reused after a candidate that patched anything
        third = evaluate(l1, honest, "cpu", seeds=(0,), pool=pool)
        assert third.accepted and pool.started == 2


@pytest.mark.slow
def test_one_process_path_on_the_cpu(l1):
    """The GPU path (judge and candidate in one worker: a new one, and a warm one in a pool) on the CPU."""
    assert evaluate(l1, l1.kernel_path.read_text(), "cpu", seeds=(0,), split=False).accepted
    with WorkerPool() as pool:
        simple = (HERE / "candidates" / "simple_l1.py").read_text()
        assert evaluate(l1, simple, "cpu", seeds=(0,), split=False, pool=pool).accepted
        for name in ("patches_reference.py", "cache_by_data_ptr.py"):
            result = evaluate(
                l1, (CORPUS / name).read_text(), "cpu", seeds=(0,), static=False, split=False, pool=pool
            )
            # one process: the reference module is there to patch, and the patch is seen
            expected = {"patches_reference.py": "tamper cheating"}.get(
                name, header(CORPUS / name)["runtime-cpu"]
            )
            assert_expected(result, expected, name)
        assert (pool.started, pool.reused, pool.replaced) == (2, 1, 2)


# --- the GPU ------------------------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.parametrize("path", ENTRIES, ids=lambda p: p.stem)
def test_gpu_rejects_exploit(path, l1):
    result = evaluate(l1, path.read_text(), "cuda", seeds=(0,), small=True, time=False)
    assert_expected(result, header(path)["expect"], path.name)


@pytest.mark.gpu
@pytest.mark.parametrize(
    "path", [p for p in ENTRIES if header(p)["runtime-gpu"] != "skip"], ids=lambda p: p.stem
)
def test_gpu_runtime_defences_alone(path, l1):
    result = evaluate(
        l1, path.read_text(), "cuda", seeds=(0,), small=True, time=False, static=False, timeout_s=300
    )
    assert_expected(result, header(path)["runtime-gpu"], path.name)


@pytest.mark.gpu
@pytest.mark.parametrize("kernel", KERNELS, ids=lambda p: p.parent.name)
def test_gpu_accepts_bundled_kernel(kernel):
    spec = load_problem(kernel.parent)
    result = evaluate(spec, kernel.read_text(), "cuda", small=True, time=False)
    assert result.accepted, result.reason


@pytest.mark.gpu
@pytest.mark.parametrize(
    ("name", "status"),
    [
        ("illegal_address.py", Status.CRASHED),
        ("infinite_kernel.py", Status.TIMEOUT),
        ("out_of_memory.py", Status.CRASHED),
    ],
)
def test_gpu_fault_is_contained(name, status, l1):
    with WorkerPool() as pool:
        honest = l1.kernel_path.read_text()
        result = evaluate(
            l1,
            (FAULTS / name).read_text(),
            "cuda",
            seeds=(0,),
            small=True,
            time=False,
            pool=pool,
            timeout_s=60,
        )
        assert result.status == status, result.reason
        after = evaluate(l1, honest, "cuda", seeds=(0,), small=True, time=False, pool=pool)
        assert after.accepted, after.reason
        assert pool.replaced == 1
