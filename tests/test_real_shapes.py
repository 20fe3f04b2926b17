"""The search on shapes real code has: autotune configs built by code (agent/source/config_builders.py),
plain launches wrapped in an autotune for micro (agent/source/autotune_wrap.py), a launch as it is being
no new candidate, and a search that proposes nothing saying why. No worker is started here."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from agent.prompt.stages import load_stage
from agent.proposers.base import ProposalContext
from agent.proposers.search import SearchProposer
from agent.records import EvalResult, ProblemSpec, Status
from agent.source import config_builders
from agent.source.autotune_wrap import wrapped
from agent.source.config_builders import BuilderError, ConfigValue, prune, written_out
from agent.source.kernel_facts import facts
from agent.source.variants import VariantError, autotune_configs, find_kernels

REALCODE = Path(__file__).parent / "realcode"
MATMUL = (REALCODE / "problems" / "matmul_tutorial" / "kernel.py").read_text()
SOFTMAX = (REALCODE / "problems" / "liger_softmax" / "kernel.py").read_text()

BUILT = """
import triton
import triton.language as tl

{prelude}

@triton.autotune(configs={configs}, key=["n"])
@triton.jit
def k(x_ptr, n, BLOCK: tl.constexpr):
    pass


def launch(x, n):
    k[(1,)](x, n)
"""


def built(configs: str, prelude: str = "") -> str:
    return BUILT.format(configs=configs, prelude=prelude)


def literal_configs(source: str) -> list[str]:
    fn = find_kernels(ast.parse(source))["k" if "def k(" in source else "matmul_kernel"]
    return [ast.unparse(c) for c in autotune_configs(fn) or []]


def test_the_matmul_tutorials_builder_is_written_out():
    source, notes, failed = written_out(MATMUL)
    assert not failed and "the 8 configs `get_autotune_config()` builds, written out" in notes[0]
    configs = literal_configs(source)
    assert len(configs) == 8  # the CUDA list: the driver answered as the target GPU (is_cuda())
    assert "'BLOCK_SIZE_M': 128, 'BLOCK_SIZE_N': 256, 'BLOCK_SIZE_K': 64" in configs[0]
    assert "num_warps=8, num_stages=3" in configs[0]
    assert "get_autotune_config()" not in source.split("@triton.autotune")[1].split("def matmul_kernel")[0]


@pytest.mark.parametrize(
    "configs,prelude,count",
    [
        ("[triton.Config({'BLOCK': b}, num_warps=w) for b in (64, 128) for w in (2, 4)]", "", 4),
        ("CONFIGS", "CONFIGS = [triton.Config({'BLOCK': 2 ** i}) for i in range(5, 8)]", 3),
        (
            "configs(triton.next_power_of_2(100))",
            "def configs(top):\n    return [triton.Config({'BLOCK': top})]",
            1,
        ),
    ],
    ids=["comprehension", "module-constant", "helper-with-triton-calls"],
)
def test_builders_of_every_shape_are_evaluated(configs, prelude, count):
    source, _, failed = written_out(built(configs, prelude))
    assert not failed and len(literal_configs(source)) == count
    runs = facts(ast.parse(built(configs, prelude))).runs["k"]
    assert isinstance(runs, list) and len(runs) == count  # the rules read the same list


@pytest.mark.parametrize(
    "configs,prelude,why",
    [
        (
            "evil()",
            "def evil():\n    return ().__class__.__base__.__subclasses__()",
            "`__subclasses__`, which is not run",
        ),
        ("evil()", "def evil():\n    import os\n    return os.listdir('/')", "`Import`, which is not run"),
        ("from_disk()", "", "NameError"),
        ("hooked()", "def hooked():\n    return [triton.Config({}, pre_hook=print)]", "pre_hook"),
    ],
    ids=["dunder-escape", "import", "unknown-name", "pre-hook"],
)
def test_builders_that_cannot_or_must_not_run_say_why(configs, prelude, why):
    source, notes, failed = written_out(built(configs, prelude))
    assert source == built(configs, prelude) and not notes and why in failed[0]
    runs = facts(ast.parse(source)).runs["k"]
    assert isinstance(runs, str) and why in runs


def test_a_builder_that_never_ends_is_stopped(monkeypatch):
    monkeypatch.setattr(config_builders, "TIME_LIMIT_S", 1.0)
    with pytest.raises(BuilderError, match="did not finish"):
        config_builders._evaluate(
            ("def spin():\n    while True:\n        pass",), "spin()", json.dumps(config_builders._gpu())
        )


def cfg(block: int, warps: int) -> ConfigValue:
    return ConfigValue((("BLOCK_M", block),), warps, 3)


def test_pruning_drops_repeated_block_sizes_never_the_chosen_one():
    configs = (cfg(64, 2), cfg(64, 4), cfg(64, 8), cfg(128, 4), cfg(128, 8))
    kept, note = prune(configs, 3, {"BLOCK_M": 64, "num_warps": 8, "num_stages": 3})
    assert kept == (cfg(64, 2), cfg(64, 8), cfg(128, 4))
    assert "dropped config 2, 5 (their BLOCK sizes stay in other configs)" in note
    kept, note = prune(tuple(cfg(b, 4) for b in (16, 32, 64, 128)), 3, None)
    assert len(kept) == 4 and "4 kept, one per BLOCK-size combination" in note
    assert prune(configs, 6, None) == (configs, "")


def test_a_plain_launch_is_wrapped_in_an_autotune_around_it():
    source, label = wrapped(SOFTMAX, "_softmax_single_block_forward_kernel", [2, 4, 8, 16], [2, 3, 4])
    fn = find_kernels(ast.parse(source))["_softmax_single_block_forward_kernel"]
    configs = [ast.unparse(c) for c in autotune_configs(fn) or []]
    assert configs == [f"triton.Config({{}}, num_warps={w}, num_stages=3)" for w in (2, 4, 8, 16)]
    assert 'key=["n_cols"]' in source and "computed at run time" in label
    launch = source.split("_softmax_single_block_forward_kernel[(n_rows,)](")[1].split(")\n")[0]
    assert "num_warps" not in launch and "BLOCK_SIZE=BLOCK_SIZE" in launch
    with pytest.raises(VariantError, match="autotuned already"):
        wrapped(source, "_softmax_single_block_forward_kernel", [2, 4, 8, 16], [2, 3, 4])


PLAIN = """
import torch
import triton
import triton.language as tl


