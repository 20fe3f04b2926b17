"""How a batch hands the LLM's API key to its jobs without showing it anywhere.

The driver's key never goes into `batch.json`, a job's environment, a log or a record, nor into a Ray
`runtime_env` (which Ray's dashboard and state API show). Each job start writes it to a file of its own,
mode 0600 in a fresh 0700 directory, and passes only the file's path (`NCU_AGENT_API_KEY_FILE`, a name that
`worker_env` drops, like every secret-named variable). The job reads the file and deletes it before
anything else, so no candidate it evaluates later can find it. On Ray the key reaches the task through the
object store (an argument `ray.put` made, resolved by Ray into the task's memory), and the task writes the
file on the node that runs the job.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

KEY_FILE_ENV = "NCU_AGENT_API_KEY_FILE"


def write_key_file(key: str) -> Path:
    """A fresh 0700 directory holding the key in a 0600 file; the caller removes the directory later."""
    directory = Path(tempfile.mkdtemp(prefix="ncu-agent-key-"))  # mkdtemp: 0700, a name nobody guesses
    path = directory / "key"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key)
    return path


def remove_key_file(path: Path | None) -> None:
    if path is not None:
        shutil.rmtree(path.parent, ignore_errors=True)


def take_key(env: dict[str, str] | None = None) -> str | None:
    """The key the driver handed this job (read once: the file and its directory are deleted), or None."""
    env = os.environ if env is None else env
    where = env.pop(KEY_FILE_ENV, None)
    if not where:
        return None
    path = Path(where)
    try:
        key = path.read_text()
    except OSError:
        return None
    finally:
        remove_key_file(path)
    return key or None
