"""Static stage rules: a candidate that breaks a rule is rejected naming it; one that keeps it passes.

The micro rules are tested against the real kernels/l1_norm/kernel.py as the parent: its autotuned kernel
has 5 configs (BLOCK_SIZE_D 256..4096, num_warps 4/8, num_stages Triton's default 3), and its plain kernel
is launched with BLOCK_SIZE_D and num_warps computed in the wrapper.
"""

from __future__ import annotations

import pytest

from agent.data.paths import kernels_dir
from agent.prompt.stages import Stage, StageConstraints, StageParameter, list_stages, load_stage
from agent.proposers.search import SearchProposer
from agent.records import LaunchConfig
from agent.source.stage_rules import (
    GENERIC_RULES,
    RULES,
    ConstraintError,
    Violation,
    check_constraints,
    stage_rules,
    violations_text,
)
from agent.source.stage_rules_kernels import grid_mapping_code
from agent.source.variants import apply_move, stage_moves, with_launch_config

L1 = (kernels_dir() / "l1_norm" / "kernel.py").read_text()
L1_REF = (kernels_dir() / "l1_norm" / "reference.py").read_text()
LAYERNORM = (kernels_dir() / "layernorm" / "kernel.py").read_text()
SOFTMAX = (kernels_dir() / "softmax" / "kernel.py").read_text()
BUNDLED = sorted(p.name for p in kernels_dir().iterdir() if (p / "kernel.py").is_file())
TUNED = "l1_norm_kernel_autotune"
RAN = {TUNED: 1}  # what the l1_norm parent launches at its problem size (dim 65535 > 4096)
CHOSEN = {TUNED: {"BLOCK_SIZE_D": 4096, "num_warps": 8, "num_stages": 3}}


def edit(source: str, old: str, new: str, count: int = 1) -> str:
    assert source.count(old) == count, f"expected {count} of {old!r}"
    return source.replace(old, new)


L1_CONFIGS = """        triton.Config({'BLOCK_SIZE_D': 4096}, num_warps=8),
    ],"""
PLAIN_AUTOTUNE = """@triton.autotune(
    configs=[
        triton.Config({}, num_warps=4),
        triton.Config({}, num_warps=8),
        triton.Config({}, num_warps=8, num_stages=4),
    ],
    key=['D'],
)
"""
TUNED_DEF = "    key=['D'],\n)\n@triton.jit\ndef l1_norm_kernel_autotune("
TUNED_ROWS = (
    "    row_ptr = x_ptr + pid_batch * stride_x_batch\n"
    "    out_row_ptr = output_ptr + pid_batch * stride_out_batch\n    \n    abs_sum"
)

# A micro candidate that keeps every rule: the autotuned kernel gets a 6th config (same BLOCK size, other
# warps/stages); the plain kernel gets wrapped in @triton.autotune over num_warps/num_stages only, so
# its launch drops num_warps and keeps BLOCK_SIZE_D=BLOCK_SIZE_D (computed in the wrapper, as before).
GOOD = edit(
    L1,
    L1_CONFIGS,
    """        triton.Config({'BLOCK_SIZE_D': 4096}, num_warps=8),
        triton.Config({'BLOCK_SIZE_D': 4096}, num_warps=16, num_stages=2),
    ],""",
)
GOOD = edit(GOOD, "@triton.jit\ndef l1_norm_kernel(", PLAIN_AUTOTUNE + "@triton.jit\ndef l1_norm_kernel(")
GOOD = edit(
    GOOD,
    "            BLOCK_SIZE_D=BLOCK_SIZE_D,\n            num_warps=num_warps,\n",
    "            BLOCK_SIZE_D=BLOCK_SIZE_D,\n",
)


def rules(stage: str | Stage, parent: str, candidate: str, **kw) -> set[str]:
    stage = load_stage(stage) if isinstance(stage, str) else stage
    return {v.rule for v in check_constraints(stage, parent, candidate, **kw)}


def messages(stage: str, parent: str, candidate: str, **kw) -> str:
    return violations_text(check_constraints(load_stage(stage), parent, candidate, **kw))


