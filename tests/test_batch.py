"""Batches on the CPU: inputs and filters, GPU slots and locks (fake GPU ids), budgets, the summary's math,
the replay store, and a small batch end to end."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agent.batch.driver import create_batch, run_batch
from agent.batch.gpu_slots import GpuLock, Slots, overlaps, read_holds
from agent.batch.inputs import (
    BatchConfig,
    BatchInputError,
    Budget,
    Execution,
    Invocation,
    Invocations,
    find_problems,
)
from agent.batch.resume import ReplayStore
from agent.batch.summary import (
    BatchSummary,
    Geomean,
    Overall,
    ProblemRow,
    _nothing_attempted,
    fast_p,
    fast_ps,
    geomean,
    level_of,
    unmeasured_note,
)
from agent.batch.summary_output import summary_tables, write_summary
from agent.cli import app
from agent.commands.run_setup import NEEDS_LLM
from agent.config import RunOptions
from agent.data.paths import kernels_dir
from agent.records import Candidate, EvalResult, ProfileRecord, Status
from agent.store import Store

ROOT = Path(__file__).resolve().parent.parent
KERNELS = str(kernels_dir())
BARE = textwrap.dedent(
    """
    import torch
    from torch import nn

    class Model(nn.Module):
        def forward(self, x):
            return torch.relu(x)

    def get_inputs():
        return [torch.randn(64)]

    def get_init_inputs():
        return []
    """
)


def _config(tmp_path: Path, inputs: list[str], **kw) -> BatchConfig:
    include = kw.pop("include", [])
    return BatchConfig(
        inputs=inputs,
        include=include,
        problems=find_problems(inputs, include, [], None),
        run=RunOptions(stages=["micro"], max_iterations=1),
        **kw,
    )


# --- inputs and filters ---------------------------------------------------------------------------
def test_find_problems_folders_files_and_filters(tmp_path):
    names = [e.name for e in find_problems([str(kernels_dir())], [], [], None)]
    assert names == sorted(p.name for p in kernels_dir().iterdir() if (p / "reference.py").exists())
    assert [e.name for e in find_problems(["l1_norm"], [], [], None)] == ["l1_norm"]
    assert [e.name for e in find_problems([KERNELS], ["s*"], ["sum*"], None)] == ["softmax"]
    listed = tmp_path / "list.txt"
    listed.write_text("# the norms\nl1_norm\nlayer*  # globs too\n")
    assert [e.name for e in find_problems([KERNELS], [], [], listed)] == ["l1_norm", "layernorm"]

    level = tmp_path / "level1"  # a KernelBench level folder: bare reference files
    level.mkdir()
    (level / "1_Relu.py").write_text(BARE)
    (level / "2_Relu_again.py").write_text(BARE)
    (level / "__init__.py").write_text("")
    entries = find_problems([str(level)], [], [], None)
    assert [e.name for e in entries] == ["1_Relu", "2_Relu_again"]
    assert all(e.path.is_absolute() for e in entries)

    other = tmp_path / "level2"
    other.mkdir()
    (other / "1_Relu.py").write_text(BARE)
    both = [e.name for e in find_problems([str(level), str(other)], ["*1_Relu"], [], None)]
    assert both == ["level1-1_Relu", "level2-1_Relu"]  # same stem in two folders: the folder says which


def test_find_problems_errors(tmp_path):
    with pytest.raises(BatchInputError, match="no such file"):
        find_problems([str(tmp_path / "missing")], [], [], None)
    (tmp_path / "empty").mkdir()
    with pytest.raises(BatchInputError, match="no problem folder"):
        find_problems([str(tmp_path / "empty")], [], [], None)
    with pytest.raises(BatchInputError, match="left after the filters"):
        find_problems([KERNELS], ["nothing*"], [], None)


# --- GPU slots and locks, with fake GPU ids ---------------------------------------------------------
def test_slots_spread_jobs_over_gpus():
    slots = Slots(["0", "1"], jobs=4)
    taken = []
    while slots.has_room():
        taken.append(slots.take())
    assert taken == ["0", "1", "0", "1"]
    slots.give_back("1")
    assert slots.has_room() and slots.take() == "1"
    cpu = Slots([], jobs=2)
    assert [cpu.take(), cpu.take()] == [None, None] and not cpu.has_room()


HOLDER = """
import sys, time
from agent.batch.gpu_slots import GpuLock
lock = GpuLock(sys.argv[1], sys.argv[2], sys.argv[3])
for what in ("evaluate", "ncu", "ncu"):
    with lock.hold(what):
        time.sleep(0.3)
