"""Continuing a run that a killed batch left unfinished, without losing or repeating a record.

A batch problem's run is replayed from its start in the same run row. The loop is deterministic given the
results it sees, and the replay hands it the recorded ones: `recorded_evaluation` gives back the worker
result of a source this run already evaluated (no worker runs), `recorded_profiles` the profiles of a step
already profiled (no ncu runs). Each write the replay repeats is matched to the row it repeats, which is
then reused instead of inserted:

- prompt: same run, stage, iteration and text;
- reply: same prompt, model, text and error (its usage is the first write's: a cached replay is free);
- candidate: same run, stage, iteration, proposer, label, parent, source, prompt and reply;
- evaluation: same candidate and the same result (a re-run worker gives other timings, so a redone
  evaluation would show as a second row: tests check there is none);
- profile: same candidate and metric set; the row is updated in place (its report file was rewritten).

Each recorded row is matched at most once, in id order. What the replay writes beyond what was recorded
is inserted as usual. Rows the replay does not repeat (an LLM reply that was not cached, so the replay
asked again and got another one) stay, as what the first attempt did.
"""

from __future__ import annotations

import json
from collections import defaultdict, deque
from pathlib import Path
from typing import Any

from agent.records import Candidate, EvalResult, ProfileRecord
from agent.store import Store


def _result_key(result_json: str) -> str:
    return json.dumps(json.loads(result_json), sort_keys=True)


class ReplayStore(Store):
    """A run directory's store, continuing run `run_id` of an earlier, killed attempt."""

    def __init__(self, path: Path, run_id: int):
        super().__init__(path)
        self.run_id = run_id
        self.reused = 0  # worker evaluations given back instead of run again
        c = self.conn
        self._prompts: dict[tuple, deque[int]] = defaultdict(deque)
        for r in c.execute("SELECT * FROM prompts WHERE run_id=? ORDER BY id", (run_id,)):
            self._prompts[(r["stage"], r["iteration"], r["text"])].append(r["id"])
        self._replies: dict[tuple, deque[int]] = defaultdict(deque)
        for r in c.execute(
            "SELECT r.* FROM replies r JOIN prompts p ON p.id = r.prompt_id WHERE p.run_id=? ORDER BY r.id",
            (run_id,),
        ):
            self._replies[(r["prompt_id"], r["model"], r["text"], r["error"])].append(r["id"])
        self._candidates: dict[tuple, deque[int]] = defaultdict(deque)
        self._by_source: dict[str, list[int]] = defaultdict(list)
        for r in c.execute("SELECT * FROM candidates WHERE run_id=? ORDER BY id", (run_id,)):
            key = self._cand_key(
                r["stage"],
                r["iteration"],
                r["proposer"],
                r["label"],
                r["parent_id"],
                r["source"],
                r["prompt_id"],
                r["reply_id"],
            )
            self._candidates[key].append(r["id"])
            self._by_source[r["source"]].append(r["id"])
        self._evaluations: dict[int, deque[tuple[int, str, str]]] = defaultdict(deque)
        self._profiles: dict[tuple[int, str], deque[int]] = defaultdict(deque)
        self._given_back: set[int] = set()  # profile rows handed to the replay: written back unchanged
        for r in c.execute(
            "SELECT e.* FROM evaluations e JOIN candidates c ON c.id = e.candidate_id "
            "WHERE c.run_id=? ORDER BY e.id",
            (run_id,),
        ):
            self._evaluations[r["candidate_id"]].append((r["id"], _result_key(r["result"]), r["result"]))
        for r in c.execute(
            "SELECT p.* FROM profiles p JOIN candidates c ON c.id = p.candidate_id "
            "WHERE c.run_id=? ORDER BY p.id",
            (run_id,),
        ):
            self._profiles[(r["candidate_id"], r["metric_set"])].append(r["id"])

    @staticmethod
    def _cand_key(
        stage: str,
        iteration: int,
        proposer: str,
        label: Any,
        parent: Any,
        source: str,
        prompt: Any,
        reply: Any,
    ) -> tuple:
        return (stage, iteration, proposer, label or "", parent, source, prompt, reply)

    # --- what the replay can give back instead of running it again ------------------------------
    def recorded_evaluation(self, source: str) -> EvalResult | None:
        """The worker result this run recorded for `source`, if its row is not matched yet."""
        for cand_id in self._by_source.get(source, []):
            for _, _, raw in self._evaluations.get(cand_id, ()):
                result = EvalResult.model_validate_json(raw)
                if result.device:  # a worker ran it (constraint and reply failures have no device)
                    return result
        return None

    def recorded_profiles(self, sources: list[str], metric_set: str) -> list[Any] | None:
        """The profile rows of a whole step (one per source, in order), or None if any is missing."""
        rows = []
        for source in sources:
            row = None
            for cand_id in self._by_source.get(source, []):
                ids = self._profiles.get((cand_id, metric_set))
                if ids:
                    row = self.conn.execute("SELECT * FROM profiles WHERE id=?", (ids[0],)).fetchone()
                    break
            if row is None:
                return None
            rows.append(row)
        self._given_back.update(r["id"] for r in rows)
        return rows

    # --- writes: a repeated one returns the row it repeats ---------------------------------------
    def add_prompt(self, run_id: int, stage: str, iteration: int, text: str) -> int:
        ids = self._prompts.get((stage, iteration, text)) if run_id == self.run_id else None
        return ids.popleft() if ids else super().add_prompt(run_id, stage, iteration, text)

    def add_reply(
        self,
        prompt_id: int,
        model: str,
        text: str | None,
        usage: dict[str, Any] | None,
        latency_s: float | None,
        error: str | None = None,
    ) -> int:
        ids = self._replies.get((prompt_id, model, text, error))
        if ids:
            return ids.popleft()
        return super().add_reply(prompt_id, model, text, usage, latency_s, error)

    def add_candidate(self, run_id: int, iteration: int, cand: Candidate) -> int:
        key = self._cand_key(
            cand.stage,
            iteration,
            cand.proposer,
            cand.label,
            cand.parent_id,
            cand.source,
            cand.prompt_id,
            cand.reply_id,
        )
        ids = self._candidates.get(key) if run_id == self.run_id else None
        return ids.popleft() if ids else super().add_candidate(run_id, iteration, cand)

    def add_evaluation(self, candidate_id: int, result: EvalResult) -> int:
        recorded = self._evaluations.get(candidate_id)
        if recorded:
            key = _result_key(result.model_dump_json())
            for i, (eval_id, rkey, raw) in enumerate(recorded):
                if rkey == key:
                    del recorded[i]
                    if EvalResult.model_validate_json(raw).device:
                        self.reused += 1
                    return eval_id
        return super().add_evaluation(candidate_id, result)

    def add_profile(self, profile: ProfileRecord) -> int:
        ids = self._profiles.get((profile.candidate_id, profile.metric_set))
        if not ids:
            return super().add_profile(profile)
        profile_id = ids.popleft()
        if profile_id in self._given_back:
            return profile_id
        cols = profile.columns()
        del cols["metric_set"]
        with self._tx() as c:
            c.execute(
                f"UPDATE profiles SET {', '.join(f'{k}=?' for k in cols)} WHERE id=?",
                (*cols.values(), profile_id),
            )
        return profile_id
