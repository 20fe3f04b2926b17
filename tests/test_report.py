"""Report pages, `diff` and `export`, on the real H200 run of kernels/l1_norm and on small synthetic stores.

The real run (docs/runs/2026-11-26_h200_run_l1_norm) has 13 candidates of the micro stage, all accepted; the
loop kept #2 (6.558 ms against the starting kernel's 7.183 ms). Every test works on a copy of it.
"""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agent.cli import app
from agent.records import Candidate, EvalResult, ProfileRecord, Status, Timings, TimingStats
from agent.report.batch import is_batch_dir
from agent.report.data import load_run_dir
from agent.report.page import write_batch_report, write_run_report
from agent.store import Store

REAL_RUN = Path(__file__).resolve().parent.parent / "docs" / "runs" / "2026-11-26_h200_run_l1_norm"
CPU_SKIPPED = "no GPU: correctness only, in Triton's interpreter; times are not measured"
EVIL = '</script><b id="pwned">x</b><script>alert(1)</script>'

runner = CliRunner()


def copy_real_run(dest: Path) -> Path:
    shutil.copytree(REAL_RUN, dest)
    return dest


def make_cpu_run(run_dir: Path, problem: str = "toy_cpu", start_ok: bool = True) -> Path:
    """A run on a machine without a GPU: checked in Triton's interpreter, never timed."""
    run_dir.mkdir(parents=True)
    store = Store.open_dir(run_dir)
    run = store.start_run(problem, "cpu", "H200", "search", None, {"stages": ["micro"]})
    untimed = Timings(skipped_reason=CPU_SKIPPED)
    start_src = "import triton\n\ndef kernel():\n    return 1\n"
    start = store.add_candidate(
        run, 0, Candidate(source=start_src, proposer="start", stage="micro", label="starting kernel")
    )
    if not start_ok:
        store.add_evaluation(
            start, EvalResult(status=Status.INCORRECT, reason="values: 12 of 64 elements wrong")
        )
        store.finish_run(run, "failed", "the starting kernel was rejected")
        store.close()
        return run_dir
    store.add_evaluation(
        start, EvalResult(status=Status.ACCEPTED, timings=untimed, device="cpu", interpreter=True)
    )
    store.add_profile(
        ProfileRecord(
            candidate_id=start,
            ok=False,
            error="no GPU: ncu needs one",
            metric_set="seed",
        )
    )
    prompt = store.add_prompt(run, "micro", 1, "Make it faster.\n<the kernel>")
    for i, (status, reason) in enumerate(
        [
            (Status.ACCEPTED, ""),
            (Status.INCORRECT, "values: max abs err 3.2 > atol"),
            (Status.CRASHED, "boom"),
        ]
    ):
        cand = Candidate(
            source=start_src.replace("1", str(i + 2)),
            proposer="search",
            stage="micro",
            parent_id=start,
            label=f"variant {i}",
            prompt_id=prompt,
        )
        cid = store.add_candidate(run, 1, cand)
        store.add_evaluation(
            cid,
            EvalResult(status=status, reason=reason, timings=untimed if status == Status.ACCEPTED else None),
        )
    store.finish_run(run, "done", "no GPU: the starting kernel stays the best")
    store.close()
    (run_dir / "best_kernel.py").write_text(start_src)
    return run_dir


