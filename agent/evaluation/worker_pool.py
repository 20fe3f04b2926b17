"""The long-lived worker and the pool that keeps it warm.

`WorkerProcess` (`python -m agent.evaluation.worker --serve CMD_FD RESP_FD`) runs with the limits, session
and scrubbed environment of agent/evaluation/sandbox.py, in its box, and answers one JSON line per
command over two private pipes, each answer prefixed with a token sent before any candidate code ran. A
command that runs past its time, a worker that dies, or an answer without the token raises `WorkerFault`
(carrying a `WorkerOutcome`), and the worker is killed with its process group. `WorkerPool` keeps one warm
worker per key (device, problem) between candidates and replaces it after any fault or any candidate that
was not clean.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import select
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from agent.evaluation import confine
from agent.evaluation.messages import Bye
from agent.evaluation.sandbox import (
    MAX_FILE_BYTES,
    WorkerOutcome,
    death_signal,
    kill_group,
    read_tail,
    set_limits,
    setup_line,
    worker_command,
    worker_env,
)

MAX_REPLY_BYTES = 64 * 1024**2


class WorkerFault(Exception):
    """The worker did not answer: it ran out of time, died, or sent something that was not its answer."""

    def __init__(self, kind: str, outcome: WorkerOutcome):
        super().__init__(kind)
        self.kind = kind  # "timeout" | "died" | "forged"
        self.outcome = outcome


class WorkerProcess:
    """One worker process serving commands; see the module docstring."""

    def __init__(
        self,
        module: str,
        env_extra: Mapping[str, str] | None = None,
        *,
        address_space_bytes: int | None = None,
        file_bytes: int = MAX_FILE_BYTES,
        read_only: Sequence[Path] = (),
        gpu: bool = False,
    ):
        self.token = secrets.token_hex(16)
        self.uid = confine.worker_uid()
        self.base, self.box = confine.make_box(self.uid)
        self.out_path, self.err_path = self.base / "stdout.txt", self.base / "stderr.txt"
        cmd_r, self.cmd_w = os.pipe()
        self.resp_r, resp_w = os.pipe()
        self.uses = 0
        self.left_behind: list[Path] = []  # what its uid left outside its box (reduced isolation)
        self.dirs = 0
        self.started = time.perf_counter()
        self._mark = (0, 0)
        self._buf = b""
        self._dead: WorkerOutcome | None = None
        parent = os.getpid()
        with self.out_path.open("wb") as out, self.err_path.open("wb") as err:
            self.proc = subprocess.Popen(
                worker_command(
                    ["--module", module, "--serve", str(cmd_r), str(resp_w)], self.box, read_only, gpu
                ),
                cwd=self.box,
                env=worker_env(env_extra, box=self.box),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                pass_fds=(cmd_r, resp_w),
                start_new_session=True,
                preexec_fn=lambda: set_limits(address_space_bytes, parent, file_bytes),
            )
        os.close(cmd_r)
        os.close(resp_w)
        os.set_blocking(self.resp_r, False)
        self._write(self.token + "\n" + setup_line(self.uid, gpu))

    @property
    def alive(self) -> bool:
        return self._dead is None and self.proc.poll() is None

    def new_dir(self) -> Path:
        """A fresh directory for the next candidate (its working directory and file exchange)."""
        self.dirs += 1
        d = self.box / f"candidate_{self.dirs}"
        d.mkdir()
        if self.uid is not None:
            os.chown(d, self.uid, self.uid)
        return d

    def mark(self) -> None:
        """Log tails are taken from here on (a warm worker's log holds earlier candidates too)."""
        self._mark = (_size(self.out_path), _size(self.err_path))

    def tails(self) -> tuple[str, str]:
        return read_tail(self.out_path, start=self._mark[0]), read_tail(self.err_path, start=self._mark[1])

    def _write(self, text: str) -> None:
        data = text.encode()
        try:
            while data:
                n = os.write(self.cmd_w, data)
                data = data[n:]
        except OSError:
            pass  # it died; the read that follows says how

    def request(self, message: BaseModel, timeout_s: float) -> dict[str, Any]:
        """Send one command and wait for its answer, at most `timeout_s` seconds."""
        if self._dead is not None:
            raise WorkerFault("died", self._dead)
        try:
            return self._exchange(message, timeout_s)
        except WorkerFault:
            raise
        except BaseException:  # interrupted mid-command (Ctrl-C, the batch's stop): its state is unknown
            self._end()
            raise

    def _exchange(self, message: BaseModel, timeout_s: float) -> dict[str, Any]:
        self._write(message.model_dump_json() + "\n")
        deadline = time.monotonic() + timeout_s
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise WorkerFault("timeout", self._end(timed_out=True))
            ready, _, _ = select.select([self.resp_r], [], [], min(left, 1.0))
            if not ready:
                if self.proc.poll() is not None:
                    raise WorkerFault("died", self._end(died=True))
                continue
            try:
                chunk = os.read(self.resp_r, 1 << 20)
            except BlockingIOError:
                continue
            if not chunk:
                raise WorkerFault("died", self._end(died=True))
            self._buf += chunk
            if len(self._buf) > MAX_REPLY_BYTES:
                raise WorkerFault("forged", self._end(forged=True))
        line, _, self._buf = self._buf.partition(b"\n")
        token, _, body = line.decode("utf-8", errors="replace").partition(" ")
        if token != self.token:
            raise WorkerFault("forged", self._end(forged=True))
        try:
            reply = json.loads(body)
        except ValueError:
            raise WorkerFault("forged", self._end(forged=True)) from None
        if not isinstance(reply, dict):
            raise WorkerFault("forged", self._end(forged=True))
        return reply

    def _end(self, timed_out: bool = False, forged: bool = False, died: bool = False) -> WorkerOutcome:
        """Kill it (and all it spawned) and say how it ended."""
        if died:
            # A worker that died on its own (its pipe closed) may still be unwinding: under bwrap the box's
            # init reports the signal only once it exits, and killing it first would hide the signal.
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=2)
        kill_group(self.proc.pid)  # whatever it left behind
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)
        rc = self.proc.returncode
        sig = None if timed_out else death_signal(rc)
        out, err = self.tails()
        self._dead = WorkerOutcome(
            returncode=rc,
            signal=sig,
            timed_out=timed_out,
            forged=forged,
            stdout_tail=out,
            stderr_tail=err,
            wall_s=time.perf_counter() - self.started,
        )
        self._close_fds()
        return self._dead

    def _close_fds(self) -> None:
        for fd in (self.cmd_w, self.resp_r):
            with contextlib.suppress(OSError):
                os.close(fd)
        self.cmd_w = self.resp_r = -1

    def close(self) -> None:
        """Ask it to leave, then make sure it is gone, and remove its files."""
        if self.alive:
            with contextlib.suppress(WorkerFault):
                self.request(Bye(), 5.0)
        if self._dead is None:
            self._end()
        self.left_behind = confine.remove_box(self.base, self.uid)

    def __del__(self) -> None:  # pragma: no cover - a safety net; close() is the way
        with contextlib.suppress(Exception):
            if self._dead is None and self.proc.poll() is None:
                kill_group(self.proc.pid)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


