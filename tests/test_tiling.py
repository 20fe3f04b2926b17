"""The tiling space: which literals a source exposes, and the variants that move them.

Each pattern (autotune configs, a literal launch keyword, a name bound to a literal that also feeds the
grid: local, module constant, `self.` attribute; a grid multiplier of the SM count) is checked on a small
source: the variant parses, only the intended literals changed, it keeps the tiling stage's rules, and it
still computes the right values in Triton's interpreter (so the grid stayed consistent with the block).
"""

from __future__ import annotations

import ast
import difflib

import pytest
import torch

from agent.data.paths import kernels_dir
from agent.evaluation.candidate import load_candidate
from agent.prompt.stages import load_stage
from agent.proposers.tiling_search import TilingSearch
from agent.source.stage_rules import check_constraints
from agent.source.tiling_points import BLOCK, MULTIPLIER, WARPS, TilingSpace
from agent.source.tiling_space import UnknownKernel, tiling_space

TILING = load_stage("tiling")
SEARCH = TilingSearch(TILING)


def space(source: str, kernel: str) -> TilingSpace:
    return SEARCH.space(source, kernel)


def diff(a: str, b: str) -> tuple[list[str], list[str]]:
    """(lines removed, lines added), stripped."""
    lines = list(difflib.ndiff(a.splitlines(), b.splitlines()))
    return [x[2:].strip() for x in lines if x.startswith("- ")], [
        x[2:].strip() for x in lines if x.startswith("+ ")
    ]


HEAD = """import torch
import torch.nn as nn
import triton
import triton.language as tl
{module}

@triton.jit
def scale_kernel(x_ptr, out_ptr, n, BLOCK_SIZE: tl.constexpr):
    pid = tl.program_id(0)
    offs = pid * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
    mask = offs < n
    tl.store(out_ptr + offs, tl.load(x_ptr + offs, mask=mask) * 2.0, mask=mask)


class ModelNew(nn.Module):
    def __init__(self):
        super().__init__()
{init}

    def forward(self, x):
        out = torch.empty_like(x)
        n = x.numel()
{body}
        return out
"""


def plain(body: str, module: str = "", init: str = "") -> str:
    return HEAD.format(module=module, init=init, body=body)


LITERAL = plain(
    '        grid = lambda meta: (triton.cdiv(n, meta["BLOCK_SIZE"]),)  # noqa: E731\n'
    "        scale_kernel[grid](x, out, n, BLOCK_SIZE=256, num_warps=4)  # the block"
)
LOCAL = plain(
    "        BLOCK = 256\n"
    "        grid = (triton.cdiv(n, BLOCK),)\n"
    "        scale_kernel[grid](\n"
    "            x, out, n,\n"
    "            BLOCK_SIZE=BLOCK,\n"
    "        )"
)
MODULE = plain(
    "        scale_kernel[(triton.cdiv(n, BLOCK),)](x, out, n, BLOCK_SIZE=BLOCK, num_warps=4)",
    module="\nBLOCK = 256  # elements per program\n",
)
ATTRIBUTE = plain(
    "        scale_kernel[(triton.cdiv(n, self.block),)](x, out, n, BLOCK_SIZE=self.block, num_warps=4)",
    init="        self.block = 256",
)
PERSISTENT = """import torch
import torch.nn as nn
import triton
import triton.language as tl

PROGRAMS_PER_SM = 2


def _num_sms(device):
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return 4


@triton.jit
def persistent_scale_kernel(x_ptr, out_ptr, n, BLOCK_SIZE: tl.constexpr):
    pid = tl.program_id(0)
    step = tl.num_programs(0) * BLOCK_SIZE
    for start in range(pid * BLOCK_SIZE, n, step):
        offs = start + tl.arange(0, BLOCK_SIZE)
        mask = offs < n
        tl.store(out_ptr + offs, tl.load(x_ptr + offs, mask=mask) * 2.0, mask=mask)


class ModelNew(nn.Module):
    def forward(self, x):
        out = torch.empty_like(x)
        n = x.numel()
        BLOCK = 128
        num_sms = _num_sms(x.device)
        grid = (min(triton.cdiv(n, BLOCK), num_sms * PROGRAMS_PER_SM),)
        persistent_scale_kernel[grid](x, out, n, BLOCK_SIZE=BLOCK, num_warps=4)
        return out
"""


