"""What a worker does to itself before the first candidate, and the checks of the project's own files.

Worker side (`lock_down`, called once the harness is imported and before any candidate code exists):
- drop from root to the unused uid the parent chose (`agent.evaluation.confine.worker_uid`): no
  capabilities, so the undumpable parent's `/proc/<pid>/environ` and memory are out of reach, and the
  project, the records and the caches (owned by root) are not writable;
- RLIMIT_NPROC for that uid (its own, since no one else has it): a bounded number of processes and threads;
- a seccomp filter through `pyseccomp` (libseccomp through ctypes; the filter is libseccomp's, not ours):
  no socket of any kind, and on the CPU no new process (fork, exec, clone without CLONE_THREAD); threads
  stay allowed. On the GPU only sockets are blocked: Triton runs ptxas and inductor its compile workers.

Parent side: `source_hashes` of the project's modules taken before the first candidate; the worker compares
the sources it imported (`changed_sources`); `planted_bytecode` finds `.pyc` files in the checkout that
Python would load for a source but that do not come from that source.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import importlib.util
import marshal
import os
import resource
import signal
import sys
from pathlib import Path

from pydantic import BaseModel, Field

ROOT = Path(__file__).resolve().parent.parent.parent
PACKAGE = ROOT / "agent"
_CLONE_THREAD = 0x00010000
_PR_SET_PDEATHSIG = 1


class WorkerSetup(BaseModel):
    """Sent by the parent on the worker's private pipe, right after its token."""

    uid: int | None = None  # drop to this uid (the parent runs as root); None: stay
    max_processes: int = 256
    block_processes: bool = True  # the CPU; on the GPU compilers are started as processes
    parent: int | None = None  # die with this process (re-armed: a change of uid clears it)
    sources: dict[str, str] = Field(default_factory=dict, description="relative path -> sha256")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def source_hashes(package: Path = PACKAGE) -> dict[str, str]:
    """Every module of the project, hashed: what the worker may import."""
    return {str(p.relative_to(package.parent)): sha256(p) for p in sorted(package.rglob("*.py"))}


def changed_sources(expected: dict[str, str]) -> list[str]:
    """The project's modules this process imported whose source differs from the parent's hashes."""
    changed = []
    for module in list(sys.modules.values()):
        file = getattr(module, "__file__", None)
        if not file or not file.endswith(".py"):
            continue
        path = Path(file).resolve()
        if PACKAGE not in path.parents:
            continue
        rel = str(path.relative_to(ROOT))
        if expected.get(rel) != sha256(path):
            changed.append(rel)
    return sorted(changed)


def planted_bytecode(package: Path = PACKAGE) -> list[Path]:
    """Cache files Python would use (their header matches the source's mtime and size) whose code is not
    the source's: written by someone other than Python's compiler."""
    planted = []
    for source in package.rglob("*.py"):
        cached = Path(importlib.util.cache_from_source(str(source)))
        try:
            data = cached.read_bytes()
            st = source.stat()
        except OSError:
            continue
        flags = int.from_bytes(data[4:8], "little")
        if data[:4] != importlib.util.MAGIC_NUMBER:
            continue  # another Python's: not loaded by this one
        if flags == 0:
            mtime, size = int.from_bytes(data[8:12], "little"), int.from_bytes(data[12:16], "little")
            if mtime != int(st.st_mtime) & 0xFFFFFFFF or size != st.st_size & 0xFFFFFFFF:
                continue  # stale: Python recompiles it
        code = compile(source.read_bytes(), str(source), "exec", dont_inherit=True)
        try:  # code objects compare by what they do (bytecode, constants, names), not by file name
            same = marshal.loads(data[16:]) == code
        except (EOFError, ValueError, TypeError):
            same = False
        if not same:
            planted.append(cached)
    return planted


def _drop(uid: int, max_processes: int) -> None:
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)
    resource.setrlimit(resource.RLIMIT_NPROC, (max_processes, max_processes))


def _die_with(parent: int | None) -> None:
    if parent is None or not sys.platform.startswith("linux"):
        return
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:
        os._exit(3)


def _seccomp(block_processes: bool) -> None:
    import pyseccomp as seccomp

    f = seccomp.SyscallFilter(defaction=seccomp.ALLOW)
    deny = seccomp.ERRNO(errno.EPERM)
    for call in ("socket", "socketpair"):
        f.add_rule(deny, call)
    if block_processes:
        for call in ("fork", "vfork", "execve", "execveat"):
            f.add_rule(deny, call)
        # clone with CLONE_THREAD is a thread (torch's pools); without it, a new process
        f.add_rule(deny, "clone", seccomp.Arg(0, seccomp.MASKED_EQ, _CLONE_THREAD, 0))
        f.add_rule(seccomp.ERRNO(errno.ENOSYS), "clone3")  # flags behind a pointer: glibc falls back to clone
    f.load()


def lock_down(setup: WorkerSetup) -> list[str]:
    """Apply the setup to this process; returns what held, in words (for the worker's log)."""
    held = []
    if setup.uid is not None and os.geteuid() == 0:
        _drop(setup.uid, setup.max_processes)
        held.append(f"uid {setup.uid}, at most {setup.max_processes} processes")
    _die_with(setup.parent)
    if sys.platform.startswith("linux"):
        _seccomp(setup.block_processes)
        held.append("seccomp: no sockets" + (", no new processes" if setup.block_processes else ""))
    return held
