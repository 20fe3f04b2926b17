"""Metric sets, the ncu command line, and every way a profiling run ends, with fake ncu executables.

The fakes are small Python scripts standing in for ncu: they print what ncu prints in each case, and the
one of the success path copies a real H200 report (tests/fixtures/ncu/l1_seed_multi.ncu-rep) to `-o`.
The tests marked `gpu` run the real ncu on kernels/l1_norm.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from rich.console import Console

from agent.profiling.metric_sets import MetricSet, MetricSetError, list_metric_sets, load_metric_set
from agent.profiling.ncu import ALL_RANGES, ProfileFailure, build_ncu_command, find_ncu, profile_candidates
from agent.profiling.read import NcuReportError, import_ncu_report, profile_report_table, read_report
from agent.profiling.target import ProfileCandidate, pin_configs
from agent.records import ProblemSpec

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "ncu"
L1 = ROOT / "kernels" / "l1_norm"
KERNEL = "l1_norm_kernel_autotune"
SEED_METRICS = [
    "sm__throughput.avg.pct_of_peak_sustained_elapsed",
    "launch__grid_size",
    "sm__warps_active.avg.pct_of_peak_sustained_active",
    "dram__throughput.avg.pct_of_peak_sustained_elapsed",
    "lts__t_sector_hit_rate.pct",
]
SETS = ["full", "memory", "occupancy", "seed", "speed-of-light", "stalls"]


def _has_reader() -> bool:
    try:
        import_ncu_report()
        return True
    except NcuReportError:
        return False


needs_reader = pytest.mark.skipif(not _has_reader(), reason="ncu_report is not importable")
# The fake ncu executables write what they saw into tmp_path, outside the box: they run without bwrap
# (`sandbox_off`); the boxed form of profiling is tested in test_sandbox_escapes.py.
pytestmark = pytest.mark.usefixtures("sandbox_off")


def _problem() -> ProblemSpec:
    return ProblemSpec(
        name="l1_norm",
        reference_path=L1 / "reference.py",
        kernel_path=L1 / "kernel.py",
        small_shapes={"batch_size": 3, "dim": 5003},  # as kernels/l1_norm/problem.toml, for the interpreter
    )


def _cands(n: int) -> list[ProfileCandidate]:
    pin = {KERNEL: {"BLOCK_SIZE_D": 2048, "num_warps": 8, "num_stages": 3}}
    return [ProfileCandidate(source=f"# candidate {i}\n", pinned_configs=pin) for i in range(n)]


def _fake_ncu(tmp_path: Path, body: str) -> str:
    """A stand-in for ncu: `argv` is its arguments, `out` the -o value, `req` the request of the target."""
    path = tmp_path / "fake_ncu"
    path.write_text(
        f"#!{sys.executable}\n"
        "import json, os, shutil, subprocess, sys, time\n"
        "argv = sys.argv[1:]\n"
        "out = argv[argv.index('-o') + 1]\n"
        "req = json.load(open(argv[-1]))\n" + body
    )
    path.chmod(0o755)
    return str(path)


# ---- metric sets -------------------------------------------------------------------------------


def test_every_metric_set_loads():
    assert list_metric_sets() == SETS
    for name in SETS:
        ms = load_metric_set(name)
        assert ms.name == name and ms.description
        assert ms.display_metrics
        assert ms.has_rules == (name != "seed")
    assert load_metric_set("seed").metrics == SEED_METRICS
    assert load_metric_set("full").set == "full"
    assert "WarpStateStats" in load_metric_set("stalls").sections
    assert any("stalled" in m for m in load_metric_set("stalls").display_metrics)


def test_unknown_metric_set_names_the_known_ones():
    with pytest.raises(MetricSetError, match=r"unknown metric set 'nope'.*seed"):
        load_metric_set("nope")


def test_metric_set_validation():
    with pytest.raises(ValueError, match="at least one"):
        MetricSet(name="x")
    with pytest.raises(ValueError, match="section_metrics needs"):
        MetricSet(name="x", metrics=["a"], section_metrics=["b"])
    with pytest.raises(ValueError):
        MetricSet(name="x", metrics=["a"], unknown_field=1)


# ---- the command line --------------------------------------------------------------------------


def _after(cmd: list[str], flag: str) -> list[str]:
    return [cmd[i + 1] for i, a in enumerate(cmd[:-1]) if a == flag]


@pytest.mark.parametrize("name", SETS)
def test_command_for_each_metric_set(name, tmp_path):
    ms = load_metric_set(name)
    target = [sys.executable, "-m", "agent.profiling.target", "req.json"]
    cmd = build_ncu_command("/x/ncu", ms, tmp_path / "r.ncu-rep", target)
    assert cmd[0] == "/x/ncu"
    assert cmd[-len(target) :] == target
    assert _after(cmd, "--clock-control") == ["none"]
    assert "--nvtx" in cmd and _after(cmd, "--nvtx-include") == [ALL_RANGES]
    assert ALL_RANGES == "regex:ncu_agent_c[0-9]+/"
    assert "-f" in cmd and _after(cmd, "-o") == [str(tmp_path / "r")]
    assert _after(cmd, "--section") == ms.sections
    assert _after(cmd, "--set") == ([ms.set] if ms.set else [])
    assert _after(cmd, "--metrics") == ([",".join(ms.metrics)] if ms.metrics else [])
    if name == "seed":
        assert _after(cmd, "--metrics") == [",".join(SEED_METRICS)]
        assert "--section" not in cmd and "--set" not in cmd


def test_command_for_one_range(tmp_path):
    cmd = build_ncu_command("ncu", load_metric_set("seed"), tmp_path / "r", ["t"], "ncu_agent_c0/")
    assert _after(cmd, "--nvtx-include") == ["ncu_agent_c0/"]
    assert _after(cmd, "-o") == [str(tmp_path / "r")]


def test_find_ncu(tmp_path, monkeypatch):
    fake = _fake_ncu(tmp_path, "")
    monkeypatch.setenv("NCU", fake)
    assert find_ncu() == fake
    monkeypatch.setenv("NCU", str(tmp_path / "absent"))
    assert find_ncu() is None


# ---- failures are values -----------------------------------------------------------------------


def test_ncu_not_installed(tmp_path, monkeypatch):
    monkeypatch.setenv("NCU", str(tmp_path / "no_ncu_here"))
    results = profile_candidates(_problem(), _cands(2), "seed", tmp_path / "out")
    assert [r.index for r in results] == [0, 1]
    for r in results:
        assert not r.ok and r.error_kind == ProfileFailure.NCU_MISSING
        assert "ncu not found" in r.error and "NCU=" in r.error
        assert r.provenance.metric_set == "seed" and r.provenance.pinned_config[KERNEL]["num_warps"] == 8


def test_no_counter_permission(tmp_path):
    ncu = _fake_ncu(
        tmp_path,
        "print('==ERROR== ERR_NVGPUCTRPERM - The user does not have permission to access NVIDIA GPU "
        "Performance Counters on the target device 0.')\n"
        "print('target output\\n' * 5000)\n"  # pushes the error out of the kept tail
        "sys.exit(1)\n",
    )
    results = profile_candidates(_problem(), _cands(2), "seed", tmp_path / "out", ncu=ncu)
    for r in results:
        assert not r.ok and r.error_kind == ProfileFailure.PERMISSION
        assert "ERR_NVGPUCTRPERM" in r.error and "--clock-control none" in r.error


def test_no_kernels_profiled(tmp_path):
    ncu = _fake_ncu(
        tmp_path,
        "print('==PROF== Disconnected from process 1')\nprint('==WARNING== No kernels were profiled.')\n",
    )
    results = profile_candidates(_problem(), _cands(2), "seed", tmp_path / "out", ncu=ncu)
    for r in results:
        assert not r.ok and r.error_kind == ProfileFailure.NO_KERNELS
        assert "no kernel" in r.error and "ncu_agent_c" in r.error
        assert r.report_path is None


def test_no_kernels_with_candidate_errors(tmp_path):
    """The target's own account of a failed candidate is the error that candidate gets."""
    ncu = _fake_ncu(
        tmp_path,
        "json.dump({'errors': {'0': 'CompilationError: at 3:4 (at candidate.py:12)'}, 'profiled': []},\n"
        "          open(req['status_path'], 'w'))\n"
        "print('==WARNING== No kernels were profiled.')\n",
    )
    (r,) = profile_candidates(_problem(), _cands(1), "seed", tmp_path / "out", ncu=ncu)
    assert r.error_kind == ProfileFailure.CANDIDATE and "CompilationError" in r.error


