"""Re-tuning autotuned kernels (agent.evaluation.retune) and the warm worker's kept baselines
(agent.evaluation.baseline_cache).

CPU: the logic, with stand-in autotuners and a stand-in timer. GPU (`-m gpu`): matmul_fp16's starting
kernel is re-tuned, and a warm worker reuses its compiled baseline.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from agent.evaluation import baseline_cache, retune, timing
from agent.evaluation.evaluate import evaluate
from agent.evaluation.worker_pool import WorkerPool
from agent.problem import load_problem
from agent.records import TimingStats

ROOT = Path(__file__).resolve().parent.parent


class FakeConfig:
    def __init__(self, block: int, ms: float):
        self.kwargs = {"BLOCK": block}
        self.num_warps, self.num_stages, self.ms = 4, 3, ms


class FakeTuner:
    """What retune reads from a Triton Autotuner: configs, the cache, its own timings, the kernel."""

    def __init__(self, configs: list[FakeConfig], chosen: int, key: tuple = (1024,)):
        self.configs = configs
        self.cache = {key: configs[chosen]}
        self.configs_timings = {c: [c.ms, c.ms, c.ms] for c in configs}
        self.base_fn = type("kern", (), {})
        self.key = key
        self.runs: list[int] = []

    def run(self) -> int:
        config = self.cache[self.key]
        self.runs.append(config.kwargs["BLOCK"])
        return config.kwargs["BLOCK"]


@pytest.fixture
def fake_timer(monkeypatch):
    """time_interleaved that runs each fn once and reports the pinned config's own time."""

    def fake(fns, reps, warmup=3, graphs=False, **budget):
        out = {}
        for name, fn in fns.items():
            block = fn()
            ms = {c.kwargs["BLOCK"]: c.ms for c in FakeTuner.current.configs}[block]
            out[name] = TimingStats(times_ms=[ms] * reps, method="fake")
        return out

    monkeypatch.setattr(timing, "time_interleaved", fake)


def make(chosen: int, times=(1.9, 1.6, 1.7)) -> FakeTuner:
    tuner = FakeTuner([FakeConfig(64 * 2**i, t) for i, t in enumerate(times)], chosen)
    FakeTuner.current = tuner
    return tuner


def test_retune_pins_the_fastest_config_and_says_what_the_autotuner_chose(fake_timer):
    tuner = make(chosen=0)
    notes, problem = retune.retune([tuner], tuner.run, check=lambda out: None)
    assert problem is None
    (note,) = notes
    assert note.kernel == "kern"
    assert note.autotuner_choice["BLOCK"] == 64 and note.chosen["BLOCK"] == 128
    assert note.medians_ms == [1.9, 1.6, 1.7]
    assert tuner.cache[tuner.key].kwargs["BLOCK"] == 128  # the timing that follows runs the pinned one
    assert MIN_REPS_OK(note.reps)


def MIN_REPS_OK(reps: int) -> bool:
    return retune.MIN_REPS <= reps <= retune.MAX_REPS


def test_a_switched_to_config_that_is_wrong_rejects_and_restores(fake_timer):
    tuner = make(chosen=0)
    seen = []

    def check(out):
        seen.append(out)
        return "values: 3 of 1024 elements differ" if out == 128 else None

    _, problem = retune.retune([tuner], tuner.run, check=check)
    assert problem is not None and "BLOCK" in problem and "differ" in problem
    assert seen == [128]  # the config it would switch to is checked before it is used
    assert tuner.cache[tuner.key].kwargs["BLOCK"] == 64  # left as the autotuner chose


def test_no_switch_needs_no_check_and_single_config_kernels_are_left_alone(fake_timer):
    tuner = make(chosen=1)
    notes, problem = retune.retune([tuner], tuner.run, check=lambda out: pytest.fail("no check needed"))
    assert problem is None and notes[0].chosen == notes[0].autotuner_choice
    single = make(chosen=0, times=(1.0,))
    assert retune.retune([single], single.run, check=lambda out: None) == ([], None)


