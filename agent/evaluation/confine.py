"""Where untrusted code runs: bubblewrap's box, or the reduced form when bubblewrap cannot start.

Every process that runs candidate code (the evaluation worker, and ncu with its profiling target) is
started through `confine_command`:
- **full**: inside `bwrap` (Debian's bubblewrap, a maintained setuid-free sandbox tool, rather than rules of
  our own): an empty root with read-only binds of only what the worker needs (system libraries, Python, its
  packages, the project's `agent` package, the problem's reference file), the worker's own temporary
  directory ("the box") as the only writable place, no network (own network namespace), its own PID
  namespace (no other process's `/proc`), death with its parent; the worker then drops to an unused uid
  (`agent.evaluation.lockdown`), which also makes the process-count limit its own;
- **reduced** (no bwrap, bwrap cannot start here, or `NCU_AGENT_SANDBOX=off`): the same command outside a
  namespace; the worker still drops to the unused uid (the project, records and caches are not writable by
  it; the parent is undumpable, so its environment is not readable) and installs a seccomp filter (no
  sockets, no new processes). `Isolation.label` says which form a run had; docs/anticheat.md lists what
  each keeps out.

The argv is built by pure functions (`bwrap_argv`, `gpu_devices`) so the GPU form is tested without a GPU.
"""

from __future__ import annotations

import contextlib
import functools
import os
import secrets
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Sequence
from pathlib import Path

from pydantic import BaseModel

SANDBOX_ENV = "NCU_AGENT_SANDBOX"  # "off": run without bubblewrap (reduced isolation), e.g. to compare
BOX_PREFIX = "ncu_agent_worker_"
# Unused uids for workers: one drawn per worker, so no two workers (nor any real user) share one; a
# candidate can then neither signal nor trace another worker, and RLIMIT_NPROC counts its processes alone.
WORKER_UID_RANGE = (2_000_000, 3_000_000)
MAX_PROCESSES = 256  # threads count: torch's pools on many cores, Triton's; a fork bomb does not fit
# Read-only system paths every worker needs (libraries, the dynamic loader's cache, certificates are not).
SYSTEM_PATHS = ("/usr", "/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/alternatives")
MERGED_USR_LINKS = ("bin", "lib", "lib64", "sbin")
GPU_SHARED_NODES = ("nvidiactl", "nvidia-uvm", "nvidia-uvm-tools", "nvidia-modeset")


class Isolation(BaseModel):
    """The isolation candidate code ran under."""

    full: bool
    why: str = ""  # why it is reduced

    @property
    def label(self) -> str:
        return "full" if self.full else f"reduced: {self.why}"


def bwrap_path() -> str | None:
    return shutil.which("bwrap")