# ---------------------------------------------------------------- the good candidates pass


def test_good_micro_candidate_passes():
    assert check_constraints(load_stage("micro"), L1, GOOD) == []
    assert check_constraints(load_stage("micro"), L1, GOOD, parent_launched=RAN, parent_chosen=CHOSEN) == []


@pytest.mark.parametrize("problem", BUNDLED)
@pytest.mark.parametrize("stage", ["tiling", "algorithmic", "occupancy"])
def test_every_bundled_kernel_keeps_the_rules_of_the_kernel_stages_unchanged(problem, stage):
    source = (kernels_dir() / problem / "kernel.py").read_text()
    assert check_constraints(load_stage(stage), source, source) == []


@pytest.mark.parametrize("problem", BUNDLED)
def test_every_bundled_kernel_is_a_valid_first_version_of_its_reference(problem):
    kernel = (kernels_dir() / problem / "kernel.py").read_text()
    reference = (kernels_dir() / problem / "reference.py").read_text()
    assert check_constraints(load_stage("first"), reference, kernel) == []


def test_micro_asks_plain_kernels_to_be_autotuned():
    """The unchanged parent is not a valid micro candidate: the seed wants autotune around every launched
    kernel, and l1_norm_kernel is launched plain (in the D <= 4096 branch)."""
    assert rules("micro", L1, L1) == {"micro.autotune-wraps-jit"}
    assert rules("micro", L1, L1, parent_launched=RAN) == set()  # that branch does not run at dim 65535


# ---------------------------------------------------------------- generic rules


def test_candidate_that_does_not_parse():
    found = check_constraints(load_stage("micro"), L1, "def f(:\n")
    assert [v.rule for v in found] == ["micro.parses"]
    assert "does not parse" in found[0].message and found[0].message.startswith("micro stage: ")


def test_model_new_is_required():
    assert "tiling.model-new" in rules("tiling", L1, edit(L1, "class ModelNew(", "class Model("))
    assert "tiling.model-new" not in rules("tiling", L1, L1)


def test_a_launched_jit_kernel_is_required():
    no_kernels = "import torch\nclass ModelNew:\n    def forward(self, x):\n        return x\n"
    assert "algorithmic.jit-kernel" in rules("algorithmic", L1, no_kernels)
    never_launched = edit(
        edit(L1, "l1_norm_kernel[grid](", "print("), "l1_norm_kernel_autotune[grid](", "print("
    )
    assert "algorithmic.jit-kernel" in rules("algorithmic", L1, never_launched)


def test_parameter_values_num_warps():
    bad = edit(GOOD, "num_warps=16, num_stages=2", "num_warps=32, num_stages=2")
    found = check_constraints(load_stage("micro"), L1, bad)
    assert [v.rule for v in found] == ["micro.parameter-values"]
    assert "num_warps=32 in config 6 of l1_norm_kernel_autotune" in found[0].message
    assert "{2, 4, 8, 16}" in found[0].message
    ok = edit(GOOD, "num_warps=16, num_stages=2", "num_warps=2, num_stages=2")
    assert rules("micro", L1, ok) == set()


def test_parameter_values_keep_a_parents_value_even_if_not_listed():
    parent = edit(
        L1,
        "triton.Config({'BLOCK_SIZE_D': 256}, num_warps=4)",
        "triton.Config({'BLOCK_SIZE_D': 256}, num_warps=1)",
    )
    candidate = edit(
        GOOD,
        "triton.Config({'BLOCK_SIZE_D': 256}, num_warps=4)",
        "triton.Config({'BLOCK_SIZE_D': 256}, num_warps=1)",
    )
    assert rules("micro", parent, candidate) == set()
    assert "micro.parameter-values" in rules("micro", L1, candidate)


