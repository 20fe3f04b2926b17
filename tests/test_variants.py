"""Source-level launch-parameter variants: edits land where they should and nowhere else."""

import ast
import difflib

import pytest

from agent.data.paths import kernels_dir
from agent.records import LaunchConfig
from agent.source.variants import (
    LaunchMove,
    VariantError,
    apply_move,
    current_config,
    stage_moves,
    with_launch_config,
)

L1 = (kernels_dir() / "l1_norm" / "kernel.py").read_text()

PLAIN = """import triton
import triton.language as tl

@triton.jit
def k(x_ptr, BLOCK: tl.constexpr):
    pass

def launch(x):
    k[(1,)](x, BLOCK=128)  # a comment that must survive
    k[(2,)](
        x,
        BLOCK=256,
        num_warps=8,
    )
"""


def _changed_lines(a: str, b: str) -> list[str]:
    return [
        line
        for line in difflib.unified_diff(a.splitlines(), b.splitlines(), lineterm="", n=0)
        if line[:1] in "+-" and not line.startswith(("+++", "---"))
    ]


def test_autotuned_kernel_edits_every_config_and_nothing_else():
    out = with_launch_config(L1, "l1_norm_kernel_autotune", LaunchConfig(num_warps=16, num_stages=2))
    changed = _changed_lines(L1, out)
    assert len(changed) == 10  # 5 configs, each one line out and one line in
    assert all("triton.Config" in line for line in changed)
    assert out.count("num_warps=16, num_stages=2") == 5
    assert current_config(out, "l1_norm_kernel_autotune") == LaunchConfig(num_warps=16, num_stages=2)
    # the other kernel's launch is untouched
    assert current_config(out, "l1_norm_kernel") == current_config(L1, "l1_norm_kernel")


def test_plain_launch_sites_get_keywords_in_their_own_layout():
    out = with_launch_config(PLAIN, "k", LaunchConfig(num_warps=2, num_stages=4))
    ast.parse(out)
    assert "k[(1,)](x, BLOCK=128, num_warps=2, num_stages=4)  # a comment that must survive" in out
    assert "        num_warps=2,\n        num_stages=4,\n    )" in out
    assert current_config(out, "k") == LaunchConfig(num_warps=2, num_stages=4)


def test_current_config_defaults_and_mode():
    assert current_config(PLAIN, "k") == LaunchConfig(num_warps=4, num_stages=3)  # 4 is the default warps
    assert current_config(L1, "l1_norm_kernel_autotune") == LaunchConfig(num_warps=8, num_stages=3)


def test_micro_moves_keep_each_configs_stages_within_one_and_allowed():
    assert len(stage_moves(L1, "l1_norm_kernel_autotune", [2, 4, 8, 16], [2, 3, 4])) == 12
    mixed = L1.replace(
        "{'BLOCK_SIZE_D': 256}, num_warps=4", "{'BLOCK_SIZE_D': 256}, num_warps=4, num_stages=2"
    )
    moves = stage_moves(mixed, "l1_norm_kernel_autotune", [2, 4, 8, 16], [2, 3, 4])
    assert {m.stage_delta for m in moves} == {0, 1}  # 2 - 1 = 1 is not an allowed value
    out = apply_move(mixed, "l1_norm_kernel_autotune", LaunchMove(num_warps=2, stage_delta=1))
    assert "{'BLOCK_SIZE_D': 256}, num_warps=2, num_stages=3" in out
    assert out.count("num_warps=2, num_stages=4") == 4


@pytest.mark.parametrize(
    "source,kernel,message",
    [
        ("def f(:\n", "k", "does not parse"),
        (PLAIN, "nope", "no @triton.jit kernel named 'nope'"),
        ("import triton\n@triton.jit\ndef k(x):\n    pass\n", "k", "never launched"),
    ],
)
def test_errors_are_specific(source, kernel, message):
    with pytest.raises(VariantError, match=message):
        with_launch_config(source, kernel, LaunchConfig(num_warps=2, num_stages=2))
