"""`ncu-agent run --stages tiling` end to end with no LLM: the built-in search serves the tiling stage.

On the CPU the candidates run in Triton's interpreter (correctness only, nothing is timed), so one
iteration is enough to see a BLOCK variant proposed, checked against the stage's rules, evaluated and
recorded; a capped block (softmax's) is searched at its cap; a BLOCK size computed otherwise in the wrapper
says why the stage has nothing to search.
"""

import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _run(problem: str, tmp_path: Path) -> tuple[str, sqlite3.Connection]:
    """`problem`: a bundled problem's name, or a problem folder."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    run_dir = tmp_path / Path(problem).name
    where = problem if os.sep in problem else f"kernels/{problem}"
    argv = [sys.executable, "-m", "agent", "run", where, "--stages", "tiling"]
    argv += ["--max-iterations", "1", "--run-dir", str(run_dir)]
    proc = subprocess.run(
        argv, cwd=ROOT, env={**env, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout, sqlite3.connect(run_dir / "records.sqlite")


@pytest.mark.slow
def test_tiling_runs_with_the_search_and_evaluates_a_block_variant(tmp_path):
    out, db = _run("l1_norm", tmp_path)
    assert "built-in search (coordinate) over tiling: BLOCK sizes, programs per SM, num_warps" in out
    rows = db.execute(
        "SELECT c.stage, c.proposer, c.label, e.status FROM candidates c "
        "JOIN evaluations e ON e.candidate_id = c.id ORDER BY c.id"
    ).fetchall()
    assert rows[0] == ("tiling", "start", "starting kernel", "accepted")
    assert len(rows) == 2  # --max-iterations 1: the budget stops the search after one step
    stage, proposer, label, status = rows[1]
    assert (stage, proposer, status) == ("tiling", "search", "accepted")
    assert label.startswith("l1_norm_kernel_autotune: BLOCK_SIZE_D=512/1024/2048/4096/8192 ")
    (source,) = db.execute(
        "SELECT source FROM candidates WHERE id = (SELECT MAX(id) FROM candidates)"
    ).fetchone()
    assert "triton.Config({'BLOCK_SIZE_D': 8192}" in source


@pytest.mark.slow
def test_a_capped_block_is_searched_at_its_cap(tmp_path):
    """softmax computes BLOCK_SIZE = min(triton.next_power_of_2(n_cols), 4096): the cap is what moves."""
    out, db = _run("softmax", tmp_path)
    assert "not searchable" not in out
    rows = db.execute(
        "SELECT c.proposer, c.label, e.status, c.source FROM candidates c "
        "JOIN evaluations e ON e.candidate_id = c.id ORDER BY c.id"
    ).fetchall()
    assert [r[0] for r in rows] == ["start", "search"]
    _, label, status, source = rows[1]
    assert label.startswith("softmax_kernel: BLOCK_SIZE=") and status == "accepted"
    assert "min(triton.next_power_of_2(n_cols), 4096)" not in source
    assert "BLOCK_SIZE = min(triton.next_power_of_2(n_cols), " in source


@pytest.mark.slow
def test_tiling_searches_a_block_computed_at_run_time(tmp_path):
    """An uncapped `triton.next_power_of_2(n_cols)` block is searched at the call's result (x2, /2), as real
    libraries compute their blocks, instead of being reported as not searchable."""
    problem = tmp_path / "softmax_uncapped"
    shutil.copytree(ROOT / "kernels" / "softmax", problem)
    kernel = problem / "kernel.py"
    capped = "min(triton.next_power_of_2(n_cols), 4096)"
    assert capped in kernel.read_text()
    kernel.write_text(kernel.read_text().replace(capped, "triton.next_power_of_2(n_cols)"))
    out, db = _run(str(problem), tmp_path)
    assert "not searchable" not in out
    labels = [r[0] for r in db.execute("SELECT label FROM candidates WHERE proposer = 'search'")]
    assert labels and any("BLOCK_SIZE" in label for label in labels), labels
