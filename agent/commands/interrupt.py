"""What `ncu-agent run` leaves behind when Ctrl-C ends it: the run marked interrupted, `best_kernel.py` for
the best kernel measured so far (the loop's own rule, replayed over the records), and the lines that say
where everything is. The one place that tells a user how to go on from an interrupted run."""

from __future__ import annotations

from pathlib import Path

from agent.store import Store


def save_interrupted(store: Store, run_id: int, run_dir: Path) -> list[str]:
    """Mark the run interrupted, write best_kernel.py from its records; the lines to print."""
    from agent.report.data import BEST_KERNEL, load_run_dir

    store.finish_run(run_id, "interrupted", "stopped by Ctrl-C")
    best = load_run_dir(run_dir).best  # reads the committed records: the store stays consistent
    lines = ["interrupted (Ctrl-C): the candidates evaluated so far are kept"]
    if best is not None:
        (run_dir / BEST_KERNEL).write_text(best.source)
        lines.append(f"best kernel so far: {run_dir / BEST_KERNEL} (candidate #{best.id})")
    else:
        lines.append("no kernel was accepted before the interruption: no best_kernel.py written")
    records = run_dir / Store.FILENAME
    lines.append(f"records: {records} (ncu-agent show {run_dir}; ncu-agent report {run_dir})")
    lines.append(f"continue with: ncu-agent run --resume {run_dir}")
    return lines
