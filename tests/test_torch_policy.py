"""The torch-op policy (agent/evaluation/torch_policy.py): `--allow-torch` and `allow_torch` let a candidate
keep the named ops in PyTorch, nothing else, and never let them stand in for its own kernels."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from typer.testing import CliRunner

from agent.cli import app
from agent.evaluation.accounting import STRICT_ALLOWED
from agent.evaluation.evaluate import evaluate
from agent.evaluation.torch_policy import TORCH_OPS, PolicyError, allowed_aten_ops, parse_names
from agent.problem import load_problem
from agent.source.anticheat import check_source

HERE = Path(__file__).resolve().parent
LEVEL2 = HERE / "kernelbench_problems" / "conv_bias_relu.py"

_EPILOGUE = """
import torch
import torch.nn as nn
import triton
import triton.language as tl


@triton.jit
def _bias_relu(y_ptr, b_ptr, out_ptr, HW, CO, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    c = (offs // HW) % CO
    y = tl.load(y_ptr + offs, mask=mask) + tl.load(b_ptr + c, mask=mask)
    tl.store(out_ptr + offs, tl.maximum(y, 0.0), mask=mask)
"""

# conv in torch (allowed by conv2d), bias + ReLU fused in the candidate's Triton kernel.
HONEST = (
    _EPILOGUE
    + """

class ModelNew(nn.Module):
    def __init__(self, in_channels, out_channels, kernel_size):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size)
        self.bias = nn.Parameter(torch.randn(out_channels, 1, 1) * 0.1)

    def forward(self, x):
        y = self.conv(x)
        out = torch.empty_like(y)
        n, hw = y.numel(), y.shape[2] * y.shape[3]
        _bias_relu[(triton.cdiv(n, 256),)](y, self.bias, out, hw, y.shape[1], n, BLOCK=256)
        return out
"""
)
# The same epilogue in place, on the conv's output: honest (the kernel changes what conv2d returned).
IN_PLACE = HONEST.replace("out = torch.empty_like(y)", "out = y")
# The same, with the ReLU left to torch: relu is not allowed by conv2d.
TORCH_RELU = HONEST.replace("        return out\n", "        return torch.relu(out)\n")

# A conv-only problem: with conv2d allowed, torch can do all the work; a kernel must still produce it.
CONV_ONLY = """
import torch
import torch.nn as nn


class Model(nn.Module):
    def __init__(self, c, co, k):
        super().__init__()
        self.conv = nn.Conv2d(c, co, k)

    def forward(self, x):
        return self.conv(x)


def get_inputs():
    return [torch.randn(2, 3, 6, 6)]


def get_init_inputs():
    return [3, 4, 3]
"""
_DECOY_HEAD = """
import torch
import torch.nn as nn
import triton
import triton.language as tl


@triton.jit
def _copy(src_ptr, dst_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    tl.store(dst_ptr + offs, tl.load(src_ptr + offs, mask=offs < n), mask=offs < n)


class ModelNew(nn.Module):
    def __init__(self, c, co, k):
        super().__init__()
        self.conv = nn.Conv2d(c, co, k)
        self.first = [True]
"""
# The kernel runs on the first call only; later calls are the conv alone.
DECOY_FIRST_CALL = (
    _DECOY_HEAD
    + """
    def forward(self, x):
        y = self.conv(x)
        if self.first[0]:
            self.first[0] = False
            out = torch.empty_like(y)
            _copy[(triton.cdiv(y.numel(), 256),)](y, out, y.numel(), BLOCK=256)
            return out
        return y
"""
)
# The kernel runs on every call, on a scratch buffer; the output is the conv's.
DECOY_SCRATCH = (
    _DECOY_HEAD
    + """
    def forward(self, x):
        y = self.conv(x)
        scratch = torch.empty(16, device=x.device)
        _copy[(1,)](scratch, scratch, 16, BLOCK=16)
        return y
"""
)

# The kernel gets the conv's output on every call and writes nothing into it.
DECOY_NO_WRITE = (
    _DECOY_HEAD
    + """
    def forward(self, x):
        y = self.conv(x)
        _copy[(triton.cdiv(y.numel(), 256),)](y, y, 0, BLOCK=256)
        return y
"""
)


def _check(problem: Path, source: str, allow: list[str]) -> object:
    spec = load_problem(problem)
    spec.allow_torch = allow
    return evaluate(spec, source, "cpu", seeds=(0,), time=False)


@pytest.mark.slow
def test_conv_kept_in_torch_is_accepted_only_when_allowed() -> None:
    allowed = _check(LEVEL2, HONEST, ["conv2d"])
    assert allowed.status.value in ("accepted", "undecided"), allowed.reason
    assert allowed.allow_torch == ["conv2d"]
    in_place = _check(LEVEL2, IN_PLACE, ["conv2d"])
    assert in_place.status.value in ("accepted", "undecided"), in_place.reason
    strict = _check(LEVEL2, HONEST, [])
    assert strict.status.value == "cheating" and strict.rule == "torch-compute", strict.reason
    assert strict.allow_torch == []
    # The run-time guard alone (no static checks) enforces the strict contract too.
    spec = load_problem(LEVEL2)
    run_time = evaluate(spec, HONEST, "cpu", seeds=(0,), time=False, static=False)
    assert run_time.status.value == "cheating" and run_time.rule == "torch-compute", run_time.reason
    assert "convolution" in run_time.reason


@pytest.mark.slow
def test_an_op_outside_the_policy_is_still_rejected() -> None:
    static = _check(LEVEL2, TORCH_RELU, ["conv2d"])
    assert static.status.value == "cheating" and "relu" in static.reason, static.reason
    spec = load_problem(LEVEL2)
    spec.allow_torch = ["conv2d"]
    run_time = evaluate(spec, TORCH_RELU, "cpu", seeds=(0,), time=False, static=False)
    assert run_time.status.value == "cheating" and run_time.rule == "torch-compute", run_time.reason
    assert "relu" in run_time.reason


@pytest.mark.parametrize(
    "source", [DECOY_FIRST_CALL, DECOY_SCRATCH, DECOY_NO_WRITE], ids=["first-call", "scratch", "no-write"]
)
@pytest.mark.slow
def test_allowed_ops_never_stand_in_for_the_candidates_kernels(tmp_path: Path, source: str) -> None:
    problem = tmp_path / "conv_only.py"
    problem.write_text(CONV_ONLY)
    result = _check(problem, source, ["conv2d"])
    assert result.status.value in ("cheating", "incorrect"), result.reason
    assert result.rule == "launch-covers-output", (result.rule, result.reason)


def test_static_checks_follow_the_policy() -> None:
    src = (
        "import torch\nimport torch.nn as nn\nimport torch.nn.functional as F\n\n"
        "class ModelNew(nn.Module):\n    def __init__(self):\n        super().__init__()\n"
        "        self.lin = nn.Linear(3, 3)\n\n"
        "    def forward(self, x, w):\n        return F.conv2d(x, w), self.lin(x), x @ w, torch.mm(x, w)\n"
    )

    def fired(allow: list[str]) -> set[str]:
        found = check_source(src, (), allow).violations
        return {v.message.split(" ")[1] for v in found if v.rule == "torch-compute"}

    assert {"torch.nn.functional.conv2d", "self.lin,", "the", "torch.mm"} <= fired([])
    assert fired(["conv2d", "linear", "matmul", "mm"]) == set()
    assert fired(["conv1d"]) >= {"torch.nn.functional.conv2d", "self.lin,", "the", "torch.mm"}


def test_unknown_names_are_refused_with_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="known: conv1d"):
        parse_names("conv2d,relu")
    assert parse_names(" Linear, conv2d ,,") == ["conv2d", "linear"]
    cand = tmp_path / "c.py"
    cand.write_text(HONEST)
    for args in (
        ["check", str(cand), "--problem", str(LEVEL2), "--allow-torch", "conv2d,softmax"],
        ["run", str(LEVEL2), "--allow-torch", "conv9d", "--run-dir", str(tmp_path / "r")],
    ):
        out = CliRunner().invoke(app, args)
        assert out.exit_code == 2, out.output
        assert "unknown torch op" in out.output and "conv2d" in out.output and "Traceback" not in out.output


@pytest.mark.slow
def test_problem_toml_allow_torch_is_honoured(tmp_path: Path) -> None:
    folder = tmp_path / "p"
    folder.mkdir()
    shutil.copy(LEVEL2, folder / "reference.py")
    (folder / "problem.toml").write_text('allow_torch = ["conv2d"]\n')
    cand = tmp_path / "c.py"
    cand.write_text(HONEST)
    out = CliRunner().invoke(app, ["check", str(cand), "--problem", str(folder), "--json", "--quiet"])
    assert out.exit_code in (0, 3), out.output
    assert '"allow_torch": [\n    "conv2d"\n  ]' in out.output or '"allow_torch":["conv2d"]' in out.output
    (folder / "problem.toml").write_text('allow_torch = ["gelu"]\n')
    bad = CliRunner().invoke(app, ["check", str(cand), "--problem", str(folder)])
    assert bad.exit_code == 2 and "unknown torch op gelu" in bad.output, bad.output


class _Ops(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.ops: set[str] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        self.ops.add(func.overloadpacket.__name__)
        return func(*args, **(kwargs or {}))


def _r(*shape: int) -> torch.Tensor:
    return torch.randn(*shape)


# Each name's calls, at the ranks a candidate uses (inputs made outside the mode): what the guard sees.
_CALLS = {
    "conv1d": lambda: [
        (F.conv1d, _r(1, 2, 7), _r(3, 2, 3), _r(3)),
        (nn_call("Conv1d", 2, 3, 3), _r(1, 2, 7)),
    ],
    "conv2d": lambda: [
        (F.conv2d, _r(1, 2, 5, 5), _r(3, 2, 3, 3)),
        (nn_call("Conv2d", 2, 3, 3), _r(1, 2, 5, 5)),
    ],
    "conv3d": lambda: [(F.conv3d, _r(1, 2, 3, 3, 3), _r(3, 2, 2, 2, 2))],
    "conv_transpose1d": lambda: [(F.conv_transpose1d, _r(1, 2, 5), _r(2, 3, 3))],
    "conv_transpose2d": lambda: [(nn_call("ConvTranspose2d", 2, 3, 3), _r(1, 2, 5, 5))],
    "conv_transpose3d": lambda: [(F.conv_transpose3d, _r(1, 2, 3, 3, 3), _r(2, 3, 2, 2, 2))],
    "linear": lambda: [
        (F.linear, _r(4, 5), _r(3, 5), _r(3)),
        (F.linear, _r(2, 4, 5), _r(3, 5)),
        (nn_call("Linear", 5, 3), _r(2, 4, 5)),
    ],
    "matmul": lambda: [
        (torch.matmul, _r(4, 5), _r(5, 3)),
        (torch.matmul, _r(2, 4, 5), _r(2, 5, 3)),
        (torch.matmul, _r(5), _r(5)),
        (torch.matmul, _r(4, 5), _r(5)),
    ],
    "mm": lambda: [(torch.mm, _r(4, 5), _r(5, 3))],
    "bmm": lambda: [(torch.bmm, _r(2, 4, 5), _r(2, 5, 3))],
    "addmm": lambda: [(torch.addmm, _r(3), _r(4, 5), _r(5, 3))],
    "baddbmm": lambda: [(torch.baddbmm, _r(2, 4, 3), _r(2, 4, 5), _r(2, 5, 3))],
    "embedding": lambda: [
        (F.embedding, torch.tensor([1, 2]), _r(4, 3)),
        (nn_call("Embedding", 4, 3), torch.tensor([1])),
    ],
    "layer_norm": lambda: [(F.layer_norm, _r(2, 4), (4,)), (nn_call("LayerNorm", 4), _r(2, 4))],
}


def nn_call(layer: str, *init: int):  # type: ignore[no-untyped-def]
    return getattr(torch.nn, layer)(*init)


@pytest.mark.parametrize("grad", [False, True], ids=["no_grad", "grad"])
def test_the_aten_table_is_what_dispatch_sees(grad: bool) -> None:
    assert set(_CALLS) == set(TORCH_OPS)
    for name, calls in _CALLS.items():
        seen: set[str] = set()
        for fn, *args in calls():
            mode = _Ops()
            with torch.set_grad_enabled(grad), mode:
                fn(*args)
            seen |= mode.ops
        assert seen - STRICT_ALLOWED == allowed_aten_ops([name]), name


@pytest.mark.slow
def test_batch_records_and_summarizes_the_policy(tmp_path: Path) -> None:
    from agent.batch.driver import create_batch, run_batch
    from agent.batch.inputs import BatchConfig, Budget, find_problems
    from agent.batch.summary_output import summary_tables
    from agent.config import RunOptions

    folder = tmp_path / "conv_bias_relu"
    folder.mkdir()
    shutil.copy(LEVEL2, folder / "reference.py")
    (folder / "kernel.py").write_text(HONEST)
    bad = CliRunner().invoke(
        app, ["batch", str(folder), "--allow-torch", "relu", "--out", str(tmp_path / "b")]
    )
    assert bad.exit_code == 2 and "unknown torch op relu" in bad.output, bad.output
    cfg = BatchConfig(
        inputs=[str(folder)],
        problems=find_problems([str(folder)], [], [], None),
        run=RunOptions(stages=["micro"], max_iterations=1, allow_torch=["conv2d"]),
        budget=Budget(problem_evaluations=1),
    )
    create_batch(tmp_path / "batch", cfg)
    summary = run_batch(tmp_path / "batch", log=lambda _: None)
    (row,) = summary.problems
    assert row.correct and row.allow_torch == ["conv2d"], row
    assert any("torch ops allowed outside the Triton kernels: conv2d" in n for n in summary.overall.notes)
    table, _ = summary_tables(summary)
    assert "torch ops" in [c.header for c in table.columns]
    assert "conv2d" in (tmp_path / "batch" / "summary.csv").read_text()
