"""The built-in search: its proposals are the stage's space, and they keep the stage's rules."""

import pytest

from agent.constraints import check_constraints
from agent.models import EvalResult, Status
from agent.problem import load_problem
from agent.proposers.base import ProposalContext
from agent.proposers.search import SearchProposer
from agent.stages import load_stage

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


def _ctx(problem: str, launched: dict[str, int]) -> ProposalContext:
    spec = load_problem(problem)
    return ProposalContext(
        problem=spec,
        stage="micro",
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

    from agent.variants import find_kernels

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
    assert len(proposals) == proposer.space_size(ctx) >= 8  # 4 warps x 2-3 stages per kernel
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