def make_pipeline_run(run_dir: Path) -> Path:
    """Two stages in one run, as a pipeline records them: the second starts from the first's best (no new
    starting candidate) and profiles it again with its own metric set. Times are the real run's, scaled."""
    source = (REAL_RUN / "best_kernel.py").read_text()
    real = Store.open_dir(REAL_RUN)
    result_json = real.conn.execute("SELECT result FROM evaluations WHERE candidate_id = 1").fetchone()[0]
    real.close()
    run_dir.mkdir(parents=True)
    store = Store.open_dir(run_dir)
    run = store.start_run(
        "l1_norm", "cuda", "H200", "search:coordinate", None, {"stages": ["micro", "tiling"]}
    )

    def add(stage, it, label, parent, factor, status=Status.ACCEPTED, reason="", metric_set="seed"):
        cid = store.add_candidate(
            run,
            it,
            Candidate(
                source=f"{source}\n# {label}\n",
                proposer="start" if parent is None else "search",
                stage=stage,
                parent_id=parent,
                label=label,
            ),
        )
        if status == Status.ACCEPTED:
            store.add_evaluation(cid, _faster_copy(result_json, factor))
            metrics = {"k": [{"dram__throughput.avg.pct_of_peak_sustained_elapsed": round(60 / factor, 2)}]}
            store.add_profile(
                ProfileRecord(
                    candidate_id=cid,
                    ok=True,
                    metric_set=metric_set,
                    metrics=metrics,
                )
            )
        else:
            store.add_evaluation(cid, EvalResult(status=status, reason=reason))
        return cid

    start = add("micro", 0, "starting kernel", None, 1.0)
    a = add("micro", 1, "micro a", start, 0.9)
    add("micro", 1, "micro b", start, 0.895)  # within noise of a: not a new best
    add("micro", 1, "micro c", start, 1.0, Status.COMPILE_ERROR, "triton.CompilationError: bad")
    store.add_profile(
        ProfileRecord(
            candidate_id=a,
            ok=True,
            metric_set="memory",
            metrics={"k": [{"dram__bytes_read.sum": 100}]},
        )
    )
    b = add("tiling", 1, "tile 128", a, 0.7, metric_set="memory")
    add("tiling", 2, "tile 256", b, 0.72, metric_set="memory")
    add("tiling", 2, "tile 512", b, 1.0, Status.INCORRECT, "values: 3 of 10 elements")
    store.finish_run(run, "done")
    store.close()
    (run_dir / "best_kernel.micro.py").write_text(f"{source}\n# micro a\n")
    (run_dir / "best_kernel.py").write_text(f"{source}\n# tile 128\n")
    return run_dir


def make_batch(batch: Path) -> Path:
    """A SYNTHETIC batch in `ncu-agent batch`'s layout (BATCH_DIR/problems/NAME/ and summary.json): a copy of
    the real l1_norm run, a CPU run, a run whose starting kernel was rejected, and a problem not started."""
    problems = batch / "problems"
    problems.mkdir(parents=True)
    copy_real_run(problems / "l1_norm")
    make_cpu_run(problems / "synthetic_cpu", "synthetic_cpu")
    make_cpu_run(problems / "synthetic_failed", "synthetic_failed", start_ok=False)
    summary = {
        "batch_dir": str(batch),
        "name": "synthetic batch (test fixture)",
        "problems": [
            {"name": "l1_norm", "status": "done", "correct": True, "best_id": 2},
            {"name": "synthetic_cpu", "status": "done", "correct": True, "best_id": 1},
            {"name": "synthetic_failed", "status": "failed", "correct": False, "reason": "start rejected"},
            {"name": "synthetic_pending", "status": "pending", "correct": False},
        ],
        "overall": {
            "problems": 4,
            "correct": 2,
            "by_status": {"done": 2, "failed": 1, "pending": 1},
            "fast_p": [{"p": 0.0, "eager": 0.5, "compile": 0.5}, {"p": 1.5, "eager": 0.25, "compile": 0.0}],
            "geomean_speedup": {"eager": {"value": 1.8787, "n": 1}, "compile": {"value": 1.4223, "n": 1}},
            "notes": ["synthetic: built by tests/test_report.py from the real l1_norm run"],
        },
    }
    (batch / "summary.json").write_text(json.dumps(summary))
    return batch


def _faster_copy(result_json: str, factor: float) -> EvalResult:
    result = EvalResult.model_validate_json(result_json)
    t = result.timings
    assert t is not None and t.candidate is not None
    return result.model_copy(
        update={
            "timings": t.model_copy(
                update={"candidate": TimingStats(times_ms=[x * factor for x in t.candidate.times_ms])}
            )
        }
    )


