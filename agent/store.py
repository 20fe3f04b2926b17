"""The run's records: one SQLite file per run directory, written as things happen.

Every prompt, candidate, evaluation and profile is committed the moment it exists, so a killed run
loses at most the step in flight. WAL mode and a busy timeout let readers (`ncu-agent show`) and later
several writers (batches) share the file.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agent.evaluation.secrets import private
from agent.records import Candidate, EvalResult, ProfileRecord

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY, problem TEXT NOT NULL, started_at TEXT NOT NULL, finished_at TEXT,
    device TEXT, gpu TEXT, proposer TEXT, llm TEXT, settings TEXT, status TEXT, note TEXT
);
CREATE TABLE IF NOT EXISTS prompts (
    id INTEGER PRIMARY KEY, run_id INTEGER NOT NULL REFERENCES runs(id), stage TEXT NOT NULL,
    iteration INTEGER NOT NULL, text TEXT NOT NULL, created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS replies (
    id INTEGER PRIMARY KEY, prompt_id INTEGER NOT NULL REFERENCES prompts(id), model TEXT, text TEXT,
    usage TEXT, latency_s REAL, error TEXT, created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS candidates (
    id INTEGER PRIMARY KEY, run_id INTEGER NOT NULL REFERENCES runs(id), stage TEXT NOT NULL,
    iteration INTEGER NOT NULL, proposer TEXT NOT NULL, label TEXT, parent_id INTEGER, source TEXT NOT NULL,
    prompt_id INTEGER, reply_id INTEGER, created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS evaluations (
    id INTEGER PRIMARY KEY, candidate_id INTEGER NOT NULL REFERENCES candidates(id), status TEXT NOT NULL,
    reason TEXT, median_ms REAL, eager_ms REAL, compiled_ms REAL, roofline_ms REAL, result TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS profiles (
    id INTEGER PRIMARY KEY, candidate_id INTEGER NOT NULL REFERENCES candidates(id), ok INTEGER NOT NULL,
    error TEXT, metric_set TEXT, report_path TEXT, metrics TEXT, rules TEXT, provenance TEXT,
    created_at TEXT NOT NULL
);
"""


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class Store:
    """A run directory's `records.sqlite`."""

    FILENAME = "records.sqlite"

    def __init__(self, path: Path):
        self.path = path
        private(path)
        self.conn = sqlite3.connect(path, timeout=30, isolation_level=None)
        self.conn.row_factory = sqlite3.Row
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA busy_timeout=30000")
        self.conn.executescript(SCHEMA)

    @classmethod
    def open_dir(cls, run_dir: Path) -> Store:
        return cls(run_dir / cls.FILENAME)

    def close(self) -> None:
        self.conn.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
            self.conn.execute("COMMIT")
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise

    def _insert(self, table: str, **values: Any) -> int:
        values["created_at" if table != "runs" else "started_at"] = _now()
        cols = ", ".join(values)
        marks = ", ".join("?" for _ in values)
        with self._tx() as c:
            cur = c.execute(f"INSERT INTO {table} ({cols}) VALUES ({marks})", list(values.values()))
            return int(cur.lastrowid or 0)

    # --- writes ---------------------------------------------------------------------------------
    def start_run(
        self,
        problem: str,
        device: str,
        gpu: str | None,
        proposer: str,
        llm: str | None,
        settings: dict[str, Any],
    ) -> int:
        return self._insert(
            "runs",
            problem=problem,
            device=device,
            gpu=gpu,
            proposer=proposer,
            llm=llm,
            settings=json.dumps(settings, default=str),
            status="running",
        )

    def finish_run(self, run_id: int, status: str, note: str = "") -> None:
        with self._tx() as c:
            c.execute(
                "UPDATE runs SET finished_at=?, status=?, note=? WHERE id=?", (_now(), status, note, run_id)
            )

    def add_prompt(self, run_id: int, stage: str, iteration: int, text: str) -> int:
        return self._insert("prompts", run_id=run_id, stage=stage, iteration=iteration, text=text)

    def add_reply(
        self,
        prompt_id: int,
        model: str,
        text: str | None,
        usage: dict[str, Any] | None,
        latency_s: float | None,
        error: str | None = None,
    ) -> int:
        return self._insert(
            "replies",
            prompt_id=prompt_id,
            model=model,
            text=text,
            usage=json.dumps(usage) if usage else None,
            latency_s=latency_s,
            error=error,
        )

    def annotate_reply(self, reply_id: int, **info: Any) -> None:
        """Add what became of a reply (cut code, not evaluated again and why) to its `usage` JSON."""
        with self._tx() as c:
            row = c.execute("SELECT usage FROM replies WHERE id=?", (reply_id,)).fetchone()
            usage = json.loads(row[0]) if row and row[0] else {}
            c.execute("UPDATE replies SET usage=? WHERE id=?", (json.dumps({**usage, **info}), reply_id))

    def add_candidate(self, run_id: int, iteration: int, cand: Candidate) -> int:
        return self._insert(
            "candidates",
            run_id=run_id,
            stage=cand.stage,
            iteration=iteration,
            proposer=cand.proposer,
            label=cand.label,
            parent_id=cand.parent_id,
            source=cand.source,
            prompt_id=cand.prompt_id,
            reply_id=cand.reply_id,
        )

    def add_evaluation(self, candidate_id: int, result: EvalResult) -> int:
        t = result.timings
        return self._insert(
            "evaluations",
            candidate_id=candidate_id,
            status=result.status.value,
            reason=result.reason,
            median_ms=t.candidate.median_ms if t and t.candidate else None,
            eager_ms=t.eager.median_ms if t and t.eager else None,
            compiled_ms=t.compiled.median_ms if t and t.compiled else None,
            roofline_ms=t.roofline_ms if t else None,
            result=result.model_dump_json(),
        )

    def add_profile(self, profile: ProfileRecord) -> int:
        return self._insert("profiles", candidate_id=profile.candidate_id, **profile.columns())

    # --- reads ----------------------------------------------------------------------------------
    def runs(self) -> list[sqlite3.Row]:
        return self.conn.execute("SELECT * FROM runs ORDER BY id").fetchall()

    def history(self, run_id: int | None = None) -> list[sqlite3.Row]:
        """One row per candidate with its latest evaluation and profile, in the order they were made."""
        where = "WHERE c.run_id = ?" if run_id is not None else ""
        args = (run_id,) if run_id is not None else ()
        return self.conn.execute(
            f"""SELECT c.id, c.run_id, c.stage, c.iteration, c.proposer, c.label, c.parent_id,
                       e.status, e.reason, e.median_ms, e.eager_ms, e.compiled_ms, e.roofline_ms, e.result,
                       p.ok AS profiled, p.error AS profile_error
                FROM candidates c
                LEFT JOIN evaluations e ON e.id = (SELECT MAX(id) FROM evaluations WHERE candidate_id = c.id)
                LEFT JOIN profiles p ON p.id = (SELECT MAX(id) FROM profiles WHERE candidate_id = c.id)
                {where} ORDER BY c.id""",
            args,
        ).fetchall()

    def candidate_source(self, candidate_id: int) -> str:
        row = self.conn.execute("SELECT source FROM candidates WHERE id=?", (candidate_id,)).fetchone()
        if row is None:
            raise KeyError(f"no candidate {candidate_id}")
        return str(row["source"])

    def prompts(self, run_id: int) -> list[sqlite3.Row]:
        return self.conn.execute("SELECT * FROM prompts WHERE run_id=? ORDER BY id", (run_id,)).fetchall()

    def profile_of(self, candidate_id: int) -> sqlite3.Row | None:
        return self.conn.execute(
            "SELECT * FROM profiles WHERE candidate_id=? ORDER BY id DESC LIMIT 1", (candidate_id,)
        ).fetchone()
