"""Small CPU shapes derived from a KernelBench file's size constants (agent/start/small_shapes.py)."""

from __future__ import annotations

import resource
from pathlib import Path

import pytest

from agent.problem import ProblemError, inspect_problem, load_problem
from agent.records import ProblemSpec
from agent.start.small_shapes import MAX_ELEMENTS, derive_small_shapes, parse_shapes_flag

PROBLEMS = Path(__file__).resolve().parent / "kernelbench_problems"

TWO_SIDES = """
import torch
import torch.nn as nn


class Model(nn.Module):
    def forward(self, A, B):
        return torch.matmul(A, B)


{sizes}


def get_inputs():
    return [torch.rand({a}), torch.rand({b})]


def get_init_inputs():
    return []
"""


def _spec(path: Path) -> ProblemSpec:
    return ProblemSpec(name=path.stem, reference_path=path)


def _largest(spec: ProblemSpec) -> int:
    shapes = inspect_problem(spec, small=True)
    sizes = [t.nbytes // 4 for t in [*shapes.inputs, *shapes.outputs]]
    return max(sizes)


def test_real_sizes_shrink_without_allocating_them() -> None:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    spec = load_problem(PROBLEMS / "relu.py")  # 4096 x 393216 floats: 6 GiB if it were allocated
    assert spec.shapes_origin == "derived" and set(spec.small_shapes) == {"batch_size", "dim"}
    assert _largest(spec) <= MAX_ELEMENTS
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 512 * 1024  # KiB


def test_distinct_sizes_stay_distinct_and_axes_stay() -> None:
    shapes = derive_small_shapes(_spec(PROBLEMS / "matmul.py"))
    assert len(set(shapes.values())) == 3  # M, K, N keep their roles: a kernel mixing them up fails
    shapes = derive_small_shapes(_spec(PROBLEMS / "sum_dim.py"))
    assert "reduce_dim" not in shapes and shapes["dim1"] != shapes["dim2"]


@pytest.mark.parametrize(
    ("sizes", "a", "b"),
    [("N = 2048 * 2", "N, N", "N, N"), ("M = 4096\nN = 4096", "M, N", "N, M")],
)
def test_one_size_for_several_dims_scales_together(tmp_path: Path, sizes: str, a: str, b: str) -> None:
    path = tmp_path / "square.py"
    path.write_text(TWO_SIDES.format(sizes=sizes, a=a, b=b))
    shapes = derive_small_shapes(_spec(path))
    assert len(set(shapes.values())) == 1 and max(shapes.values()) ** 2 <= MAX_ELEMENTS


def test_a_reference_that_fails_small_says_how_to_set_shapes(tmp_path: Path) -> None:
    path = tmp_path / "picky.py"
    path.write_text(
        TWO_SIDES.format(sizes="N = 4096", a="N, N", b="N, N").replace(
            "return torch.matmul(A, B)", "assert A.shape[0] % 4096 == 0\n        return torch.matmul(A, B)"
        )
    )
    with pytest.raises(ProblemError, match="--small-shapes"):
        load_problem(path)
    assert load_problem(path, {"N": 4096}).shapes_origin == "flag"  # the flag overrides


def test_small_problems_keep_their_sizes() -> None:
    assert derive_small_shapes(_spec(PROBLEMS / "mlp.py")) == {}


def test_shapes_flag() -> None:
    assert parse_shapes_flag("batch_size=8, dim=300,eps=0.5") == {"batch_size": 8, "dim": 300, "eps": 0.5}
    for bad in ("dim", "dim=x", "1a=3"):
        with pytest.raises(ValueError, match="--small-shapes"):
            parse_shapes_flag(bad)