class _ParsedPage(HTMLParser):
    """Every element name and attribute on a page, and the text of each <section> as a reader sees it."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: set[str] = set()
        self.attrs: list[str] = []
        self.text: dict[str, str] = {}
        self._section = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        self.attrs += [f"{k}={v}" for k, v in attrs]
        if tag == "section":
            self._section = dict(attrs).get("id") or ""

    def handle_data(self, data: str) -> None:
        self.text[self._section] = self.text.get(self._section, "") + data


def _section(page: str, section_id: str) -> str:
    start = page.index(f'<section id="{section_id}"')
    return page[start : page.index("</section>", start)]


@pytest.fixture
def real_run(tmp_path: Path) -> Path:
    return copy_real_run(tmp_path / "l1_norm")


def test_real_run_page(real_run: Path):
    page_path = write_run_report(real_run)
    assert page_path == real_run / "report.html"
    page = page_path.read_text()
    for section in ("summary", "stage-1", "roofline", "steps", "final", "candidates", "prompts"):
        assert f'<section id="{section}"' in page
    assert "<title>l1_norm: ncu-agent report</title>" in page
    assert page.count("<svg") == 3  # timeline, speedup, roofline
    assert "best #2" in page and "6.558 ms" in page and "7.183 ms" in page
    assert "1.88×" in page and "1.42×" in page and "61.5%" in page  # vs eager, vs compile, roofline
    assert "H200" in page and "search" in page and "micro" in page
    # The one accepted step: metrics side by side and the code diff of #1 -> #2.
    steps = _section(page, "steps")
    assert 'id="step-1"' in steps and 'id="step-2"' in steps
    assert "#1 → #2" in steps
    assert "dram__throughput.avg.pct_of_peak_sustained_elapsed" in steps
    assert "75.48" in steps and "81.99" in steps and "+6.51 (+8.6%)" in steps
    assert (
        '<span class="del">-        triton.Config({&#39;BLOCK_SIZE_D&#39;: 256}, num_warps=4),</span>'
        in steps
    )
    assert "num_warps=2, num_stages=2)," in steps and '<span class="add">' in steps
    assert 'href="profiles/step_c2.ncu-rep"' in steps
    # The final kernel is best_kernel.py, highlighted.
    assert 'class="hl"' in _section(page, "final") and "l1_norm_kernel_autotune" in _section(page, "final")
    # Every candidate in the table; prompts collapsed.
    table = _section(page, "candidates")
    assert all(f'<tr id="c{i}"' in table for i in range(1, 14))
    assert 'class="accepted best"' in table
    prompts = _section(page, "prompts")
    assert prompts.count('<details class="prompt"') == 3 and "<details open" not in prompts
    assert "candidates 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13" in prompts


def test_page_is_self_contained_with_unique_ids(real_run: Path):
    page = write_run_report(real_run).read_text()
    assert "<script" not in page
    assert not re.search(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//""", page)
    assert "@import" not in page and "url(http" not in page
    ids = re.findall(r'\sid="([^"]+)"', page)
    assert len(ids) == len(set(ids)), "duplicate ids (two plots' SVG defs would clash)"


def test_page_escapes_everything_from_the_store(real_run: Path):
    """A candidate's source, label and reason, and a prompt, cannot inject markup into the page."""
    store = Store.open_dir(real_run)
    row = store.conn.execute("SELECT result FROM evaluations WHERE candidate_id = 2").fetchone()
    evil_source = store.candidate_source(2) + f"\n# {EVIL}\n"
    prompt = store.add_prompt(1, "micro", 2, f"prompt {EVIL}")
    cid = store.add_candidate(
        1,
        2,
        Candidate(
            source=evil_source, proposer="llm", stage="micro", parent_id=2, label=EVIL, prompt_id=prompt
        ),
    )
    store.add_evaluation(cid, _faster_copy(row["result"], 0.9))
    rejected = store.add_candidate(1, 2, Candidate(source="x", proposer="llm", stage="micro", label="bad"))
    store.add_evaluation(rejected, EvalResult(status=Status.INCORRECT, reason=f"values {EVIL}"))
    store.close()
    (real_run / "best_kernel.py").write_text(evil_source)
    page = write_run_report(real_run).read_text()
    parsed = _ParsedPage()
    parsed.feed(page)
    # What matters: no element and no attribute on the page came from stored text. How each escaper spells
    # the text (Pygments 2.21 leaves `"` as it is inside text, older versions wrote &#34;) does not matter.
    assert "script" not in parsed.tags  # the page has no scripts of its own
    assert not [a for a in parsed.attrs if "pwned" in a or "alert" in a]
    for section in ("steps", "candidates", "prompts", "final"):  # diff #2 -> #14, label, reason, best kernel
        assert EVIL in parsed.text.get(section, ""), f"stored text missing from section {section}"
    assert "#2 → #14" in page and "best #14" in page


