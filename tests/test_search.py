"""The built-in search: its proposals are the stage's space, and they keep the stage's rules."""

import pytest

from agent.problem import load_problem
from agent.prompt.stages import load_stage
from agent.proposers.base import ProposalContext
from agent.proposers.search import SearchProposer
from agent.records import EvalResult, Status, Timings, TimingStats
from agent.source.stage_rules import check_constraints

OCC = "sm__warps_active.avg.pct_of_peak_sustained_active"

# Kernels each bundled starting kernel launches at its real size (what a GPU evaluation reports).
LAUNCHED = {
    "l1_norm": "l1_norm_kernel_autotune",
    "softmax": None,
    "layernorm": None,
    "fused_elementwise": None,
    "sum_reduction": None,
    "matmul_fp16": None,
}


def _ctx(problem: str, launched: dict[str, int], stage: str = "micro") -> ProposalContext:
    spec = load_problem(problem)
    return ProposalContext(
        problem=spec,
        stage=stage,
        iteration=1,
        parent_id=1,
        parent_source=spec.kernel_path.read_text(),
        parent_result=EvalResult(status=Status.ACCEPTED, kernels_launched=launched),
        prompt_text="",
        prompt_id=1,
        tried_sources=set(),
    )


def _jit_kernels(source: str) -> list[str]:
    import ast

    from agent.source.variants import find_kernels

    return sorted(find_kernels(ast.parse(source)))


@pytest.mark.parametrize("problem", sorted(LAUNCHED))
def test_search_covers_the_micro_space_and_keeps_the_stage_rules(problem):
    stage = load_stage("micro")
    spec = load_problem(problem)
    source = spec.kernel_path.read_text()
    kernels = [LAUNCHED[problem]] if LAUNCHED[problem] else _jit_kernels(source)[:1]
    ctx = _ctx(problem, {k: 1 for k in kernels})
    proposer = SearchProposer(stage, "exhaustive")
    proposals = proposer.propose(ctx)
    # 4 warps x 2-3 stages per kernel, and for a plain launch its autotune wrap
    assert len(proposals) == proposer.space_size(ctx) >= 8
    assert proposer.propose(ctx) == []  # one step covers the space
    assert len({p.source for p in proposals}) == len(proposals)
    for p in proposals:
        broken = [
            v
            for v in check_constraints(stage, source, p.source, parent_launched=kernels)
            if v.rule.split(".")[-1] not in proposer.exempt_rules
        ]
        assert broken == [], f"{p.label}: {broken}"


def test_search_proposes_nothing_already_tried():
    stage = load_stage("micro")
    ctx = _ctx("l1_norm", {"l1_norm_kernel_autotune": 1})
    everything = SearchProposer(stage, "exhaustive").propose(ctx)
    ctx.tried_sources.update(p.source for p in everything)
    assert SearchProposer(stage).propose(ctx) == []


def test_coordinate_search_goes_axis_by_axis_in_the_profiles_order():
    stage = load_stage("micro")
    ctx = _ctx("l1_norm", {"l1_norm_kernel_autotune": 1})
    proposer = SearchProposer(stage)
    proposer.observe_profile({"l1_norm_kernel_autotune": [{OCC: 30.0}]})  # low occupancy: more warps first
    warps_step = proposer.propose(ctx)
    assert [c.label.split()[1] for c in warps_step] == [
        "num_warps=16",
        "num_warps=4",
        "num_warps=2",
        "num_warps=8",
    ]
    stages_step = proposer.propose(ctx)  # around the parent's num_warps (8, its most common value)
    assert [c.label.split()[1:] for c in stages_step] == [
        ["num_warps=8", "num_stages=2"],
        ["num_warps=8", "num_stages=4"],
    ]
    assert proposer.propose(ctx) == []
    high = SearchProposer(stage)
    high.observe_profile({"l1_norm_kernel_autotune": [{OCC: 95.0}]})  # high occupancy: fewer warps first
    assert [c.label.split()[1] for c in high.propose(ctx)][:2] == ["num_warps=2", "num_warps=4"]