def runs_right(source: str, tmp_path) -> bool:
    """The variant computes 2 * x in the interpreter on 1000 elements (not a multiple of any block)."""
    model = load_candidate(source, tmp_path).ModelNew()
    x = torch.randn(1000)
    return torch.equal(model(x), x * 2.0)


@pytest.mark.parametrize(
    "source,added",
    [
        (LITERAL, ["scale_kernel[grid](x, out, n, BLOCK_SIZE=512, num_warps=8)  # the block"]),
        (LOCAL, ["BLOCK = 512", "num_warps=8,"]),
        (
            MODULE,
            [
                "BLOCK = 512  # elements per program",
                "scale_kernel[(triton.cdiv(n, BLOCK),)](x, out, n, BLOCK_SIZE=BLOCK, num_warps=8)",
            ],
        ),
        (
            ATTRIBUTE,
            [
                "self.block = 512",
                "scale_kernel[(triton.cdiv(n, self.block),)](x, out, n, BLOCK_SIZE=self.block, num_warps=8)",
            ],
        ),
    ],
    ids=["literal-keyword", "local-name", "module-constant", "self-attribute"],
)
def test_a_plain_launchs_block_moves_with_its_grid(source, added, tmp_path):
    s = space(source, "scale_kernel")
    axes = [(a.kind, a.name, a.base) for a in s.axes]
    assert axes == [(BLOCK, "BLOCK_SIZE", (256,)), (WARPS, "num_warps", (4,))]
    assert s.axes[0].feeds_grid and not s.unexposed
    up = s.source((1, 0))  # BLOCK x2, num_warps following it (the elements per thread stay)
    ast.parse(up)
    removed, got = diff(source, up)
    assert got == added
    assert len(removed) == len(added) - (source is LOCAL)  # LOCAL had no num_warps: one line is new
    for point in [(1, 0), (-1, 0), (0, -1), (2, 1)]:
        variant = s.source(point)
        assert check_constraints(TILING, source, variant) == [], point
        assert runs_right(variant, tmp_path), point


def test_an_absent_num_warps_is_added_in_the_calls_layout():
    s = space(LOCAL, "scale_kernel")
    up = s.source((1, 0))
    assert "            BLOCK_SIZE=BLOCK,\n            num_warps=8,\n        )" in up
    assert "        BLOCK = 512\n" in up
    assert s.label((1, 0)) == "scale_kernel: BLOCK_SIZE=512 num_warps=8"
    assert s.source((0, -1)).count("num_warps=2") == 1


def test_a_non_ascii_source_is_not_edited_and_says_why():
    s = space(LITERAL.replace("# the block", "# the block (\u00d72)"), "scale_kernel")
    assert not s.searchable and "non-ASCII source" in s.why_not()
    with pytest.raises(UnknownKernel):
        space(LITERAL, "no_such_kernel")


