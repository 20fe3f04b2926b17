"""kill -9 `ncu-agent run --llm` at random points, continue it with `run --resume` each time, and find every
record exactly once: one run row, finished; each (stage, iteration, text) prompt once; each reply once;
each candidate with exactly one evaluation; no LLM request asked again once its reply was recorded (only
one in flight at a kill may be). A killed run is marked "killed" as soon as anyone looks at it.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from agent.llm.scripted import serve

ROOT = Path(__file__).resolve().parent.parent
WORKER_EVALUATIONS = "SELECT COUNT(*) FROM evaluations WHERE json_extract(result, '$.device') != ''"


@pytest.fixture
def scripted_llm():
    server = serve(delay_s=0.5)  # a request is often in flight at a kill
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()


def _count(db: Path, sql: str) -> int:
    if not db.exists():
        return 0
    conn = sqlite3.connect(db, timeout=30)
    try:
        return conn.execute(sql).fetchone()[0]
    except sqlite3.OperationalError:  # the tables are being created
        return 0
    finally:
        conn.close()


def _start(run_dir: Path, base_url: str, tmp_path: Path, resume: bool) -> subprocess.Popen:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "NCU_AGENT_"))},
        "OPENAI_API_KEY": "test-key",
        "NCU_AGENT_LLM_CACHE": str(tmp_path / "cache.sqlite"),
        "PYTHONPATH": str(ROOT),
    }
    cmd = [sys.executable, "-m", "agent", "run"]
    if resume:
        cmd += ["--resume", str(run_dir)]
    else:
        cmd += ["kernels/l1_norm", "--llm", "--base-url", base_url, "--model", "scripted", "--samples", "1"]
        cmd += ["--stages", "micro", "--max-iterations", "2", "--run-dir", str(run_dir)]
        cmd += ["--eval-timeout", "900"]  # a busy CI machine must not turn a slow evaluation into a failure
    log = (tmp_path / "log.txt").open("a")
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


@pytest.mark.slow
@pytest.mark.timeout(1200)  # four process starts and a CPU-interpreted kernel each: minutes on a busy machine
def test_run_killed_at_random_points_resumes_with_every_record_once(tmp_path, scripted_llm):
    seed = int(os.environ.get("RESUME_SEED", time.time()))
    rng = random.Random(seed)
    run_dir = tmp_path / "run"
    db = run_dir / "records.sqlite"
    base_url = f"http://127.0.0.1:{scripted_llm.server_address[1]}/v1"
    # Kill once the run has recorded this many worker evaluations / replies, plus a random delay of at most
    # the last number. The run ends with 2 evaluations: after the second, only a reply (the server takes
    # 0.5 s) and the run's end remain, so that kill comes within 0.4 s.
    points = [("evaluations", 1, 0.8), ("replies", 1, 0.8), ("evaluations", 2, 0.4)]
    for i, (what, n, delay) in enumerate(points):
        proc = _start(run_dir, base_url, tmp_path, resume=i > 0)
        sql = WORKER_EVALUATIONS if what == "evaluations" else "SELECT COUNT(*) FROM replies"
        end = time.time() + 600
        while _count(db, sql) < n:
            assert proc.poll() is None, (tmp_path / "log.txt").read_text()[-3000:]
            assert time.time() < end, "the kill point never came"
            time.sleep(0.05)
        time.sleep(rng.uniform(0, delay))
        assert proc.poll() is None, f"RESUME_SEED={seed}: the run ended before kill {i + 1} ({what} {n})"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    shown = subprocess.run(
        [sys.executable, "-m", "agent", "show", str(run_dir)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
    )
    assert "killed" in shown.stdout and "running" not in shown.stdout  # inspected: no longer "running"
    proc = _start(run_dir, base_url, tmp_path, resume=True)
    assert proc.wait(timeout=600) == 0, (tmp_path / "log.txt").read_text()[-3000:]

    conn = sqlite3.connect(db)
    runs = conn.execute("SELECT status FROM runs").fetchall()
    assert runs == [("done",)], runs
    prompts = conn.execute("SELECT stage, iteration, text FROM prompts").fetchall()
    assert not [k for k, c in Counter(prompts).items() if c > 1], "a prompt recorded twice"
    replies = conn.execute("SELECT prompt_id, text, error FROM replies").fetchall()
    assert not [k for k, c in Counter(replies).items() if c > 1], "a reply recorded twice"
    cands = conn.execute("SELECT stage, iteration, source FROM candidates").fetchall()
    assert not [k for k, c in Counter(cands).items() if c > 1], "a candidate recorded twice"
    per_candidate = conn.execute(
        "SELECT c.id, COUNT(e.id) FROM candidates c LEFT JOIN evaluations e ON e.candidate_id = c.id "
        "GROUP BY c.id"
    ).fetchall()
    assert all(n == 1 for _, n in per_candidate), per_candidate
    asked = len(replies)
    # Every completion the server answered is a recorded reply, but for one in flight at each kill.
    assert asked <= scripted_llm.completions <= asked + len(points)
