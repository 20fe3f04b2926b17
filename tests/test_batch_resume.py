"""kill -9 a CPU batch of the bundled problems at several points, resume it each time, and find every record
exactly once.

A record is a row of a problem's store: its run, prompts, candidates, evaluations. Exactly once means, in
the end: one run per problem, finished; each (stage, iteration, source) candidate once, each (stage,
iteration, text) prompt once; each candidate with exactly one evaluation (a redone evaluation would be a
second row: a worker run again gives other timings); the per-problem budget spent exactly (2 worker
evaluations each, 12 in all, as an uninterrupted batch spends); and every row that existed at any kill
still there, unchanged (nothing lost or rewritten).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from agent.batch.summary import BatchSummary
from agent.data.paths import kernels_dir

ROOT = Path(__file__).resolve().parent.parent
PROBLEMS = sorted(p.name for p in kernels_dir().iterdir() if (p / "reference.py").exists())
PER_PROBLEM = 2
WORKER_EVALUATIONS = "SELECT COUNT(*) FROM evaluations WHERE json_extract(result, '$.device') != ''"
ARGS = ["--stages", "micro", "--max-iterations", "1", "--max-evaluations", str(PER_PROBLEM), "--jobs", "2"]


def _h(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _query(path: Path, sql: str) -> list[tuple]:
    conn = sqlite3.connect(path, timeout=30)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def _stores(batch_dir: Path) -> dict[str, Path]:
    return {
        p.parent.name: p
        for p in sorted((batch_dir / "problems").glob("*/records.sqlite"))
        if p.stat().st_size
    }


def _worker_evaluations(batch_dir: Path) -> int:
    total = 0
    for path in _stores(batch_dir).values():
        with contextlib.suppress(sqlite3.OperationalError):  # the schema is being created right now
            total += _query(path, WORKER_EVALUATIONS)[0][0]
    return total


def _snapshot(batch_dir: Path) -> set[tuple]:
    rows: set[tuple] = set()
    for name, path in _stores(batch_dir).items():
        if not _query(path, "SELECT name FROM sqlite_master WHERE name='evaluations'"):
            continue  # killed while creating its tables
        for r in _query(path, "SELECT id, started_at FROM runs"):
            rows.add((name, "run", *r))
        for r in _query(path, "SELECT id, stage, iteration, text, created_at FROM prompts"):
            rows.add((name, "prompt", r[0], r[1], r[2], _h(r[3]), r[4]))
        for r in _query(path, "SELECT id, stage, iteration, label, source, created_at FROM candidates"):
            rows.add((name, "candidate", *r[:4], _h(r[4]), r[5]))
        for r in _query(path, "SELECT id, candidate_id, status, result, created_at FROM evaluations"):
            rows.add((name, "evaluation", *r[:3], _h(r[3]), r[4]))
    return rows


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"  # a zombie nobody reaped yet is dead


def _job_pids(batch_dir: Path) -> list[int]:
    return [
        json.loads(line)["pid"]
        for f in (batch_dir / "problems").glob("*/attempts.jsonl")
        for line in f.read_text().splitlines()
    ]


def _start(batch_dir: Path, log: Path, resume: bool) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "agent", "batch"]
    cmd += ["--resume", str(batch_dir)] if resume else [str(kernels_dir()), "--out", str(batch_dir), *ARGS]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with log.open("a") as out:
        return subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def _kill_when(proc: subprocess.Popen, ready, group: bool, timeout: float = 240) -> None:
    end = time.time() + timeout
    while not ready():
        assert proc.poll() is None, "the batch ended before the kill point"
        assert time.time() < end, "the kill point never came"
        time.sleep(0.05)
    if group:
        os.killpg(proc.pid, signal.SIGKILL)  # the batch and its jobs at once
    else:
        proc.kill()  # the batch alone: its jobs must die with it
    proc.wait()


@pytest.mark.slow
def test_sigkill_at_several_points_then_resume_records_every_record_once(tmp_path):
    batch_dir, log = tmp_path / "batch", tmp_path / "batch.log"
    total = PER_PROBLEM * len(PROBLEMS)
    finished = lambda: len(list((batch_dir / "problems").glob("*/outcome.json")))  # noqa: E731
    kill_points = [
        (lambda: _worker_evaluations(batch_dir) >= 1, False),  # right after the first evaluation record
        (lambda: _worker_evaluations(batch_dir) >= total // 2, True),  # midway, the whole process group
        (
            lambda: _worker_evaluations(batch_dir) >= total - 2 and finished() < len(PROBLEMS),
            False,
        ),  # near the end
    ]
    seen: set[tuple] = set()
    for i, (ready, group) in enumerate(kill_points):
        proc = _start(batch_dir, log, resume=i > 0)
        _kill_when(proc, ready, group)
        deadline = time.time() + 10
        while any(_alive(p) for p in _job_pids(batch_dir)) and time.time() < deadline:
            time.sleep(0.1)
        assert not any(_alive(p) for p in _job_pids(batch_dir)), "a job outlived the killed batch"
        seen |= _snapshot(batch_dir)
    if (batch_dir / "summary.json").exists():  # written each time a problem ended: the summary so far
        partial = json.loads((batch_dir / "summary.json").read_text())["overall"]
        assert partial["by_status"].get("pending", 0) + partial["by_status"].get("running", 0) > 0
        assert any("have not finished" in n for n in partial["notes"]), partial["notes"]
    proc = _start(batch_dir, log, resume=True)
    assert proc.wait(timeout=300) == 0, log.read_text()[-3000:]

    final = _snapshot(batch_dir)
    lost = seen - final
    assert not lost, f"records lost or rewritten after a kill: {sorted(lost)[:5]}"
    stores = _stores(batch_dir)
    assert sorted(stores) == PROBLEMS
    for name, path in stores.items():
        runs = _query(path, "SELECT id, status FROM runs")
        assert len(runs) == 1 and runs[0][1] in ("done", "budget"), (name, runs)
        cands = _query(path, "SELECT stage, iteration, source FROM candidates")
        assert not [k for k, n in Counter(cands).items() if n > 1], f"{name}: a candidate recorded twice"
        prompts = _query(path, "SELECT stage, iteration, text FROM prompts")
        assert not [k for k, n in Counter(prompts).items() if n > 1], f"{name}: a prompt recorded twice"
        per_candidate = _query(
            path,
            "SELECT c.id, COUNT(e.id) FROM candidates c LEFT JOIN evaluations e ON e.candidate_id = c.id "
            "GROUP BY c.id",
        )
        assert all(n == 1 for _, n in per_candidate), f"{name}: evaluations per candidate {per_candidate}"
        worker = _query(path, WORKER_EVALUATIONS)
        assert worker[0][0] == PER_PROBLEM, f"{name}: {worker[0][0]} worker evaluations"

    summary = BatchSummary.model_validate_json((batch_dir / "summary.json").read_text())
    assert [r.name for r in summary.problems] == PROBLEMS
    assert all(r.status in ("done", "budget") and r.correct for r in summary.problems)
    assert summary.overall.evaluations == total and summary.overall.fast_p[0].eager == 1.0
    assert any(r.reused >= 1 and r.attempts >= 2 for r in summary.problems), "no run was continued"
    invocations = json.loads((batch_dir / "invocations.json").read_text())["items"]
    assert len(invocations) == len(kill_points) + 1


@pytest.fixture
def scripted_llm():
    import threading

    from agent.llm.scripted import serve

    # Slow replies (2 s): the job is still waiting on its next request when the test kills it, instead of
    # having finished the stage within milliseconds of its first LLM evaluation (which made this flaky).
    server = serve(delay_s=2.0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()


@pytest.mark.slow
def test_llm_job_killed_midway_is_replayed_from_the_reply_cache(tmp_path, monkeypatch, scripted_llm):
    """With the LLM: the job is killed after its first LLM candidate was evaluated; the resumed job replays
    the run with the cached replies, reuses both recorded evaluations, and records no reply, prompt or
    candidate twice; the tokens are those of the first replies, counted once."""
    from agent.batch.driver import create_batch, run_batch
    from agent.batch.inputs import BatchConfig, find_problems
    from agent.config import RunOptions

    monkeypatch.setenv("OPENAI_API_KEY", "test-key-not-secret")
    monkeypatch.setenv("NCU_AGENT_LLM_CACHE", str(tmp_path / "cache.sqlite"))
    batch_dir = tmp_path / "batch"
    options = RunOptions(
        stages=["micro"],
        max_iterations=2,
        llm=True,
        llm_overrides={"base_url": scripted_llm, "model": "scripted", "samples": 1},
    )
    problems = find_problems(["l1_norm"], [], [], None)
    create_batch(batch_dir, BatchConfig(inputs=["l1_norm"], problems=problems, run=options))
    store = batch_dir / "problems" / "l1_norm" / "records.sqlite"
    job = subprocess.Popen(
        [sys.executable, "-m", "agent.batch.job", str(batch_dir), "l1_norm"],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    llm_evaluated = (
        "SELECT COUNT(*) FROM evaluations e JOIN candidates c ON c.id = e.candidate_id WHERE c.proposer='llm'"
    )
    deadline = time.time() + 180
    while not (store.exists() and _safe_count(store, llm_evaluated) >= 1):
        assert job.poll() is None and time.time() < deadline
        time.sleep(0.05)
    job.kill()
    job.wait()
    before = _snapshot(batch_dir)
    replies_before = _query(store, "SELECT id, prompt_id, text, usage FROM replies")

    (row,) = run_batch(batch_dir).problems
    assert row.status == "done" and row.correct and row.attempts == 2 and row.reused >= 2
    assert not before - _snapshot(batch_dir)
    replies = _query(store, "SELECT prompt_id, text FROM replies")
    assert max(Counter(replies).values()) == 1, "a reply recorded twice"
    assert set(replies_before) <= set(_query(store, "SELECT id, prompt_id, text, usage FROM replies"))
    for sql in (
        "SELECT stage, iteration, source FROM candidates",
        "SELECT stage, iteration, text FROM prompts",
    ):
        assert max(Counter(_query(store, sql)).values()) == 1
    usage = [json.loads(u) for (u,) in _query(store, "SELECT usage FROM replies") if u]
    assert row.tokens == sum(u["prompt_tokens"] + u["completion_tokens"] for u in usage) > 0
    assert not any(u.get("cached") for u in usage[: len(replies_before)])  # first usage kept: not free


def _safe_count(path: Path, sql: str) -> int:
    try:
        return _query(path, sql)[0][0]
    except sqlite3.OperationalError:
        return 0
