"""`ncu-agent show`, `report`, `diff` and `export`: a run's (or a batch's) records read back, as a table,
an HTML page, a diff of two candidates, or CSV/JSON. Registered by agent/cli.py."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from agent.commands.checks import checked, fail, output_file

console = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True)


def _fail(message: str, code: int = 2) -> typer.Exit:
    return fail(message, code)


def show(
    run_dir: Annotated[Path, typer.Argument(help="A run directory.", exists=True, file_okay=False)],
) -> None:
    """Print a run's history table."""
    from agent.commands.resume import mark_killed
    from agent.report.tables import history_table
    from agent.store import Store

    if not (run_dir / Store.FILENAME).exists():
        raise _fail(f"{run_dir}: no {Store.FILENAME} (not a run directory)")
    store = Store.open_dir(run_dir)
    mark_killed(store)  # a killed run's row is not left saying "running"
    for r in store.runs():
        console.print(
            f"run {r['id']}: {r['problem']} on {r['device']} ({r['gpu']}), proposer {r['proposer']}, "
            f"{r['status']}, started {r['started_at']}"
        )
        console.print(history_table(store.history(r["id"]), f"run {r['id']}"))


ReportPath = Annotated[
    Path,
    typer.Argument(
        help="A run directory, or a batch directory (a folder of run directories).",
        exists=True,
        file_okay=False,
    ),
]


def report(
    path: ReportPath,
    out: Annotated[Path | None, typer.Option(help="Where the page goes (default: PATH/report.html).")] = None,
) -> None:
    """Write a self-contained HTML report of a run, or of a batch.

    A run's page: plots per stage, roofline, accepted steps (ncu metrics side by side, code diff), final
    kernel, every candidate, prompts and replies. A batch's page: the summary table, linking each problem's
    page (written too). Open it in any browser: no scripts, no network.
    """
    import sqlite3

    from rich.progress import TimeRemainingColumn

    from agent.report.batch import batch_run_dirs, is_batch_dir
    from agent.report.data import is_run_dir
    from agent.report.export import batch_table
    from agent.report.page import write_batch_report, write_run_report  # matplotlib: heavy

    checked(output_file, out, "--out")
    try:
        if is_run_dir(path):
            page = write_run_report(path, out)
        elif is_batch_dir(path):
            dirs = batch_run_dirs(path)
            columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
            eta = (TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn())
            with Progress(*columns, *eta, console=console) as progress:
                task = progress.add_task("problem pages", total=len(dirs))
                page, data = write_batch_report(path, out, on_page=lambda d: progress.update(task, advance=1))
            console.print(batch_table(data))
        else:
            raise _fail(f"{path}: neither a run directory (records.sqlite) nor a batch of run directories")
    except (sqlite3.Error, OSError) as e:
        raise _fail(f"{path}: cannot write the report: {e}") from None
    console.print(f"report: {page}")


def diff(
    run_dir: Annotated[Path, typer.Argument(help="A run directory.", exists=True, file_okay=False)],
    a: Annotated[int, typer.Argument(help="Candidate id (the old side).")],
    b: Annotated[int, typer.Argument(help="Candidate id (the new side).")],
    context: Annotated[int, typer.Option(help="Lines of context around each change.")] = 3,
) -> None:
    """Show the code diff of candidate A vs B, and their evaluations and ncu metrics side by side."""
    from rich.syntax import Syntax

    from agent.report.data import is_run_dir, load_run_dir
    from agent.report.export import compare_table, diff_text, find_candidate

    if not is_run_dir(run_dir):
        raise _fail(f"{run_dir}: no records.sqlite (not a run directory)")
    data = load_run_dir(run_dir)
    try:
        ca, cb = find_candidate(data, a), find_candidate(data, b)
    except KeyError as e:
        raise _fail(str(e.args[0])) from None
    text = diff_text(ca, cb, context)
    if text:
        console.print(Syntax(text, "diff", theme="ansi_dark", background_color="default"))
    else:
        console.print(f"#{a} and #{b} have the same source")
    console.print(compare_table(ca, cb))


def export(
    path: ReportPath,
    fmt: Annotated[str, typer.Option("--format", help="csv or json.")] = "csv",
    out: Annotated[Path | None, typer.Option(help="Write here instead of standard output.")] = None,
    source: Annotated[bool, typer.Option("--source", help="Include each candidate's source.")] = False,
) -> None:
    """Export every candidate with its evaluation and ncu metrics (flattened) as CSV or JSON."""
    from agent.report.batch import batch_run_dirs
    from agent.report.data import is_run_dir
    from agent.report.export import export_rows, to_csv, to_json

    if fmt not in ("csv", "json"):
        raise _fail(f"--format {fmt!r}: choose csv or json")
    checked(output_file, out, "--out")
    if not is_run_dir(path) and not batch_run_dirs(path):
        raise _fail(f"{path}: neither a run directory (records.sqlite) nor a batch of run directories")
    rows = export_rows(path, include_source=source)
    text = to_csv(rows) if fmt == "csv" else to_json(rows)
    if out is None:
        sys.stdout.write(text)
    else:
        out.write_text(text, encoding="utf-8")
        err.print(f"{len(rows)} candidates -> {out}")