def test_search_ignores_kernels_it_cannot_vary():
    ctx = _ctx("l1_norm", {"some_library_kernel": 3})
    assert SearchProposer(load_stage("micro")).propose(ctx) == []


# ---------------------------------------------------------------- the tiling stage

DRAM = "gpu__dram_throughput.avg.pct_of_peak_sustained_elapsed"
SPILLING = "derived__local_spilling_requests_pct"
# Per bundled problem: the kernel it launches at its real size, and the distinct variants of its tiling
# space (softmax and sum_reduction: the cap of min(triton.next_power_of_2(n_cols), CAP) moves).
TILING_SPACES = {
    "l1_norm": ("l1_norm_kernel_autotune", 12),
    "fused_elementwise": ("bias_gelu_kernel", 14),
    "layernorm": ("layernorm_kernel", 9),
    "matmul_fp16": ("matmul_kernel", 1160),
    "softmax": ("softmax_kernel", 9),
    "sum_reduction": ("row_sum_kernel", 18),
}


@pytest.mark.slow
@pytest.mark.parametrize("problem", sorted(TILING_SPACES))
def test_the_search_serves_tiling_for_every_bundled_kernel(problem):
    kernel, size = TILING_SPACES[problem]
    stage = load_stage("tiling")
    assert SearchProposer.can_search(stage)
    ctx = _ctx(problem, {kernel: 1}, "tiling")
    proposer = SearchProposer(stage)
    assert proposer.space_size(ctx) == size
    first = proposer.propose(ctx)
    assert proposer.notes == []  # (a kernel with nothing exposed: tests/test_tiling_run.py)
    (cand,) = first  # the coordinate search evaluates one neighbour a step
    assert cand.label.startswith(f"{kernel}: BLOCK") and cand.proposer == "search" and cand.stage == "tiling"
    broken = check_constraints(stage, ctx.parent_source, cand.source, parent_launched=[kernel])
    assert broken == []


def test_exhaustive_tiling_search_proposes_the_whole_space_once():
    stage = load_stage("tiling")
    ctx = _ctx("layernorm", {"layernorm_kernel": 1}, "tiling")
    proposer = SearchProposer(stage, "exhaustive")
    proposals = proposer.propose(ctx)
    assert len(proposals) == proposer.space_size(ctx) == 9
    assert len({p.source for p in proposals}) == 9 and ctx.parent_source not in {p.source for p in proposals}
    assert proposer.propose(ctx) == []


def _gain(ctx: ProposalContext, cand) -> ProposalContext:
    """The loop after `cand` beat the best: it is the next parent."""
    ctx.tried_sources.add(cand.source)
    return ctx.model_copy(update={"parent_source": cand.source, "iteration": ctx.iteration + 1})


def _timed(ctx: ProposalContext) -> ProposalContext:
    """The parent as a GPU run sees it: timed, so a label may say what gave no gain."""
    timings = Timings(candidate=TimingStats(times_ms=[1.0, 1.0, 1.0]))
    return ctx.model_copy(update={"parent_result": ctx.parent_result.model_copy(update={"timings": timings})})


def test_untimed_turn_back_claims_no_gain():
    """On the CPU nothing is timed: turning back on an axis must not say the first way gave no gain."""
    ctx = _ctx("fused_elementwise", {"bias_gelu_kernel": 1}, "tiling")
    proposer = SearchProposer(load_stage("tiling"))
    proposer.observe_profile({"bias_gelu_kernel": [{DRAM: 40.0}]})
    labels = []
    for _ in range(4):
        (cand,) = proposer.propose(ctx)
        labels.append(cand.label)
        ctx = _no_gain(ctx, cand)
    assert not any("gain" in label for label in labels), labels
    assert any("the other way too (nothing timed)" in label for label in labels), labels