"""


def test_gpu_lock_serializes_processes_per_gpu(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    start = time.time()
    procs = [
        subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path), gpu, name], env=env)
        for gpu, name in (("0", "a"), ("0", "b"), ("1", "c"))
    ]
    assert [p.wait(timeout=60) for p in procs] == [0, 0, 0]
    assert overlaps(tmp_path) == []
    gpu0 = read_holds(GpuLock(tmp_path, "0").log)
    assert len(gpu0) == 6 and {h.problem for h in gpu0} == {"a", "b"}
    assert sum(h.end - h.start for h in gpu0) >= 1.8  # six holds of 0.3 s, one after another
    assert max(h.end for h in gpu0) - start >= 1.8
    gpu1 = read_holds(GpuLock(tmp_path, "1").log)
    assert min(h.start for h in gpu1) < max(h.end for h in gpu0)  # another GPU is not held up
    # The check finds overlapping holds when there are some.
    with GpuLock(tmp_path, "0").log.open("a") as f:
        f.write(gpu0[0].model_copy(update={"problem": "x"}).model_dump_json() + "\n")
    assert len(overlaps(tmp_path)) == 1


# --- the summary's math ----------------------------------------------------------------------------
def _row(name, correct, eager=None, compile_=None, status="done") -> ProblemRow:
    return ProblemRow(
        name=name, status=status, correct=correct, speedup_eager=eager, speedup_compile=compile_
    )


def test_fast_p_and_geomean_on_synthetic_numbers():
    rows = [
        _row("a", True, 2.5, 1.2),
        _row("b", True, 1.2, 0.8),
        _row("c", True, 0.5, 0.4),
        _row("d", False, 3.0, 3.0),  # fast but wrong: never counts
        _row("e", False, status="skipped"),
    ]
    assert fast_p(rows, 0, "eager") == pytest.approx(3 / 5)
    assert fast_p(rows, 1, "eager") == pytest.approx(2 / 5)
    assert fast_p(rows, 1.5, "eager") == pytest.approx(1 / 5)
    assert fast_p(rows, 2, "eager") == pytest.approx(1 / 5)
    assert fast_p(rows, 1, "compile") == pytest.approx(1 / 5)
    assert fast_p(rows, 2, "compile") == 0.0
    assert geomean([2.5, 1.2, 0.5]) == pytest.approx((2.5 * 1.2 * 0.5) ** (1 / 3))
    assert geomean([]) is None


def test_fast_p_not_measured_on_the_cpu():
    rows = [_row("a", True), _row("b", False)]  # no speedups at all: a CPU batch
    assert fast_p(rows, 0, "eager") == 0.5  # correctness is measured
    assert fast_p(rows, 1, "eager") is None and fast_p(rows, 2, "compile") is None
    # A correct problem without a speedup while others have one: counted as not fast.
    mixed = [_row("a", True, 2.0), _row("b", True)]
    assert fast_p(mixed, 1, "eager") == 0.5


def test_levels_cpu_words_and_nothing_attempted():
    assert level_of(Path("/x/KernelBench/level2/1_Conv.py")) == "level2" and level_of(Path("/x/a.py")) is None
    skipped = [ProblemRow(name=n, status="skipped", reason="needs the LLM") for n in ("a", "b")]
    assert _nothing_attempted(skipped, 0).startswith("nothing could be attempted: 2 problems")
    assert _nothing_attempted([*skipped, _row("c", True).model_copy(update={"evaluations": 1})], 0) is None
    assert _nothing_attempted(skipped, 1) is None  # unfinished: resume it, not "nothing"
    rows = [_row("a", True), _row("b", False)]  # the CPU: nothing timed
    overall = Overall(
        problems=2,
        correct=1,
        by_status={"done": 2},
        fast_p=fast_ps(rows),
        unmeasured={"eager": 1, "compile": 1},
        geomean_speedup={"eager": Geomean(value=None, n=0), "compile": Geomean(value=None, n=0)},
        evaluations=2,
        wall_s=60.0,
        evaluations_per_min=2.0,
        tokens=0,
    )
    table = summary_tables(BatchSummary(batch_dir="b", problems=rows, overall=overall))[1]
    cells = [c for col in table.columns for c in col._cells]
    assert "not timed" in cells and "0.50" in cells and not any("0%" in str(c) for c in cells)


def test_the_note_on_missing_speedups_says_why_for_where_it_ran():
    cpu = [_row("a", True), _row("b", False, status="failed")]
    for r in cpu:
        r.device = "cpu"
    assert "a CPU batch" in unmeasured_note(cpu)
    gpu = [_row("a", False, status="failed"), _row("b", False, status="skipped")]
    gpu[0].device = "cuda"  # every evaluation crashed on the GPU: not a CPU batch
    assert "no problem reached a correct, timed kernel" in unmeasured_note(gpu)
    assert unmeasured_note([_row("a", True, 2.5, 1.2), *gpu]) is None


def test_summary_exports_csv_and_json(tmp_path):
    rows = [_row("a", True, 2.5, 1.2), _row("b", False, status="failed")]
    overall = Overall(
        problems=2,
        correct=1,
        by_status={"done": 1, "failed": 1},
        fast_p=[],
        unmeasured={"eager": 0, "compile": 0},
        geomean_speedup={"eager": Geomean(value=2.5, n=1), "compile": Geomean(value=1.2, n=1)},
        evaluations=7,
        wall_s=120.0,
        evaluations_per_min=3.5,
        tokens=0,
    )
    paths = write_summary(tmp_path, BatchSummary(batch_dir=str(tmp_path), problems=rows, overall=overall))
    assert [p.name for p in paths] == ["summary.json", "summary.csv", "summary_overall.csv"]
    back = BatchSummary.model_validate_json((tmp_path / "summary.json").read_text())
    assert back.problems[0].speedup_eager == 2.5
    with (tmp_path / "summary.csv").open() as f:
        table = list(csv.DictReader(f))
    assert [r["name"] for r in table] == ["a", "b"]
    assert table[0]["speedup_eager"] == "2.5" and table[1]["speedup_eager"] == ""  # None: empty, not 0
    with (tmp_path / "summary_overall.csv").open() as f:
        metrics = {(r["metric"], r["baseline"]): r["value"] for r in csv.DictReader(f)}
    assert metrics[("geomean_speedup", "compile")] == "1.2"
    assert metrics[("evaluations_per_min", "")] == "3.5"


# --- the replay store ------------------------------------------------------------------------------
def test_replay_store_matches_repeated_writes(tmp_path):
    store = Store(tmp_path / Store.FILENAME)
    run = store.start_run("p", "cpu", "H200", "search", None, {})
    prompt = store.add_prompt(run, "micro", 1, "prompt text")
    worker = EvalResult(status=Status.ACCEPTED, device="cpu", wall_s=3.2)
    rule = EvalResult(status=Status.CONSTRAINT, reason="broke a rule")
    c1 = store.add_candidate(
        run, 1, Candidate(source="A", proposer="search", stage="micro", prompt_id=prompt)
    )
    e1 = store.add_evaluation(c1, worker)
    c2 = store.add_candidate(
        run, 1, Candidate(source="B", proposer="search", stage="micro", prompt_id=prompt)
    )
    e2 = store.add_evaluation(c2, rule)
    store.add_profile(
        ProfileRecord(
            candidate_id=c1,
            ok=True,
            metric_set="seed",
            report_path="r.ncu-rep",
            metrics={"k": [{"m": 1.0}]},
            rules=["rule"],
            provenance={"x": 1},
        )
    )
    store.close()

    replay = ReplayStore(tmp_path / Store.FILENAME, run)
    assert replay.recorded_evaluation("A") == worker
    assert replay.recorded_evaluation("B") is None  # a rule rejection: no worker ran, nothing to give back
    assert replay.recorded_profiles(["A"], "seed")[0]["report_path"] == "r.ncu-rep"
    assert replay.recorded_profiles(["A", "B"], "seed") is None  # a step is given back whole or not at all
    assert replay.add_prompt(run, "micro", 1, "prompt text") == prompt
    assert (
        replay.add_candidate(
            run, 1, Candidate(source="A", proposer="search", stage="micro", prompt_id=prompt)
        )
        == c1
    )
    assert replay.add_evaluation(c1, worker) == e1
    assert (
        replay.add_candidate(
            run, 1, Candidate(source="B", proposer="search", stage="micro", prompt_id=prompt)
        )
        == c2
    )
    assert replay.add_evaluation(c2, rule) == e2
    assert (
        replay.add_profile(
            ProfileRecord(
                candidate_id=c1,
                ok=True,
                metric_set="seed",
                report_path="r.ncu-rep",
                metrics={"k": [{"m": 1.0}]},
                rules=["rule"],
            )
        )
        == 1
    )
    assert replay.reused == 1
    # Beyond what was recorded, writes insert; a redone evaluation (other timings) would be a second row.
    assert replay.add_prompt(run, "micro", 1, "prompt text") != prompt
    assert replay.add_evaluation(c1, worker.model_copy(update={"wall_s": 9.9})) != e1
    counts = [
        replay.conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in ("candidates", "profiles")
    ]
    assert counts == [2, 1]


def _recorded(tmp_path: Path) -> tuple[Path, int, EvalResult]:
    store = Store(tmp_path / Store.FILENAME)
    run = store.start_run("l1_norm", "cuda", "H200", "search", None, {})
    result = EvalResult(status=Status.ACCEPTED, device="cuda", wall_s=1.0)
    cand = store.add_candidate(run, 0, Candidate(source="A", proposer="start", stage="micro"))
    store.add_evaluation(cand, result)
    store.add_profile(
        ProfileRecord(
            candidate_id=cand,
            ok=True,
            metric_set="seed",
            report_path="a.ncu-rep",
            metrics={"k": [{"m": 2.0}]},
            rules=["a rule"],
        )
    )
    store.close()
    return tmp_path / Store.FILENAME, run, result


def test_hooks_reuse_records_hold_the_gpu_lock_and_keep_budgets(tmp_path, monkeypatch):
    """The batch's evaluator and profiler, as the loop and the profiling step call them: recorded results
    come back without a worker or ncu; new ones run under the GPU's lock; the problem's budget stops them."""
    from agent.batch.budget import JobBudget, ProblemBudgetExhausted
    from agent.batch.hooks import evaluator_for, profiler_for
    from agent.loop import LoopHooks, LoopSettings
    from agent.problem import load_problem
    from agent.profiling.ncu import ProfileProvenance, ProfileResult
    from agent.profiling.step import profile_step
    from agent.prompt.gpus import find_gpu
    from agent.prompt.stages import load_stage

    path, run, result = _recorded(tmp_path)
    store = ReplayStore(path, run)
    calls: list[str] = []

    def fake_evaluate(problem, source, device=None, **kw):
        calls.append(f"evaluate {source}")
        return EvalResult(status=Status.ACCEPTED, device="cuda", wall_s=2.0)

    def fake_ncu(problem, candidates, metric_set, out_dir, **kw):
        calls.append(f"ncu {[c.source for c in candidates]}")
        prov = ProfileProvenance(metric_set=metric_set.name)
        return [ProfileResult(index=i, ok=True, provenance=prov) for i in range(len(candidates))]

    monkeypatch.setattr("agent.batch.hooks.evaluate", fake_evaluate)
    monkeypatch.setattr("agent.batch.hooks.profile_candidates", fake_ncu)
    lock = GpuLock(tmp_path, "0", "l1_norm")
    budget = JobBudget(tmp_path, Budget(problem_evaluations=2), None)
    evaluator, profiler = evaluator_for(store, run, budget, lock), profiler_for(store, lock)
    settings = LoopSettings(
        stage=load_stage("micro"),
        gpu=find_gpu("h200"),
        device="cuda",  # so that the profiling step profiles (through the fake)
        run_dir=tmp_path,
        metric_set="seed",
        hooks=LoopHooks(evaluator, profiler),
    )
    problem = load_problem("l1_norm")

    assert evaluator(problem, "A", "cuda") == result and calls == []
    (prof,) = profile_step(problem, [(1, "A", result)], settings, store)
    assert prof.metrics == {"k": [{"m": 2.0}]} and prof.rules == ["a rule"] and calls == []
    assert store.conn.execute("SELECT COUNT(*) FROM profiles").fetchone()[0] == 1

    fresh = evaluator(problem, "B", "cuda")
    cand = store.add_candidate(run, 1, Candidate(source="B", proposer="search", stage="micro"))
    store.add_evaluation(cand, fresh)
    profile_step(problem, [(cand, "B", fresh)], settings, store)
    assert calls == ["evaluate B", "ncu ['B']"]
    assert [h.what for h in read_holds(lock.log)] == ["evaluate", "ncu"]
    with pytest.raises(ProblemBudgetExhausted):  # A and B: the problem's 2 evaluations are spent
        evaluator(problem, "C", "cuda")
    assert calls == ["evaluate B", "ncu ['B']"]


# --- a small batch, end to end ----------------------------------------------------------------------
@pytest.mark.slow
def test_batch_end_to_end_with_fake_gpu_ids(tmp_path):
    """l1_norm and softmax on two fake GPUs, a bare KernelBench file (skipped: needs the LLM), a broken
    problem (an error, recorded): the batch goes through, the summary says what happened to each."""
    level = tmp_path / "level1"
    level.mkdir()
    (level / "1_Relu.py").write_text(BARE)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "reference.py").write_text("raise RuntimeError('broken on purpose')\n")
    batch_dir = tmp_path / "batch"
    inputs = ["l1_norm", "softmax", str(level), str(broken)]
    cfg = _config(tmp_path, inputs, budget=Budget(problem_evaluations=2))
    create_batch(batch_dir, cfg)
    with pytest.raises(FileExistsError):
        create_batch(batch_dir, cfg)
    lines: list[str] = []
    summary = run_batch(batch_dir, Execution(gpus=["0", "1"], jobs=2), log=lines.append)

    rows = {r.name: r for r in summary.problems}
    assert {n: r.status for n, r in rows.items()} == {
        "l1_norm": "budget",
        # softmax's micro stage has one move on the CPU (its plain launch wrapped in an autotune: the
        # num_warps is computed at run time), so it ends within its 2 evaluations
        "softmax": "done",
        "1_Relu": "skipped",
        "broken": "error",
    }
    assert NEEDS_LLM in rows["1_Relu"].reason and "broken on purpose" in rows["broken"].reason
    assert rows["l1_norm"].correct and rows["softmax"].correct and not rows["broken"].correct
    assert rows["l1_norm"].evaluations == 2 and rows["l1_norm"].best_ms is None  # the CPU: not timed
    o = summary.overall
    assert o.problems == 4 and o.correct == 2 and o.evaluations == 4
    assert [fp.eager for fp in o.fast_p] == [0.5, None, None, None]
    assert o.geomean_speedup["eager"].value is None and o.evaluations_per_min > 0
    assert (batch_dir / "summary.csv").exists() and (batch_dir / "summary_overall.csv").exists()
    assert [(lv.level, lv.problems, lv.correct) for lv in o.levels] == [("level1", 1, 0)]
    assert rows["l1_norm"].first_correct.endswith(":0") and rows["1_Relu"].first_correct is None
    assert o.nothing_attempted is None

    # The fake GPUs: each job ran with its GPU, every evaluation held that GPU's lock, none overlapped.
    gpus = {json.loads((batch_dir / "problems" / n / "attempts.jsonl").read_text())["gpu"] for n in rows}
    assert gpus == {"0", "1"}
    for name in ("l1_norm", "softmax"):  # where and how long each ran, for reading how the jobs packed
        assert rows[name].gpu in {"0", "1"} and rows[name].run_s is not None and rows[name].run_s >= 0
    assert sum(h["evaluate"] for h in o.gpu_holds.values()) == 4 and o.gpu_overlaps == []

    # Each problem folder is a run directory: `ncu-agent show` reads it.
    shown = CliRunner().invoke(app, ["show", str(batch_dir / "problems" / "l1_norm")])
    assert shown.exit_code == 0 and "starting kernel" in shown.output

    # Resuming a finished batch runs nothing and gives the same summary.
    again = run_batch(batch_dir, log=lines.append)
    assert "4 of 4 problems done already; 0 to run" in lines[-1]
    assert again.problems == summary.problems


@pytest.mark.slow
def test_batch_budget_skips_the_rest(tmp_path):
    """One evaluation for the whole batch: the first problem stops after its starting kernel, the second
    is skipped with the reason; a spent time limit skips everything without starting a job."""
    batch_dir = tmp_path / "batch"
    cfg = _config(tmp_path, ["l1_norm", "softmax"], budget=Budget(batch_evaluations=1))
    create_batch(batch_dir, cfg)
    summary = run_batch(batch_dir, Execution(jobs=1))
    rows = {r.name: r for r in summary.problems}
    assert rows["l1_norm"].status == "budget" and rows["l1_norm"].evaluations == 1
    assert rows["l1_norm"].correct  # its starting kernel was checked before the budget ended
    assert rows["softmax"].status == "skipped" and "budget of 1 evaluations" in rows["softmax"].reason
    assert summary.overall.evaluations == 1

    timed = tmp_path / "timed"
    create_batch(timed, _config(tmp_path, ["l1_norm"], budget=Budget(time_limit_s=60)))
    earlier = Invocation(started=0, last_seen=61, pid=1, host="h", backend="local", jobs=1, gpus=[])
    Invocations(items=[earlier]).save(timed)  # an earlier invocation used the minute up
    summary = run_batch(timed)
    assert summary.problems[0].status == "skipped" and "time limit" in summary.problems[0].reason
    assert not (timed / "problems" / "l1_norm" / "attempts.jsonl").exists()  # no job was started


def _serving_workers(mark: str) -> set[int]:
    """Pids of live `agent.evaluation.worker --serve` processes (the sandbox's warm workers) whose
    environment holds
    NCU_AGENT_TEST_MARK=mark: this test's, not those of another test run on the same machine."""
    pids = set()
    for proc in Path("/proc").iterdir():
        try:
            cmd = (proc / "cmdline").read_bytes().split(b"\0")
            env = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        marked = f"NCU_AGENT_TEST_MARK={mark}".encode() in env
        if b"agent.evaluation.worker" in cmd and b"--serve" in cmd and marked:
            pids.add(int(proc.name))
    return pids


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_time_limit_stops_an_evaluation_in_flight(tmp_path, monkeypatch):
    """A job whose evaluation never ends (a starting kernel that hangs, with a 10-minute evaluation
    timeout) is stopped shortly after the batch's time limit (30 s): the batch ends, the problem is `budget`
    with the reason, its worker is gone, and the summary says so. Without the stop the batch would wait
    for the evaluation's own timeout."""
    problem = tmp_path / "hangs_l1"
    problem.mkdir()
    for name in ("reference.py", "problem.toml"):
        text = (Path(KERNELS) / "l1_norm" / name).read_text()
        (problem / name).write_text(text.replace('name = "l1_norm"', 'name = "hangs_l1"'))
    (problem / "kernel.py").write_text((ROOT / "tests" / "candidates" / "hangs.py").read_text())
    batch_dir = tmp_path / "batch"
    cfg = BatchConfig(
        inputs=[str(problem)],
        problems=find_problems([str(problem)], [], [], None),
        run=RunOptions(stages=["micro"], max_iterations=1, eval_timeout=600),
        budget=Budget(time_limit_s=30),  # room for the job to start and reach its first evaluation
    )
    create_batch(batch_dir, cfg)
    mark = f"time-limit-{os.getpid()}-{time.time()}"
    monkeypatch.setenv("NCU_AGENT_TEST_MARK", mark)  # the jobs and their workers inherit it
    lines: list[str] = []
    start = time.time()
    summary = run_batch(batch_dir, Execution(jobs=1), log=lines.append)
    took = time.time() - start
    assert took < 30 + 10 + 30, lines  # limit + STOP_GRACE_S + KILL_AFTER_S at the very most
    row = summary.problems[0]
    assert row.status == "budget" and "time limit" in row.reason and "stopped" in row.reason, row
    assert not row.correct and row.evaluations == 0  # the one evaluation never finished
    assert json.loads((batch_dir / "summary.json").read_text())["problems"][0]["status"] == "budget"
    assert not _serving_workers(mark)  # the hanging candidate's worker was killed with the job


def test_interim_summary_after_each_problem(tmp_path, monkeypatch):
    """The batch writes the summary so far each time a problem ends, so a batch killed later still
    leaves one; a busy store does not stop the batch."""
    import sqlite3

    import agent.batch.driver as batch

    calls: list[Path] = []
    monkeypatch.setattr(batch, "summarize", lambda d: calls.append(d) or "S")
    monkeypatch.setattr(batch, "write_summary", lambda d, s: calls.append(s))
    batch.interim_summary(tmp_path, print)
    assert calls == [tmp_path, "S"]

    def busy(d):
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(batch, "summarize", busy)
    said: list[str] = []
    batch.interim_summary(tmp_path, said.append)
    assert "could not be written" in said[0] and "database is locked" in said[0]


def test_batch_cli_usage_errors(tmp_path):
    runner = CliRunner()
    assert runner.invoke(app, ["batch"]).exit_code == 2
    r = runner.invoke(app, ["batch", "--resume", str(tmp_path)])
    assert r.exit_code == 2 and "not a batch directory" in r.output
    r = runner.invoke(app, ["batch", "l1_norm", "--resume", str(tmp_path)])
    assert r.exit_code == 2
    r = runner.invoke(app, ["batch", "l1_norm", "--stages", "nope", "--out", str(tmp_path / "b")])
    assert r.exit_code == 2 and not (tmp_path / "b").exists()
    r = runner.invoke(app, ["batch", KERNELS, "--include", "zzz*", "--out", str(tmp_path / "b")])
    assert r.exit_code == 2 and "left after the filters" in r.output
