"""The first code of every worker process: `python -P .../bootstrap.py --module MODULE ARGS`.

Run as a script, so this file is always compiled from its source; `-P` keeps its folder off `sys.path`.
Before anything of the project is imported, the project's own modules are made to load from their source
only: a `.pyc` planted in the checkout's `__pycache__` (a candidate that could write there once would fool
every later check) is never read, and none is written (PYTHONDONTWRITEBYTECODE). Third-party packages keep
their bytecode: compiling torch from source costs about 20 s per worker (docs/anticheat.md).
"""

import importlib.machinery
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
PACKAGE = ROOT / "agent"


class SourceOnlyLoader(importlib.machinery.SourceFileLoader):
    """Never looks at bytecode: without the source's stats, SourceLoader.get_code neither reads nor writes
    a cache file."""

    def path_stats(self, path: str) -> dict:  # type: ignore[override]
        raise OSError("the project's modules are compiled from source")


def source_only_hook(path: str) -> importlib.machinery.FileFinder:
    where = Path(path or ".").resolve()
    if where in (ROOT, PACKAGE) or PACKAGE in where.parents:
        return importlib.machinery.FileFinder(path, (SourceOnlyLoader, [".py"]))
    raise ImportError("not the project's")


def install() -> None:
    sys.dont_write_bytecode = True
    sys.path_hooks.insert(0, source_only_hook)
    sys.path_importer_cache.clear()


if __name__ == "__main__":
    install()
    import importlib

    if len(sys.argv) < 3 or sys.argv[1] != "--module":
        sys.exit("usage: bootstrap.py --module MODULE ARGS...")
    sys.exit(importlib.import_module(sys.argv[2]).main(sys.argv[3:]))
