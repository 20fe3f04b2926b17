"""Checks every command makes on its paths before it prints a banner, imports torch or starts work, and the
one way to refuse: `error: ...` on standard error, exit 2, the text printed as it is (no rich markup, so
`[llm]` in a message stays `[llm]`)."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.markup import escape

if TYPE_CHECKING:
    from agent.records import ProblemSpec

err = Console(stderr=True)


class PathProblem(ValueError):
    """A path given on the command line that the command cannot use; the message names it."""


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print `error: message` (markup in `message` shown as text) and return the exit to raise."""
    err.print(f"[red]error:[/red] {escape(message)}", soft_wrap=True)
    return typer.Exit(code)


def _blocking_file(path: Path) -> Path | None:
    """The nearest existing ancestor of `path` (or `path` itself) that is not a directory."""
    for p in (path, *path.parents):
        if p.exists():
            return None if p.is_dir() else p
    return None


def _writable_dir(folder: Path, flag: str, given: Path) -> None:
    """Create `folder` and prove a file can be written there; errors name `given`, the path as typed."""
    blocking = _blocking_file(folder)
    if blocking is not None:
        raise PathProblem(f"{flag} {given}: {blocking} is a file, not a directory")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        # Writing is the only test that holds everywhere: as root os.access says yes under /proc too.
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise PathProblem(f"{flag} {given}: cannot write in {folder} ({e.strerror or e})") from None


def output_dir(path: Path, flag: str) -> Path:
    """A directory the command writes into: created now."""
    _writable_dir(path, flag, path)
    return path


def output_file(path: Path, flag: str) -> Path:
    """A file the command writes at its end: its folder is created now, the file itself not touched."""
    if path.is_dir():
        raise PathProblem(f"{flag} {path}: is a directory, not a file")
    _writable_dir(path.parent, flag, path)
    return path


def new_dir(path: Path, flag: str) -> Path:
    """A directory the command creates itself later (a batch, an experiment): its parent is checked now."""
    if path.exists() and not path.is_dir():
        raise PathProblem(f"{flag} {path}: is a file, not a directory")
    _writable_dir(path.parent, flag, path)
    return path


def checked(check: Callable[[Path, str], Path], path: Path | None, flag: str) -> Path | None:
    """`check(path, flag)` when a path was given, turning a PathProblem into `error: ...`, exit 2."""
    if path is None:
        return None
    try:
        return check(path, flag)
    except PathProblem as e:
        raise fail(str(e)) from None


def load_spec(problem: str, small_shapes: str | None = None) -> ProblemSpec:
    """The problem a command names (`--small-shapes` applied), or its refusal: a bad problem is usage."""
    from agent.problem import ProblemError, load_problem
    from agent.start.small_shapes import parse_shapes_flag

    try:
        return load_problem(problem, parse_shapes_flag(small_shapes) if small_shapes else None)
    except ValueError as e:
        raise fail(str(e)) from None
    except ProblemError as e:
        raise fail(str(e)) from None
