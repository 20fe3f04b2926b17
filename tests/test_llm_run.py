"""`ncu-agent run --llm` end to end against a real OpenAI-compatible server on loopback (the scripted model).

The whole turn: the stage prompt goes out over HTTP, the reply's kernel is extracted, checked against the
stage's rules, evaluated in a worker, recorded; the next prompt carries the history. A reply with no code is
recorded and survived.
"""

import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from agent.llm.scripted import edit, serve

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def scripted_llm():
    server = serve()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()


def _run(problem: str, base_url: str, tmp_path: Path) -> tuple[subprocess.CompletedProcess, Path]:
    env = {
        **os.environ,
        "OPENAI_API_KEY": "test-key-not-secret",
        "NCU_AGENT_LLM_CACHE": str(tmp_path / "cache.sqlite"),
        "PYTHONPATH": str(ROOT),
    }
    run_dir = tmp_path / "run"
    argv = [
        sys.executable,
        "-m",
        "agent",
        "run",
        problem,
        "--llm",
        "--base-url",
        base_url,
        "--model",
        "scripted",
        "--samples",
        "1",
        "--stages",
        "micro",
        "--max-iterations",
        "3",
        "--run-dir",
        str(run_dir),
    ]
    proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc, run_dir


@pytest.mark.slow
def test_run_with_llm_completes_a_stage(scripted_llm, tmp_path):
    proc, run_dir = _run("kernels/l1_norm", scripted_llm, tmp_path)
    assert "scripted at http://127.0.0.1" in proc.stdout  # the banner names model and endpoint
    db = sqlite3.connect(run_dir / "records.sqlite")
    prompts = db.execute("SELECT iteration, text FROM prompts ORDER BY id").fetchall()
    replies = db.execute("SELECT model, text, usage FROM replies ORDER BY id").fetchall()
    cands = db.execute(
        "SELECT c.proposer, e.status FROM candidates c JOIN evaluations e ON e.candidate_id = c.id "
        "ORDER BY c.id"
    ).fetchall()
    assert [p[0] for p in prompts][:2] == [1, 2]
    assert len(replies) >= 2 and all(r[0] == "scripted" for r in replies)
    assert cands[0] == ("start", "accepted")
    assert ("llm", "accepted") in cands  # the scripted edit keeps the micro rules and computes the same
    assert "Earlier attempts" in prompts[1][1]  # the next prompt tells the model what became of the last one
    assert db.execute("SELECT status FROM runs").fetchone()[0] == "done"
    assert "test-key-not-secret" not in (run_dir / "records.sqlite").read_bytes().decode("latin-1")


@pytest.mark.slow
def test_a_reply_without_code_is_recorded_and_survived(scripted_llm, tmp_path):
    """A kernel with 6 configs already gets prose only: NO_CODE is recorded and the run ends normally."""
    problem = tmp_path / "l1"
    shutil.copytree(ROOT / "kernels" / "l1_norm", problem)
    kernel = problem / "kernel.py"
    kernel.write_text(edit(kernel.read_text()))
    _, run_dir = _run(str(problem), scripted_llm, tmp_path)
    db = sqlite3.connect(run_dir / "records.sqlite")
    statuses = [r[0] for r in db.execute("SELECT status FROM evaluations ORDER BY id")]
    assert statuses[0] == "accepted" and "no_code" in statuses
    reasons = [r[0] for r in db.execute("SELECT reason FROM evaluations WHERE status = 'no_code'")]
    assert all("no Python code block" in r for r in reasons)


def test_a_client_gone_mid_request_leaves_no_traceback(capsys):
    """A run killed while its request waits (the resume tests do it) closes the connection; the scripted
    server has no one to answer and says nothing (no BrokenPipeError traceback in a demo's terminal)."""
    server = serve(delay_s=0.3)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        body = json.dumps({"model": "scripted", "messages": [{"role": "user", "content": "hi"}]}).encode()
        for _ in range(3):
            sock = socket.create_connection(server.server_address)
            sock.sendall(
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            # an RST at close (linger 0), as a killed process's socket gives
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            sock.close()
        deadline = time.time() + 5
        while server.completions < 3 and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(0.6)  # the replies are written (and fail) after the delay
    finally:
        server.shutdown()
    assert server.completions == 3
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
