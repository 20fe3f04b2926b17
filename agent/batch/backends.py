"""Where a batch's jobs run: a local pool (one or more jobs per GPU of this machine) or a Ray cluster.

Both start the same job, `python -m agent.batch.job BATCH_DIR NAME`, in a process of its own, so a
problem that crashes its job never takes the batch down; both report each job's exit to the batch
(`on_exit`), which says whether to start it again. The job dies with whoever started it (prctl
PDEATHSIG), so a kill -9 of the batch leaves no job writing to a store.

- local: jobs are started from this (single-threaded) process as slots free up; a job on a GPU gets
  `CUDA_VISIBLE_DEVICES=<id>`.
- both: a job still running shortly after the batch's time limit is stopped (`OverdueJobs`).
- ray: one task per problem asking for one GPU (`num_gpus=1`; on CPU-only clusters `num_cpus=1`), which
  starts the job on the node Ray picked, with the GPU Ray gave it. The batch directory must be on a file
  system every node mounts at the same path (docs/batch.md).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

from agent.batch.gpu_slots import GPU_ENV, Slots
from agent.batch.key_channel import KEY_FILE_ENV, remove_key_file, write_key_file
from agent.batch.outcome import PARENT_ENV, problem_dir
from agent.evaluation.secrets import environ

OnExit = Callable[[str, int], bool]  # (problem, exit code) -> start it again?
POLL_S = 0.2
STOP_GRACE_S = 10.0  # past the batch's deadline, an evaluation in flight gets this long to finish
KILL_AFTER_S = 30.0  # after SIGTERM, a job that has not ended by then is killed


class OverdueJobs:
    """Stops jobs still running `STOP_GRACE_S` after the batch's deadline: SIGTERM, which the job turns
    into a clean end (agent/batch/job.py), then SIGKILL if it has not ended `KILL_AFTER_S` later.
    Jobs check the deadline before each evaluation; this bounds the one in flight (an ncu run of an
    autotuned kernel can take minutes)."""

    def __init__(self, deadline: float | None):
        self.deadline = deadline
        self.signalled: dict[int, float] = {}

    def check(self, proc: subprocess.Popen) -> None:
        if self.deadline is None or proc.poll() is not None:
            return
        now = time.time()
        if now < self.deadline + STOP_GRACE_S:
            return
        first = self.signalled.setdefault(proc.pid, now)
        if first == now:
            proc.terminate()
        elif now - first >= KILL_AFTER_S:
            proc.kill()


def job_env(gpu: str | None, key_file: Path | None = None) -> dict[str, str]:
    """This process's environment for a job (a job is this tool again, undumpable: it gets its secrets
    back), PYTHONPATH able to import `agent`, the GPU, and the path of the file holding the key the
    driver hands it (`key_file`: agent/batch/key_channel.py; a Ray node has not the driver's environment)."""
    env = dict(environ())
    root = str(Path(__file__).resolve().parents[2])  # the checkout, which holds the package `agent`
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    env[PARENT_ENV] = str(os.getpid())
    env.pop(GPU_ENV, None)
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpu
        env[GPU_ENV] = gpu
    if key_file is not None:
        env[KEY_FILE_ENV] = str(key_file)
    return env


def start_job(
    batch_dir: Path, name: str, gpu: str | None, deadline: float | None, key: str | None = None
) -> tuple[subprocess.Popen, Path | None]:
    """The job's process, and the key file it was handed (remove it when the job ends)."""
    pdir = problem_dir(batch_dir, name)
    pdir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "agent.batch.job", str(batch_dir), name]
    if deadline is not None:
        cmd += ["--deadline", repr(deadline)]
    key_file = write_key_file(key) if key else None
    with (pdir / "job.log").open("ab") as log:
        proc = subprocess.Popen(
            cmd, env=job_env(gpu, key_file), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
        )
    return proc, key_file


