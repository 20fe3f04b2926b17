"""What a worker does to itself before the first candidate, and the checks of the project's own files.

Worker side (`lock_down`, called once the harness is imported and before any candidate code exists):
- drop from root to the unused uid the parent chose (`agent.evaluation.confine.worker_uid`): no
  capabilities, so the undumpable parent's `/proc/<pid>/environ` and memory are out of reach, and the
  project, the records and the caches (owned by root) are not writable;
- RLIMIT_NPROC for that uid (its own, since no one else has it): a bounded number of processes and threads;
- a seccomp filter through `pyseccomp` (libseccomp through ctypes; the filter is libseccomp's, not ours):
  no socket of any kind, and on the CPU no new process (fork, exec, clone without CLONE_THREAD); threads
  stay allowed. On the GPU only sockets are blocked (Triton runs ptxas and inductor its compile workers),
  and Unix-domain ones are allowed: CUDA's driver does not start without them. In bwrap's box they reach
  nothing outside it (its own network namespace, only the box's paths); in the reduced mode they can reach
  the Unix sockets on the machine that the worker's uid may open.

Parent side: `source_hashes` of the project's modules taken before the first candidate; the worker compares
the sources it imported (`changed_sources`); `planted_bytecode` finds `.pyc` files in the checkout that
Python would load for a source but that do not come from that source.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import hashlib
import importlib
import importlib.util
import linecache
import marshal
import os
import resource
import signal
import socket
import stat
import sys
import tokenize
from collections.abc import Callable
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
    # The GPU: CUDA's driver opens Unix-domain sockets while it starts (without them cudaGetDeviceCount
    # fails with error 304, seen on an H200); other socket families stay blocked.
    unix_sockets: bool = False
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


def _closed_to_others(path: Path) -> bool:
    """Whether a uid other than the owner could not pass through some folder above `path`."""
    return any(not (a.stat().st_mode & stat.S_IXOTH) for a in [path, *path.parents] if a.exists())


def _keep_python_reachable() -> None:
    """Without bwrap, Python may live where another uid cannot enter (pyenv under /root, mode 0700): its
    folders are opened now, as root, and imports after the change of uid go through the descriptors
    (`/proc/self/fd/N`, which checks no folder above). Lazy imports of the standard library (torch
    imports cProfile the first time dynamo runs) keep working; nothing becomes writable."""
    moved: dict[str, str] = {}
    for entry in sys.path:
        path = Path(entry or ".").resolve()
        if path.is_dir() and _closed_to_others(path) and str(path) not in moved:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
            moved[str(path)] = f"/proc/self/fd/{fd}"

    def via_fd(entry: str) -> str:
        for real, fd_path in moved.items():
            if entry == real or entry.startswith(real + os.sep):
                return fd_path + entry[len(real) :]
        return entry

    sys.path[:] = [via_fd(str(Path(e or ".").resolve())) for e in sys.path]
    for module in list(sys.modules.values()):
        paths = getattr(module, "__path__", None)
        if isinstance(paths, list):
            paths[:] = [via_fd(p) for p in paths]
        _keep_source_readable(getattr(module, "__file__", None), via_fd)
    sys.path_importer_cache.clear()
    importlib.invalidate_caches()


def _keep_source_readable(file: object, via_fd: Callable[[str], str]) -> None:
    """The source of a module imported before the change of uid stays readable under its own name:
    `@triton.jit` reads the source of the functions it wraps (`inspect.getsourcelines`), and Triton jits
    functions of modules imported earlier when it first imports another (gluon wraps
    `triton.language.standard`'s at the first launch). A lazy `linecache` entry (read on first use, kept
    by `linecache.checkcache`) reads the file through the descriptor; tracebacks show its lines too."""
    if not isinstance(file, str) or not file.endswith(".py"):
        return
    reachable = via_fd(file)
    if reachable == file:  # a name through a symbolic link: the descriptors are named by real paths
        reachable = via_fd(os.path.realpath(file))
    if reachable != file:
        linecache.cache[file] = (functools.partial(_read_source, reachable),)


def _read_source(path: str) -> str:
    with tokenize.open(path) as f:  # the file's own encoding (PEP 263)
        return f.read()


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


def _seccomp(block_processes: bool, unix_sockets: bool = False) -> None:
    import pyseccomp as seccomp  # imported before the uid changes (below): Python may not be readable after

    f = seccomp.SyscallFilter(defaction=seccomp.ALLOW)
    deny = seccomp.ERRNO(errno.EPERM)
    if unix_sockets:  # a socketpair is always a Unix-domain pair within the process
        f.add_rule(deny, "socket", seccomp.Arg(0, seccomp.NE, socket.AF_UNIX))
    else:
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
    if sys.platform.startswith("linux"):
        import pyseccomp  # noqa: F401  (now, while Python's own files are readable: without bwrap a uid
        # other than root may not enter /root, where pyenv keeps Python)
    if setup.uid is not None and os.geteuid() == 0:
        _keep_python_reachable()
        _drop(setup.uid, setup.max_processes)
        held.append(f"uid {setup.uid}, at most {setup.max_processes} processes")
    _die_with(setup.parent)
    if sys.platform.startswith("linux"):
        _seccomp(setup.block_processes, setup.unix_sockets)
        sockets = "no sockets but Unix-domain ones" if setup.unix_sockets else "no sockets"
        held.append(f"seccomp: {sockets}" + (", no new processes" if setup.block_processes else ""))
    return held