def test_parameter_values_match_block_patterns():
    too_big = edit(
        L1,
        "triton.Config({'BLOCK_SIZE_D': 4096}, num_warps=8)",
        "triton.Config({'BLOCK_SIZE_D': 16384}, num_warps=8)",
    )
    found = check_constraints(load_stage("tiling"), L1, too_big)
    assert [v.rule for v in found] == ["tiling.parameter-values"]
    assert "BLOCK_SIZE_D=16384 in config 5" in found[0].message
    fine = edit(
        L1,
        "triton.Config({'BLOCK_SIZE_D': 4096}, num_warps=8)",
        "triton.Config({'BLOCK_SIZE_D': 8192}, num_warps=16)",
    )
    assert rules("tiling", L1, fine) == set()


# ---------------------------------------------------------------- micro (a): BLOCK sizes


def test_block_size_change_in_a_config_is_named_precisely():
    bad = edit(
        GOOD,
        "triton.Config({'BLOCK_SIZE_D': 256}, num_warps=4)",
        "triton.Config({'BLOCK_SIZE_D': 512}, num_warps=4)",
    )
    found = check_constraints(load_stage("micro"), L1, bad)
    assert [v.rule for v in found] == ["micro.block-sizes"]
    assert found[0].message == (
        "micro stage: BLOCK_SIZE_D changed from 256 to 512 in config 1 of l1_norm_kernel_autotune; "
        "BLOCK sizes must stay as they are (extra configs may vary num_warps/num_stages only)"
    )


def test_dropping_a_block_size_is_rejected():
    bad = edit(GOOD, "        triton.Config({'BLOCK_SIZE_D': 2048}, num_warps=8),\n", "")
    found = check_constraints(load_stage("micro"), L1, bad)
    assert [v.rule for v in found] == ["micro.block-sizes"]
    assert "l1_norm_kernel_autotune no longer runs with BLOCK_SIZE_D=2048" in found[0].message


def test_a_new_block_size_is_rejected():
    bad = edit(
        GOOD,
        "num_warps=16, num_stages=2",
        "num_warps=16, num_stages=2),\n        triton.Config({'BLOCK_SIZE_D': 8192}, num_warps=16",
    )
    found = check_constraints(load_stage("micro"), L1, bad)
    assert [v.rule for v in found] == ["micro.block-sizes", "micro.config-count"]
    assert "config 7 of l1_norm_kernel_autotune uses BLOCK_SIZE_D=8192, which the current code does not" in (
        found[0].message
    )


def test_every_new_block_size_is_named():
    parent = L1.replace("{'BLOCK_SIZE_D': 512}", "{'BLOCK_SIZE_D': 256}")  # 256 twice
    bad = parent.replace("{'BLOCK_SIZE_D': 256}, num_warps=4", "{'BLOCK_SIZE_D': 128}, num_warps=4", 1)
    bad = bad.replace("{'BLOCK_SIZE_D': 256}, num_warps=4", "{'BLOCK_SIZE_D': 64}, num_warps=4", 1)
    text = messages("occupancy", parent, bad)
    assert "from 256 to 128 in config 1" in text and "from 256 to 64 in config 2" in text


def test_block_size_at_a_launch_site_is_compared_through_its_assignment():
    bad = edit(
        GOOD,
        "BLOCK_SIZE_D = min(triton.next_power_of_2(D), 4096)",
        "BLOCK_SIZE_D = min(triton.next_power_of_2(D), 2048)",
    )
    assert "micro.block-sizes" in rules("micro", L1, bad)  # and original-config: that launch is gone too
    moved = edit(GOOD, "            BLOCK_SIZE_D=BLOCK_SIZE_D,\n", "")
    moved = edit(moved, "Config({}, num_warps=4)", "Config({'BLOCK_SIZE_D': 1024}, num_warps=4)")
    assert "micro.block-sizes" in rules("micro", L1, moved)


def test_extra_configs_that_vary_warps_and_stages_only_are_fine():
    extra = edit(
        GOOD,
        "triton.Config({}, num_warps=8, num_stages=4),",
        "triton.Config({}, num_warps=8, num_stages=4),\n        triton.Config({}, num_warps=16),",
    )
    assert rules("micro", L1, extra) == set()


# ---------------------------------------------------------------- micro (b): grid mapping


