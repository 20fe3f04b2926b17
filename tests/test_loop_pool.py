"""A stage's candidates are evaluated in one warm worker (agent.evaluation.worker_pool.WorkerPool through
LoopSettings)."""

from __future__ import annotations

from pathlib import Path

import pytest
from fakes import Quiet

import agent.loop as loop
from agent.config import LoopPolicy
from agent.evaluation.worker_pool import WorkerPool
from agent.problem import load_problem
from agent.prompt.gpus import find_gpu
from agent.prompt.stages import load_stage
from agent.proposers.search import SearchProposer
from agent.records import EvalResult, Status
from agent.store import Store

ROOT = Path(__file__).resolve().parent.parent


def _settings(tmp_path: Path, **hooks) -> loop.LoopSettings:
    return loop.LoopSettings(
        stage=load_stage("micro"),
        gpu=find_gpu("h200"),
        device="cpu",
        run_dir=tmp_path,
        metric_set="seed",
        policy=LoopPolicy(profile=False, seeds=(0,), max_iterations=1),
        hooks=loop.LoopHooks(**hooks),
    )


def test_the_pool_reaches_the_evaluator_only_when_there_is_one(tmp_path):
    seen: list[dict] = []

    def evaluator(problem, source, device=None, **kw):
        seen.append(kw)
        return EvalResult(status=Status.ACCEPTED)

    spec = load_problem(ROOT / "kernels" / "l1_norm")
    _settings(tmp_path, evaluator=evaluator).evaluate(spec, "src")
    with WorkerPool() as pool:
        _settings(tmp_path, evaluator=evaluator, pool=pool).evaluate(spec, "src")
    assert "pool" not in seen[0] and seen[1]["pool"] is pool
    assert seen[0]["seeds"] == (0,)


@pytest.mark.slow
def test_a_stage_runs_its_candidates_in_one_warm_worker(tmp_path):
    spec = load_problem(ROOT / "kernels" / "l1_norm")
    stage = load_stage("micro")
    store = Store.open_dir(tmp_path)
    run_id = store.start_run("l1_norm", "cpu", "H200", "search", None, {})
    with WorkerPool() as pool:
        out = loop.run_stage(
            spec,
            spec.kernel_path.read_text(),
            SearchProposer(stage),
            store,
            run_id,
            _settings(tmp_path, pool=pool),
            Quiet(),
        )
        assert out.evaluations >= 2
        assert pool.started == 1 and pool.reused == out.evaluations - 1, pool.replaced_why
    reused = [
        EvalResult.model_validate_json(r).worker_reused
        for (r,) in store.conn.execute("SELECT result FROM evaluations ORDER BY id")
    ]
    assert reused[0] is False and all(reused[1:])
