"""The AST anti-cheat rules (agent/source/anticheat.py): each rule on small sources, and no false positives
on the bundled kernels and their search variants. No worker, no Triton: these run in milliseconds."""

from __future__ import annotations

import ast
import textwrap
from pathlib import Path

import pytest

from agent.source.anticheat import check_source
from agent.source.anticheat_rules import PRIORITY, RULES
from agent.source.variants import LaunchMove, apply_move, find_kernels

ROOT = Path(__file__).resolve().parent.parent
KERNELS = sorted((ROOT / "kernels").glob("*/kernel.py"))

HEADER = """
import torch
import torch.nn as nn
import triton
import triton.language as tl


@triton.jit
def k(x_ptr, out_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    tl.store(out_ptr + offs, tl.abs(tl.load(x_ptr + offs, mask=offs < n)), mask=offs < n)
"""

HONEST_FORWARD = """
class ModelNew(nn.Module):
    def forward(self, x):
        out = torch.empty_like(x)
        k[(triton.cdiv(x.numel(), 1024),)](x, out, x.numel(), BLOCK=1024)
        return out
"""


def rules(source: str) -> list[str]:
    return [v.rule for v in check_source(textwrap.dedent(source)).ranked()]


def with_forward(body: str, prelude: str = "") -> str:
    """A candidate whose forward runs `body` (indented 8) after a Triton launch into `out`."""
    return (
        HEADER
        + textwrap.dedent(prelude)
        + "\n\nclass ModelNew(nn.Module):\n    def forward(self, x):\n"
        + "        out = torch.empty_like(x)\n"
        + "        k[(triton.cdiv(x.numel(), 1024),)](x, out, x.numel(), BLOCK=1024)\n"
        + textwrap.indent(textwrap.dedent(body), " " * 8)
    )


def test_every_rule_is_documented_and_ranked():
    assert list(RULES) == PRIORITY
    doc = (ROOT / "docs" / "anticheat.md").read_text()
    for rule in RULES:
        assert f"`{rule}`" in doc, rule


def test_honest_candidate_passes():
    report = check_source(HEADER + HONEST_FORWARD)
    assert report.ok and report.rule is None and report.reason() == ""


@pytest.mark.parametrize("path", KERNELS, ids=lambda p: p.parent.name)
def test_bundled_kernels_pass(path):
    report = check_source(path.read_text(), ["reference"])
    assert report.ok, report.reason()


def test_search_variants_of_bundled_kernels_pass():
    checked = 0
    for path in KERNELS:
        source = path.read_text()
        for kernel in find_kernels(ast.parse(source)):
            for warps in (1, 2, 4, 8, 16):
                for delta in (-1, 0, 1):
                    variant = apply_move(source, kernel, LaunchMove(num_warps=warps, stage_delta=delta))
                    report = check_source(variant)
                    assert report.ok, f"{path.parent.name}/{kernel} {warps} {delta}: {report.reason()}"
                    checked += 1
    assert checked >= 90


def test_test_candidates_of_the_evaluator_are_judged_as_expected():
    cands = ROOT / "tests" / "candidates"
    assert check_source((cands / "simple_l1.py").read_text()).ok
    assert check_source((cands / "segfaults.py").read_text()).ok  # os.kill of itself: a crash, not a pass
    assert check_source((cands / "patches_torch.py").read_text()).rule == "monkey-patch"
    assert check_source((cands / "torch_only.py").read_text()).rule == "torch-compute"
    assert check_source((cands / "no_modelnew.py").read_text()).missing_modelnew


# --- torch-compute --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        "return x / torch.mean(torch.abs(x), dim=1, keepdim=True)\n",
        "return torch.nn.functional.gelu(out)\n",
        "return out.sum(dim=1)\n",
        "return out @ out.t()\n",
        "out.mul_(2)\nreturn out\n",
        "fn = torch.softmax\nreturn fn(out, -1)\n",
        "return torch.ops.aten.abs(out)\n",
        "return torch.Tensor.abs(out)\n",
    ],
)
def test_torch_compute_in_forward(body):
    assert "torch-compute" in rules(with_forward(body))


def test_torch_compute_through_aliases_and_helpers():
    src = with_forward(
        "return helper(out)\n",
        prelude="""
        import torch.nn.functional as Fn
        from torch import mean as average

        reduce = average


        def helper(t):
            return inner(t)


        def inner(t):
            return Fn.relu(t) / reduce(t)
        """,
    )
    found = check_source(src).ranked()
    assert {v.message.split(" in the")[0] for v in found} >= {
        "calls torch.nn.functional.relu",
        "calls torch.mean",
    }