def test_grid_change_is_rejected():
    bad = edit(
        GOOD,
        "grid = (B,)\n        l1_norm_kernel_autotune",
        "grid = (triton.cdiv(B, 2),)\n        l1_norm_kernel_autotune",
    )
    found = check_constraints(load_stage("micro"), L1, bad)
    assert [v.rule for v in found] == ["micro.grid-mapping"]
    assert "grid of l1_norm_kernel_autotune changed from `(B,)` to `(triton.cdiv(B, 2),)`" in found[0].message


def test_program_id_mapping_change_is_rejected():
    bad = edit(GOOD, TUNED_ROWS, TUNED_ROWS.replace("x_ptr + pid_batch", "x_ptr + (B - 1 - pid_batch)"))
    found = check_constraints(load_stage("micro"), L1, bad)
    assert [v.rule for v in found] == ["micro.grid-mapping"]
    assert "in l1_norm_kernel_autotune, the code that maps program ids to data changed" in found[0].message
    assert "`row_ptr = x_ptr + (B - 1 - pid_batch) * stride_x_batch`" in found[0].message
    guard = "    if pid_batch >= B:\n        return\n    \n    row_ptr ="  # the autotuned kernel's only
    no_guard = edit(GOOD, guard, "    row_ptr =")
    assert rules("micro", L1, no_guard) == {"micro.grid-mapping"}
    guard = "pid_batch = tl.program_id(axis=0)\n    \n" + guard
    other_axis = edit(GOOD, guard, guard.replace("axis=0", "axis=1"))
    assert rules("micro", L1, other_axis) == {"micro.grid-mapping"}


def test_body_changes_away_from_the_mapping_are_allowed():
    ok = edit(GOOD, "mean_val = abs_sum / D + 1e-8", "mean_val = abs_sum * (1.0 / D) + 1e-8")
    load = "mask=mask, other=0.0)\n        normalized"
    ok = edit(ok, load, load.replace("other=0.0)", "other=0.0, eviction_policy='evict_first')"), count=2)
    assert rules("micro", L1, ok) == set()


def test_grid_mapping_code_of_a_grouped_matmul():
    import ast

    tree = ast.parse((kernels_dir() / "matmul_fp16" / "kernel.py").read_text())
    fn = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "matmul_kernel")
    code = grid_mapping_code(fn)
    assert "pid_m = first_pid_m + pid % num_pid_in_group % group_size_m" in code
    assert "offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)" in code
    assert not any("tl.load" in line or "tl.dot" in line for line in code)


# ---------------------------------------------------------------- micro (c): num_stages within ±1


def test_num_stages_more_than_one_away_is_rejected():
    # layernorm's 8192 config runs with num_stages=1; 3 is an allowed value but 2 away from it.
    bad = edit(
        LAYERNORM,
        'triton.Config({"BLOCK_SIZE": 8192}, num_warps=16, num_stages=1)',
        'triton.Config({"BLOCK_SIZE": 8192}, num_warps=16, num_stages=3)',
    )
    found = check_constraints(load_stage("micro"), LAYERNORM, bad)
    assert [v.rule for v in found] == ["micro.num-stages", "micro.original-config"][: len(found)]
    assert found[0].rule == "micro.num-stages"
    assert "num_stages=3 in config 4 of layernorm_kernel is more than 1 away from the current {1}" in (
        found[0].message
    )
    ok = edit(
        LAYERNORM,
        'triton.Config({"BLOCK_SIZE": 8192}, num_warps=16, num_stages=1)',
        'triton.Config({"BLOCK_SIZE": 8192}, num_warps=16, num_stages=2)',
    )
    assert rules("micro", LAYERNORM, ok) == set()


def test_num_stages_default_counts_as_three():
    assert "micro.num-stages" in rules(
        "micro", L1, edit(GOOD, "num_warps=16, num_stages=2", "num_warps=16, num_stages=5")
    )
    assert rules("micro", L1, edit(GOOD, "num_warps=16, num_stages=2", "num_warps=16, num_stages=4")) == set()


