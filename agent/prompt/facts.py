"""The facts a prompt gives beyond the code: the problem's shapes and reference, the kernel's standing, and
one line per earlier attempt (what it changed, how it ended)."""

from __future__ import annotations

import ast
import difflib
import re

from agent.problem import ProblemError, inspect_problem
from agent.prompt.render import ProblemFacts, Standing
from agent.records import EvalResult, ProblemSpec

MAX_REFERENCE_LINES = 40
_PARAM = re.compile(r"\b([A-Z_][A-Z0-9_]*|num_warps|num_stages)\s*[=:]\s*['\"]?(\w+)")

CPU_UNTIMED = "no GPU: candidates are checked for correctness in Triton's interpreter but not timed or ranked"


def short_reference(source: str) -> str:
    """The reference's `Model` class (shapes and inputs are given apart), or its first lines."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        tree = None
    model = next(
        (n for n in (tree.body if tree else []) if isinstance(n, ast.ClassDef) and n.name == "Model"), None
    )
    text = ast.get_source_segment(source, model) if model is not None else None
    lines = (text or source).strip("\n").splitlines()
    return "\n".join(lines[:MAX_REFERENCE_LINES] + (["# ..."] if len(lines) > MAX_REFERENCE_LINES else []))


def problem_facts(spec: ProblemSpec, small: bool) -> ProblemFacts | None:
    """Shapes and dtypes of one call (on the meta device: nothing is allocated) and the short reference;
    None when the problem cannot be inspected (its own check reports that)."""
    try:
        shapes = inspect_problem(spec, small=small and bool(spec.small_shapes))
        reference = spec.reference_path.read_text()
    except (ProblemError, OSError):
        return None
    return ProblemFacts(
        inputs=[f"{t.shape} {t.dtype}" for t in shapes.inputs],
        outputs=[f"{t.shape} {t.dtype}" for t in shapes.outputs],
        reference=short_reference(reference),
    )


def standing(result: EvalResult, device: str) -> Standing:
    t = result.timings
    if t is None or t.candidate is None:
        why = (
            CPU_UNTIMED if device == "cpu" else (t.skipped_reason if t and t.skipped_reason else "not timed")
        )
        return Standing(untimed=why)
    return Standing(
        median_ms=t.candidate.median_ms,
        speedup_eager=t.speedup_eager,
        speedup_compiled=t.speedup_compiled,
        pct_roofline=t.pct_roofline,
    )


def change_summary(parent: str, source: str) -> str:
    """What `source` changed against `parent`: the parameters it moved, and the lines added and removed."""
    if not parent or not source:
        return ""
    before, after = dict(_PARAM.findall(parent)), _PARAM.findall(source)
    moved = [f"{k} {before[k]}->{v}" for k, v in dict(after).items() if k in before and before[k] != v]
    a, b = parent.splitlines(), source.splitlines()
    added = removed = 0
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        removed += (i2 - i1) if op in ("replace", "delete") else 0
        added += (j2 - j1) if op in ("replace", "insert") else 0
    lines = f"+{added}/-{removed} lines" if added or removed else "no change"
    return f"{', '.join(moved[:4])} ({lines})" if moved else lines
