"""What a batch runs: its problems (found from the paths given, then filtered) and its settings (batch.json).

A path is a problem folder (it has problem.toml or reference.py), a KernelBench `.py` file, the name of a
bundled problem (`kernels` alone: all of them), or a folder of those: its problem folders and its `.py`
files (a KernelBench level folder), one level deep. Filters match problem names with shell globs. Nothing
is imported here: a problem that does not load is found by its job and recorded as such.
"""

from __future__ import annotations

import fnmatch
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from agent.config import RunOptions
from agent.data.paths import kernels_dir
from agent.problem import ProblemError, resolve_problem_path

CONFIG_FILE = "batch.json"
INVOCATIONS_FILE = "invocations.json"


class BatchInputError(ValueError):
    """Paths or filters that give no usable list of problems."""


class ProblemEntry(BaseModel):
    name: str = Field(description="Unique within the batch; also the folder name under problems/.")
    path: Path = Field(description="The problem folder or KernelBench file, absolute.")


class Budget(BaseModel):
    """When a problem, or the whole batch, stops. None: no limit."""

    problem_evaluations: int | None = Field(default=None, ge=1, description="Worker evaluations a problem.")
    batch_evaluations: int | None = Field(default=None, ge=1, description="Worker evaluations in all.")
    time_limit_s: float | None = Field(
        default=None, gt=0, description="Wall time of the batch, over all its invocations (resumes too)."
    )


class Execution(BaseModel):
    """Where the jobs run; may change on resume (it does not change the results)."""

    backend: Literal["local", "ray"] = "local"
    address: str | None = Field(default=None, description="Ray cluster address; None: a local instance.")
    jobs: int | None = Field(default=None, ge=1, description="Problems at once; None: one per GPU (CPU: 1).")
    gpus: list[str] | None = Field(default=None, description="GPU ids; None: every visible GPU.")


class BatchConfig(BaseModel):
    version: int = 1
    created_at: str = Field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    inputs: list[str]
    include: list[str] = Field(default_factory=list)
    exclude: list[str] = Field(default_factory=list)
    list_file: str | None = None
    problems: list[ProblemEntry]
    run: RunOptions
    budget: Budget = Budget()
    execution: Execution = Execution()
    max_attempts: int = Field(
        default=2, ge=1, description="Starts of a problem whose job died, per invocation."
    )

    def entry(self, name: str) -> ProblemEntry:
        for p in self.problems:
            if p.name == name:
                return p
        raise KeyError(f"no problem {name!r} in this batch")

    @classmethod
    def load(cls, batch_dir: Path) -> BatchConfig:
        path = Path(batch_dir) / CONFIG_FILE
        if not path.is_file():
            raise BatchInputError(f"{batch_dir}: no {CONFIG_FILE} (not a batch directory)")
        return cls.model_validate_json(path.read_text())

    def save(self, batch_dir: Path) -> None:
        write_atomic(Path(batch_dir) / CONFIG_FILE, self.model_dump_json(indent=1))


def write_atomic(path: Path, text: str) -> None:
    """Write a file so that a reader (or a crash) sees the old content or the new, never half of one."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def _is_problem_folder(p: Path) -> bool:
    return p.is_dir() and ((p / "problem.toml").exists() or (p / "reference.py").exists())


def expand(path_text: str) -> list[Path]:
    """The problems one path names."""
    if path_text.rstrip("/") == "kernels" and not Path(path_text).exists():
        return expand(str(kernels_dir()))  # the bundled problems, from anywhere
    try:
        p = resolve_problem_path(path_text)
    except ProblemError as e:
        raise BatchInputError(str(e)) from None
    if p.is_file():
        if p.suffix != ".py":
            raise BatchInputError(f"{p}: a problem file is a KernelBench .py file")
        return [p]
    if _is_problem_folder(p):
        return [p]
    found = [c for c in sorted(p.iterdir()) if _is_problem_folder(c)]
    found += [c for c in sorted(p.glob("*.py")) if not c.name.startswith("_")]
    if not found:
        raise BatchInputError(f"{p}: holds no problem folder and no .py file")
    return found


def _names(paths: list[Path]) -> list[str]:
    """Folder or file stem; where two collide, prefixed with their parent folder's name."""
    stems = [p.stem if p.is_file() else p.name for p in paths]
    names = [f"{p.parent.name}-{s}" if stems.count(s) > 1 else s for p, s in zip(paths, stems, strict=True)]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise BatchInputError(f"two problems would share the name(s) {', '.join(dupes)}")
    return names


def read_list(path: Path) -> list[str]:
    """Names or globs, one a line; blank lines and # comments skipped."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as e:
        raise BatchInputError(f"{path}: cannot read the list: {e}") from None
    return [s for line in lines if (s := line.split("#", 1)[0].strip())]


def find_problems(
    inputs: list[str], include: list[str], exclude: list[str], list_file: Path | None
) -> list[ProblemEntry]:
    paths: list[Path] = []
    for text in inputs:
        paths += [p for p in expand(text) if p not in paths]
    entries = [ProblemEntry(name=n, path=p) for n, p in zip(_names(paths), paths, strict=True)]
    wanted = list(include) + (read_list(list_file) if list_file else [])

    def keep(name: str) -> bool:
        if wanted and not any(fnmatch.fnmatchcase(name, g) for g in wanted):
            return False
        return not any(fnmatch.fnmatchcase(name, g) for g in exclude)

    entries = [e for e in entries if keep(e.name)]
    if not entries:
        raise BatchInputError("no problem is left after the filters")
    return entries


class Invocation(BaseModel):
    started: float
    last_seen: float
    pid: int
    host: str
    backend: str
    jobs: int
    gpus: list[str]

    @property
    def wall_s(self) -> float:
        return max(0.0, self.last_seen - self.started)


class Invocations(BaseModel):
    items: list[Invocation] = []

    @classmethod
    def load(cls, batch_dir: Path) -> Invocations:
        path = Path(batch_dir) / INVOCATIONS_FILE
        return cls.model_validate_json(path.read_text()) if path.exists() else cls()

    def save(self, batch_dir: Path) -> None:
        write_atomic(Path(batch_dir) / INVOCATIONS_FILE, self.model_dump_json(indent=1))

    @property
    def wall_s(self) -> float:
        return sum(i.wall_s for i in self.items)