def test_unreadable_num_stages_is_rejected():
    bad = edit(GOOD, "num_warps=16, num_stages=2", "num_warps=16, num_stages=STAGES")
    found = check_constraints(load_stage("micro"), L1, bad)
    assert [v.rule for v in found] == ["micro.num-stages"]
    assert "write a number" in found[0].message


# ---------------------------------------------------------------- micro (d): autotune wraps jit


def test_autotune_must_wrap_every_launched_kernel():
    bad = edit(GOOD, PLAIN_AUTOTUNE, "")
    found = check_constraints(load_stage("micro"), L1, bad)
    assert found[0].rule == "micro.autotune-wraps-jit"  # then original-config: its launch lost num_warps 8
    assert "l1_norm_kernel is launched without autotuning" in found[0].message
    assert rules("micro", L1, bad, parent_launched=RAN) == set()  # unless it does not run


def test_autotune_must_be_the_outer_decorator():
    first = "@triton.autotune(\n    configs=[\n        triton.Config({'BLOCK_SIZE_D': 256}"
    swapped = edit(GOOD, first, "@triton.jit\n" + first)
    swapped = edit(swapped, TUNED_DEF, TUNED_DEF.replace("@triton.jit\n", ""))
    found = check_constraints(load_stage("micro"), L1, swapped)
    assert [v.rule for v in found] == ["micro.autotune-wraps-jit"]
    assert "@triton.autotune is below @triton.jit" in found[0].message


def test_autotune_directly_above_jit_heuristics_may_sit_between():
    between = edit(GOOD, TUNED_DEF, TUNED_DEF.replace("@triton.jit", "@functools.cache\n@triton.jit"))
    assert rules("micro", L1, between) == {"micro.autotune-wraps-jit"}
    heuristic = "@triton.heuristics({'EVEN': lambda a: a['D'] % 2 == 0})\n@triton.jit"
    heuristics = edit(GOOD, TUNED_DEF, TUNED_DEF.replace("@triton.jit", heuristic))
    assert rules("micro", L1, heuristics) == set()


# ---------------------------------------------------------------- micro (e): 3 to 6 configs, original kept


def test_too_many_configs():
    seven = edit(
        GOOD,
        "triton.Config({'BLOCK_SIZE_D': 4096}, num_warps=16, num_stages=2),",
        "triton.Config({'BLOCK_SIZE_D': 4096}, num_warps=16, num_stages=2),\n"
        "        triton.Config({'BLOCK_SIZE_D': 4096}, num_warps=16, num_stages=4),",
    )
    found = check_constraints(load_stage("micro"), L1, seven)
    assert [v.rule for v in found] == ["micro.config-count"]
    assert found[0].message == "micro stage: l1_norm_kernel_autotune has 7 autotune configs; use 3 to 6"


def test_too_few_configs():
    two = edit(GOOD, "        triton.Config({}, num_warps=8, num_stages=4),\n", "")
    assert rules("micro", L1, two) == {"micro.config-count"}
    three = GOOD  # l1_norm_kernel has 3 configs, l1_norm_kernel_autotune 6: both ends of 3..6 pass
    assert rules("micro", L1, three) == set()


def test_configs_built_by_code_are_read_and_unevaluable_ones_are_not():
    comprehension = "@triton.autotune(\n    configs=[triton.Config({}, num_warps=w) for w in (4, 8, 16)],\n"
    built = edit(GOOD, PLAIN_AUTOTUNE, comprehension + "    key=['D'],\n)\n")
    assert "micro.literal-configs" not in rules("micro", L1, built)  # evaluated: 3 configs
    unknown = "@triton.autotune(\n    configs=configs_from_a_file(),\n"
    bad = edit(GOOD, PLAIN_AUTOTUNE, unknown + "    key=['D'],\n)\n")
    found = check_constraints(load_stage("micro"), L1, bad)
    assert [v.rule for v in found] == ["micro.literal-configs"]
    assert "the autotune configs of l1_norm_kernel are neither a literal list" in found[0].message
    assert "NameError" in found[0].message
    assert rules("algorithmic", L1, bad) == set()  # a stage whose rules do not read configs lets it be


