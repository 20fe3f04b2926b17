"""Rendering stage prompts: the micro stage must reproduce the seed prompt byte for byte."""

from __future__ import annotations

import difflib
import json
import re
from pathlib import Path

import pytest

from agent.prompt import render as prompting
from agent.prompt import stages
from agent.prompt.gpus import GpuSpec, find_gpu
from agent.prompt.render import (
    PREAMBLE,
    SECTION_HEADERS,
    HistoryEntry,
    PromptContext,
    render_prompt,
    split_sections,
)
from agent.prompt.stages import Stage, StageError, list_stages, load_stage

FIXTURES = Path(__file__).parent / "fixtures"
SEED_PROMPT = (FIXTURES / "seed_prompt.txt").read_text(encoding="utf-8")
SEED_METRICS = json.loads((FIXTURES / "seed_metrics.json").read_text(encoding="utf-8"))
# The seed's own copy, when the checkout sits next to ../shared (CI copies it there).
SHARED_SEED = Path(__file__).resolve().parents[1].parent / "shared" / "seed" / "001_ea722989ee827a64.txt"


def seed_code() -> str:
    code = SEED_PROMPT.split("[CURRENT CODE]\n```python\n", 1)[1]
    return code.split("\n```\n\n[NCU PROFILING METRICS]", 1)[0]


def context(**overrides) -> PromptContext:
    fields = {
        "gpu": find_gpu("4090"),
        "stage": load_stage("micro"),
        "code": seed_code(),
        "metrics": SEED_METRICS,
    }
    fields.update(overrides)
    return PromptContext(**fields)


def assert_same_text(expected: str, actual: str, what: str) -> None:
    if expected != actual:
        diff = "".join(
            difflib.unified_diff(
                expected.splitlines(keepends=True),
                actual.splitlines(keepends=True),
                fromfile=f"seed {what}",
                tofile=f"rendered {what}",
            )
        )
        pytest.fail(f"{what} differs from the seed (repr shows whitespace):\n{diff}\n{actual!r}")


def test_fixture_is_the_shared_seed():
    if not SHARED_SEED.is_file():
        pytest.skip("../shared/seed is not next to this checkout")
    assert SHARED_SEED.read_text(encoding="utf-8") == SEED_PROMPT


def test_metrics_fixture_is_the_seeds_json():
    assert json.dumps(SEED_METRICS, indent=2) in SEED_PROMPT


@pytest.mark.parametrize("header", [PREAMBLE, *SECTION_HEADERS])
def test_golden_micro_prompt_section(header):
    expected = split_sections(SEED_PROMPT)
    actual = split_sections(render_prompt(context()))
    assert header in expected, f"the seed has no {header!r} section"
    assert header in actual, f"the rendered prompt has no {header!r} section"
    assert_same_text(expected[header], actual[header], f"section {header!r}")


def test_golden_micro_prompt_whole():
    assert_same_text(SEED_PROMPT, render_prompt(context()), "prompt")


def test_sections_in_order_and_lossless():
    prompt = render_prompt(context())
    sections = split_sections(prompt)
    assert list(sections) == [PREAMBLE, *SECTION_HEADERS]
    assert "".join(sections.values()) == prompt


def test_split_sections_of_text_without_headers():
    assert split_sections("hello") == {PREAMBLE: "hello"}
    assert split_sections("") == {PREAMBLE: ""}


def test_code_is_rendered_whatever_its_surrounding_newlines():
    a = render_prompt(context(code="\n\n" + seed_code() + "\n\n"))
    b = render_prompt(context(code=seed_code().replace("\n", "\r\n")))
    assert a == b == SEED_PROMPT


def test_code_with_backtick_fence_gets_a_longer_fence():
    code = 'DOC = """\n```python\nx = 1\n```\n"""\nclass ModelNew: pass'
    section = split_sections(render_prompt(context(code=code)))["[CURRENT CODE]"]
    assert section == f"[CURRENT CODE]\n````python\n{code}\n````\n\n"


