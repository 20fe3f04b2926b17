"""The SQLite store: records survive the process and read back in order."""

import subprocess
import sys
import textwrap

from agent.records import Candidate, EvalResult, ProfileRecord, Status, Timings, TimingStats
from agent.store import Store


def _result(ms: float | None) -> EvalResult:
    timings = (
        Timings(candidate=TimingStats(times_ms=[ms, ms]), eager=TimingStats(times_ms=[2 * ms]))
        if ms
        else None
    )
    return EvalResult(
        status=Status.ACCEPTED if ms else Status.INCORRECT, reason="" if ms else "values", timings=timings
    )


def test_history_joins_latest_evaluation(tmp_path):
    store = Store.open_dir(tmp_path)
    run = store.start_run("p", "cpu", None, "search", None, {})
    a = store.add_candidate(run, 0, Candidate(source="a", proposer="start", stage="micro", label="start"))
    b = store.add_candidate(run, 1, Candidate(source="b", proposer="search", stage="micro", parent_id=a))
    store.add_evaluation(a, _result(1.0))
    store.add_evaluation(b, _result(None))
    store.add_profile(
        ProfileRecord(
            candidate_id=a,
            ok=False,
            error="no GPU",
            metric_set="seed",
        )
    )
    rows = store.history(run)
    assert [r["id"] for r in rows] == [a, b]
    assert rows[0]["median_ms"] == 1.0 and rows[0]["eager_ms"] == 2.0 and rows[0]["profiled"] == 0
    assert rows[1]["status"] == "incorrect"
    assert EvalResult.model_validate_json(rows[0]["result"]).timings.speedup_eager == 2.0
    assert store.candidate_source(b) == "b"


def test_writes_are_durable_when_the_writer_is_killed(tmp_path):
    """A writer that dies without closing loses nothing it had written."""
    code = textwrap.dedent(f"""
        import os
        from agent.store import Store
        from agent.records import Candidate
        s = Store.open_dir(__import__('pathlib').Path({str(tmp_path)!r}))
        run = s.start_run('p', 'cpu', None, 'search', None, {{}})
        for i in range(5):
            s.add_candidate(run, i, Candidate(source=str(i), proposer='search', stage='micro'))
        os._exit(9)
    """)
    proc = subprocess.run([sys.executable, "-c", code], check=False)
    assert proc.returncode == 9
    rows = Store.open_dir(tmp_path).history()
    assert [r["iteration"] for r in rows] == [0, 1, 2, 3, 4]