def test_configs_the_autotuner_could_not_run_are_skipped(fake_timer):
    tuner = make(chosen=2)
    tuner.configs_timings[tuner.configs[1]] = [float("inf")] * 3  # e.g. out of shared memory
    (note,), _ = retune.retune([tuner], tuner.run, check=lambda out: None)
    assert [c["BLOCK"] for c in note.configs] == [64, 256]
    assert note.chosen["BLOCK"] == 256 and "could not run" in note.skipped[0]


def test_used_keys_sees_only_the_keys_the_call_read():
    tuner = make(chosen=0)
    tuner.cache[(4096,)] = tuner.configs[2]  # another shape, tuned earlier, not used by this call
    assert retune.used_keys([tuner], tuner.run) == [(tuner, (1024,))]
    assert type(tuner.cache) is dict  # the spy is gone


# --- the kept baselines ---


class Ref(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(4))

    def forward(self, x):
        return x * self.w


@pytest.fixture
def fake_compile(monkeypatch):
    calls = []

    def compile_baseline(model, inputs):
        calls.append(model)
        return type("Compiled", (), {"_orig_mod": model})(), None

    monkeypatch.setattr(timing, "compile_baseline", compile_baseline)
    baseline_cache.clear()
    yield calls
    baseline_cache.clear()


def test_kept_baseline_is_reused_for_the_same_key(fake_compile):
    x = [torch.zeros(4)]
    key = baseline_cache.cache_key("p", "ref text", 2, x)
    first, _ = baseline_cache.baselines_for(key, Ref(), x)
    again, compiled = baseline_cache.baselines_for(key, Ref(), x)
    assert again is first and len(fake_compile) == 1 and compiled[0]._orig_mod is first
    other = baseline_cache.cache_key("p", "ref text, edited", 2, x)
    assert baseline_cache.baselines_for(other, Ref(), x)[0] is not first and len(fake_compile) == 2
    shapes = baseline_cache.cache_key("p", "ref text", 2, [torch.zeros(8)])
    assert shapes != key


@pytest.mark.parametrize("tamper", ["hook", "forward", "weights"])
def test_a_kept_baseline_that_was_changed_is_dropped(fake_compile, tamper):
    x = [torch.zeros(4)]
    key = baseline_cache.cache_key("p", "ref", 0, x)
    kept, _ = baseline_cache.baselines_for(key, Ref(), x)
    if tamper == "hook":
        kept.register_forward_hook(lambda *a: None)
    elif tamper == "forward":
        kept.forward = lambda x: x
    else:
        with torch.no_grad():
            kept.w.mul_(2)
    fresh = Ref()
    model, _ = baseline_cache.baselines_for(key, fresh, x)
    assert model is fresh and len(fake_compile) == 2
    assert baseline_cache.STATS["dropped"] >= 1


# --- the GPU ---


@pytest.mark.gpu
def test_gpu_matmul_autotune_choice_is_retuned():
    spec = load_problem(ROOT / "kernels" / "matmul_fp16")
    result = evaluate(spec, spec.kernel_path.read_text(), "cuda", seeds=(0,))
    assert result.accepted, result.reason
    (note,) = result.timings.retuned
    assert note.kernel == "matmul_kernel" and len(note.medians_ms) == len(note.configs) == 4
    best = min(range(4), key=note.medians_ms.__getitem__)
    assert note.chosen == note.configs[best]
    assert result.chosen_configs["matmul_kernel"] == note.chosen  # what ncu will profile


@pytest.mark.gpu
def test_gpu_warm_worker_is_reused_and_keeps_its_compiled_baseline():
    spec = load_problem(ROOT / "kernels" / "l1_norm")
    source = spec.kernel_path.read_text()
    with WorkerPool() as pool:
        first = evaluate(spec, source, "cuda", small=True, pool=pool)
        second = evaluate(spec, source, "cuda", small=True, pool=pool)
        assert first.accepted and second.accepted, (first.reason, second.reason)
        assert (pool.started, pool.reused, pool.replaced) == (1, 1, 0), pool.replaced_why
        assert (first.worker_reused, second.worker_reused) == (False, True)
        assert second.timings.compiled is not None and second.timings.compile_error is None
        assert second.phases_s["baselines"] < 0.5 * first.phases_s["baselines"], (
            first.phases_s,
            second.phases_s,
        )
