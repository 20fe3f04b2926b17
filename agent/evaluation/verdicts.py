"""How the judge's findings become a verdict: `Rejected` (a status, a reason and the rule that fired,
raised from anywhere in an evaluation), the text of an exception the candidate raised (`describe`) and
the status it means (`classify`), and the `Ledger` of every check made, summarised for the result."""

from __future__ import annotations

import traceback
from pathlib import Path

from agent.evaluation.interpreter_shims import interpreter_limit
from agent.records import Check, Status
from agent.source.device_branches import device_branches

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
    """`Type: message`, where it was raised, and the candidate's own line: inside a kernel when the error
    came from one (an interpreter traceback's kernel frame, a compile error's node), else the deepest
    line of the candidate's file on the way."""
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
    own = candidate_line(e, candidate_file)
    if own is not None and (not frames or (own[0], own[1]) != (frames[-1].lineno, frames[-1].name)):
        text += f" (from the candidate's line {own[0]} in {own[1]}: {own[2]})"
    return text


def _chain(e: BaseException) -> list[BaseException]:
    """`e` and the exceptions it was raised from, outermost first."""
    out: list[BaseException] = []
    cur: BaseException | None = e
    while cur is not None and all(cur is not x for x in out):
        out.append(cur)
        cur = cur.__cause__ or cur.__context__
    return out


def candidate_line(e: BaseException, candidate_file: str | None) -> tuple[int, str, str] | None:
    """(line, function, text) of the candidate's file where `e` arose: the deepest frame of the candidate's
    file in the innermost exception of the chain that has one (the interpreter re-raises a kernel's error
    from the launch line, so the kernel's own frame is in the cause), or the line a Triton compile error
    names inside its kernel."""
    if candidate_file is None:
        return None
    for cur in reversed(_chain(e)):
        own = [f for f in traceback.extract_tb(cur.__traceback__) if f.filename == candidate_file]
        compiled = _compile_error_line(cur, candidate_file)
        if compiled is not None:
            return compiled
        if own:
            return own[-1].lineno or 0, own[-1].name, (own[-1].line or "").strip()
    return None


def _compile_error_line(e: BaseException, candidate_file: str) -> tuple[int, str, str] | None:
    """A Triton CompilationError numbers lines within its kernel's source (`src`): the file's line."""
    src, node = getattr(e, "src", None), getattr(e, "node", None)
    if not isinstance(src, str) or not hasattr(node, "lineno"):
        return None
    try:
        text = Path(candidate_file).read_text()
    except OSError:
        return None
    at = text.find(src)
    if at < 0:
        return None
    line = text.count("\n", 0, at) + node.lineno  # type: ignore[union-attr]
    lines = text.splitlines()
    name = src.split("def ", 1)[-1].split("(", 1)[0] if "def " in src else "?"
    return line, name, lines[line - 1].strip() if 0 < line <= len(lines) else ""


# A kernel the CPU interpreter cannot run is neither right nor wrong there: the CPU cannot decide (exit 3),
# and the GPU check decides. This is the one place that maps interpreter limits to that verdict.
CPU_UNDECIDED = Status.UNDECIDED
CPU_RULE = "cpu-interpreter"
CPU_NOTE = " (the CPU interpreter cannot run this, so the CPU cannot decide; the GPU run will)"


def classify(e: BaseException) -> tuple[Status, str | None]:
    """The status of an evaluation a candidate's exception ended (and the rule, for a process exit or an
    interpreter limit)."""
    names = {c.__name__ for c in type(e).__mro__}
    if names & EXIT_EXCEPTIONS:
        return Status.CHEATING, "process-exit"
    if interpreter_limit(e) is not None:
        return CPU_UNDECIDED, CPU_RULE
    return (Status.COMPILE_ERROR if names & COMPILE_ERRORS else Status.CRASHED), None


def exit_note(rule: str | None) -> str:
    """What a reason adds for its rule: the candidate left the process, or met an interpreter limit."""
    if rule == CPU_RULE:
        return CPU_NOTE
    return (
        " (leaving the process as if the checks had passed is not allowed)" if rule == "process-exit" else ""
    )


def candidate_raised(e: BaseException, prefix: str, candidate_file: str | None = None) -> Rejected:
    """The verdict on an exception the candidate's code raised: its status and rule (`classify`), the reason
    `prefix` + the exception described + what its rule adds."""
    status, rule = classify(e)
    return Rejected(status, f"{prefix}{describe(e, candidate_file)}{exit_note(rule)}", rule)


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
