"""Standard output for every command's results, and the one-line status of a retry or a wait."""

from __future__ import annotations

import sys

from rich.console import Console

# Logs and CI are not terminals: give tables room instead of rich's 80-column default there.
console = Console(width=None if sys.stdout.isatty() else 160)


def status(message: str) -> None:
    """A retry or a wait, shown as it happens (LLM requests can wait minutes)."""
    console.print(f"[yellow]{message}[/yellow]")