@pytest.mark.parametrize("metrics", [None, {}])
def test_unavailable_metrics_say_why(metrics):
    prompt = render_prompt(context(metrics=metrics, metrics_unavailable_reason="ncu needs counter access"))
    section = split_sections(prompt)["[NCU PROFILING METRICS]"]
    assert section == "[NCU PROFILING METRICS]\nNCU metrics unavailable: ncu needs counter access\n\n"
    # The task asks for no analysis of metrics that are not there; the rest keeps the seed's shape.
    task = split_sections(prompt)["**Task**"]
    assert "no NCU metrics are available" in task and "Analyze the NCU metrics" not in task
    for header in (PREAMBLE, *SECTION_HEADERS):
        if header not in ("[NCU PROFILING METRICS]", "**Task**"):
            assert split_sections(prompt)[header] == split_sections(SEED_PROMPT)[header]


def test_unavailable_metrics_without_a_reason():
    section = split_sections(render_prompt(context(metrics=None)))["[NCU PROFILING METRICS]"]
    assert "NCU metrics unavailable: no profile was taken" in section


def test_metrics_keep_kernel_names_verbatim():
    metrics = {"void gemm<float, 128>(float*)": [{"launch__grid_size": 1, "ratio": 0.5}]}
    section = split_sections(render_prompt(context(metrics=metrics)))["[NCU PROFILING METRICS]"]
    assert json.dumps(metrics, indent=2) in section
    assert "&lt;" not in section


def test_ncu_rules_render_ranked_when_given():
    rules = [
        "Uncoalesced global accesses:\n  18% of the total sectors are excessive.",
        "Long scoreboard stalls dominate.",
    ]
    section = split_sections(render_prompt(context(ncu_rules=rules)))["[NCU PROFILING METRICS]"]
    expected_metrics = split_sections(SEED_PROMPT)["[NCU PROFILING METRICS]"].rstrip("\n")
    assert section == (
        expected_metrics + "\n\nNCU analysis (Nsight Compute's findings, most important first):\n"
        "1. Uncoalesced global accesses: 18% of the total sectors are excessive.\n"
        "2. Long scoreboard stalls dominate.\n\n"
    )


def test_history_renders_when_given():
    history = [
        HistoryEntry(label="iter 1: num_warps 8->16", outcome="accepted", time_ms=7.2104),
        HistoryEntry(label="iter 2: num_stages 2->3", outcome="incorrect", detail="max abs err\n 0.3"),
        HistoryEntry(label="iter 3", outcome="no_code"),
    ]
    section = split_sections(render_prompt(context(history=history)))["[NCU PROFILING METRICS]"]
    assert section.endswith(
        "\n\nEarlier attempts (oldest first):\n"
        "- iter 1: num_warps 8->16: accepted, 7.210 ms\n"
        "- iter 2: num_stages 2->3: incorrect — max abs err 0.3\n"
        "- iter 3: no_code\n\n"
    )
    assert section.startswith(split_sections(SEED_PROMPT)["[NCU PROFILING METRICS]"].rstrip("\n"))


def test_rules_and_history_together_keep_the_other_sections():
    prompt = render_prompt(context(ncu_rules=["rule"], history=[HistoryEntry(label="a", outcome="accepted")]))
    sections = split_sections(prompt)
    assert list(sections) == [PREAMBLE, *SECTION_HEADERS]
    metrics = sections["[NCU PROFILING METRICS]"]
    assert metrics.index("NCU analysis") < metrics.index("Earlier attempts")
    for header in ("[CURRENT CODE]", "**Task**", "OUTPUT RULES"):
        assert sections[header] == split_sections(SEED_PROMPT)[header]