@pytest.mark.parametrize(
    "body,module,why",
    [
        (
            "        scale_kernel[(triton.cdiv(n, 256),)](x, out, n, BLOCK_SIZE=256)",
            "",
            "the grid repeats the literal 256",
        ),
        (
            "        BLOCK = 1 << (n - 1).bit_length()\n"
            "        scale_kernel[(triton.cdiv(n, BLOCK),)](x, out, n, BLOCK_SIZE=BLOCK)",
            "",
            "`BLOCK` is computed at run time (`1 << (n - 1).bit_length()`)",
        ),
        (
            "        scale_kernel[(triton.cdiv(n, 256),)](x, out, n, BLOCK_SIZE=n // 4)",
            "",
            "`n // 4` is computed at run time",
        ),
        (
            "        BLOCK = 256\n"
            "        if n > 4096:\n"
            "            BLOCK = 1024\n"
            "        scale_kernel[(triton.cdiv(n, BLOCK),)](x, out, n, BLOCK_SIZE=BLOCK)",
            "",
            "`BLOCK` is assigned 2 times",
        ),
        (
            "        scale_kernel[(triton.cdiv(n, 1000),)](x, out, n, BLOCK_SIZE=BLOCK)",
            "\nBLOCK = 1000\n",
            "no power-of-two multiple of BLOCK_SIZE=1000 is allowed",
        ),
    ],
    ids=["grid-repeats-literal", "computed", "computed-inline", "assigned-twice", "not-a-power-of-two"],
)
def test_blocks_that_are_not_exposed_say_why(body, module, why):
    source = plain(body, module=module)
    s = space(source, "scale_kernel")
    assert not s.searchable and s.points() == [()]
    assert why in s.why_not()


@pytest.mark.parametrize(
    "body,scaled_x2,scaled_half",
    [
        (
            "        BLOCK = triton.next_power_of_2(n)\n"
            "        scale_kernel[(triton.cdiv(n, BLOCK),)](x, out, n, BLOCK_SIZE=BLOCK)",
            "BLOCK = (triton.next_power_of_2(n)) * 2",
            "BLOCK = max((triton.next_power_of_2(n)) // 2, 1)",
        ),
        (
            "        scale_kernel[(triton.cdiv(n, 64),)](\n"
            "            x, out, n, BLOCK_SIZE=max(triton.next_power_of_2(n), 64))",
            "BLOCK_SIZE=(max(triton.next_power_of_2(n), 64)) * 2",
            "BLOCK_SIZE=max((max(triton.next_power_of_2(n), 64)) // 2, 1)",
        ),
        (
            "        BLOCK, warps = settings(n)\n"
            "        scale_kernel[(triton.cdiv(n, BLOCK),)](x, out, n, BLOCK_SIZE=BLOCK, num_warps=warps)",
            "BLOCK, warps = settings(n)\n        BLOCK = BLOCK * 2\n",
            "BLOCK, warps = settings(n)\n        BLOCK = max(BLOCK // 2, 1)\n",
        ),
    ],
    ids=["next-power-of-2", "inline-call", "settings-helper"],
)
def test_a_run_time_block_moves_by_its_result(body, scaled_x2, scaled_half):
    """A BLOCK size a call computes at run time is searched at the call's result, /4 to x4."""
    s = space(plain(body), "scale_kernel")
    assert [a.name for a in s.axes if a.kind == "block"] == ["BLOCK_SIZE"] and s.axes[0].runtime
    assert sorted({p[0] for p in s.points()}) == [-2, -1, 0, 1, 2]
    assert scaled_x2 in s.source(s.step(s.origin, 0, +1))  # type: ignore[arg-type]
    assert scaled_half in s.source(s.step(s.origin, 0, -1))  # type: ignore[arg-type]
    assert "BLOCK_SIZE=its result x2" in s.label(s.step(s.origin, 0, +1))  # type: ignore[arg-type]


def test_a_capped_run_time_block_moves_its_cap(tmp_path):
    """`BLOCK = min(triton.next_power_of_2(n), 1024)`: the cap is the literal that moves, at its
    assignment, so the grid computed from BLOCK follows; either argument order."""
    for expr in ("min(triton.next_power_of_2(n), 1024)", "min(1024, triton.next_power_of_2(n))"):
        source = plain(
            f"        BLOCK = {expr}\n"
            "        scale_kernel[(triton.cdiv(n, BLOCK),)](x, out, n, BLOCK_SIZE=BLOCK, num_warps=4)"
        )
        s = space(source, "scale_kernel")
        assert [(a.kind, a.name, a.base) for a in s.axes] == [
            (BLOCK, "BLOCK_SIZE", (1024,)),
            (WARPS, "num_warps", (4,)),
        ]
        assert s.axes[0].feeds_grid
        down = s.source((-1, 0))
        _, added = diff(source, down)
        assert added[0] == f"BLOCK = {expr.replace('1024', '512')}" and "num_warps=2" in added[-1]
        for point in [(-1, 0), (1, 0), (-2, 1)]:
            variant = s.source(point)
            assert check_constraints(TILING, source, variant) == [], point
            assert runs_right(variant, tmp_path), point