def test_torch_compute_in_autotune_hooks_and_grid():
    src = HEADER.replace(
        "@triton.jit",
        "@triton.autotune(configs=[triton.Config({}, pre_hook=lambda a: a['out_ptr'].sum())], key=['n'])\n"
        "@triton.jit",
    ) + HONEST_FORWARD.replace("(triton.cdiv(x.numel(), 1024),)", "lambda m: (int(x.max()),)")
    assert rules(src).count("torch-compute") == 2


def test_nn_layers_called_in_forward():
    src = (
        HEADER
        + """
class ModelNew(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.weights = nn.ParameterList([nn.Parameter(torch.randn(4))])

    def forward(self, x):
        out = torch.empty_like(x)
        k[(1,)](x, out, x.numel(), BLOCK=1024)
        w = self.fc.weight  # using a layer's parameters is fine
        return self.fc(out)
"""
    )
    found = check_source(src).ranked()
    assert [v.rule for v in found] == ["torch-compute"]
    assert "self.fc" in found[0].message


def test_allowed_forward_calls():
    body = """
    y = x.contiguous().view(-1).reshape(x.shape)
    z = torch.empty((x.shape[0],), dtype=torch.float32, device=x.device)
    w = torch.zeros_like(x)
    n = x.numel() * x.element_size() + x.stride(0) + x.size(1)
    grid = (triton.cdiv(n, 128), triton.next_power_of_2(n))
    if x.dtype == torch.float16 and x.is_contiguous():
        pass
    s = torch.cuda.current_stream() if x.is_cuda else None
    return out.to(x.device)
    """
    assert rules(with_forward(body)) == []


def test_init_may_compute_with_torch():
    src = (
        HEADER
        + """
class ModelNew(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.weight = nn.Parameter(1.0 + 0.1 * torch.randn(dim))
        self.scale = torch.ones(dim).sum()
"""
        + HONEST_FORWARD.split("class ModelNew(nn.Module):")[1].replace("\n    def", "\n    def", 1)
    )
    assert rules(src) == []


# --- the other rules ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("snippet", "rule"),
    [
        ("import os\nos._exit(0)\n", "process-exit"),
        ("import sys\nsys.exit(0)\n", "process-exit"),
        ("raise SystemExit(0)\n", "process-exit"),
        ("exit()\n", "process-exit"),
        ("import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\n", "process-exit"),
        ("import signal\nsignal.signal(signal.SIGTERM, lambda *a: None)\n", "process-exit"),
        ("import atexit\natexit.register(print)\n", "process-exit"),
        ("torch.allclose = lambda *a, **k: True\n", "monkey-patch"),
        ("from torch import Tensor\nTensor.__eq__ = lambda a, b: True\n", "monkey-patch"),
        ("t = torch.Tensor\nt.abs = None\n", "monkey-patch"),
        ("setattr(torch, 'isclose', None)\n", "monkey-patch"),
        ("import os\nos.environ['TRITON_INTERPRET'] = '0'\n", "monkey-patch"),
        ("triton.jit = lambda f: f\n", "monkey-patch"),
        ("torch.backends.cuda.matmul.allow_tf32 = True\n", "monkey-patch"),
        ("torch._C._set_grad_enabled(False)\n", "monkey-patch"),
        ("__name__ = '__main__'\n", "monkey-patch"),
        ("class T(torch.Tensor):\n    pass\n", "tensor-subclass"),
        ("def f(x):\n    return x.as_subclass(nn.Parameter)\n", "tensor-subclass"),
        ("def f(x):\n    x.__class__ = nn.Parameter\n", "tensor-subclass"),
        ("from torch.overrides import TorchFunctionMode\n", "tensor-subclass"),
        ("import sys\nf = sys._getframe(1)\n", "frame-peeking"),
        ("import inspect\n", "frame-peeking"),
        ("import gc\n", "frame-peeking"),
        ("import ctypes\n", "frame-peeking"),
        ("g = globals()\n", "frame-peeking"),
        ("def f(fn):\n    return fn.__globals__\n", "frame-peeking"),
        ("def f(frame):\n    return frame.f_back.f_locals\n", "frame-peeking"),
        ("exec('x = 1')\n", "code-generator"),
        ("f = eval('lambda: 1')\n", "code-generator"),
        ("import importlib.machinery\n", "code-generator"),
        (
            "import importlib.util\ns = importlib.util.spec_from_file_location('m', '/tmp/m.py')\n",
            "code-generator",
        ),
        ("f = torch.compile(lambda x: x)\n", "code-generator"),
        ("from torch import compile as c\n", "code-generator"),
        ("s = torch.jit.script\n", "code-generator"),
        ("from torch.utils.cpp_extension import load_inline\n", "code-generator"),
        ("import pickle\n", "code-generator"),
        ("from reference import Model\n", "reference-import"),
        ("from kernels.l1_norm.reference import get_inputs\n", "reference-import"),
        ("import sys\nm = sys.modules\n", "reference-import"),
        ("import agent.evaluation.compare\n", "reference-import"),
        ("class Sub(Model):\n    pass\n", "reference-import"),
        ("x = get_inputs()\n", "reference-import"),
        ("import threading\n", "threads"),
        ("from concurrent.futures import ThreadPoolExecutor\n", "threads"),
        ("import subprocess\n", "threads"),
        ("import os\nos.system('true')\n", "threads"),
        ("import torch.multiprocessing\n", "threads"),
        ("async def f():\n    pass\n", "threads"),
        ("s = torch.cuda.Stream()\n", "side-stream"),
        ("def f(s):\n    with torch.cuda.stream(s):\n        pass\n", "side-stream"),
        ("def f(a, b):\n    a.record_stream(b)\n", "side-stream"),
        ("g = torch.cuda.CUDAGraph()\n", "side-stream"),
        ("try:\n    pass\nexcept Exception:\n    pass\n", "try-except"),
        ("import contextlib\nwith contextlib.suppress(Exception):\n    pass\n", "try-except"),
        ("class C:\n    def __exit__(self, *a):\n        return True\n", "try-except"),
        ("def f(name):\n    return getattr(torch, name)\n", "dynamic-access"),
        ("d = torch.__dict__\n", "dynamic-access"),
    ],
)
def test_module_level_rules(snippet, rule):
    assert rule in rules(HEADER + snippet + HONEST_FORWARD), rules(HEADER + snippet + HONEST_FORWARD)