def test_the_original_config_must_stay():
    every_config_changed = with_launch_config(GOOD, TUNED, LaunchConfig(num_warps=16, num_stages=2))
    found = check_constraints(load_stage("micro"), L1, every_config_changed)
    assert [v.rule for v in found] == ["micro.original-config"]
    assert "none of the current configs of l1_norm_kernel_autotune is kept as it is" in found[0].message
    # One original config kept is enough when the parent's chosen config is unknown...
    one_kept = edit(
        every_config_changed,
        "{'BLOCK_SIZE_D': 256}, num_warps=16, num_stages=2",
        "{'BLOCK_SIZE_D': 256}, num_warps=4",
    )
    assert rules("micro", L1, one_kept) == set()
    # ...but when it is known, that one must stay.
    found = check_constraints(load_stage("micro"), L1, one_kept, parent_chosen=CHOSEN)
    assert [v.rule for v in found] == ["micro.original-config"]
    assert "(BLOCK_SIZE_D=4096, num_warps=8, num_stages=3) is missing" in found[0].message


def test_the_original_launch_of_a_plain_kernel_must_be_covered():
    # The parent launches l1_norm_kernel with num_warps 4 or 8 (8 if BLOCK_SIZE_D >= 2048 else 4).
    only_eight = edit(GOOD, "triton.Config({}, num_warps=4),", "triton.Config({}, num_warps=16),")
    assert rules("micro", L1, only_eight) == {"micro.original-config"}


# ---------------------------------------------------------------- the built-in search's variants


def _search_variants(source: str, kernel: str) -> dict[str, str]:
    stage = load_stage("micro")
    warps = [int(v) for v in stage.parameter("num_warps").values]
    stages = [int(v) for v in stage.parameter("num_stages").values]
    return {
        f"w{m.num_warps}d{m.stage_delta:+d}": apply_move(source, kernel, m)
        for m in stage_moves(source, kernel, warps, stages)
    }


def test_search_variants_keep_every_micro_rule_but_the_autotune_tip():
    """The search sets every config of the kernel to one num_warps and moves each num_stages by the same
    delta: BLOCK sizes, grid, num_stages ±1 and num_warps values all hold. The seed's autotune tip ("always
    include the original kernel config") holds only for the variants that leave an original config as it
    was; the search is exempt from the tip's rules (SearchProposer.exempt_rules), and only from those."""
    stage = load_stage("micro")
    outcome = {
        label: {v.rule for v in check_constraints(stage, L1, source, parent_launched=RAN)}
        for label, source in _search_variants(L1, TUNED).items()
    }
    assert len(outcome) == 12
    assert {label for label, broken in outcome.items() if not broken} == {"w4d+0", "w8d+0"}
    exempt = {f"micro.{r}" for r in SearchProposer.exempt_rules}
    assert all(broken <= exempt for broken in outcome.values())
    # With the autotuner's choice known (4096 with 8 warps), only the variant that keeps it passes.
    with_choice = {
        label: check_constraints(stage, L1, source, parent_launched=RAN, parent_chosen=CHOSEN)
        for label, source in _search_variants(L1, TUNED).items()
    }
    assert [label for label, broken in with_choice.items() if not broken] == ["w8d+0"]


def test_search_variants_of_a_plain_kernel_are_not_autotuned():
    """softmax launches a plain kernel; the search edits the launch, so micro's autotune rule fails."""
    stage = load_stage("micro")
    exempt = {f"micro.{r}" for r in SearchProposer.exempt_rules}
    for source in _search_variants(SOFTMAX, "softmax_kernel").values():
        broken = {v.rule for v in check_constraints(stage, SOFTMAX, source)}
        assert "micro.autotune-wraps-jit" in broken
        assert broken <= exempt


# ---------------------------------------------------------------- other stages' rules


