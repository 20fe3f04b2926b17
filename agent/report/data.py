"""What a report shows, read from a run directory's store into the models of agent/report/models.py.

The store records candidates and evaluations but not which candidate was the best at each moment: the
loop's choice is replayed here with the loop's own rule (`agent.loop.beats`), and checked against the
`best_kernel*.py` files the run wrote.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from agent.config import LoopPolicy
from agent.records import EvalResult
from agent.report.models import (
    CandidateRow,
    ProfileRow,
    PromptRow,
    ReplyRow,
    RunDirData,
    RunInfo,
    StageData,
    Step,
)
from agent.store import Store

BEST_KERNEL = "best_kernel.py"


def is_run_dir(path: Path) -> bool:
    return (path / Store.FILENAME).is_file()


def _json(text: str | None) -> Any:
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None


def _profile(row: sqlite3.Row, run_dir: Path) -> ProfileRow:
    prov = _json(row["provenance"])
    link = None
    if row["report_path"]:
        # Recorded as an absolute path on the GPU machine: link the copy inside this run dir, if any.
        local = run_dir / "profiles" / Path(row["report_path"]).name
        link = f"profiles/{local.name}" if local.is_file() else None
    return ProfileRow(
        ok=bool(row["ok"]),
        error=row["error"],
        metric_set=row["metric_set"],
        report_path=row["report_path"],
        report_link=link,
        metrics=metrics if isinstance(metrics := _json(row["metrics"]), dict) else None,
        rules=[str(r) for r in _json(row["rules"]) or []],
        provenance=prov if isinstance(prov, str) else json.dumps(prov, default=str) if prov else "",
    )


def _candidates(store: Store, run_id: int, run_dir: Path) -> list[CandidateRow]:
    rows = store.conn.execute(
        """SELECT c.*, e.status, e.reason, e.result FROM candidates c
           LEFT JOIN evaluations e ON e.id = (SELECT MAX(id) FROM evaluations WHERE candidate_id = c.id)
           WHERE c.run_id = ? ORDER BY c.id""",
        (run_id,),
    ).fetchall()
    out = []
    for r in rows:
        profs = store.conn.execute("SELECT * FROM profiles WHERE candidate_id=? ORDER BY id", (r["id"],))
        out.append(
            CandidateRow(
                id=r["id"],
                run_id=r["run_id"],
                stage=r["stage"],
                iteration=r["iteration"],
                proposer=r["proposer"],
                label=r["label"] or "",
                parent_id=r["parent_id"],
                prompt_id=r["prompt_id"],
                reply_id=r["reply_id"],
                created_at=r["created_at"],
                source=r["source"],
                status=r["status"],
                reason=r["reason"] or "",
                result=EvalResult.model_validate_json(r["result"]) if r["result"] else None,
                profiles=[_profile(p, run_dir) for p in profs],
            )
        )
    return out


def _prompts(store: Store, run_id: int) -> list[PromptRow]:
    prompts = []
    for p in store.prompts(run_id):
        replies = store.conn.execute("SELECT * FROM replies WHERE prompt_id=? ORDER BY id", (p["id"],))
        prompts.append(
            PromptRow(
                id=p["id"],
                stage=p["stage"],
                iteration=p["iteration"],
                text=p["text"],
                created_at=p["created_at"],
                replies=[
                    ReplyRow(
                        id=r["id"],
                        model=r["model"],
                        text=r["text"],
                        usage=_json(r["usage"]),
                        latency_s=r["latency_s"],
                        error=r["error"],
                    )
                    for r in replies
                ],
            )
        )
    return prompts


def _min_gain(settings: dict[str, Any]) -> float:
    default = LoopPolicy().min_gain
    return float(settings.get("min_gain", default))


def _follow_file(steps: list[Step], seen: list[CandidateRow], path: Path, notes: list[str]) -> None:
    """Where a `best_kernel*.py` the run wrote is another candidate than the replay's best, follow the
    file (a run may have used another `min_gain` than the one it recorded)."""
    if not path.is_file():
        return
    text = path.read_text()
    current = steps[-1].child if steps else None
    same = [c for c in seen if c.source == text]
    if not same or (current is not None and current.source == text):
        return
    notes.append(
        f"{path.name} is candidate #{same[-1].id}, not #{current.id if current else '-'} that replaying "
        "the loop's rule gives: the page follows the file"
    )
    steps.append(Step(parent=current, child=same[-1]))


def replay_steps(
    candidates: list[CandidateRow],
    min_gain: float,
    run_dir: Path | None = None,
    notes: list[str] | None = None,
) -> list[Step]:
    """The loop's sequence of bests over one run's candidates (all its stages, in the order evaluated): a
    starting kernel, then each candidate that beats the best by the loop's own rule (`agent.loop.beats`).
    A stage starts from the previous stage's best. At the end of each stage, the `best_kernel.STAGE.py`
    of `run_dir` (when there) has the last word. Marks `new_best` on the steps' candidates."""
    from agent.loop import Best, beats  # deferred: the loop brings jinja2 (the prompts)

    last_of_stage = {c.stage: i for i, c in enumerate(candidates)}
    steps: list[Step] = []
    for i, c in enumerate(candidates):
        best = steps[-1].child if steps else None
        if c.proposer == "start":
            if c.accepted:
                steps.append(Step(parent=None, child=c))
        elif best is not None and best.result is not None and c.result is not None:
            as_best = Best(best.id, best.source, best.result, None)  # type: ignore[arg-type]  # no profile needed
            if beats(c.result, as_best, min_gain):
                steps.append(Step(parent=best, child=c))
        if run_dir is not None and last_of_stage[c.stage] == i:
            _follow_file(steps, candidates[: i + 1], run_dir / f"best_kernel.{c.stage}.py", notes or [])
    for st in steps:
        st.child.new_best = True
    return steps


def load_run_dir(path: Path) -> RunDirData:
    """Everything a run page shows. A run still going is read as it stands."""
    store = Store.open_dir(path)
    try:
        runs, per_run = [], []
        for r in store.runs():
            row = dict(r)
            info = RunInfo(**row | {"settings": _json(row["settings"]) or {}})
            runs.append(info)
            per_run.append((info, _candidates(store, info.id, path), _prompts(store, info.id)))
    finally:
        store.close()
    data = RunDirData(path=path, runs=runs, stages=[])
    for info, cands, prompts in per_run:
        steps = replay_steps(cands, _min_gain(info.settings), path, data.notes)
        names = list(dict.fromkeys(c.stage for c in cands))
        for name in names or info.settings.get("stages") or [info.settings.get("stage") or "?"]:
            data.stages.append(
                StageData(
                    run_id=info.id,
                    name=name,
                    candidates=[c for c in cands if c.stage == name],
                    prompts=[p for p in prompts if p.stage == name],
                    steps=[st for st in steps if st.child.stage == name],
                )
            )
    all_steps = data.steps
    data.start = all_steps[0].child if all_steps else None
    data.best = all_steps[-1].child if all_steps else None
    best_file = path / BEST_KERNEL
    if best_file.is_file():
        data.final_source = best_file.read_text()
        same = [c for c in data.candidates if c.source == data.final_source]
        if same and (data.best is None or data.best.source != data.final_source):
            data.notes.append(
                f"{BEST_KERNEL} is candidate #{same[-1].id}, not #{data.best.id if data.best else '-'} "
                "that replaying the loop's rule gives: the page follows the file"
            )
            data.best = same[-1]
    elif data.best is not None:
        data.final_source = data.best.source
    if data.best is not None:
        data.best.final_best = True
    return data
