"""Running a worker process that executes untrusted candidate code.

The worker is `python -m <module> request.json result.json`, started in a fresh temporary directory
(removed afterwards) and in a new session, so a timeout can SIGKILL it with everything it spawned; on
Linux it is also killed when the process that started it dies (a killed batch job leaves no worker).
What it prints goes to files, of which only the last few KB are kept; RLIMIT_FSIZE caps how much it
can write to any one file, so a candidate printing gigabytes hurts only itself. Secrets are removed
from its environment. On the CPU its address space is capped too; not on the GPU, where CUDA reserves
huge virtual ranges up front.

The worker reads a random token from its stdin before it imports anything untrusted, and must begin
its result file with that token: a candidate that writes `result.json` itself (it can see the path in
`sys.argv`) and exits does not produce a result (`WorkerOutcome.forged`).

A failed worker is a value (`WorkerOutcome`), never an exception: `evaluate` turns it into a status.

The long-lived form, `WorkerProcess`, and the pool that keeps it warm are in
agent/evaluation/worker_pool.py.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import resource
import signal
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from pydantic import BaseModel

from agent.evaluation import confine
from agent.evaluation.lockdown import WorkerSetup, source_hashes

TAIL_BYTES = 4096
MAX_FILE_BYTES = 256 * 1024**2
CPU_ADDRESS_SPACE_BYTES = 16 * 1024**3

SECRET_WORDS = ("KEY", "TOKEN", "SECRET", "PASSWORD", "CREDENTIAL")
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
    return any(w in upper for w in SECRET_WORDS) or upper.startswith(_SECRET_PREFIXES)


# What a worker may inherit from the parent: locale, the thread counts and the GPU/compiler knobs; nothing
# else (a new variable holding a secret is not passed on by default).
_ALLOWED = {"PATH", "LANG", "LANGUAGE", "TZ", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"}
_ALLOWED_PREFIXES = (
    "LC_",
    "TRITON_",
    "CUDA_",
    "NVIDIA_",
    "TORCH_",
    "PYTORCH_",
    "TORCHINDUCTOR_",
    "NCU_AGENT_",
)


def worker_env(
    env_extra: Mapping[str, str] | None = None,
    base: Mapping[str, str] | None = None,
    box: Path | None = None,
) -> dict[str, str]:
    """The environment of a worker, built from an allow-list of the parent's (never a secret), with
    PYTHONPATH able to import `agent`; with `box`, its home, temporary files and caches are in there."""
    env = {
        k: v
        for k, v in (os.environ if base is None else base).items()
        if (k in _ALLOWED or k.startswith(_ALLOWED_PREFIXES)) and not is_secret(k)
    }
    env["PYTHONPATH"] = str(Path(__file__).resolve().parent.parent.parent)
    env["PYTHONUNBUFFERED"] = "1"  # what it printed before dying is in the tail
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # never a .pyc written into the project (or anywhere)
    if box is not None:
        env |= {
            "HOME": str(box),
            "TMPDIR": str(box / "tmp"),
            "XDG_CACHE_HOME": str(box / "cache"),
            "TRITON_CACHE_DIR": str(box / "cache" / "triton"),  # compiled kernels stay in the box
            "TORCHINDUCTOR_CACHE_DIR": str(box / "cache" / "inductor"),
            "USER": "ncu-agent-worker",  # its uid has no name (getpass would fail)
        }
    env.update(env_extra or {})
    return env


def read_tail(path: Path, limit: int = TAIL_BYTES, start: int = 0) -> str:
    """The last `limit` bytes of a file (from byte `start` on) as text, saying how much came before."""
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            f.seek(max(start, size - limit))
            data = f.read(limit)
    except OSError:
        return ""
    text = data.decode("utf-8", errors="replace")
    before = size - start - len(data)
    return f"[... {before} bytes before]\n{text}" if before > 0 else text


_PRCTL = ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else None
_PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int | None) -> None:
    """Be killed (SIGKILL) when process `parent`, which started this one, dies; Linux only. Safe between
    fork and exec: prctl is resolved at import, so this is one system call and a getppid."""
    if parent is None or _PRCTL is None:
        return
    _PRCTL(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before the call above
        os._exit(3)


def set_limits(address_space: int | None, parent: int, file_bytes: int = MAX_FILE_BYTES) -> None:
    """Runs in the child between fork and exec: keep it to plain system calls. The worker leads its own
    session (so its group can be killed), which would let it outlive a killed caller: it dies with it."""
    die_with_parent(parent)
    resource.setrlimit(resource.RLIMIT_FSIZE, (file_bytes, file_bytes))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if address_space is not None:
        resource.setrlimit(resource.RLIMIT_AS, (address_space, address_space))


def death_signal(rc: int | None) -> str | None:
    """The signal a worker died from: Popen's negative code, or bwrap's 128 + signal for the boxed child
    (bwrap exits with that status when the process it started was killed by a signal)."""
    if rc is None:
        return None
    number = -rc if rc < 0 else rc - 128 if 128 < rc < 128 + 65 else None
    if number is None:
        return None
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def kill_group(pid: int) -> None:
    # The worker leads its own session, so its group id is its pid; children it left behind die too.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


BOOTSTRAP = Path(__file__).resolve().parent / "bootstrap.py"


@functools.cache
def _sources() -> dict[str, str]:
    """The project's sources as they were before the first worker of this process (the worker checks)."""
    return source_hashes()


def worker_command(args: Sequence[str], box: Path, read_only: Sequence[Path], gpu: bool) -> list[str]:
    """The worker's command line: the bootstrap (source-only imports of the project), in bwrap's box when
    it can start (`confine.isolation`)."""
    cmd = [sys.executable, "-P", "-X", "faulthandler", str(BOOTSTRAP), *args]
    bwrap = confine.bwrap_path()
    if not confine.isolation().full or bwrap is None:
        return cmd
    devices, extra = confine.gpu_binds() if gpu else ([], [])
    paths = [*confine.python_paths(), *extra, *read_only]
    return confine.bwrap_argv(bwrap, cmd, box=box, read_only=paths, devices=devices)


def setup_line(uid: int | None, gpu: bool) -> str:
    setup = WorkerSetup(uid=uid, block_processes=not gpu, unix_sockets=gpu, sources=_sources())
    return setup.model_dump_json() + "\n"


# --- long-lived workers ---------------------------------------------------------------------------------