def test_unknown_gpu_fields_are_left_out():
    gpu = GpuSpec(name="NVIDIA Future GPU", sms=170, warp_size=32, smem_per_sm_kb=100.0)
    section = split_sections(render_prompt(context(gpu=gpu)))["# Target GPU"]
    assert section == (
        "# Target GPU\nGPU Name: NVIDIA Future GPU\n"
        "• Number of SMs: 170\n• Warp size: 32\n• Shared memory capacity per SM: 100 KB\n\n"
    )


@pytest.mark.parametrize("name", ["A100", "H100", "H200", "L40S"])
def test_every_table_gpu_renders_fully(name):
    section = split_sections(render_prompt(context(gpu=find_gpu(name))))["# Target GPU"]
    assert section.count("\n• ") == 14
    numbers = "\n".join(line for line in section.splitlines() if "Compute Capability" not in line)
    assert not re.search(r"\.0( |$)", numbers, re.MULTILINE), "integers are shown without '.0'"


def test_micro_stage_data():
    stage = load_stage("micro")
    assert stage.name == "micro"
    assert stage.focus == "Final micro-optimizations (small adjustments only)."
    assert stage.parameter("num_warps").values == (2, 4, 8, 16)
    assert stage.parameter("num_stages").values == (2, 3, 4)
    assert len(stage.guidelines) == 3
    assert stage.metric_set == "seed"
    assert stage.template == "micro.j2"
    assert stage.budget >= 1
    assert stage.constraints.num_stages_max_delta == 1
    assert "micro" in list_stages()


def test_unknown_stage_lists_known_ones():
    with pytest.raises(StageError) as info:
        load_stage("warp-speed")
    assert "warp-speed" in str(info.value)
    assert "micro" in str(info.value)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("name", ["../stages/micro", "", "micro.toml", "/etc/passwd"])
def test_stage_names_cannot_reach_other_files(name):
    with pytest.raises(StageError):
        load_stage(name)


def test_a_new_stage_is_a_toml_and_a_template(monkeypatch, tmp_path):
    (tmp_path / "stages").mkdir()
    (tmp_path / "parts").mkdir()
    for part in (stages.prompts_dir() / "parts").iterdir():
        (tmp_path / "parts" / part.name).write_text(part.read_text(encoding="utf-8"), encoding="utf-8")
    (tmp_path / "stages" / "tiling.toml").write_text(
        'name = "tiling"\ntitle = "Tiling"\nfocus = "Pick tile sizes."\ntask = "Tile it."\n'
        'template = "tiling.j2"\nmetric_set = "memory"\n'
        '[[parameters]]\nname = "BLOCK_SIZE"\ndescription = "a power of two, 64 to 4096"\n',
        encoding="utf-8",
    )
    (tmp_path / "tiling.j2").write_text(
        '{% include "parts/stage.j2" %}\n{% include "parts/task.j2" %}\n', encoding="utf-8"
    )
    base = context()
    monkeypatch.setattr(stages, "prompts_dir", lambda: tmp_path)

    monkeypatch.setattr(prompting, "prompts_dir", lambda: tmp_path)
    prompting.environment.cache_clear()
    try:
        assert list_stages() == ["tiling"]
        stage = load_stage("tiling")
        assert isinstance(stage, Stage)
        prompt = render_prompt(base.model_copy(update={"stage": stage}))
    finally:
        prompting.environment.cache_clear()
    assert prompt == (
        "[OPTIMIZATION STAGE]\n\n## Current Optimization Stage\n\n**Focus**: Pick tile sizes.\n\n"
        "**Parameters to Tune**:\n• `BLOCK_SIZE`: a power of two, 64 to 4096\n**Task**: Tile it.\n"
    )


def test_invalid_stage_file_is_a_stage_error(monkeypatch, tmp_path):
    (tmp_path / "stages").mkdir()
    (tmp_path / "stages" / "bad.toml").write_text('name = "bad"\nfocus = "x"\ntypo_field = 1\n')
    monkeypatch.setattr(stages, "prompts_dir", lambda: tmp_path)
    with pytest.raises(StageError, match="invalid"):
        load_stage("bad")