def test_kernel_signatures():
    renamed = edit(
        L1,
        '    B, D,\n    BLOCK_SIZE_D: tl.constexpr,\n):\n    """\n    Autotuned',
        '    n_rows, D,\n    BLOCK_SIZE_D: tl.constexpr,\n):\n    """\n    Autotuned',
    )
    found = check_constraints(load_stage("tiling"), L1, renamed)
    assert [v.rule for v in found] == ["tiling.kernel-signatures"]
    assert "the arguments of l1_norm_kernel_autotune changed" in found[0].message
    new_constexpr = edit(
        L1,
        '    B, D,\n    BLOCK_SIZE_D: tl.constexpr,\n):\n    """\n    Autotuned',
        "    B, D,\n    BLOCK_SIZE_D: tl.constexpr,\n    EVEN: tl.constexpr = False,\n):\n"
        '    """\n    Autotuned',
    )
    assert rules("tiling", L1, new_constexpr) == set()


def test_kernel_set_is_kept_by_tiling():
    gone = edit(L1, "if D <= 4096:", "if False:")
    assert rules("tiling", L1, gone) == set()  # still launched (statically), so still the same kernels
    extra = L1 + "\n@triton.jit\ndef helper(x):\n    pass\n\ndef go(x):\n    helper[(1,)](x)\n"
    assert "tiling.kernel-signatures" in rules("tiling", L1, extra)
    assert "new kernel" in messages("tiling", L1, extra)
    assert rules("algorithmic", L1, extra) == set()  # algorithmic may add kernels


def test_kernel_bodies_stay_in_occupancy():
    changed = edit(L1, "mean_val = abs_sum / D + 1e-8", "mean_val = abs_sum * (1.0 / D) + 1e-8")
    found = check_constraints(load_stage("occupancy"), L1, changed)
    assert [v.rule for v in found] == ["occupancy.kernel-bodies"]
    assert (
        "first change: `mean_val = abs_sum / D + 1e-08` became `mean_val = abs_sum * (1.0 / D) + 1e-08`"
        in found[0].message
    )
    comments = edit(L1, "    # Compute mean with epsilon\n", "    # the mean, plus an epsilon\n")
    comments = edit(comments, "    Autotuned version of the L1 normalization kernel.", "    Autotuned.")
    retuned = with_launch_config(comments, TUNED, LaunchConfig(num_warps=16, num_stages=5))
    assert rules("occupancy", L1, retuned) == set()
    bigger = edit(L1, "{'BLOCK_SIZE_D': 256}", "{'BLOCK_SIZE_D': 128}")
    assert rules("occupancy", L1, bigger) == {"occupancy.block-sizes"}


def test_model_interface():
    bad = edit(L1, "def forward(self, x: torch.Tensor)", "def forward(self, x, eps=1e-8)")
    found = check_constraints(load_stage("algorithmic"), L1, bad)
    assert [v.rule for v in found] == ["algorithmic.model-interface"]
    assert "ModelNew.forward(self, x, eps=1e-08) differs from ModelNew.forward(self, x)" in found[0].message
    annotations = edit(L1, "def forward(self, x: torch.Tensor) -> torch.Tensor", "def forward(self, x)")
    assert rules("algorithmic", L1, annotations) == set()
    init = edit(L1, "def __init__(self):", "def __init__(self, dim):")
    assert rules("first", L1_REF, init) == {"first.model-interface"}  # compared with the reference's Model