@pytest.mark.filterwarnings(
    "ignore:Conversion of an array with ndim > 0:DeprecationWarning"
)  # interpreter's range
def test_a_grid_multiplier_of_the_sm_count_is_an_axis(tmp_path):
    s = space(PERSISTENT, "persistent_scale_kernel")
    assert [(a.kind, a.name, a.base) for a in s.axes] == [
        (BLOCK, "BLOCK_SIZE", (128,)),
        (MULTIPLIER, "PROGRAMS_PER_SM", (2,)),
        (WARPS, "num_warps", (4,)),
    ]
    assert s.axes[1].shifts() == [-1, 0, 1, 2, 3, 4]  # 1 .. 32 programs per SM
    more = s.source((0, 1, 0))
    assert diff(PERSISTENT, more) == (["PROGRAMS_PER_SM = 2"], ["PROGRAMS_PER_SM = 4"])
    assert s.step((0, 4, 0), 1, +1) is None  # 64 per SM is not an allowed value
    for point in [(0, -1, 0), (0, 1, 0), (1, -1, 0)]:
        variant = s.source(point)
        assert check_constraints(TILING, PERSISTENT, variant) == [], point
        assert runs_right(variant, tmp_path), point
    # Without the stage's "programs per SM" values (or with the grid-mapping rule) there is no such axis.
    assert [
        a.kind for a in tiling_space(PERSISTENT, "persistent_scale_kernel", SEARCH.blocks, (2, 4)).axes
    ] == [
        BLOCK,
        WARPS,
    ]


# ---------------------------------------------------------------- the bundled kernels

L1 = (kernels_dir() / "l1_norm" / "kernel.py").read_text()

# Per bundled problem, the kernel it launches at its real size: its tiling axes (name, number of positions),
# and how many distinct variant sources the space has; or why it is not searchable.
BUNDLED = {
    "l1_norm": ("l1_norm_kernel_autotune", [("BLOCK_SIZE_D", 6), ("num_warps", 3)], 12),
    "fused_elementwise": ("bias_gelu_kernel", [("BLOCK_SIZE", 8), ("num_warps", 3)], 14),
    "layernorm": ("layernorm_kernel", [("BLOCK_SIZE", 7), ("num_warps", 2)], 9),
    "matmul_fp16": (
        "matmul_kernel",
        [("BLOCK_M", 9), ("BLOCK_N", 9), ("BLOCK_K", 9), ("num_warps", 3)],
        1160,
    ),
    # A capped block, min(triton.next_power_of_2(n_cols), CAP): the cap moves (softmax's num_warps is an
    # expression of the block, left as it is; sum_reduction's is a literal, so it is an axis).
    "softmax": ("softmax_kernel", [("BLOCK_SIZE", 10)], 9),
    "sum_reduction": ("row_sum_kernel", [("BLOCK_SIZE", 10), ("num_warps", 4)], 18),
}


