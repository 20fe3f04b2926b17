"""Parallel compiles of an autotuner's configs (agent/evaluation/parallel_compile.py): the pool's threads
exist
before any candidate runs, compiles go through Triton's AsyncCompileMode, failures are left to the
autotuner. The real compile speed is measured on the GPU (scripts/gpu_suite.sh evalcost)."""

from __future__ import annotations

import threading

import pytest

from agent.evaluation import parallel_compile


class Config:
    def __init__(self, **kwargs):
        self.kwargs = kwargs

    def all_kwargs(self):
        return {**self.kwargs, "num_warps": 4}


class FakeKernel:
    """Compiles the way Triton's JIT does under AsyncCompileMode: submits, and a finalizer caches."""

    def __init__(self, fail_on=()):
        self.cache: dict[int, str] = {}
        self.compiled_on: list[str] = []
        self.fail_on = set(fail_on)

    def warmup(self, *args, grid, **kwargs):
        from triton.runtime._async_compile import active_mode

        block = kwargs["BLOCK"]
        if block in self.fail_on:
            raise RuntimeError("out of resources")
        assert grid == (1,) and args == ("x", 3) and kwargs["n"] == 3 and kwargs["num_warps"] == 4

        def compile_fn():
            self.compiled_on.append(threading.current_thread().name)
            return f"binary {block}"

        def finalize(binary):
            self.cache[block] = binary

        return active_mode.get().submit(block, compile_fn, finalize)


def test_pool_threads_all_start_at_once_and_none_later():
    pool = parallel_compile.start_pool()
    before = threading.active_count()
    kernel = FakeKernel()
    configs = [Config(BLOCK=b) for b in (64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384)]
    asked = parallel_compile.precompile(kernel, ["x", 3], {"n": 3}, configs)
    assert asked == 9
    assert threading.active_count() == before  # no thread started from inside the call
    assert parallel_compile.start_pool() is pool
    assert kernel.cache == {b: f"binary {b}" for b in (64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384)}
    assert all(name.startswith("ncu-agent-compile") for name in kernel.compiled_on)


def test_a_config_that_fails_is_left_to_the_autotuner():
    kernel = FakeKernel(fail_on={128})
    asked = parallel_compile.precompile(kernel, ["x", 3], {"n": 3}, [Config(BLOCK=64), Config(BLOCK=128)])
    assert asked == 1 and kernel.cache == {64: "binary 64"}


def test_one_config_needs_no_pool():
    kernel = FakeKernel()
    assert parallel_compile.precompile(kernel, ["x", 3], {"n": 3}, [Config(BLOCK=64)]) == 0
    assert kernel.cache == {}


def test_install_wraps_prune_configs_once_and_can_be_switched_off(monkeypatch):
    from triton.runtime import autotuner

    monkeypatch.setattr(autotuner.Autotuner, "prune_configs", autotuner.Autotuner.prune_configs)
    seen = []
    monkeypatch.setattr(parallel_compile, "precompile", lambda fn, args, kw, cfgs: seen.append((args, cfgs)))
    parallel_compile.install()
    wrapped = autotuner.Autotuner.prune_configs
    parallel_compile.install()
    assert autotuner.Autotuner.prune_configs is wrapped  # not wrapped twice

    import triton
    import triton.language as tl

    @triton.autotune(configs=[triton.Config({"B": 16}), triton.Config({"B": 32})], key=["n"])
    @triton.jit
    def k(x, n, B: tl.constexpr):
        pass

    k.nargs = {"x": "tensor", "n": 7}
    configs = k.prune_configs({})
    assert [c.kwargs["B"] for c in configs] == [16, 32]
    assert seen == [(["tensor", 7], configs)]
    monkeypatch.setenv("NCU_AGENT_PARALLEL_COMPILE", "0")
    k.prune_configs({})
    assert len(seen) == 1


@pytest.mark.gpu
def test_gpu_autotuned_kernel_has_every_config_compiled_before_its_benchmark(tmp_path, monkeypatch):
    import torch
    import triton
    import triton.language as tl

    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path))  # cold: every config really compiles
    parallel_compile.install()
    blocks = (256, 512, 1024, 2048)

    @triton.autotune(configs=[triton.Config({"BLOCK": b}) for b in blocks], key=["n"])
    @triton.jit
    def double(x_ptr, y_ptr, n, BLOCK: tl.constexpr):
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        tl.store(y_ptr + offs, tl.load(x_ptr + offs, mask=offs < n) * 2, mask=offs < n)

    x = torch.randn(100_000, device="cuda")
    y = torch.empty_like(x)
    double[lambda m: (triton.cdiv(100_000, m["BLOCK"]),)](x, y, 100_000)
    torch.testing.assert_close(y, x * 2)
    kernel_cache = next(iter(double.fn.device_caches.values()))[0]
    assert len(kernel_cache) >= len(blocks)