def test_ncu_hang_is_killed_with_its_children(tmp_path):
    pid_file = tmp_path / "child.pid"
    ncu = _fake_ncu(
        tmp_path,
        "child = subprocess.Popen(['sleep', '60'])\n"
        f"open({str(pid_file)!r}, 'w').write(str(child.pid))\n"
        "time.sleep(60)\n",
    )
    start = time.perf_counter()
    results = profile_candidates(_problem(), _cands(2), "seed", tmp_path / "out", timeout_s=2, ncu=ncu)
    assert time.perf_counter() - start < 15
    for r in results:
        assert not r.ok and r.error_kind == ProfileFailure.TIMEOUT and "2 s" in r.error
        assert 1.5 < r.wall_s < 15
    child = int(pid_file.read_text())
    time.sleep(0.2)
    assert not _alive(child)  # the whole process group died, not only ncu


def _alive(pid: int) -> bool:
    """Running (a killed orphan may linger as a zombie until whoever adopted it reaps it)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_ncu_dies_with_the_process_that_started_it(tmp_path):
    """ncu leads its own session (for the group kill above); a SIGKILL of the job that started it (a batch
    killed from outside) takes it down too, so it does not go on profiling on a GPU the batch left."""
    pid_file = tmp_path / "ncu.pid"
    ncu = _fake_ncu(tmp_path, f"open({str(pid_file)!r}, 'w').write(str(os.getpid()))\ntime.sleep(300)\n")
    caller = tmp_path / "job.py"
    caller.write_text(
        "import sys\n"
        "from pathlib import Path\n"
        "from agent.records import ProblemSpec\n"
        "from agent.profiling.target import ProfileCandidate\n"
        "from agent.profiling.ncu import profile_candidates\n"
        "L1 = Path(sys.argv[1])\n"
        "spec = ProblemSpec(name='l1_norm', reference_path=L1 / 'reference.py',\n"
        "                   kernel_path=L1 / 'kernel.py')\n"
        "profile_candidates(spec, [ProfileCandidate(source='# c\\n')], 'seed', Path(sys.argv[2]),\n"
        "                   timeout_s=600, ncu=sys.argv[3])\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    job = subprocess.Popen([sys.executable, str(caller), str(L1), str(tmp_path / "out"), ncu], env=env)
    try:
        end = time.monotonic() + 60
        while not pid_file.exists() or not pid_file.read_text():
            assert job.poll() is None and time.monotonic() < end
            time.sleep(0.1)
        ncu_pid = int(pid_file.read_text())
        assert _alive(ncu_pid)
    finally:
        job.kill()
        job.wait()
    end = time.monotonic() + 10
    while _alive(ncu_pid) and time.monotonic() < end:
        time.sleep(0.1)
    assert not _alive(ncu_pid)


def test_exit_without_report(tmp_path):
    ncu = _fake_ncu(tmp_path, "print('==ERROR== something else went wrong')\nsys.exit(3)\n")
    (r,) = profile_candidates(_problem(), _cands(1), "seed", tmp_path / "out", ncu=ncu)
    assert r.error_kind == ProfileFailure.NO_REPORT and "code 3" in r.error and "something else" in r.error


def test_unreadable_report(tmp_path):
    ncu = _fake_ncu(tmp_path, "open(out + '.ncu-rep', 'wb').write(b'garbage')\n")
    (r,) = profile_candidates(_problem(), _cands(1), "seed", tmp_path / "out", ncu=ncu)
    assert r.error_kind == ProfileFailure.UNREADABLE and "not an Nsight Compute report" in r.error


def test_stale_report_is_not_reused(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "profile.ncu-rep").write_bytes((FIXTURES / "l1_seed_multi.ncu-rep").read_bytes())
    ncu = _fake_ncu(tmp_path, "print('==WARNING== No kernels were profiled.')\n")
    (r,) = profile_candidates(_problem(), _cands(1), "seed", out, ncu=ncu)
    assert r.error_kind == ProfileFailure.NO_KERNELS


def test_secrets_do_not_reach_ncu(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-1")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://x")
    monkeypatch.setenv("MY_TOKEN", "t")
    monkeypatch.setenv("DB_PASSWORD", "p")
    monkeypatch.setenv("HARMLESS", "1")
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    env_file = tmp_path / "env.json"
    ncu = _fake_ncu(tmp_path, f"json.dump(dict(os.environ), open({str(env_file)!r}, 'w'))\n")
    profile_candidates(_problem(), _cands(1), "seed", tmp_path / "out", ncu=ncu)
    env = json.loads(env_file.read_text())
    assert env["OMP_NUM_THREADS"] == "3"  # an allow-list: what is not on it is not passed on
    assert not {"OPENAI_API_KEY", "OPENAI_BASE_URL", "MY_TOKEN", "DB_PASSWORD", "HARMLESS"} & set(env)


# ---- success: one report, split per candidate ----------------------------------------------------


@needs_reader
def test_success_splits_launches_per_candidate(tmp_path):
    argv_file = tmp_path / "argv.json"
    ncu = _fake_ncu(
        tmp_path,
        f"json.dump(argv, open({str(argv_file)!r}, 'w'))\n"
        f"shutil.copy({str(FIXTURES / 'l1_seed_multi.ncu-rep')!r}, out + '.ncu-rep')\n",
    )
    out = tmp_path / "out"
    results = profile_candidates(_problem(), _cands(3), "seed", out, ncu=ncu)
    assert [r.index for r in results] == [0, 1, 2]
    for i, r in enumerate(results):
        assert r.ok and r.error is None and r.error_kind is None, r.error
        assert r.report_path == out / "profile.ncu-rep" and r.report_path.is_file()
        assert list(r.metrics) == [KERNEL] and len(r.metrics[KERNEL]) == 1
        assert list(r.metrics[KERNEL][0]) == SEED_METRICS
        assert r.metrics[KERNEL][0]["launch__grid_size"] == 32768
        assert r.rules == []  # --metrics alone: no rule results
        assert r.provenance.launch_indices == [i]
        assert [la.range_name for la in r.launches] == [f"ncu_agent_c{i}"]
        assert "H200" in r.provenance.gpu_name and r.provenance.ncu_version.startswith("2025.3.1")
        assert r.provenance.pinned_config == {KERNEL: {"BLOCK_SIZE_D": 2048, "num_warps": 8, "num_stages": 3}}
        assert r.wall_s > 0
    argv = json.loads(argv_file.read_text())
    assert argv[argv.index("--nvtx-include") + 1] == ALL_RANGES
    assert argv[-3:-1] == ["--module", "agent.profiling.target"]  # through the bootstrap (source only)
    assert Path(argv[-1]).name == "profile.request.json"  # a copy in the box, gone with it
    req = json.loads((out / "profile.request.json").read_text())
    assert len(req["candidates"]) == 3 and Path(req["problem"]["reference_path"]).is_absolute()
    assert (out / "profile.ncu.log").is_file()


@needs_reader
def test_candidates_without_launches_or_failed(tmp_path):
    """5 candidates, a report with ranges c0..c2: c3 failed in the target, c4 launched nothing."""
    ncu = _fake_ncu(
        tmp_path,
        f"shutil.copy({str(FIXTURES / 'l1_seed_multi.ncu-rep')!r}, out + '.ncu-rep')\n"
        "json.dump({'errors': {'3': 'RuntimeError: boom'}, 'profiled': [0, 1, 2, 4]},\n"
        "          open(req['status_path'], 'w'))\n",
    )
    results = profile_candidates(_problem(), _cands(5), "seed", tmp_path / "out", ncu=ncu)
    assert [r.ok for r in results] == [True, True, True, False, False]
    assert results[3].error_kind == ProfileFailure.CANDIDATE and "boom" in results[3].error
    assert results[4].error_kind == ProfileFailure.NO_KERNELS and "ncu_agent_c4" in results[4].error


@needs_reader
def test_one_candidate_uses_its_exact_range(tmp_path):
    argv_file = tmp_path / "argv.json"
    ncu = _fake_ncu(
        tmp_path,
        f"json.dump(argv, open({str(argv_file)!r}, 'w'))\n"
        f"shutil.copy({str(FIXTURES / 'l1_seed.ncu-rep')!r}, out + '.ncu-rep')\n",
    )
    (r,) = profile_candidates(_problem(), _cands(1), "seed", tmp_path / "out", ncu=ncu)
    assert r.ok
    argv = json.loads(argv_file.read_text())
    assert argv[argv.index("--nvtx-include") + 1] == "ncu_agent_c0/"


@needs_reader
def test_report_table():
    profile = read_report(FIXTURES / "l1_seed_multi.ncu-rep", metrics=SEED_METRICS)
    table = profile_report_table(profile)
    assert [c.header for c in table.columns] == ["kernel", "launch", "metric", "value"]
    assert table.row_count == 3 * len(SEED_METRICS)
    console = Console(file=io.StringIO(), width=200)
    console.print(table)
    text = console.file.getvalue()
    assert KERNEL in text and "ncu_agent_c2" in text and "32,768" in text and "H200" in text


# ---- pinning autotuned kernels (no GPU needed) -----------------------------------------------------


def test_pin_configs_keeps_the_matching_config():
    import triton

    class Tuner:
        def __init__(self, name, configs):
            self.fn = type("F", (), {"__name__": name})()
            self.base_fn = self.fn
            self.configs = configs
            self.cache = {("k",): configs[0]}

    a = triton.Config({"B": 256}, num_warps=4, num_stages=3)
    b = triton.Config({"B": 1024}, num_warps=8, num_stages=3)
    tuned, other = Tuner(KERNEL, [a, b]), Tuner("other", [a, b])
    notes = pin_configs([tuned, other], {KERNEL: {"B": 1024, "num_warps": 8, "num_stages": 3}})
    assert tuned.configs == [b] and tuned.cache == {}
    assert other.configs == [a, b] and any("other" in n for n in notes)
    notes = pin_configs([tuned], {KERNEL: {"B": 64, "num_warps": 2, "num_stages": 1}})
    (c,) = tuned.configs
    assert c.kwargs == {"B": 64} and c.num_warps == 2 and c.num_stages == 1 and notes


def test_target_on_cpu_pins_isolates_and_reports(tmp_path):
    """The ncu target itself, in Triton's interpreter: pinned config runs; failing candidates are skipped."""
    import subprocess

    from agent.evaluation.sandbox import worker_env
    from agent.profiling.target import CandidateStatus, ProfileRequest

    good = (L1 / "kernel.py").read_text()
    pin = {KERNEL: {"BLOCK_SIZE_D": 512, "num_warps": 4, "num_stages": 3}}
    raising = good.replace("class ModelNew", "class _Unused") + (
        "\nclass ModelNew(torch.nn.Module):\n    def forward(self, x):\n        raise ValueError('kaboom')\n"
    )
    req = ProfileRequest(
        problem=_problem(),
        candidates=[
            ProfileCandidate(source="def broken(:\n", pinned_configs={}),
            ProfileCandidate(source=good, pinned_configs=pin),
            ProfileCandidate(source=raising, pinned_configs={}),
        ],
        status_path=tmp_path / "status.json",
        device="cpu",
        small=True,
    )
    req_path = tmp_path / "req.json"
    req_path.write_text(req.model_dump_json())
    proc = subprocess.run(
        [sys.executable, "-m", "agent.profiling.target", str(req_path)],
        env=worker_env({"TRITON_INTERPRET": "1"}),
        capture_output=True,
        text=True,
        timeout=120,
    )
    status = CandidateStatus.model_validate_json((tmp_path / "status.json").read_text())
    assert proc.returncode == 0, proc.stderr
    assert status.profiled == [1]
    assert "syntax error" in status.errors[0] and "kaboom" in status.errors[2]
    assert status.ran_configs[1] == pin  # the pinned config ran; nothing was tuned
    assert "candidate 0 failed" in proc.stderr and "candidate 2 failed" in proc.stderr


