"""Test setup: without a GPU, Triton kernels run in its interpreter (set before kernels are defined)."""

import os

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


def pytest_collection_modifyitems(config, items):
    if HAS_GPU:
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (none found)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


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