@triton.jit
def k(x_ptr, out_ptr, n, BLOCK: tl.constexpr):
    offs = tl.arange(0, BLOCK)
    {body}


def launch(x, out, n):
    k[(1,)](x, out, n, BLOCK=64, num_warps=4)
"""


@pytest.mark.parametrize(
    "body,extra",
    [
        ("tl.atomic_add(out_ptr + offs, tl.load(x_ptr + offs))", 'reset_to_zero=["out_ptr"]'),
        ("tl.store(x_ptr + offs, tl.load(x_ptr + offs) * 2)", 'restore_value=["x_ptr"]'),
        ("tl.store(out_ptr + offs, tl.load(x_ptr + offs))", None),
    ],
    ids=["atomics", "in-place", "plain"],
)
def test_a_wrapped_kernel_that_changes_memory_is_reset_between_benchmark_runs(body, extra):
    source, label = wrapped(PLAIN.format(body=body), "k", [2, 4, 8, 16], [2, 3, 4])
    assert label == "k: autotune around the launch: 4w3s/2w3s/8w3s/4w2s/4w4s"
    assert 'key=["n"]' in source
    assert (extra in source) if extra else ("reset_to_zero" not in source and "restore_value" not in source)


def context(source: str, kernel: str) -> ProposalContext:
    spec = ProblemSpec(name="x", reference_path=Path("reference.py"))
    return ProposalContext(
        problem=spec,
        stage="micro",
        iteration=1,
        parent_id=1,
        parent_source=source,
        parent_result=EvalResult(status=Status.ACCEPTED, kernels_launched={kernel: 1}),
        prompt_text="",
        prompt_id=1,
        tried_sources=set(),
    )


def test_micro_wraps_a_plain_launch_first_and_never_proposes_the_launch_as_it_is():
    proposer = SearchProposer(load_stage("micro"))
    first = proposer.propose(context(PLAIN.format(body="pass"), "k"))
    assert [c.label for c in first] == ["k: autotune around the launch: 4w3s/2w3s/8w3s/4w2s/4w4s"]
    everything = SearchProposer(load_stage("micro"), "exhaustive").propose(
        context(PLAIN.format(body="pass"), "k")
    )
    labels = [c.label for c in everything]
    assert "k: num_warps=4 num_stages=3" not in labels  # Triton's defaults written out: no new candidate
    assert "k: num_warps=8 num_stages=3" in labels and len(labels) == 1 + 11


def test_the_occupancy_search_does_not_rerun_the_default_launch():
    source = PLAIN.format(body="pass").replace(", num_warps=4", "")
    labels = [
        c.label for c in SearchProposer(load_stage("occupancy"), "exhaustive").propose(context(source, "k"))
    ]
    assert labels and "k: num_warps=4 num_stages=3" not in labels


def test_micro_on_the_matmul_tutorial_edits_the_written_out_configs():
    proposer = SearchProposer(load_stage("micro"))
    out = proposer.propose(context(MATMUL, "matmul_kernel"))
    assert out and all(len(literal_configs(c.source)) == 8 for c in out)
    assert any("8 kept, one per BLOCK-size combination" in n for n in proposer.notes)


def test_a_search_that_proposes_nothing_says_why():
    proposer = SearchProposer(load_stage("micro"))
    unreadable = built("from_disk()")
    assert proposer.propose(context(unreadable, "k")) == []
    assert any("NameError" in n for n in proposer.notes)
    tiling = SearchProposer(load_stage("tiling"))
    assert tiling.propose(context(unreadable, "k")) == []
    assert tiling.notes and "not searchable" in tiling.notes[-1]


def test_a_launch_search_with_everything_tried_says_so():
    ctx = context(PLAIN.format(body="pass"), "k")
    ctx.tried_sources.update(c.source for c in SearchProposer(load_stage("micro"), "exhaustive").propose(ctx))
    proposer = SearchProposer(load_stage("micro"))
    assert proposer.propose(ctx) == []
    assert proposer.notes == [
        "every point of the launch space was tried already (in this or an earlier stage)"
    ]