def test_cpu_run_renders_without_plots(tmp_path: Path):
    run_dir = make_cpu_run(tmp_path / "cpu")
    page = write_run_report(run_dir).read_text()
    assert "<svg" not in page
    assert page.count("not timed: no GPU") == 1  # one note, not an empty box per plot
    assert 'id="roofline"' not in page and "Candidates over time" not in page
    assert "values: max abs err 3.2 &gt; atol" in page and "crashed" in page
    assert "eager PyTorch" not in page and 'kept</div><div class="v">#1<' in page  # no times to show
    assert "starting kernel" in page and "No ncu metrics: #1 profile failed: no GPU: ncu needs one." in page
    assert 'class="hl"' in _section(page, "final")
    data = load_run_dir(run_dir)
    assert data.best is not None and data.best.id == 1 and data.evaluations == 4


def test_rejected_start_renders(tmp_path: Path):
    page = write_run_report(make_cpu_run(tmp_path / "failed", start_ok=False)).read_text()
    assert "No accepted kernel" in page and "No best kernel." in page
    assert "values: 12 of 64 elements wrong" in page


def test_best_kernel_file_overrides_the_replay(real_run: Path):
    """A run that kept another best (another min_gain than recorded) is shown as the run wrote it."""
    store = Store.open_dir(real_run)
    (real_run / "best_kernel.py").write_text(store.candidate_source(3))
    store.close()
    data = load_run_dir(real_run)
    assert data.best is not None and data.best.id == 3
    assert any("best_kernel.py is candidate #3" in n for n in data.notes)


@pytest.mark.slow
def test_pipeline_run_steps_cross_stages(tmp_path: Path):
    run_dir = make_pipeline_run(tmp_path / "pipe")
    data = load_run_dir(run_dir)
    assert [s.name for s in data.stages] == ["micro", "tiling"]
    assert [(st.parent.id if st.parent else None, st.child.id) for st in data.steps] == [
        (None, 1),
        (1, 2),
        (2, 5),
    ]
    assert data.notes == [] and data.best is not None and data.best.id == 5
    page = write_run_report(run_dir).read_text()
    assert page.count("<svg") == 5  # two stages x (timeline, speedup) + roofline
    assert "#2 → #5" in page and "stage tiling" in page
    # The step into tiling compares #2's and #5's profiles of the same (memory) metric set.
    step = page[page.index('id="step-5"') :]
    step = step[: step.index("</article>")]
    assert "dram__bytes_read.sum" in step and "set <code>memory</code>" in step
    assert "triton.CompilationError: bad" in page and "values: 3 of 10 elements" in page


def test_plots_are_stable_svg(real_run: Path):
    """Same records, same SVG (pages diff cleanly between two reports); ids differ only by key."""
    from agent.report.plots import timeline_svg

    cands = load_run_dir(real_run).candidates
    one, two = timeline_svg(cands, key="k"), timeline_svg(cands, key="k")
    assert one == two and one.startswith("<svg") and 'id="timeline_svg-k-' in one
    assert timeline_svg(cands, key="other").replace("other", "k") == one


def test_source_diff_kinds():
    from agent.report.page import source_diff

    kinds = [d.kind for d in source_diff("a\n--x\nb\n", "a\n++y\nb\n", "#1", "#2")]
    assert kinds == ["file", "file", "hunk", "ctx", "del", "add", "ctx"]


def test_replay_uses_the_loops_default_min_gain():
    from agent.config import LoopPolicy
    from agent.report.data import _min_gain

    assert _min_gain({}) == LoopPolicy().min_gain
    assert _min_gain({"min_gain": 0.2}) == 0.2


def test_batch_page_links_each_problem(tmp_path: Path):
    batch = make_batch(tmp_path / "batch")
    assert is_batch_dir(batch)
    result = runner.invoke(app, ["report", str(batch)])
    assert result.exit_code == 0, result.output
    assert "report:" in result.output and "synthetic_pending" in result.output  # the rich summary table
    page = (batch / "report.html").read_text()
    for name in ("l1_norm", "synthetic_cpu", "synthetic_failed"):
        assert f'<a href="problems/{name}/report.html">' in page
        sub = (batch / "problems" / name / "report.html").read_text()
        assert '<a class="back" href="../../report.html">' in sub
    assert 'synthetic_pending<br><small class="mono">no run directory' in page  # listed, never started
    assert "6.558" in page and "1.88×" in page and "1.42×" in page and "61.5%" in page
    rows = re.findall(r'<tr class="(accepted|rejected)">', page)
    assert rows == ["accepted", "accepted", "rejected", "rejected"]  # in summary.json's order
    assert "start rejected" in page  # the batch's reason
    # The rest of summary.json, as tables.
    extra = _section(page, "summary-json")
    assert "synthetic batch (test fixture)" in extra and "<h4>fast_p</h4>" in extra
    assert "<h4>geomean_speedup</h4>" in extra and "<h4>by_status</h4>" in extra
    assert page.count("<svg") == 1  # speedups and % of roofline per problem


