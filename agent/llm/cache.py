"""Replies remembered across runs, so rerunning an experiment costs no requests.

One SQLite file (default ~/.cache/ncu-agent/llm-cache.sqlite) shared by all runs. A reply is keyed by
sha256 of everything that changes it: endpoint, model, prompt, temperature, max_tokens, and the sample
index. The index counts the samples a run has asked for this prompt so far (0..n-1 the first time,
n..2n-1 if the same prompt comes again), so a rerun replays the same replies in the same order while a
repeated prompt within a run still gets fresh ones.

Only usable replies are cached (text that was not skipped); errors never are. `use_cache=False`
(--no-cache) skips reads but still writes, so the fresh replies replace the old ones for later runs.
The API key is not part of the key and is never stored.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel

from agent.evaluation.secrets import private
from agent.llm.reply import Usage

SCHEMA = """
CREATE TABLE IF NOT EXISTS replies (
    key TEXT PRIMARY KEY, text TEXT NOT NULL, usage TEXT NOT NULL, model TEXT NOT NULL,
    created_at TEXT NOT NULL
);
"""


class CachedReply(BaseModel):
    text: str
    usage: Usage
    model: str


def cache_key(
    base_url: str, model: str, prompt: str, temperature: float, max_tokens: int, sample_index: int
) -> str:
    payload = json.dumps(
        [base_url.rstrip("/"), model, prompt, float(temperature), int(max_tokens), int(sample_index)],
        ensure_ascii=False,
    )
    return hashlib.sha256(payload.encode("utf-8", "surrogatepass")).hexdigest()


class LLMCache:
    """The reply cache. Opened lazily: a run that never asks the LLM creates no file."""

    def __init__(self, path: Path, read: bool = True):
        self.path = Path(path).expanduser()
        self.read = read
        self._conn: sqlite3.Connection | None = None

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            private(self.path)
            self._conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA busy_timeout=30000")
            self._conn.executescript(SCHEMA)
        return self._conn

    def get(self, key: str) -> CachedReply | None:
        if not self.read:
            return None
        row = self._db().execute("SELECT text, usage, model FROM replies WHERE key=?", (key,)).fetchone()
        if row is None:
            return None
        try:
            return CachedReply(text=row[0], usage=Usage.model_validate_json(row[1]), model=row[2])
        except ValueError:
            return None  # a row we cannot read is a miss, and the next put replaces it

    def put(self, key: str, reply: CachedReply) -> None:
        self._db().execute(
            "INSERT OR REPLACE INTO replies (key, text, usage, model, created_at) VALUES (?, ?, ?, ?, ?)",
            (
                key,
                reply.text,
                reply.usage.model_dump_json(),
                reply.model,
                datetime.now(UTC).isoformat(timespec="seconds"),
            ),
        )

    def __len__(self) -> int:
        return int(self._db().execute("SELECT COUNT(*) FROM replies").fetchone()[0])

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
