"""Where the bundled data lives: the checkout's top-level folders, or their copies inside a wheel."""

from __future__ import annotations

from functools import cache
from pathlib import Path

_DATA = Path(__file__).resolve().parent
_PACKAGE = _DATA.parent


@cache
def data_dir(name: str) -> Path:
    """The folder `name` (prompts, profiles, kernels): the checkout's when run from one, else the wheel's."""
    checkout = _PACKAGE.parent / name
    if checkout.is_dir():
        return checkout
    bundled = _PACKAGE / "_bundled" / name
    if bundled.is_dir():
        return bundled
    raise FileNotFoundError(f"ncu-agent's '{name}' folder is missing (looked in {checkout} and {bundled})")


def prompts_dir() -> Path:
    return data_dir("prompts")


def profiles_dir() -> Path:
    return data_dir("profiles")


def kernels_dir() -> Path:
    return data_dir("kernels")


def package_data(name: str) -> Path:
    """A data file shipped inside the package itself (agent/data)."""
    return _DATA / name