def test_no_torch_compute_in_a_first_version():
    cheat = edit(L1, "return triton_l1_norm(x)", "return x / torch.mean(torch.abs(x), dim=1, keepdim=True)")
    found = check_constraints(load_stage("first"), L1_REF, cheat)
    assert {v.rule for v in found} == {"first.no-torch-compute"}
    assert "`torch.mean(torch.abs(x), dim=1, keepdim=True)` in forward computes with PyTorch" in (
        violations_text(found)
    )
    helper = edit(L1, "    output = torch.empty_like(x_contig)", "    output = x_contig.abs() * 0")
    assert rules("first", L1_REF, helper) == {"first.no-torch-compute"}  # found through the wrapper
    module = edit(
        L1,
        "super(ModelNew, self).__init__()",
        "super(ModelNew, self).__init__()\n        self.lin = nn.Linear(4, 4)",
    )
    module = edit(module, "return triton_l1_norm(x)", "return triton_l1_norm(self.lin(x))")
    assert rules("first", L1_REF, module) == {"first.no-torch-compute"}
    matmul = edit(L1, "return triton_l1_norm(x)", "return triton_l1_norm(x @ x)")
    assert rules("first", L1_REF, matmul) == {"first.no-torch-compute"}
    assert rules("first", L1_REF, L1) == set()
    # The anti-cheat's tables (agent/source/anticheat_rules.py) decide, so both say the same: torch.where
    # computes,
    # a view does not, and a Python set's .add is not a tensor method.
    where = edit(L1, "return triton_l1_norm(x)", "return triton_l1_norm(torch.where(x > 0, x, -x))")
    assert rules("first", L1_REF, where) == {"first.no-torch-compute"}
    honest = edit(
        L1,
        "return triton_l1_norm(x)",
        "seen = set()\n        seen.add(x.shape[0])\n"
        "        return triton_l1_norm(torch.reshape(x, x.shape))",
    )
    assert rules("first", L1_REF, honest) == set()


# ---------------------------------------------------------------- rules as data


def test_rule_lists_of_the_bundled_stages():
    assert stage_rules(load_stage("micro")) == (
        "parses",
        "model-new",
        "jit-kernel",
        "literal-configs",
        "parameter-values",
        "kernels-kept",
        "block-sizes",
        "grid-mapping",
        "num-stages",
        "autotune-wraps-jit",
        "config-count",
        "original-config",
    )
    assert stage_rules(load_stage("algorithmic")) == ("parses", "model-new", "jit-kernel", "model-interface")
    assert set(GENERIC_RULES) <= set(stage_rules(load_stage("tiling")))
    assert "no-torch-compute" in stage_rules(load_stage("first"))
    assert "kernel-bodies" in stage_rules(load_stage("occupancy"))
    for name in list_stages():
        assert set(stage_rules(load_stage(name))) <= set(RULES)


def test_every_rule_has_a_summary():
    for rule in RULES.values():
        assert len(rule.summary) > 20, rule.id


def test_a_stage_can_reuse_rules_by_id():
    stage = load_stage("tiling").model_copy(
        update={"name": "mine", "constraints": StageConstraints(rules=("block-sizes", "kernel-bodies"))}
    )
    bad = edit(L1, "{'BLOCK_SIZE_D': 256}", "{'BLOCK_SIZE_D': 128}")
    assert rules(stage, L1, bad) == {"mine.block-sizes"}


def test_rules_need_their_settings():
    with pytest.raises(ValueError, match="num_stages_max_delta"):
        StageConstraints(rules=("num-stages",))
    with pytest.raises(ValueError, match="autotune_min_configs"):
        StageConstraints(rules=("config-count",))


def test_unknown_rule_and_broken_parent_are_errors_not_violations():
    stage = load_stage("tiling").model_copy(update={"constraints": StageConstraints(rules=("nope",))})
    with pytest.raises(ConstraintError, match="nope"):
        check_constraints(stage, L1, L1)
    with pytest.raises(ConstraintError, match="parent"):
        check_constraints(load_stage("tiling"), "def f(:", L1)


def test_violation_is_a_model_and_the_text_lists_rules():
    stage = Stage(
        name="s",
        title="t",
        focus="f",
        task="t",
        template="micro.j2",
        metric_set="seed",
        parameters=(StageParameter(name="num_warps", values=(4,)),),
    )
    two_warps = with_launch_config(L1, TUNED, LaunchConfig(num_warps=2, num_stages=3))
    found = check_constraints(stage, L1, two_warps)
    assert all(isinstance(v, Violation) for v in found)
    assert violations_text(found).startswith("- s stage: num_warps=2 in config 1 of l1_norm_kernel_autotune")
    assert violations_text(found).endswith("[s.parameter-values]")
    assert Violation.model_validate_json(found[0].model_dump_json()) == found[0]