@pytest.mark.slow
@pytest.mark.parametrize("problem", sorted(BUNDLED))
def test_each_bundled_kernel_has_its_tiling_space_or_says_why_not(problem):
    kernel, axes, size = BUNDLED[problem]
    source = (kernels_dir() / problem / "kernel.py").read_text()
    s = space(source, kernel)
    if isinstance(axes, str):
        assert not s.searchable and axes in s.why_not()
        return
    assert [(a.name, len(a.shifts())) for a in s.axes] == axes
    variants = s.variants()
    assert len(variants) == size
    # Every neighbour of the start (what the coordinate search tries first) keeps the tiling rules and
    # changes config lines only; for the small spaces, every variant does.
    checked = (
        list(variants.values())
        if size < 100
        else [s.source(p) for i in range(len(s.axes)) for d in (-1, 1) if (p := s.step(s.origin, i, d))]
    )
    for variant in checked:
        assert check_constraints(TILING, source, variant, parent_launched=[kernel]) == []
        removed, added = diff(source, variant)
        edited = ("triton.Config(", "BLOCK_SIZE = min(", "num_warps=")
        assert len(removed) == len(added) and all(line.startswith(edited) for line in added), added


def test_an_autotune_list_moves_as_a_whole_with_num_warps_scaled_to_the_block():
    s = space(L1, "l1_norm_kernel_autotune")
    assert (
        s.label(s.origin)
        == "l1_norm_kernel_autotune: BLOCK_SIZE_D=256/512/1024/2048/4096 num_warps=4/4/8/8/8"
    )
    assert (
        s.label((1, 0))
        == "l1_norm_kernel_autotune: BLOCK_SIZE_D=512/1024/2048/4096/8192 num_warps=8/8/16/16/16"
    )
    assert (
        s.label((1, -1))
        == "l1_norm_kernel_autotune: BLOCK_SIZE_D=512/1024/2048/4096/8192 num_warps=4/4/8/8/8"
    )
    assert s.label((-4, 0)) == "l1_norm_kernel_autotune: BLOCK_SIZE_D=16/32/64/128/256 num_warps=2/2/2/2/2"
    assert s.step((1, 0), 0, +1) is None  # 16384 is not an allowed BLOCK size
    assert s.step((0, 1), 1, +1) is None  # 32 warps are not allowed
    up = s.source((1, 0))
    assert up.count("triton.Config(") == L1.count("triton.Config(")  # the list keeps its length
    assert "triton.Config({'BLOCK_SIZE_D': 8192}, num_warps=16)," in up
    # The plain kernel (run only for D <= 4096) caps its block: the cap is its axis.
    plain_axes = [(a.name, a.base) for a in space(L1, "l1_norm_kernel").axes]
    assert plain_axes[0] == ("BLOCK_SIZE_D", (4096,))


def test_matmul_tile_sizes_set_num_warps_but_group_m_stays():
    source = (kernels_dir() / "matmul_fp16" / "kernel.py").read_text()
    s = space(source, "matmul_kernel")
    assert [a.feeds_grid for a in s.axes[:3]] == [True, True, False]  # BLOCK_M, BLOCK_N set the grid
    k_up = s.source((0, 0, 1, 0))
    assert '"BLOCK_K": 128, "GROUP_M": 8}, num_warps=8, num_stages=3)' in k_up  # K: warps stay
    m_up = s.source((1, 0, 0, 0))
    assert (
        '{"BLOCK_M": 256, "BLOCK_N": 256, "BLOCK_K": 64, "GROUP_M": 8}, num_warps=16, num_stages=3)' in m_up
    )


def test_micro_and_occupancy_get_no_block_moves():
    """Their stages keep BLOCK sizes (block-sizes rule, no BLOCK parameter): the search serves them in its
    launch mode (num_warps, num_stages), and a tiling variant breaks their rules."""
    from agent.proposers.search import SearchProposer

    assert SearchProposer.search_mode(TILING) == "tiling"
    assert SearchProposer.search_mode(load_stage("micro")) == "launch"
    assert SearchProposer.search_mode(load_stage("occupancy")) == "launch"
    assert SearchProposer.search_mode(load_stage("algorithmic")) is None
    s = space(L1, "l1_norm_kernel_autotune")
    for stage in ("micro", "occupancy"):
        rules = {v.rule for v in check_constraints(load_stage(stage), L1, s.source((1, 0)))}
        assert f"{stage}.block-sizes" in rules
