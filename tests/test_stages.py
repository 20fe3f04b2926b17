"""Stages as data: every bundled stage loads and renders, the default pipeline's order, user-added stages."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from agent.data.paths import kernels_dir, profiles_dir
from agent.prompt import render as prompting
from agent.prompt import stages
from agent.prompt.gpus import find_gpu
from agent.prompt.render import SECTION_HEADERS, PromptContext, render_prompt, split_sections
from agent.prompt.stages import StageError, default_pipeline, list_stages, load_stage
from agent.source.stage_rules import check_constraints, stage_rules

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).parent / "fixtures"
SEED_METRICS = json.loads((FIXTURES / "seed_metrics.json").read_text(encoding="utf-8"))
L1 = (kernels_dir() / "l1_norm" / "kernel.py").read_text()
L1_REF = (kernels_dir() / "l1_norm" / "reference.py").read_text()
BUNDLED = ["algorithmic", "first", "micro", "occupancy", "tiling"]


def render(stage_name: str, **overrides) -> str:
    stage = load_stage(stage_name)
    fields = {
        "gpu": find_gpu("H100"),
        "stage": stage,
        "code": L1_REF if stage.starts_from == "reference" else L1,
        "metrics": SEED_METRICS,
    }
    fields.update(overrides)
    return render_prompt(PromptContext(**fields))


def test_every_bundled_stage_is_listed():
    assert set(BUNDLED) <= set(list_stages())


@pytest.mark.parametrize("name", BUNDLED)
def test_stage_loads_with_a_known_metric_set_and_template(name):
    stage = load_stage(name)
    assert stage.name == name
    assert stage.focus and stage.task and stage.guidelines and stage.tips
    assert stage.budget >= 1
    assert (profiles_dir() / f"{stage.metric_set}.toml").is_file()
    assert stage.template == f"{name}.j2"
    stage_rules(stage)  # every rule id it names exists


@pytest.mark.parametrize("name", BUNDLED)
def test_stage_renders_its_data_around_the_code(name):
    stage = load_stage(name)
    prompt = render(name)
    assert f"**Focus**: {stage.focus}\n" in prompt
    assert f"**Task**: {stage.task}\n" in prompt
    for p in stage.parameters:
        shown = "{" + ", ".join(str(v) for v in p.values) + "}" if p.values else p.description
        assert f"• `{p.name}`: {shown}\n" in prompt
    for line in stage.guidelines:
        assert f"- {line}\n" in prompt
    for tip in stage.tips:
        assert f"**{tip.title}**:\n{tip.text}\n" in prompt
    assert json.dumps(SEED_METRICS, indent=2) in prompt
    assert prompt.startswith("You are a Triton kernel optimization specialist.")
    assert prompt.rstrip().endswith("```python\n# <optimized Triton code>\n```")


@pytest.mark.parametrize("name", ["tiling", "algorithmic", "occupancy"])
def test_kernel_stages_show_the_current_code_in_the_seeds_section_order(name):
    prompt = render(name)
    sections = split_sections(prompt)
    assert list(sections)[1:] == list(SECTION_HEADERS)
    assert sections["[CURRENT CODE]"] == f"[CURRENT CODE]\n```python\n{L1.strip()}\n```\n\n"
    assert "\n\n\n" not in prompt.replace(L1.strip(), "")  # one blank line between sections (micro: three)


def test_first_stage_shows_the_reference_and_has_nothing_to_search():
    stage = load_stage("first")
    assert stage.starts_from == "reference"
    assert not any(p.values for p in stage.parameters)
    prompt = render("first", metrics=None, metrics_unavailable_reason="no kernel to profile yet")
    assert f"[REFERENCE CODE]\n```python\n{L1_REF.strip()}\n```\n\n[NCU PROFILING METRICS]\n" in prompt
    assert "[CURRENT CODE]" not in prompt
    assert "NCU metrics unavailable: no kernel to profile yet" in prompt
    assert "\n\n\n" not in prompt.replace(L1_REF.strip(), "")


def test_micro_still_renders_the_seed_layout():
    prompt = render("micro", gpu=find_gpu("4090"), code=L1)
    assert "**Autotune Tip (safe)**:\n" in prompt
    assert "\n\n\n\n[CURRENT CODE]" in prompt  # the seed's three blank lines


def test_default_pipeline_order():
    assert default_pipeline() == ["tiling", "algorithmic", "occupancy", "micro"]
    assert default_pipeline(has_kernel=False) == ["first", "tiling", "algorithmic", "occupancy", "micro"]
    orders = [load_stage(n).order for n in default_pipeline(has_kernel=False)]
    assert orders == sorted(orders)


def test_unknown_stage_is_a_stage_error_listing_the_known_ones():
    with pytest.raises(StageError) as info:
        load_stage("vectorise")
    for name in BUNDLED:
        assert name in str(info.value)


# ---------------------------------------------------------------- user stages


@pytest.fixture
def prompts_copy(monkeypatch, tmp_path):
    """A scratch copy of prompts/ that the stage loader and the renderer both read."""
    root = tmp_path / "prompts"
    shutil.copytree(stages.prompts_dir(), root)
    monkeypatch.setattr(stages, "prompts_dir", lambda: root)
    monkeypatch.setattr(prompting, "prompts_dir", lambda: root)
    prompting.environment.cache_clear()
    yield root
    prompting.environment.cache_clear()


def _docs_example() -> tuple[str, str]:
    text = (ROOT / "docs" / "stages.md").read_text(encoding="utf-8")
    example = text.split("### Worked example", 1)[1]
    toml = re.search(r"```toml\n(.*?)```", example, re.S).group(1)
    template = re.search(r"```jinja\n(.*?)```", example, re.S).group(1)
    return toml, template


def test_the_docs_worked_example_is_a_working_stage(prompts_copy):
    toml, template = _docs_example()
    (prompts_copy / "stages" / "vectorize.toml").write_text(toml, encoding="utf-8")
    (prompts_copy / "vectorize.j2").write_text(template, encoding="utf-8")
    assert "vectorize" in list_stages()
    stage = load_stage("vectorize")
    assert default_pipeline() == ["tiling", "algorithmic", "vectorize", "occupancy", "micro"]
    assert stage_rules(stage) == (
        "parses",
        "model-new",
        "jit-kernel",
        "literal-configs",
        "parameter-values",
        "kernels-kept",
        "block-sizes",
        "grid-mapping",
        "kernel-signatures",
        "model-interface",
    )
    prompt = render("vectorize")
    assert "Reminder: every BLOCK size and the grid stay exactly as they are in this stage." in prompt
    assert "• `eviction_policy`: 'evict_first' or 'evict_last', per load\n" in prompt
    hinted = L1.replace("mask=mask, other=0.0)", "mask=mask, other=0.0, eviction_policy='evict_first')")
    assert check_constraints(stage, L1, hinted) == []
    bigger = L1.replace("{'BLOCK_SIZE_D': 256}", "{'BLOCK_SIZE_D': 512}")
    found = check_constraints(stage, L1, bigger)
    assert [v.rule for v in found] == ["vectorize.block-sizes"]
    assert found[0].message.startswith(
        "vectorize stage: BLOCK_SIZE_D changed from 256 to 512 in config 1 of l1_norm_kernel_autotune"
    )


def test_a_stage_can_stay_out_of_the_default_pipeline(prompts_copy):
    toml, template = _docs_example()
    toml = toml.replace("order = 25", "in_default_pipeline = false")
    (prompts_copy / "stages" / "vectorize.toml").write_text(toml, encoding="utf-8")
    (prompts_copy / "vectorize.j2").write_text(template, encoding="utf-8")
    assert load_stage("vectorize").name == "vectorize"
    assert "vectorize" not in default_pipeline()


@pytest.mark.parametrize(
    "constraints,message",
    [
        ('rules = ["block-sizes", "warp-drive"]', "unknown constraint rule"),
        ('rules = ["num-stages"]', "num_stages_max_delta"),
    ],
)
def test_bad_rules_in_a_user_stage_are_stage_errors(prompts_copy, constraints, message):
    toml, template = _docs_example()
    toml = re.sub(r"rules = \[.*\]", constraints, toml)
    (prompts_copy / "stages" / "vectorize.toml").write_text(toml, encoding="utf-8")
    (prompts_copy / "vectorize.j2").write_text(template, encoding="utf-8")
    with pytest.raises(StageError, match=message):
        load_stage("vectorize")
