"""The Ray backend on the CPU, with a local Ray instance: the same records as the local pool, and resume
of a problem whose job was killed midway."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import pytest

ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'ncu-agent[ray]')")

from agent.batch.driver import create_batch, run_batch  # noqa: E402
from agent.batch.inputs import BatchConfig, Budget, Execution, find_problems  # noqa: E402
from agent.config import RunOptions  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
WORKER_EVALUATIONS = "SELECT COUNT(*) FROM evaluations WHERE json_extract(result, '$.device') != ''"


@pytest.fixture(scope="module")
def local_ray():
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}},
    )
    yield
    ray.shutdown()


def _batch(batch_dir: Path, names: list[str]) -> None:
    cfg = BatchConfig(
        inputs=names,
        problems=find_problems(names, [], [], None),
        run=RunOptions(stages=["micro"], max_iterations=1),
        budget=Budget(problem_evaluations=2),
        execution=Execution(backend="ray"),
    )
    create_batch(batch_dir, cfg)


def _worker_evaluations(store: Path) -> int:
    conn = sqlite3.connect(store, timeout=30)
    try:
        return conn.execute(WORKER_EVALUATIONS).fetchone()[0]
    except sqlite3.OperationalError:  # its tables are being created right now
        return 0
    finally:
        conn.close()


def _check_records(store: Path, evaluations: int, status: str = "budget") -> None:
    conn = sqlite3.connect(store)
    try:
        runs = conn.execute("SELECT status FROM runs").fetchall()
        assert runs == [(status,)]
        cands = conn.execute("SELECT stage, iteration, source FROM candidates").fetchall()
        assert max(Counter(cands).values()) == 1
        per = conn.execute(
            "SELECT COUNT(e.id) FROM candidates c LEFT JOIN evaluations e ON e.candidate_id = c.id "
            "GROUP BY c.id"
        ).fetchall()
        assert {n for (n,) in per} == {1}
    finally:
        conn.close()
    assert _worker_evaluations(store) == evaluations


@pytest.mark.slow
def test_ray_batch_on_the_cpu(tmp_path, local_ray):
    batch_dir = tmp_path / "batch"
    _batch(batch_dir, ["l1_norm", "softmax"])
    lines: list[str] = []
    summary = run_batch(batch_dir, log=lines.append)
    assert any("on Ray" in line for line in lines)
    assert [(r.name, r.status, r.correct, r.evaluations) for r in summary.problems] == [
        ("l1_norm", "budget", True, 2),
        # softmax's micro stage has one move on the CPU (its plain launch wrapped in an autotune), so its
        # run ends done within its two evaluations
        ("softmax", "done", True, 2),
    ]
    assert summary.overall.evaluations == 4 and summary.overall.fast_p[0].eager == 1.0
    for name, status in (("l1_norm", "budget"), ("softmax", "done")):
        _check_records(batch_dir / "problems" / name / "records.sqlite", 2, status)
        assert (batch_dir / "problems" / name / "best_kernel.py").exists()


@pytest.mark.slow
def test_ray_resumes_a_killed_job(tmp_path, local_ray):
    """A job killed after its first evaluation (as a dead node or a kill -9 would leave it): resumed on Ray,
    its run continues, the recorded evaluation is reused, and nothing is recorded twice."""
    batch_dir = tmp_path / "batch"
    _batch(batch_dir, ["l1_norm"])
    store = batch_dir / "problems" / "l1_norm" / "records.sqlite"
    job = subprocess.Popen(
        [sys.executable, "-m", "agent.batch.job", str(batch_dir), "l1_norm"],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    deadline = time.time() + 120
    while True:
        assert job.poll() is None and time.time() < deadline
        if store.exists() and _worker_evaluations(store) >= 1:
            break
        time.sleep(0.05)
    job.kill()
    job.wait()

    summary = run_batch(batch_dir)
    (row,) = summary.problems
    assert row.status == "budget" and row.correct and row.evaluations == 2
    assert row.reused == 1 and row.attempts == 2
    _check_records(store, 2)


@pytest.mark.slow
def test_ray_jobs_get_the_key_through_a_channel_nobody_sees(tmp_path, local_ray, monkeypatch):
    """The key is known to the driver only (not in any environment): the job on Ray reaches a server that
    refuses any other key, and the key is in no file of the batch and nowhere Ray's state API shows."""
    from llm_server import LLMServer, reply_n

    key = "sk-ray-SECRET-4242"
    for name in list(os.environ):
        if name.startswith(("OPENAI_", "NCU_AGENT_")):
            monkeypatch.delenv(name)
    server = LLMServer().start()
    server.required_key = key
    server.script(*[reply_n("I would keep the kernel as it is.")] * 3)
    batch_dir = tmp_path / "batch"
    llm = {"base_url": server.base_url, "model": "test-model", "samples": 1, "max_attempts": 1}
    cfg = BatchConfig(
        inputs=["l1_norm"],
        problems=find_problems(["l1_norm"], [], [], None),
        run=RunOptions(
            stages=["micro"],
            max_iterations=1,
            llm=True,
            llm_overrides={**llm, "cache_path": str(tmp_path / "cache.sqlite")},
        ),
        budget=Budget(problem_evaluations=2),
        execution=Execution(backend="ray"),
    )
    create_batch(batch_dir, cfg)
    try:
        summary = run_batch(batch_dir, api_key=key)
    finally:
        server.stop()
    (row,) = summary.problems
    assert row.status == "done", row.reason
    assert server.count >= 1 and all(h["authorization"] == f"Bearer {key}" for h in server.headers)
    for path in batch_dir.rglob("*"):
        if path.is_file():
            assert key.encode() not in path.read_bytes(), f"the key is in {path}"
    # What Ray's dashboard and state API show of a job and its tasks: the runtime_env (the state API itself
    # needs the dashboard, which this CPU instance runs without); the key went as an object-store value.
    shown = repr(ray.get_runtime_context().runtime_env)
    assert key not in shown and "PYTHONPATH" in shown
    assert not list(Path(tempfile.gettempdir()).glob("ncu-agent-key-*/key")), "a key file outlived its job"
