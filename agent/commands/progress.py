"""One line per phase of a command that otherwise stays silent for seconds (`ncu-agent check`): what it is
doing and since when, on standard error so `--json` output stays clean."""

from __future__ import annotations

import time

from rich.console import Console
from rich.markup import escape


class PhaseLog:
    """`phase("...")` prints `[  1.2 s] ...`; with `quiet`, prints nothing."""

    def __init__(self, quiet: bool, console: Console | None = None) -> None:
        self.quiet = quiet
        self.console = console or Console(stderr=True)
        self.start = time.perf_counter()

    def __call__(self, what: str) -> None:
        if not self.quiet:
            elapsed = time.perf_counter() - self.start
            self.console.print(f"[dim]\\[{elapsed:6.1f} s][/dim] {escape(what)}", soft_wrap=True)