def _no_gain(ctx: ProposalContext, cand) -> ProposalContext:
    ctx.tried_sources.add(cand.source)
    return ctx.model_copy(update={"iteration": ctx.iteration + 1})


def test_coordinate_tiling_search_follows_a_gain_and_turns_back_once():
    """fused_elementwise's BLOCK_SIZE sets its grid; with DRAM under-used, smaller blocks (more programs)
    come first. A gain goes on the same way; a miss after a gain ends the axis; a first miss turns back."""
    ctx = _timed(_ctx("fused_elementwise", {"bias_gelu_kernel": 1}, "tiling"))
    proposer = SearchProposer(load_stage("tiling"))
    proposer.observe_profile({"bias_gelu_kernel": [{DRAM: 40.0}]})
    labels = []

    def step(ctx, outcome):
        (cand,) = proposer.propose(ctx)
        labels.append(cand.label.removeprefix("bias_gelu_kernel: "))
        return outcome(ctx, cand), cand

    ctx, _ = step(ctx, _gain)  # BLOCK_SIZE /2: better
    ctx, _ = step(ctx, _no_gain)  # /2 again: not better, the axis is done
    ctx, _ = step(ctx, _no_gain)  # num_warps x2 (more, as DRAM is under-used): not better
    ctx, last = step(ctx, _no_gain)  # num_warps /2: not better either
    assert labels == [
        "BLOCK_SIZE=512/1024/2048 num_warps=2/4/4 (BLOCK_SIZE /2 first: DRAM 40% of peak: more programs)",
        "BLOCK_SIZE=256/512/1024 num_warps=2/2/2 (BLOCK_SIZE /2 again)",
        "BLOCK_SIZE=512/1024/2048 num_warps=4/8/8 (num_warps x2 first: DRAM 40% of peak)",
        "BLOCK_SIZE=512/1024/2048 num_warps=2/2/2 (num_warps /2, the other way gave no gain)",
    ]
    assert 'triton.Config({"BLOCK_SIZE": 512}, num_warps=2)' in last.source
    assert proposer.propose(ctx) == []  # every axis done: the stage ends
    assert proposer.propose(ctx) == []


@pytest.mark.parametrize(
    "metrics,first",
    [
        (None, "BLOCK_SIZE_D x2)"),  # no profile: larger blocks first
        ({DRAM: 88.0}, "BLOCK_SIZE_D x2)"),
        ({DRAM: 40.0}, "BLOCK_SIZE_D x2 first: DRAM 40% of peak)"),  # the block does not set l1's grid
        ({DRAM: 88.0, SPILLING: 5.0}, "BLOCK_SIZE_D /2 first: registers spill (5% of requests))"),
    ],
)
def test_the_profile_orders_the_first_try(metrics, first):
    ctx = _ctx("l1_norm", {"l1_norm_kernel_autotune": 1}, "tiling")
    proposer = SearchProposer(load_stage("tiling"))
    proposer.observe_profile({"l1_norm_kernel_autotune": [metrics]} if metrics else None)
    (cand,) = proposer.propose(ctx)
    assert cand.label.endswith(f"({first}")


def test_a_step_outside_the_allowed_values_is_never_proposed():
    """l1_norm's list tops out at 4096: x2 reaches 8192, x4 would be 16384 (not allowed), so after a gain
    at 8192 the axis ends without proposing it."""
    ctx = _ctx("l1_norm", {"l1_norm_kernel_autotune": 1}, "tiling")
    proposer = SearchProposer(load_stage("tiling"))
    (up,) = proposer.propose(ctx)
    assert "BLOCK_SIZE_D=512/1024/2048/4096/8192" in up.label
    (nxt,) = proposer.propose(_gain(ctx, up))
    assert nxt.label.endswith("(num_warps /2)") and "16384" not in nxt.source
