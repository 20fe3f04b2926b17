"""Running a worker process that executes untrusted candidate code.

The worker is `python -m <module> request.json result.json`, started in a fresh temporary directory
(removed afterwards) and in a new session, so a timeout can SIGKILL it with everything it spawned.
What it prints goes to files, of which only the last few KB are kept; RLIMIT_FSIZE caps how much it
can write to any one file, so a candidate printing gigabytes hurts only itself. Secrets are removed
from its environment. On the CPU its address space is capped too; not on the GPU, where CUDA reserves
huge virtual ranges up front.

The worker reads a random token from its stdin before it imports anything untrusted, and must begin
its result file with that token: a candidate that writes `result.json` itself (it can see the path in
`sys.argv`) and exits does not produce a result (`WorkerOutcome.forged`).

A failed worker is a value (`WorkerOutcome`), never an exception: `evaluate` turns it into a status.
"""

from __future__ import annotations

import contextlib
import os
import resource
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

from pydantic import BaseModel

TAIL_BYTES = 4096
MAX_FILE_BYTES = 256 * 1024**2
CPU_ADDRESS_SPACE_BYTES = 16 * 1024**3

_SECRET_WORDS = ("KEY", "TOKEN", "SECRET", "PASSWORD", "CREDENTIAL")
_SECRET_PREFIXES = ("OPENAI_", "AWS_", "HF_", "ANTHROPIC_")


class WorkerOutcome(BaseModel):
    """How a worker process ended, and what it left behind."""

    returncode: int | None
    signal: str | None = None  # e.g. "SIGSEGV" when it died from a signal
    timed_out: bool = False
    result_json: str | None = None
    forged: bool = False  # a result file was there, but not started with the token: not the worker's
    stdout_tail: str = ""
    stderr_tail: str = ""
    wall_s: float = 0.0


def is_secret(name: str) -> bool:
    upper = name.upper()
    return any(w in upper for w in _SECRET_WORDS) or upper.startswith(_SECRET_PREFIXES)


def worker_env(
    env_extra: Mapping[str, str] | None = None, base: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The parent's environment without secrets, with PYTHONPATH able to import `agent`."""
    env = {k: v for k, v in (os.environ if base is None else base).items() if not is_secret(k)}
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"  # what it printed before dying is in the tail
    env.update(env_extra or {})
    return env


def read_tail(path: Path, limit: int = TAIL_BYTES) -> str:
    """The last `limit` bytes of a file as text, saying how much came before."""
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            f.seek(max(0, size - limit))
            data = f.read(limit)
    except OSError:
        return ""
    text = data.decode("utf-8", errors="replace")
    return f"[... {size - len(data)} bytes before]\n{text}" if size > len(data) else text


def _limits(address_space: int | None) -> None:
    """Runs in the child between fork and exec: keep it to plain system calls."""
    resource.setrlimit(resource.RLIMIT_FSIZE, (MAX_FILE_BYTES, MAX_FILE_BYTES))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if address_space is not None:
        resource.setrlimit(resource.RLIMIT_AS, (address_space, address_space))


def _kill_group(pid: int) -> None:
    # The worker leads its own session, so its group id is its pid; children it left behind die too.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def run_worker(
    module: str,
    request: BaseModel,
    timeout_s: float,
    env_extra: Mapping[str, str] | None = None,
    *,
    address_space_bytes: int | None = None,
) -> WorkerOutcome:
    """Run `python -m module request.json result.json` in a fresh temporary directory, with limits.

    The module must read one line (the token) from stdin first and start its result file with that
    line; `result_json` is the rest of the file.
    """
    token = secrets.token_hex(16)
    workdir = Path(tempfile.mkdtemp(prefix="ncu_agent_worker_"))
    try:
        req_path, res_path = workdir / "request.json", workdir / "result.json"
        req_path.write_text(request.model_dump_json())
        out_path, err_path = workdir / "stdout.txt", workdir / "stderr.txt"
        cmd = [sys.executable, "-X", "faulthandler", "-m", module, str(req_path), str(res_path)]
        start = time.perf_counter()
        timed_out = False
        with out_path.open("wb") as out, err_path.open("wb") as err:
            proc = subprocess.Popen(
                cmd,
                cwd=workdir,
                env=worker_env(env_extra),
                stdin=subprocess.PIPE,
                stdout=out,
                stderr=err,
                start_new_session=True,
                preexec_fn=lambda: _limits(address_space_bytes),
            )
            assert proc.stdin is not None
            with contextlib.suppress(OSError):  # a worker that died at once closed its end
                proc.stdin.write(f"{token}\n".encode())
                proc.stdin.close()
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                timed_out = True
            finally:
                _kill_group(proc.pid)
                proc.wait()
        wall = time.perf_counter() - start
        rc = proc.returncode
        sig = None
        if rc is not None and rc < 0:
            try:
                sig = signal.Signals(-rc).name
            except ValueError:
                sig = f"signal {-rc}"
        result_json, forged = None, False
        if not timed_out and res_path.exists():
            with contextlib.suppress(OSError):
                first, _, rest = res_path.read_text(errors="replace").partition("\n")
                if first == token:
                    result_json = rest
                else:
                    forged = True
        return WorkerOutcome(
            returncode=rc,
            signal=None if timed_out else sig,
            timed_out=timed_out,
            result_json=result_json,
            forged=forged,
            stdout_tail=read_tail(out_path),
            stderr_tail=read_tail(err_path),
            wall_s=wall,
        )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
