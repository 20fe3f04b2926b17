"""How the judge's findings become a verdict: `Rejected` (a status, a reason and the rule that fired,
raised from anywhere in an evaluation), the text of an exception the candidate raised (`describe`) and
the status it means (`classify`), and the `Ledger` of every check made, summarised for the result."""

from __future__ import annotations

import traceback
from pathlib import Path

from agent.records import Check, Status

MAX_TEXT = 2000
HARNESS_FAILED = "the evaluator itself failed"  # a failure of the harness's side, not the candidate's
COMPILE_ERRORS = {"CompilationError", "OutOfResources", "PTXASError"}
EXIT_EXCEPTIONS = {"SystemExit", "KeyboardInterrupt", "GeneratorExit"}


# Exit codes of `ncu-agent check`, defined here only: accepted 0, rejected 1, bad usage 2 (the CLI's own),
# and 3 when the CPU cannot decide (`Status.UNDECIDED`: a branch on the device or the interpreter whose
# arms do different work; the GPU check decides).
EXIT_ACCEPTED, EXIT_REJECTED, EXIT_USAGE, EXIT_UNDECIDED = 0, 1, 2, 3


def exit_code(status: Status) -> int:
    if status == Status.ACCEPTED:
        return EXIT_ACCEPTED
    return EXIT_UNDECIDED if status == Status.UNDECIDED else EXIT_REJECTED


def undecided(source: str) -> tuple[str, list[Check]] | None:
    """(reason, checks) when the CPU cannot decide on `source` (device-branch findings), else None."""
    from agent.source.device_branches import device_branches

    found = device_branches(source)
    if not found:
        return None
    reason = (
        "the CPU cannot decide: a branch on the device or the interpreter does different work in the arm "
        f"the CPU check never runs ({found[0].text()}); the GPU check decides"
    )
    checks = [Check(name="device-branch", passed=False, detail=b.text()) for b in found[:4]]
    return reason, checks


class Rejected(Exception):
    """Stops the evaluation with a status (raised from anywhere below `Judge.run`)."""

    def __init__(self, status: Status, reason: str, rule: str | None = None):
        super().__init__(reason)
        self.status, self.reason, self.rule = status, reason, rule


def describe(e: BaseException, candidate_file: str | None = None) -> str:
    """`Type: message`, where it was raised, and the deepest line of the candidate's file on the way."""
    try:
        msg = str(e)
    except Exception:
        msg = "<message could not be printed>"
    if len(msg) > MAX_TEXT:
        msg = msg[:MAX_TEXT] + f" [... {len(msg) - MAX_TEXT} chars]"
    text = f"{type(e).__name__}: {msg}"
    frames = traceback.extract_tb(e.__traceback__)
    if frames:
        last = frames[-1]
        text += f" (at {Path(last.filename).name}:{last.lineno} in {last.name}: {last.line or ''})"
        own = [f for f in frames if candidate_file and f.filename == candidate_file]
        if own and own[-1] is not last:
            text += f" (from the candidate's line {own[-1].lineno} in {own[-1].name}: {own[-1].line or ''})"
    return text


def classify(e: BaseException) -> tuple[Status, str | None]:
    """The status of an evaluation a candidate's exception ended (and the rule, for a process exit)."""
    names = {c.__name__ for c in type(e).__mro__}
    if names & EXIT_EXCEPTIONS:
        return Status.CHEATING, "process-exit"
    return (Status.COMPILE_ERROR if names & COMPILE_ERRORS else Status.CRASHED), None


def exit_note(rule: str | None) -> str:
    """What a reason adds when the candidate tried to leave the process."""
    return (
        " (leaving the process as if the checks had passed is not allowed)" if rule == "process-exit" else ""
    )


class Ledger:
    """Every check made, with where; summarised per check name for the result."""

    def __init__(self) -> None:
        self.entries: dict[str, list[tuple[str, Check]]] = {}

    def add(self, where: str, check: Check) -> None:
        self.entries.setdefault(check.name, []).append((where, check))

    def failures(self) -> list[tuple[str, Check]]:
        return [(w, c) for items in self.entries.values() for w, c in items if not c.passed]

    def summary(self, max_failures: int = 3) -> list[Check]:
        from agent.evaluation.compare import WARNING

        out = []
        for name, items in self.entries.items():
            failed = [(w, c) for w, c in items if not c.passed]
            if failed:
                out += [
                    Check(name=name, passed=False, detail=f"{w}: {c.detail}")
                    for w, c in failed[:max_failures]
                ]
                continue
            w, c = next(((w, c) for w, c in items if c.detail.startswith(WARNING)), items[-1])
            out.append(Check(name=name, passed=True, detail=f"{len(items)} passed; {w}: {c.detail}"))
        return out