class WorkerPool:
    """Warm workers between candidates: one idle worker per key, reused only after a clean candidate.

    `acquire` gives the idle worker for a key if it is alive (or starts one with `factory`); `release`
    keeps it when `reusable` and it has served fewer than `max_uses` candidates, else closes it. Use it as
    a context manager, or call `close()`, so no worker outlives the pool.
    """

    def __init__(self, max_uses: int = 100):
        self.max_uses = max_uses
        self.idle: dict[Any, WorkerProcess] = {}
        self.started = 0
        self.reused = 0
        self.replaced = 0
        self.replaced_why: list[str] = []  # why each replaced worker was not kept (the last 50)

    def acquire(self, key: Any, factory: Callable[[], WorkerProcess]) -> WorkerProcess:
        worker = self.idle.pop(key, None)
        if worker is not None and worker.alive:
            self.reused += 1
            return worker
        if worker is not None:
            worker.close()
        self.started += 1
        return factory()

    def release(self, key: Any, worker: WorkerProcess, reusable: bool, why: str = "") -> None:
        """Keep `worker` for `key` if `reusable`; else close it (`why`: the reason, kept for diagnosis)."""
        worker.uses += 1
        if reusable and worker.alive and worker.uses < self.max_uses and key not in self.idle:
            self.idle[key] = worker
            return
        if not reusable:
            self.replaced += 1
            self.replaced_why = [*self.replaced_why, why or "not reusable"][-50:]
        worker.close()

    def close(self) -> None:
        for worker in self.idle.values():
            worker.close()
        self.idle.clear()

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