# ---- on the GPU, with the real ncu -------------------------------------------------------------------


def _real_ncu_or_skip() -> str:
    ncu = find_ncu()
    if ncu is None:
        pytest.skip("ncu not found")
    return ncu


def _l1_candidate(block: int, warps: int) -> ProfileCandidate:
    return ProfileCandidate(
        source=(L1 / "kernel.py").read_text(),
        pinned_configs={KERNEL: {"BLOCK_SIZE_D": block, "num_warps": warps, "num_stages": 3}},
    )


@pytest.mark.gpu
def test_gpu_seed_profile_has_the_seed_shape(tmp_path):
    _real_ncu_or_skip()
    (r,) = profile_candidates(_problem(), [_l1_candidate(2048, 8)], "seed", tmp_path, timeout_s=300)
    assert r.ok, r.error
    assert list(r.metrics) == [KERNEL] and len(r.metrics[KERNEL]) == 1
    row = r.metrics[KERNEL][0]
    assert list(row) == SEED_METRICS and row["launch__grid_size"] == 32768
    assert all(0 <= row[m] <= 100 for m in SEED_METRICS if m != "launch__grid_size")
    assert r.provenance.gpu_name and r.provenance.ncu_version


@pytest.mark.gpu
def test_gpu_profiled_launch_uses_the_pinned_config(tmp_path):
    _real_ncu_or_skip()
    cands = [_l1_candidate(512, 4), _l1_candidate(2048, 8)]
    results = profile_candidates(_problem(), cands, "seed", tmp_path, timeout_s=300)
    for r, cand, warps in zip(results, cands, (4, 8), strict=True):
        assert r.ok, r.error
        (launch,) = r.launches  # warm-up and tuning stayed outside the range: exactly one launch
        assert launch.kernel == KERNEL and launch.block_size == warps * 32
        assert r.provenance.notes == []
        assert r.provenance.ran_config == cand.pinned_configs


@pytest.mark.gpu
@pytest.mark.slow
@pytest.mark.parametrize("name", [s for s in SETS if s != "seed"])
def test_gpu_each_metric_set_collects_its_metrics(name, tmp_path):
    _real_ncu_or_skip()
    (r,) = profile_candidates(_problem(), [_l1_candidate(2048, 8)], name, tmp_path, timeout_s=300)
    assert r.ok, r.error
    row = r.metrics[KERNEL][0]
    missing = [m for m in load_metric_set(name).display_metrics if m not in row]
    assert not missing, missing
    if name != "occupancy":  # seen on the H200, 2026-11-26: no Occupancy rule fires for this kernel
        assert r.rules, "sections were collected, so ncu should have stored rule results"
