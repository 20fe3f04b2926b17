"""Continuing a killed or interrupted `ncu-agent run` in its own run row, exactly as `batch --resume` does.

The run is replayed from its start with the options it was started with (stored in its record): the
ReplayStore (agent/batch/resume.py) hands back every evaluation and profile it recorded, and matches each
repeated write to the row it repeats; LLM replies come back from the reply cache, so no recorded request is
sent again. A run is resumable while its row says "running" (killed) or "interrupted" (Ctrl-C).

A run whose process is gone but whose row still says "running" was killed: `mark_killed` says so in the
row, so that no one reading the records (`ncu-agent show`, the report) takes it for one in progress.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from agent.config import RunOptions
from agent.evaluation.confine import process_alive
from agent.store import Store

RESUMABLE = ("running", "killed", "interrupted")


class ResumeError(ValueError):
    """Nothing to resume in the directory, or a run recorded without what resuming needs."""


@dataclass
class Resumable:
    run_id: int
    problem: str  # as the user named it
    start: Path | None  # the kernel its first stage started from; None: the first stage wrote one
    options: RunOptions


def _alive(pid: int) -> bool:
    if not process_alive(pid):
        return False
    try:  # a zombie nobody reaped yet is dead
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def mark_killed(store: Store) -> list[int]:
    """Runs left "running" by a process of this host that no longer exists: marked "killed"."""
    marked = []
    for row in store.conn.execute("SELECT id, settings FROM runs WHERE status='running'").fetchall():
        record = json.loads(row["settings"] or "{}")
        pid, host = record.get("pid"), record.get("host")
        if isinstance(pid, int) and host == socket.gethostname() and pid != os.getpid() and not _alive(pid):
            store.finish_run(row["id"], "killed", "the process running it was killed; resume with --resume")
            marked.append(row["id"])
    return marked


def find_resumable(run_dir: Path) -> Resumable:
    """The last run of `run_dir` that did not end, with what it was started with."""
    if not (run_dir / Store.FILENAME).exists():
        raise ResumeError(f"{run_dir}: no {Store.FILENAME} (not a run directory)")
    store = Store.open_dir(run_dir)
    try:
        mark_killed(store)
        row = store.conn.execute("SELECT id, status, settings FROM runs ORDER BY id DESC LIMIT 1").fetchone()
    finally:
        store.close()
    if row is None:
        raise ResumeError(f"{run_dir}: no run recorded")
    if row["status"] not in RESUMABLE:
        raise ResumeError(
            f"{run_dir}: its last run (#{row['id']}) ended ({row['status']}): nothing to resume"
        )
    record = json.loads(row["settings"] or "{}")
    if "options" not in record:
        raise ResumeError(
            f"{run_dir}: run #{row['id']} was recorded without its options; it cannot be resumed"
        )
    options = RunOptions.model_validate(record["options"])
    # The stages it ran (a --from-stage run recorded only those, and the kernel they started from).
    options = options.model_copy(update={"stages": record["stages"]})
    start = Path(record["start"]) if record.get("start") else None
    return Resumable(row["id"], record["problem"], start, options)
