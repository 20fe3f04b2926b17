"""Loading a candidate's source as a module inside a worker process."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

from agent.problem import ProblemError, import_file, source_hash


class CandidateError(Exception):
    """The candidate cannot be imported or has no ModelNew."""


def load_candidate(source: str, workdir: Path) -> ModuleType:
    """Write the source to a real file (`@triton.jit` reads its source) and import it."""
    path = workdir / f"candidate_{source_hash(source)}.py"
    path.write_text(source)
    try:
        module = import_file(path, module_name=f"candidate_{source_hash(source)}")
    except ProblemError as e:
        raise CandidateError(e.message) from None
    if not hasattr(module, "ModelNew"):
        raise CandidateError("defines no `ModelNew` class")
    return module