def run_local(
    batch_dir: Path,
    names: list[str],
    slots: Slots,
    deadline: float | None,
    on_exit: OnExit,
    tick: Callable[[], None],
    on_start: Callable[[str, str | None], bool] = lambda name, gpu: True,
    key: str | None = None,
) -> None:
    """Run the jobs of `names`, as many at once as `slots` allow; `on_start` False: not started. `key`:
    the LLM's API key, handed to each job through a file of its own."""
    queue = deque(names)
    running: dict[str, tuple[subprocess.Popen, str | None, Path | None]] = {}
    overdue = OverdueJobs(deadline)
    try:
        while queue or running:
            while queue and slots.has_room():
                gpu = slots.take()
                name = queue.popleft()
                if not on_start(name, gpu):
                    slots.give_back(gpu)
                    continue
                running[name] = (*start_job(batch_dir, name, gpu, deadline, key), gpu)
            for name, (proc, key_file, gpu) in list(running.items()):
                rc = proc.poll()
                if rc is None:
                    overdue.check(proc)
                    continue
                del running[name]
                remove_key_file(key_file)  # the job deleted it on start, unless it died first
                slots.give_back(gpu)
                if on_exit(name, rc):
                    queue.appendleft(name)
            tick()
            time.sleep(POLL_S)
    finally:  # an exception here (Ctrl-C): the jobs stop with the batch, and resume continues them
        for proc, key_file, _ in running.values():
            proc.kill()
            proc.wait()
            remove_key_file(key_file)


def ray_job(batch_dir: str, name: str, deadline: float | None, key: str | None = None) -> int:
    """The Ray task: one problem's job on the GPU Ray gave this task (none on a CPU-only cluster). `key`
    arrives through the object store (run_ray's `ray.put`), never through the task's environment."""
    import ray

    ids = ray.get_gpu_ids()
    gpu = str(ids[0]) if ids else None
    proc, key_file = start_job(Path(batch_dir), name, gpu, deadline, key)
    overdue = OverdueJobs(deadline)
    try:
        while proc.poll() is None:
            overdue.check(proc)
            time.sleep(POLL_S)
    finally:
        remove_key_file(key_file)
    return proc.returncode


def run_ray(
    batch_dir: Path,
    names: list[str],
    address: str | None,
    deadline: float | None,
    on_exit: OnExit,
    tick: Callable[[], None],
    on_start: Callable[[str, str | None], bool] = lambda name, gpu: True,
    key: str | None = None,
) -> None:
    """Run the jobs of `names` as Ray tasks; Ray queues them until a GPU (or a CPU) is free. `key` goes to
    the tasks through the object store: a runtime_env or a task's plain arguments are shown by Ray's
    dashboard and state API."""
    import ray

    if not ray.is_initialized():
        root = str(Path(__file__).resolve().parents[2])  # the checkout, which holds the package `agent`
        env = {"PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)}
        ray.init(address=address, runtime_env={"env_vars": env}, log_to_driver=False)
    use_gpus = ray.cluster_resources().get("GPU", 0) >= 1
    resources = {"num_gpus": 1, "num_cpus": 1} if use_gpus else {"num_gpus": 0, "num_cpus": 1}
    task = ray.remote(ray_job).options(max_retries=0, **resources)
    batch = str(Path(batch_dir).resolve())
    key_ref = ray.put(key) if key else None  # a top-level ObjectRef argument: Ray passes its value

    pending: dict[ray.ObjectRef, str] = {}

    def submit(name: str) -> None:
        if on_start(name, "ray"):
            pending[task.remote(batch, name, deadline, key_ref)] = name

    for name in names:
        submit(name)
    try:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
            for ref in ready:
                name = pending.pop(ref)
                try:
                    rc = int(ray.get(ref))
                except ray.exceptions.RayError:
                    rc = -1  # the task or its node died: like a job that died
                if on_exit(name, rc):
                    submit(name)
            tick()
    finally:
        for ref in pending:
            ray.cancel(ref, force=True)
