"""`ncu-agent experiment` end to end on the CPU, through a real OpenAI-compatible server on loopback.

Known truth: arm A's model ("good") answers like agent.llm.scripted (one more autotune config, correct code);
arm B's model ("broken") always answers with code that does not parse. A must beat B on correctness with a
significant paired test: six problems (the fewest with which an exact paired test can reach p < 0.05), two
samples each. On the CPU the check of a (problem, source) is reused across units, so the 24 runs cost about
12 evaluations. The same experiment is then resumed after simulated kills, and its page is opened in
headless Chromium.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from agent.experiment.design import ExperimentError, parse_arm
from agent.experiment.units import Unit, schedule, unit_dir, unit_seed
from agent.llm.scripted import answer

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
BROKEN = (
    "This version fuses the loads and should be faster.\n\n```python\nimport torch\n\n"
    "class ModelNew(torch.nn.Module):\n    def forward(self, x)\n        return x\n```\n"
)
EDITABLE = ["l1_norm", "fused_elementwise", "layernorm", "matmul_fp16"]  # the scripted edit applies


class ModelServer:
    """Answers by the requested model: 'good' like agent.llm.scripted, 'broken' with unparsable code.
    Remembers (model, seed) of every request."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, Any]] = []
        seen = self.seen

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                request = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
                prompt = "\n".join(str(m.get("content", "")) for m in request["messages"])
                model = request.get("model")
                seen.append((model, request.get("seed")))
                text = answer(prompt) if model == "good" else BROKEN
                n = int(request.get("n") or 1)
                body = json.dumps(
                    {
                        "id": "chatcmpl-experiment",
                        "object": "chat.completion",
                        "created": int(time.time()),
                        "model": model,
                        "choices": [
                            {
                                "index": i,
                                "message": {"role": "assistant", "content": text},
                                "finish_reason": "stop",
                            }
                            for i in range(n)
                        ],
                        "usage": {
                            "prompt_tokens": len(prompt) // 4,
                            "completion_tokens": n * len(text) // 4,
                            "total_tokens": (len(prompt) + n * len(text)) // 4,
                        },
                    }
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    env = {**os.environ, "OPENAI_API_KEY": "test-key-not-secret", "PYTHONPATH": str(ROOT)}
    env.pop("NCU_AGENT_MODEL", None)
    proc = subprocess.run(
        [sys.executable, "-m", "agent", "experiment", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return proc


def _problems(base: Path) -> list[str]:
    """Six problems: the four bundled ones the scripted model can edit, and two resized l1_norm copies."""
    out = [str(ROOT / "kernels" / name) for name in EDITABLE]
    for name, dim in (("l1_norm_4099", 4099), ("l1_norm_6007", 6007)):
        folder = base / name
        shutil.copytree(ROOT / "kernels" / "l1_norm", folder)
        (folder / "problem.toml").write_text(
            f'name = "{name}"\n[small_shapes]\nbatch_size = 2\ndim = {dim}\n'
        )
        out.append(str(folder))
    return out


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    base = tmp_path_factory.mktemp("experiment")
    server = ModelServer()
    exp_dir = base / "exp"
    args = [
        *_problems(base),
        "--arm",
        "A=model:good",
        "--arm",
        "B=model:broken",
        "--samples",
        "2",
        "--seed",
        "0",
        "--stages",
        "micro",
        "--max-iterations",
        "1",
        "--llm-samples",
        "1",
        "--base-url",
        server.base_url,
        "--resamples",
        "2000",
        "--out",
        str(exp_dir),
    ]
    proc = _cli(*args)
    yield exp_dir, proc, server
    server.close()


def _results(exp_dir: Path) -> dict[str, Any]:
    return json.loads((exp_dir / "results.json").read_text())


# --- pure pieces -------------------------------------------------------------------------------------------
def test_arm_syntax():
    arm = parse_arm("B=stage:./x/micro_rules.toml+tiling,prompts=./my_prompts,temperature:0.2,model:m")
    assert arm.name == "B" and arm.llm == {"temperature": "0.2", "model": "m"}
    assert arm.stages[0].endswith("/x/micro_rules.toml") and Path(arm.stages[0]).is_absolute()
    assert arm.stages[1] == "tiling" and arm.prompts.endswith("/my_prompts")
    for bad, why in (
        ("A", "NAME=SPEC"),
        ("A=api_key:sk-123", "never from the command line"),
        ("A=max_requests:3", "budgets are the same for every arm"),
        ("A=colour:red", "unknown key 'colour'"),
        ("A=model:x,model:y", "given twice"),
        ("a/b=model:x", "an arm's name"),
    ):
        with pytest.raises(ExperimentError, match=why):
            parse_arm(bad)


def test_template_sets_stage_files_and_prompt_folders(tmp_path):
    """An arm's stage TOML (with its own template next to it) and an arm's prompts folder (one part
    replaced, the rest inherited) reach the rendered prompt; the default arm's prompt is untouched."""
    from agent.config import RunOptions
    from agent.experiment.design import ExperimentConfig, prepare_arm
    from agent.prompt.gpus import find_gpu
    from agent.prompt.render import PromptContext, render_prompt, template_dirs

    stages = tmp_path / "my_stages"
    stages.mkdir()
    toml = (ROOT / "prompts" / "stages" / "micro.toml").read_text()
    (stages / "micro_rules.toml").write_text(
        toml.replace('name = "micro"', 'name = "micro_rules"').replace('"micro.j2"', '"micro_rules.j2"')
    )
    (stages / "micro_rules.j2").write_text('RULES FIRST\n{% include "micro.j2" %}')
    folder = tmp_path / "prompts_b"
    (folder / "parts").mkdir(parents=True)
    (folder / "parts" / "metrics.j2").write_text("[NCU PROFILING METRICS]\nMETRICS HIDDEN\n")
    arms = [
        parse_arm("A=stage:micro"),
        parse_arm(f"B=stage:{stages / 'micro_rules.toml'}"),
        parse_arm(f"C=prompts:{folder},temperature:0.3"),
    ]
    cfg = ExperimentConfig(
        arms=arms, problems=[], samples=1, run=RunOptions(stages=["micro"], llm_overrides={"model": "m"})
    )
    setups = [prepare_arm(cfg, a) for a in arms]
    assert setups[2].plan.llm_settings.temperature == 0.3 and setups[0].plan.llm_settings.temperature == 1.0
    assert len({s.fingerprint for s in setups}) == 3
    prompts = []
    for s in setups:
        ctx = PromptContext(gpu=find_gpu("h200"), stage=s.plan.stages[0], code="x = 1", metrics=None)
        with template_dirs(*s.template_dirs):
            prompts.append(render_prompt(ctx))
    assert prompts[1] == "RULES FIRST\n" + prompts[0]
    assert "METRICS HIDDEN" in prompts[2] and "METRICS HIDDEN" not in prompts[0]
    assert render_prompt(ctx) == prompts[0]  # outside the block: prompts/ again
    with pytest.raises(ExperimentError, match=r"arm D: .*unknown stage"):
        prepare_arm(cfg, parse_arm("D=stage:nope"))


def test_schedule_interleaves_and_rotates():
    order = schedule(["A", "B"], ["p", "q"], 2)
    assert [(u.arm, u.problem, u.sample) for u in order] == [
        ("A", "p", 0), ("B", "p", 0), ("B", "q", 0), ("A", "q", 0),
        ("A", "p", 1), ("B", "p", 1), ("B", "q", 1), ("A", "q", 1),
    ]  # fmt: skip
    three = schedule(["A", "B", "C"], ["p"], 3)
    assert [u.arm for u in three] == list("ABCBCACAB")  # each arm first once
    assert unit_seed(0, "p", 1) == unit_seed(0, "p", 1) != unit_seed(0, "p", 0)


def _fake_unit(exp_dir: Path, u: Unit, start_ms: float, cand_ms: list[float | None]) -> None:
    """A finished unit as a GPU run would leave it: the start, then candidates (None: incorrect)."""
    from agent.batch.inputs import write_atomic
    from agent.experiment.units import UnitOutcome
    from agent.records import Candidate, EvalResult, Status, Timings, TimingStats
    from agent.store import Store

    def result(ms: float | None) -> EvalResult:
        if ms is None:
            return EvalResult(status=Status.INCORRECT, reason="wrong values")
        return EvalResult(status=Status.ACCEPTED, timings=Timings(candidate=TimingStats(times_ms=[ms] * 5)))

    udir = unit_dir(exp_dir, u)
    udir.mkdir(parents=True)
    store = Store.open_dir(udir)
    run_id = store.start_run(u.problem, "cuda", "H100", "llm", "scripted", {"seed": 1})
    best, best_ms = "start", start_ms
    for i, ms in enumerate([start_ms, *cand_ms]):
        source = "start" if i == 0 else f"cand {i}"
        cid = store.add_candidate(
            run_id, i, Candidate(source=source, proposer="start" if i == 0 else "llm", stage="micro")
        )
        store.add_evaluation(cid, result(ms))
        if ms is not None and ms < best_ms * 0.99:
            best, best_ms = source, ms
    store.finish_run(run_id, "done")
    store.close()
    (udir / "best_kernel.py").write_text(best)
    outcome = UnitOutcome(arm=u.arm, problem=u.problem, sample=u.sample, seed=1, status="done", run_id=run_id)
    write_atomic(udir / "unit.json", outcome.model_dump_json())


def test_speedups_from_records_and_a_faster_arm_wins(tmp_path):
    """The GPU path without a GPU: units recorded as timed runs. B's candidates are 1.3x faster than the
    start by construction, A's 1.05x (with noise and one incorrect candidate each): B wins on speedup."""
    import numpy as np

    from agent.batch.inputs import ProblemEntry
    from agent.config import RunOptions
    from agent.experiment.design import ExperimentConfig
    from agent.experiment.findings import analyze
    from agent.experiment.html import render_html

    problems = [f"p{i}" for i in range(7)]
    cfg = ExperimentConfig(
        arms=[parse_arm("A=model:a"), parse_arm("B=model:b")],
        problems=[ProblemEntry(name=p, path=tmp_path / p) for p in problems],
        samples=2,
        run=RunOptions(),
        machine="NVIDIA H100 80GB HBM3",
    )
    cfg.save(tmp_path)
    rng = np.random.default_rng(0)
    for u in schedule(["A", "B"], problems, 2):
        gain = (1.05 if u.arm == "A" else 1.3) * float(np.exp(rng.normal(0, 0.03)))
        _fake_unit(tmp_path, u, 2.0, [None, 2.0 / gain, 2.2])
    r = analyze(tmp_path)
    assert r.metric == "speedup" and r.timed
    (c,) = r.primary
    assert c.winner == "B" and c.wins == 7 and c.p == pytest.approx(2 / 2**7)
    assert 1.15 < c.ci_low < c.estimate < c.ci_high < 1.35
    assert c.verdict.startswith("B beats A on speedup: ratio 1.2")
    a = next(s for s in r.summaries if s.name == "A")
    assert a.rates["correct"] == pytest.approx(2 / 3) and a.first_improvement_median == 2.0
    assert a.best_speedup["p0"] == pytest.approx(1.05, rel=0.1)
    html = render_html(r)
    assert "B beats A on speedup" in html and html.count("<svg") == 3


# --- end to end ---------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_the_better_arm_wins_on_correctness(experiment):
    exp_dir, proc, _ = experiment
    r = _results(exp_dir)
    assert r["metric"] == "correct" and not r["timed"]
    (c,) = r["primary"]
    assert c["arm_a"] == "A" and c["arm_b"] == "B" and len(c["problems"]) == 6
    assert c["losses"] == 6 and c["wins"] == 0  # from B's side
    assert c["significant"] and c["winner"] == "A" and c["p"] == pytest.approx(2 / 2**6)
    assert c["verdict"].startswith(
        "A beats B on correctness rate: difference +1.00 (A−B), 95% CI +1.00 to +1.00"
    )
    assert "A beats B on correctness rate" in proc.stdout  # the terminal report
    summaries = {s["name"]: s for s in r["summaries"]}
    assert summaries["A"]["rates"]["correct"] == 1.0 and summaries["B"]["rates"]["correct"] == 0.0
    assert summaries["B"]["rates"]["compile"] == 0.0 and summaries["A"]["first_improvement_median"] == 1.0
    assert summaries["A"]["tokens_total"] > 0
    assert any("speedup: not measured" in n for n in r["notes"])


@pytest.mark.slow  # the module's experiment fixture runs 16 units
def test_every_unit_is_a_run_directory_with_the_same_seed_in_every_arm(experiment):
    exp_dir, _, server = experiment
    cfg = json.loads((exp_dir / "experiment.json").read_text())
    assert cfg["machine"] == "cpu" and [a["name"] for a in cfg["arms"]] == ["A", "B"]
    seeds: dict[tuple[str, int], set[int]] = {}
    for p in cfg["problems"]:
        for k in range(2):
            for arm in ("A", "B"):
                udir = unit_dir(exp_dir, Unit(arm, p["name"], k))
                db = sqlite3.connect(udir / "records.sqlite")
                runs = db.execute("SELECT status, settings FROM runs").fetchall()
                assert len(runs) == 1 and runs[0][0] == "done"
                settings = json.loads(runs[0][1])
                assert settings["arm"] == arm and settings["llm"]["model"] == (
                    "good" if arm == "A" else "broken"
                )
                seeds.setdefault((p["name"], k), set()).add(settings["seed"])
                assert (udir / "best_kernel.py").exists() and json.loads((udir / "unit.json").read_text())
    assert all(len(s) == 1 for s in seeds.values())  # the same seed for A and B
    assert len({next(iter(s)) for s in seeds.values()}) == 12  # and another for each (problem, sample)
    sent = {seed for _, seed in server.seen}
    assert sent == {next(iter(s)) for s in seeds.values()}  # the seed went to the endpoint


@pytest.mark.slow  # the module's experiment fixture runs 16 units
def test_show_works_on_a_unit(experiment):
    from typer.testing import CliRunner

    from agent.cli import app

    exp_dir, _, _ = experiment
    result = CliRunner().invoke(app, ["show", str(exp_dir / "runs" / "B" / "l1_norm" / "s0")])
    assert result.exit_code == 0, result.output
    assert "compile_error" in result.output


@pytest.mark.slow  # the module's experiment fixture runs 16 units
def test_resume_reruns_only_unfinished_units(experiment, tmp_path):
    exp_dir, _, server = experiment
    copy = tmp_path / "exp"
    shutil.copytree(exp_dir, copy)
    killed = unit_dir(copy, Unit("A", "layernorm", 1))  # killed mid-run: no unit.json, run still 'running'
    (killed / "unit.json").unlink()
    sqlite3.connect(killed / "records.sqlite").execute("UPDATE runs SET status='running', finished_at=NULL")
    shutil.rmtree(unit_dir(copy, Unit("B", "matmul_fp16", 0)))  # killed before its records existed
    errored = unit_dir(copy, Unit("B", "l1_norm_4099", 1))
    (errored / "unit.json").write_text((errored / "unit.json").read_text().replace('"done"', '"error"'))
    before = len(server.seen)
    proc = _cli("--resume", str(copy), "--resamples", "2000")
    assert "21 of 24 units done already; 3 to run" in proc.stdout
    assert len(server.seen) == before  # their replies came back from their caches
    for udir in (copy / "runs").glob("*/*/s*"):
        runs = sqlite3.connect(udir / "records.sqlite").execute("SELECT status FROM runs").fetchall()
        assert runs == [("done",)], udir  # one run per unit: nothing recorded twice
    assert _results(copy)["primary"][0]["verdict"] == _results(exp_dir)["primary"][0]["verdict"]
    again = _cli("--resume", str(copy), "--analyze", "--metric", "compile", "--no-html")
    assert "24 of 24" not in again.stdout and "A beats B on compile rate" in again.stdout


@pytest.mark.slow  # the module's experiment fixture runs 16 units
def test_html_report_in_chromium(experiment, tmp_path):
    exp_dir, _, _ = experiment
    page = exp_dir / "report.html"
    html = page.read_text()
    assert "A beats B on correctness rate" in html and html.count("<svg") >= 3
    assert "<script" not in html
    assert not re.search(r"""(src|href)\s*=\s*["'](https?:)?//""", html)  # nothing to fetch: self-contained
    if CHROMIUM is None:
        pytest.skip("chromium not installed (.ci/setup_chromium.sh): the page was checked as text only")
    shot = tmp_path / "experiment.png"
    subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            f"--user-data-dir={tmp_path / 'profile'}",
            f"--screenshot={shot}",
            "--window-size=1400,2400",
            page.as_uri(),
        ],
        capture_output=True,
        timeout=120,
        check=True,
    )
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 50_000