def test_batch_of_plain_run_dirs(tmp_path: Path):
    """Any folder of run directories is a batch; without summary.json the run dirs say everything."""
    batch = tmp_path / "mine"
    copy_real_run(batch / "a")
    make_cpu_run(batch / "b")
    out, data = write_batch_report(batch)
    page = out.read_text()
    assert '<a href="a/report.html">' in page and '<a href="b/report.html">' in page
    assert [r.problem for r in data.rows] == ["l1_norm", "toy_cpu"] and data.summary is None
    assert 'id="summary-json"' not in page


def test_batch_page_elsewhere_links_back(tmp_path: Path):
    batch = make_batch(tmp_path / "batch")
    out = tmp_path / "pages" / "index.html"
    out.parent.mkdir()
    write_batch_report(batch, out)
    assert '<a href="../batch/problems/l1_norm/report.html">' in out.read_text()
    sub = (batch / "problems" / "l1_norm" / "report.html").read_text()
    assert '<a class="back" href="../../../pages/index.html">' in sub


def test_report_cli_run_and_bad_dir(real_run: Path, tmp_path: Path):
    out = tmp_path / "x.html"
    result = runner.invoke(app, ["report", str(real_run), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.is_file() and not (real_run / "report.html").exists()
    assert 'href="l1_norm/profiles/step_c2.ncu-rep"' in out.read_text()  # links still lead to the run dir
    (tmp_path / "empty").mkdir()
    result = runner.invoke(app, ["report", str(tmp_path / "empty")])
    assert result.exit_code == 2 and "neither a run directory" in result.output


def test_diff_cli(real_run: Path):
    result = runner.invoke(app, ["diff", str(real_run), "1", "2"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "--- #1 starting kernel" in out and "+++ #2 l1_norm_kernel_autotune" in out
    assert "-        triton.Config({'BLOCK_SIZE_D': 256}, num_warps=4)," in out
    assert "+        triton.Config({'BLOCK_SIZE_D': 256}, num_warps=2, num_stages=2)," in out
    assert re.search(r"median_ms\s+│\s+7\.183\s+│\s+6\.558", out)
    assert re.search(r"dram__throughput\S*\s+│\s+75\.48\s+│\s+81\.99", out)
    missing = runner.invoke(app, ["diff", str(real_run), "1", "99"])
    assert missing.exit_code == 2 and "no candidate 99" in missing.output
    same = runner.invoke(app, ["diff", str(real_run), "2", "2"])
    assert same.exit_code == 0 and "same source" in same.output


def test_export_cli_csv_and_json(real_run: Path, tmp_path: Path):
    result = runner.invoke(app, ["export", str(real_run)])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.output)))
    assert [int(r["candidate_id"]) for r in rows] == list(range(1, 14))
    best = rows[1]
    assert best["final_best"] == "True" and best["status"] == "accepted" and best["median_ms"] == "6.55848"
    assert float(best["speedup_eager"]) == pytest.approx(1.8787, abs=1e-4)
    assert best["ncu.l1_norm_kernel_autotune.0.dram__throughput.avg.pct_of_peak_sustained_elapsed"] == "81.99"
    out = tmp_path / "c.json"
    result = runner.invoke(app, ["export", str(real_run), "--format", "json", "--out", str(out), "--source"])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert len(data) == 13 and data[0]["new_best"] and data[0]["source"].startswith("import torch")
    assert (
        data[1]["chosen_configs"]
        == '{"l1_norm_kernel_autotune": {"BLOCK_SIZE_D": 4096, "num_warps": 2, "num_stages": 2}}'
    )
    bad = runner.invoke(app, ["export", str(real_run), "--format", "xml"])
    assert bad.exit_code == 2


def test_export_batch_has_run_dir_column(tmp_path: Path):
    batch = make_batch(tmp_path / "batch")
    result = runner.invoke(app, ["export", str(batch), "--format", "json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert {r["run_dir"] for r in data} == {
        "problems/l1_norm",
        "problems/synthetic_cpu",
        "problems/synthetic_failed",
    }
    assert len(data) == 13 + 4 + 1
