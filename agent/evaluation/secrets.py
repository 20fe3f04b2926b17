"""Keeping the LLM key out of reach of the code this tool runs (docs/anticheat.md, "Secrets").

`protect_process()` runs first in every `ncu-agent` command:
- the process becomes undumpable (`prctl(PR_SET_DUMPABLE, 0)`): its `/proc/<pid>/environ`, `mem` and
  `ptrace` are then reserved to root with CAP_SYS_PTRACE, which no worker has (workers drop to their own
  uid), so a candidate cannot read the key from its parent even without the sandbox;
- secret variables (`agent.evaluation.sandbox.is_secret`) move from `os.environ` into this module, so no
  child inherits them by accident; `environ()` gives them back to the one reader that needs them (the LLM
  settings, and batch jobs, which are this tool again).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
from collections.abc import Mapping
from pathlib import Path

_PR_SET_DUMPABLE = 4
_held: dict[str, str] = {}


def protect_process() -> bool:
    """Undumpable, and secrets out of os.environ; returns whether the prctl call succeeded."""
    from agent.evaluation.sandbox import is_secret

    _held.clear()  # called again (a second command in one process): what the environment holds now
    for name in [k for k in os.environ if is_secret(k)]:
        _held[name] = os.environ.pop(name)
    if not sys.platform.startswith("linux"):
        return False
    return ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0) == 0


def environ() -> Mapping[str, str]:
    """The environment as it was given, secrets included: for the LLM settings and this tool's own jobs."""
    return {**os.environ, **_held}


def private(path: Path) -> None:
    """Make the SQLite database `path` readable and writable by this user only, before it is opened
    (SQLite gives its -wal and -shm files the database's mode when it creates them): records and caches
    hold sources, replies and prompts that no worker (another uid) should read, wherever they are."""
    with contextlib.suppress(OSError):
        path.touch(mode=0o600, exist_ok=True)
        for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
            if p.exists():
                p.chmod(0o600)
