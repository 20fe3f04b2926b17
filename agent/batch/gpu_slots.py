"""GPUs of a batch: which ones, which job gets which, and one lock per GPU for everything that runs on it.

A batch job (one problem) runs with `CUDA_VISIBLE_DEVICES=<id>`, so its evaluation workers and its ncu
runs see that GPU only. Several jobs may share a GPU (`--jobs` above the GPU count, so one job's LLM
requests overlap another's GPU work); every evaluation and every ncu run holds the GPU's lock, a file lock
(`flock`) under `BATCH_DIR/locks/<host>/gpu<id>.lock`, so nothing a batch runs ever overlaps an ncu run,
or a timing, on the same GPU. Each hold is appended to `gpu<id>.log` (JSON lines: pid, problem, what,
start, end) as evidence, which `overlaps` checks.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from pydantic import BaseModel

GPU_ENV = "NCU_AGENT_BATCH_GPU"  # the GPU id a batch job was given (unset: no GPU, no lock)


def parse_gpus(text: str | None) -> list[str]:
    """'0,1' -> ['0', '1']; empty or None -> []."""
    return [g.strip() for g in (text or "").split(",") if g.strip()]


def bad_gpu_ids(ids: list[str]) -> list[str]:
    """The ids CUDA_VISIBLE_DEVICES would not take: it takes an index or a GPU-/MIG- UUID."""
    return [g for g in ids if not (g.isdigit() or g.startswith(("GPU-", "MIG-")))]


def visible_gpus() -> list[str]:
    """The GPU ids this process may use: CUDA_VISIBLE_DEVICES when set, else every GPU torch sees."""
    if "CUDA_VISIBLE_DEVICES" in os.environ:
        return parse_gpus(os.environ["CUDA_VISIBLE_DEVICES"])
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


def host() -> str:
    return socket.gethostname().split(".")[0] or "localhost"


class LockHold(BaseModel):
    """One hold of a GPU's lock, as logged."""

    pid: int
    problem: str
    what: str  # "evaluate" or "ncu"
    start: float
    end: float


class GpuLock:
    """The lock of one GPU of one host, shared by every process of the batch."""

    def __init__(self, batch_dir: Path, gpu: str, problem: str = ""):
        folder = Path(batch_dir) / "locks" / host()
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / f"gpu{gpu}.lock"
        self.log = folder / f"gpu{gpu}.log"
        self.gpu, self.problem = gpu, problem

    @contextlib.contextmanager
    def hold(self, what: str) -> Iterator[None]:
        # flock belongs to the open file: it is released when this process dies, however it dies.
        with self.path.open("a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            start = time.time()
            try:
                yield
            finally:
                hold = LockHold(
                    pid=os.getpid(), problem=self.problem, what=what, start=start, end=time.time()
                )
                with self.log.open("a") as log:  # written before the lock is released: holds never interleave
                    log.write(hold.model_dump_json() + "\n")
                fcntl.flock(f, fcntl.LOCK_UN)


def job_lock(batch_dir: Path, problem: str) -> GpuLock | None:
    """The lock of the GPU this batch job was given, or None on the CPU."""
    gpu = os.environ.get(GPU_ENV)
    return GpuLock(batch_dir, gpu, problem) if gpu else None


def read_holds(log: Path) -> list[LockHold]:
    if not log.exists():
        return []
    return [LockHold.model_validate_json(line) for line in log.read_text().splitlines() if line.strip()]


def overlaps(batch_dir: Path) -> list[str]:
    """Pairs of holds of the same GPU that overlap in time (none, unless the lock failed)."""
    found = []
    for log in sorted((Path(batch_dir) / "locks").glob("*/gpu*.log")):
        holds = sorted(read_holds(log), key=lambda h: h.start)
        for a, b in itertools.pairwise(holds):
            if b.start < a.end:
                found.append(f"{log.parent.name}/{log.stem}: {a.problem} {a.what} and {b.problem} {b.what}")
    return found


def gpu_holds(batch_dir: Path) -> dict[str, dict[str, int]]:
    """Per host/GPU, how many times evaluations and ncu runs held its lock."""
    out: dict[str, dict[str, int]] = {}
    for log in sorted((Path(batch_dir) / "locks").glob("*/gpu*.log")):
        counts = out.setdefault(f"{log.parent.name}/{log.stem}", {})
        for h in read_holds(log):
            counts[h.what] = counts.get(h.what, 0) + 1
    return out


class Slots:
    """Which GPU the next job gets: the one running the fewest jobs, up to `per_gpu` jobs each."""

    def __init__(self, gpus: list[str], jobs: int):
        self.gpus = list(gpus)
        self.jobs = jobs
        self.running: dict[str, int] = dict.fromkeys(self.gpus, 0)
        self.cpu_running = 0

    def has_room(self) -> bool:
        busy = self.cpu_running if not self.gpus else sum(self.running.values())
        return busy < self.jobs

    def take(self) -> str | None:
        """The GPU id for the next job (None: a CPU job); call only when `has_room()`."""
        if not self.gpus:
            self.cpu_running += 1
            return None
        gpu = min(self.gpus, key=lambda g: (self.running[g], self.gpus.index(g)))
        self.running[gpu] += 1
        return gpu

    def give_back(self, gpu: str | None) -> None:
        if gpu is None:
            self.cpu_running -= 1
        else:
            self.running[gpu] -= 1
