"""Warm workers that go bad between candidates: a worker whose GPU memory grows across evaluations is not
reused, and a harness failure in a reused worker is evaluated again in a new one."""

from __future__ import annotations

import torch

from agent.evaluation import evaluate as ev
from agent.evaluation import worker
from agent.evaluation.verdicts import HARNESS_FAILED
from agent.problem import load_problem
from agent.records import EvalResult, Status


def test_gpu_memory_growth_past_the_limit_ends_reuse(monkeypatch):
    held = {"bytes": 3 << 30}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda *a: held["bytes"])
    memory = worker._GpuMemory()
    assert memory.growth() == ""  # the first evaluation sets the level (the kept baseline lives there)
    held["bytes"] += 512 << 20
    assert memory.growth() == ""  # within the limit
    held["bytes"] += 8 << 30
    why = memory.growth()
    assert why.startswith("8.5 GiB more GPU memory allocated than after this worker's first evaluation")


def test_no_cuda_no_verdict(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert worker._GpuMemory().growth() == ""


def _scripted(monkeypatch, results):
    calls = []

    def fake(request, limit, pool):
        calls.append(request.candidate_source)
        return results[len(calls) - 1]

    monkeypatch.setattr(ev, "_evaluate_pooled", fake)  # the one-process layout
    monkeypatch.setattr(ev, "_evaluate_split", fake)  # the split one (the default)
    monkeypatch.setattr(ev, "static_result", lambda problem, source: None)
    return calls


def test_a_harness_failure_in_a_reused_worker_is_evaluated_again_in_a_new_one(monkeypatch):
    oom = EvalResult(status=Status.CRASHED, reason=f"{HARNESS_FAILED}: OutOfMemoryError: CUDA out of memory")
    oom.worker_reused = True
    fine = EvalResult(status=Status.ACCEPTED)
    calls = _scripted(monkeypatch, [oom, fine])
    result = ev.evaluate(load_problem("kernels/l1_norm"), "src", "cuda", pool=object())
    assert len(calls) == 2 and result.status == Status.ACCEPTED
    (note,) = [c for c in result.checks if c.name == "fresh-worker"]
    assert note.passed and "OutOfMemoryError" in note.detail


def test_no_second_try_for_a_new_worker_or_for_the_candidates_own_crash(monkeypatch):
    fresh_oom = EvalResult(status=Status.CRASHED, reason=f"{HARNESS_FAILED}: OutOfMemoryError")
    fresh_oom.worker_reused = False
    calls = _scripted(monkeypatch, [fresh_oom])
    assert ev.evaluate(load_problem("kernels/l1_norm"), "src", "cuda", pool=object()).status == Status.CRASHED
    assert len(calls) == 1
    own = EvalResult(status=Status.CRASHED, reason="the candidate raised ValueError")
    own.worker_reused = True
    calls = _scripted(monkeypatch, [own])
    assert ev.evaluate(load_problem("kernels/l1_norm"), "src", "cuda", pool=object()).status == Status.CRASHED
    assert len(calls) == 1