def test_process_exit_message_says_why():
    report = check_source(HEADER + "import os\nos._exit(0)\n" + HONEST_FORWARD)
    assert report.rule == "process-exit"
    assert "not written by the evaluator" in report.reason()


def test_killing_itself_is_left_to_the_sandbox():
    # os.kill(os.getpid(), ...) ends in a crash the sandbox reports, never in a pass
    assert rules(HEADER + "import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)\n" + HONEST_FORWARD) == []


# --- result-cache -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        "key = id(x)\nreturn out\n",
        "if self.last_ptr == x.data_ptr():\n    return self.last\nreturn out\n",
        "key = (x.data_ptr(), x.shape)\nhit = CACHE.get(key)\nreturn out\n",
        "global CACHE\nCACHE = out\nreturn out\n",
        "self.saved = out\nreturn out\n",
        "CACHE[0] = out\nreturn out\n",
        "return self.buffer\n",
        "res = CACHE[0]\nreturn res\n",
    ],
)
def test_result_caches(body):
    assert "result-cache" in rules(with_forward(body, prelude="CACHE = {}\n"))


def test_functools_cache_over_forward_arguments():
    prelude = """
    import functools


    @functools.lru_cache(maxsize=None)
    def config_for(n):
        return 128


    @functools.cache
    def cached_result(t):
        return t
    """
    ok = rules(with_forward("b = config_for(x.numel())\nreturn out\n", prelude))
    assert ok == []
    bad = rules(with_forward("return cached_result(x)\n", prelude))
    assert "result-cache" in bad


# --- scope, priority and the report -------------------------------------------------------------------


def test_main_block_is_ignored():
    src = (
        HEADER
        + HONEST_FORWARD
        + """
if __name__ == "__main__":
    import time
    try:
        x = torch.randn(4)
        print(torch.allclose(ModelNew()(x), x.abs()))
    except Exception:
        pass
"""
    )
    assert rules(src) == []


def test_no_triton_kernel_and_missing_modelnew():
    report = check_source(
        "import torch\n\nclass ModelNew(torch.nn.Module):\n    def forward(self, x):\n        return x\n"
    )
    assert report.rule == "no-triton-kernel"
    assert check_source(HEADER).missing_modelnew
    assert not check_source(HEADER + "ModelNew = None\n").missing_modelnew


def test_syntax_errors_are_left_to_the_worker():
    report = check_source("def broken(:\n    pass\n")
    assert report.syntax_error and "line 1" in report.syntax_error
    assert report.violations == []


def test_priority_and_reason_lists_the_rest():
    src = (
        HEADER
        + "import threading\nimport os\nos._exit(0)\n"
        + with_forward("return out.sum()\n")[len(HEADER) :]
    )
    report = check_source(src)
    assert report.rule == "process-exit"
    reason = report.reason()
    assert reason.startswith("process-exit (static check, line")
    assert "threads (line" in reason and "torch-compute (line" in reason


def test_reference_stem_is_a_reference_module():
    src = HEADER + "import my_problem\n" + HONEST_FORWARD
    assert check_source(src).ok
    assert check_source(src, ["my_problem"]).rule == "reference-import"
