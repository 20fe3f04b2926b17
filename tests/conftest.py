"""Test setup: without a GPU, Triton kernels run in its interpreter (set before kernels are defined)."""

import os
from pathlib import Path

import pytest
import torch

HAS_GPU = torch.cuda.is_available()
if not HAS_GPU:
    os.environ.setdefault("TRITON_INTERPRET", "1")
# The judge's larger draws cost every evaluation up to their budget (agent.evaluation.draws): most tests are
# not about them, so they get a short one; tests of the draws themselves (the adversarial judge corpus) set
# the default back with the `full_draws` fixture.
os.environ.setdefault("NCU_AGENT_DRAW_BUDGET_S", "3")


@pytest.fixture(scope="module")
def full_draws():
    """The larger draws with the budget a run has by default."""
    from agent.evaluation import draws

    before = os.environ.get("NCU_AGENT_DRAW_BUDGET_S")
    os.environ["NCU_AGENT_DRAW_BUDGET_S"] = str(draws.DRAW_BUDGET_S)
    yield
    if before is None:
        os.environ.pop("NCU_AGENT_DRAW_BUDGET_S", None)
    else:
        os.environ["NCU_AGENT_DRAW_BUDGET_S"] = before


FULL_ENV = "NCU_AGENT_FULL_TESTS"  # "1": as --full


def pytest_addoption(parser):
    parser.addoption(
        "--full",
        action="store_true",
        help="also run the tests marked slow: whole runs, batches, experiments, kills and resumes, the "
        "cheating corpus at run time (about 45 min on 2 CPU cores; docs/measurements.md)",
    )


def _slow_tests_run(config) -> bool:
    """The quick tier leaves out the tests marked slow, unless --full or `-m` naming them."""
    if config.getoption("--full") or os.environ.get(FULL_ENV) == "1":
        return True
    return "slow" in (config.option.markexpr or "")


def _named(config) -> list[str]:
    """Test ids given on the command line (`tests/test_x.py::test_y`), relative to the root: a slow test
    named there runs in any tier."""
    named = []
    for arg in config.args:
        if "::" in arg:
            path, _, rest = arg.partition("::")
            named.append(f"{Path(os.path.relpath(Path(path).resolve(), config.rootpath))}::{rest}")
    return named


def pytest_collection_modifyitems(config, items):
    if not _slow_tests_run(config):
        quick = pytest.mark.skip(reason="slow: the full tier runs it (python -m pytest --full)")
        named = _named(config)
        for item in items:
            if "slow" in item.keywords and not any(item.nodeid.startswith(n) for n in named):
                item.add_marker(quick)
    if HAS_GPU:
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (none found)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def pytest_report_header(config):
    if _slow_tests_run(config):
        return "tier: full (the tests marked slow run too)"
    return "tier: quick (tests marked slow are skipped; python -m pytest --full runs them)"


@pytest.fixture
def sandbox_off(monkeypatch):
    """Workers and ncu without bubblewrap (reduced isolation), as where it is missing."""
    from agent.evaluation import confine

    monkeypatch.setenv(confine.SANDBOX_ENV, "off")
    confine.isolation.cache_clear()
    yield
    monkeypatch.undo()
    confine.isolation.cache_clear()


@pytest.fixture(autouse=True)
def _secrets_back():
    """The CLI moves secret variables out of os.environ (agent.evaluation.secrets): put them back after each
    test, as they were, for the next test."""
    before = dict(os.environ)
    yield
    from agent.evaluation import secrets

    for name in secrets._held:
        if name in before:
            os.environ.setdefault(name, before[name])
    secrets._held.clear()
