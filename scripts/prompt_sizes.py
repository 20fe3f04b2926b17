"""Sizes of the first-stage and micro-stage prompts of every bundled problem, as the loop renders them.

    PYTHONPATH=. python scripts/prompt_sizes.py            # a table (tokens = characters / 4)
    PYTHONPATH=. python scripts/prompt_sizes.py --show l1_norm   # the three prompts docs/llm.md shows

Tokens are estimated as characters / 4: tiktoken's o200k_base needs its vocabulary file from
openaipublic.blob.core.windows.net, which this build machine cannot reach. The prompts carry the seed's
ncu metrics (tests/fixtures/seed_metrics.json) where a profile would be, so their size is that of a GPU
run's prompt. Run against an older checkout (no [PROBLEM] block) it measures the prompts before it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from agent.data.paths import kernels_dir
from agent.problem import load_problem
from agent.prompt.gpus import find_gpu
from agent.prompt.render import HistoryEntry, PromptContext, render_prompt
from agent.prompt.stages import load_stage

ROOT = Path(__file__).resolve().parent.parent
METRICS = json.loads((ROOT / "tests" / "fixtures" / "seed_metrics.json").read_text())
NEW = "problem" in PromptContext.model_fields


def _extra(spec, timed: bool) -> dict:
    """The [PROBLEM] block's data, where this checkout has it. `timed`: the H200 seed's measured times
    (../shared/FACTS.md: 7.20 ms, eager 12.34 ms, torch.compile 9.36 ms; roofline 3.58 ms at 4.8 TB/s)."""
    if not NEW:
        return {}
    from agent.prompt.facts import CPU_UNTIMED, problem_facts
    from agent.prompt.render import Standing

    standing = Standing(median_ms=7.203, speedup_eager=1.713, speedup_compiled=1.299, pct_roofline=49.7)
    return {
        "problem": problem_facts(spec, small=False),
        "standing": standing if timed else Standing(untimed=CPU_UNTIMED),
    }


def render(name: str, stage: str, timed: bool = True, history: list | None = None) -> str:
    spec = load_problem(name)
    code = spec.reference_path.read_text() if stage == "first" else spec.kernel_path.read_text()
    ctx = PromptContext(
        gpu=find_gpu("h200"),
        stage=load_stage(stage),
        code=code,
        metrics=METRICS if stage != "first" else None,
        metrics_unavailable_reason="no kernel yet: nothing to profile" if stage == "first" else None,
        history=history or [],
        **_extra(spec, timed),
    )
    return render_prompt(ctx)


def history() -> list:
    entries = [
        (
            "tiling",
            1,
            "llm sample 1",
            "incorrect",
            "BLOCK_SIZE 1024->2048 (+6/-4 lines)",
            None,
            "max abs err 0.31 at [17, 40960] (tolerance 1e-05). The kernel reads past the row end.",
        ),
        ("tiling", 2, "llm sample 1", "accepted", "+12/-9 lines", 6.912, ""),
        (
            "micro",
            1,
            "llm sample 1",
            "constraint",
            "num_warps 8->16 (+1/-1 lines)",
            None,
            "micro.config-count: the autotune list has 7 configs; the stage allows 3 to 6.",
        ),
    ]
    if not NEW:
        return [HistoryEntry(label=e[2], outcome=e[3], detail=e[6], time_ms=e[5]) for e in entries]
    return [
        HistoryEntry(stage=s, iteration=i, label=lab, outcome=o, change=c, time_ms=t, detail=d)
        for s, i, lab, o, c, t, d in entries
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--show", metavar="PROBLEM", help="print the three example prompts of PROBLEM")
    args = ap.parse_args()
    if args.show:
        for title, text in (
            ("first stage", render(args.show, "first")),
            ("tiling after a timed start", render(args.show, "tiling")),
            ("micro with history", render(args.show, "micro", history=history())),
        ):
            print(f"===== {title}: {len(text)} chars, ~{len(text) // 4} tokens\n{text}")
        return
    print("| problem | first (tokens) | micro (tokens) | micro with history (tokens) |")
    print("| --- | --- | --- | --- |")
    for name in sorted(p.name for p in kernels_dir().iterdir() if (p / "reference.py").exists()):
        sizes = [
            len(render(name, "first")),
            len(render(name, "micro")),
            len(render(name, "micro", history=history())),
        ]
        print(f"| {name} | " + " | ".join(f"{n // 4}" for n in sizes) + " |")


if __name__ == "__main__":
    main()