@functools.cache
def isolation() -> Isolation:
    """Whether bubblewrap can box workers here (tried once per process)."""
    if os.environ.get(SANDBOX_ENV, "").lower() == "off":
        return Isolation(full=False, why=f"turned off by {SANDBOX_ENV}=off")
    if not sys.platform.startswith("linux"):
        return Isolation(full=False, why=f"bubblewrap needs Linux, this is {sys.platform}")
    bwrap = bwrap_path()
    if bwrap is None:
        return Isolation(full=False, why="bubblewrap (bwrap) is not installed: apt-get install bubblewrap")
    probe = bwrap_argv(bwrap, ["/usr/bin/true"], box=Path(tempfile.gettempdir()), read_only=[])
    try:
        done = subprocess.run(probe, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        return Isolation(full=False, why=f"bwrap cannot start: {e}")
    if done.returncode != 0:
        return Isolation(full=False, why=f"bwrap cannot start here: {done.stderr.strip()[-200:]}")
    return Isolation(full=True)


def _ancestors(paths: Sequence[Path]) -> list[Path]:
    """Every directory above the given paths, top first, each once: bwrap would create them 0700."""
    seen: list[Path] = []
    for p in paths:
        for a in reversed(p.parents):
            if a != Path("/") and a not in seen and str(a).strip("/") not in MERGED_USR_LINKS:
                seen.append(a)
    return seen


def bwrap_argv(
    bwrap: str,
    command: Sequence[str],
    *,
    box: Path,
    read_only: Sequence[Path],
    devices: Sequence[str] = (),
    cap_drop: bool = False,
) -> list[str]:
    """The bwrap command line that runs `command` in a box: pure, so it is tested without running it.

    `box`: the only writable directory (bound at its own path, so paths sent to the worker stay valid);
    `read_only`: what else the worker may read; `devices`: device nodes to bind (the GPU's); `cap_drop`:
    no capabilities at all (for a command that does not drop to its own uid, such as ncu and its target;
    a worker keeps CAP_SETUID until it drops to its uid itself)."""
    ro = list(dict.fromkeys(Path(p) for p in (*SYSTEM_PATHS, *read_only)))
    ro = [p for p in ro if not any(q in p.parents for q in ro)]  # inside another bind already (or a link)
    argv = [
        bwrap,
        "--unshare-net",
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        "--unshare-cgroup-try",
        "--die-with-parent",
        "--new-session",  # no controlling terminal to push input into (TIOCSTI)
        *(["--cap-drop", "ALL"] if cap_drop else []),
        "--tmpfs",
        "/",
        "--proc",
        "/proc",
        "--dev",
        "/dev",
    ]
    for link in MERGED_USR_LINKS:  # Debian's merged /usr: /bin -> usr/bin and so on
        argv += ["--symlink", f"usr/{link}", f"/{link}"]
    for d in _ancestors([*ro, box]):
        argv += ["--perms", "0755", "--dir", str(d)]
    for p in ro:
        argv += ["--ro-bind-try", str(p), str(p)]
    for dev in devices:
        argv += ["--dev-bind-try", dev, dev]
    argv += ["--bind", str(box), str(box), "--chdir", str(box), "--", *command]
    return argv


def gpu_devices(index: int, dev: Path = Path("/dev")) -> list[str]:
    """The device nodes a worker on GPU `index` needs: that GPU's node, the driver's control and memory
    nodes; never the other GPUs'."""
    return [str(dev / f"nvidia{index}"), *(str(dev / n) for n in GPU_SHARED_NODES)]


def cuda_paths() -> list[Path]:
    """CUDA's libraries and tools outside the Python environment (ncu, the driver's libraries live in
    /usr already)."""
    found = [Path(p) for p in ("/usr/local/cuda", "/opt/nvidia") if Path(p).exists()]
    found += [Path(p).resolve() for p in ("/usr/local/cuda",) if Path(p).is_symlink()]
    return found


def visible_gpus(env: dict[str, str] | None = None) -> list[int] | None:
    """The GPU indices CUDA_VISIBLE_DEVICES names (None: unset or not plain indices, so every GPU)."""
    value = (os.environ if env is None else env).get("CUDA_VISIBLE_DEVICES")
    if value is None or not all(p.strip().isdigit() for p in value.split(",") if p.strip()):
        return None
    return [int(p) for p in value.split(",") if p.strip()]


def gpu_binds(env: dict[str, str] | None = None, dev: Path = Path("/dev")) -> tuple[list[str], list[Path]]:
    """Device nodes and read-only paths for a GPU worker: only the visible GPUs' nodes (all when none is
    named), CUDA's files, and /sys (NVML reads the PCI tree there)."""
    wanted = visible_gpus(env)
    if wanted is None:
        wanted = sorted(int(p.name[6:]) for p in dev.glob("nvidia[0-9]*") if p.name[6:].isdigit())
    nodes: list[str] = []
    for i in wanted:
        nodes += [n for n in gpu_devices(i, dev) if n not in nodes]
    return nodes, [*cuda_paths(), Path("/sys")]


def python_paths() -> list[Path]:
    """Python itself, its packages and the project's package: what the worker imports."""
    root = Path(__file__).resolve().parent.parent.parent
    paths = {Path(sys.base_prefix).resolve(), Path(sys.prefix).resolve(), root / "agent"}
    for name in ("purelib", "platlib", "stdlib", "platstdlib"):
        with contextlib.suppress(KeyError):
            paths.add(Path(sysconfig.get_paths()[name]).resolve())
    return sorted(paths)


def worker_uid() -> int | None:
    """An unused uid for a new worker when running as root (None otherwise: already unprivileged)."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return None
    return WORKER_UID_RANGE[0] + secrets.randbelow(WORKER_UID_RANGE[1] - WORKER_UID_RANGE[0])


def make_box(uid: int | None) -> tuple[Path, Path]:
    """A new worker directory (owned by this process, holds the logs; named with its pid for `sweep`)
    and inside it the box, the only directory the worker may write, owned by the worker's uid."""
    base = Path(tempfile.mkdtemp(prefix=f"{BOX_PREFIX}{os.getpid()}_"))
    base.chmod(0o711)  # the worker's uid may pass through to its box, not list the logs
    box = base / "box"
    box.mkdir(mode=0o700)  # no other worker's uid may look in
    for sub in ("tmp", "cache"):
        (box / sub).mkdir()
    if uid is not None:
        for d in (box, box / "tmp", box / "cache"):
            os.chown(d, uid, uid)
    return base, box


def process_alive(pid: int) -> bool:
    """Whether a process of this id exists (another user's included)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep(tmp: Path | None = None) -> list[Path]:
    """Remove the worker directories of processes that are gone (killed runs leave them, with inputs of
    several GB on a GPU); those of live processes stay. Returns what was removed."""
    removed = []
    for d in Path(tmp or tempfile.gettempdir()).glob(f"{BOX_PREFIX}*"):
        owner = d.name[len(BOX_PREFIX) :].split("_", 1)[0]
        if d.is_dir() and owner.isdigit() and not process_alive(int(owner)):
            shutil.rmtree(d, ignore_errors=True)
            removed.append(d)
    return removed


def box_for(tool_argv: Sequence[str], box: Path, read_only: Sequence[Path], gpu: bool) -> list[str]:
    """`tool_argv` in a bwrap box with no capabilities (ncu and its profiling target on the GPU), or as is
    where bwrap cannot start (the tool then runs as before; `isolation()` says so)."""
    bwrap = bwrap_path()
    if not isolation().full or bwrap is None:
        return list(tool_argv)
    devices, extra = gpu_binds() if gpu else ([], [])
    tool_dir = [Path(tool_argv[0]).resolve().parent] if Path(tool_argv[0]).is_absolute() else []
    paths = [*python_paths(), *extra, *tool_dir, *read_only]
    return bwrap_argv(bwrap, tool_argv, box=box, read_only=paths, devices=devices, cap_drop=True)


def remove_owned(uid: int, places: Sequence[Path]) -> list[Path]:
    """Files and folders directly in `places` owned by a worker's uid: a candidate without bwrap can write
    in world-writable folders; they go with the worker and are reported."""
    found = []
    for place in places:
        with contextlib.suppress(OSError):
            for entry in place.iterdir():
                with contextlib.suppress(OSError):
                    if entry.lstat().st_uid == uid:
                        found.append(entry)
                        if entry.is_dir() and not entry.is_symlink():
                            shutil.rmtree(entry, ignore_errors=True)
                        else:
                            entry.unlink()
    return found


def remove_box(base: Path, uid: int | None) -> list[Path]:
    """Remove a worker's directory, and what its uid left in the world-writable folders."""
    shutil.rmtree(base, ignore_errors=True)
    if uid is None:
        return []
    return remove_owned(uid, world_writable())


def world_writable() -> list[Path]:
    """Where any uid may create files outside its box when bwrap is not there."""
    return [Path(tempfile.gettempdir()), Path("/var/tmp"), Path("/dev/shm")]
