"""Rich tables of candidates and their evaluations, for `run` and `show`."""

from __future__ import annotations

import sqlite3

from rich.table import Table

from agent.records import EvalResult


def _ms(v: float | None) -> str:
    return f"{v:.3f}" if v is not None else "-"


def _x(v: float | None) -> str:
    return f"{v:.2f}x" if v is not None else "-"


def result_cells(result: EvalResult) -> list[str]:
    """Time, eager, compile, both speedups (ratios from the candidate's own run) and % of roofline."""
    t = result.timings
    if t is None or t.candidate is None:
        skipped = t.skipped_reason if t and t.skipped_reason else ""
        return ["-", "-", "-", "-", "-", "-" if not skipped else "not timed"]
    return [
        _ms(t.candidate.median_ms),
        _ms(t.eager.median_ms if t.eager else None),
        _ms(t.compiled.median_ms if t.compiled else None),
        _x(t.speedup_eager),
        _x(t.speedup_compiled),
        f"{t.pct_roofline:.1f}%" if t.pct_roofline is not None else "-",
    ]


HEADERS = [
    "id",
    "stage",
    "iter",
    "candidate",
    "status",
    "ms",
    "eager ms",
    "compile ms",
    "vs eager",
    "vs compile",
    "roofline",
]


def history_table(rows: list[sqlite3.Row], title: str, best_id: int | None = None) -> Table:
    """One row per candidate; timing columns that no row has are left out (a CPU run has none)."""
    body = []
    for row in rows:
        result = EvalResult.model_validate_json(row["result"]) if row["result"] else None
        status = row["status"] or "pending"
        if result is not None and not result.accepted:
            status = f"{status}: {(row['reason'] or '')[:60]}"
        cells = result_cells(result) if result is not None else ["-"] * 6
        mark = " *" if row["id"] == best_id else ""
        style = "green" if row["status"] == "accepted" else ("red" if row["status"] else None)
        body.append(
            (
                [
                    str(row["id"]),
                    row["stage"],
                    str(row["iteration"]),
                    f"{row['label'] or row['proposer']}{mark}",
                    status,
                    *cells,
                ],
                style,
            )
        )
    keep = [
        i
        for i in range(len(HEADERS))
        if i < 5 or any(cells[i] not in ("-", "not timed") for cells, _ in body)
    ]
    table = Table(title=title, show_lines=False)
    for i in keep:
        table.add_column(HEADERS[i], justify="left" if HEADERS[i] in ("candidate", "status") else "right")
    for cells, style in body:
        table.add_row(*(cells[i] for i in keep), style=style)
    if len(keep) == 5 and body:
        table.caption = "not timed: no GPU (correctness only, in Triton's interpreter)"
    return table
