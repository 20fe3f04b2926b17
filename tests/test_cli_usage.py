"""Bad paths, bad options and unwritable outputs: every command answers `error: ...` naming the path, exit 2,
before any banner or work, without a traceback; and it does so without importing torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agent.cli import app

ROOT = Path(__file__).resolve().parent.parent
RUN = ROOT / "docs" / "runs" / "2026-11-26_h200_run_l1_norm"
runner = CliRunner()


@pytest.fixture
def a_file(tmp_path: Path) -> Path:
    f = tmp_path / "a_file"
    f.write_text("not a folder")
    return f


def _refused(args: list[str], *names: str) -> str:
    result = runner.invoke(app, args)
    out = result.output
    assert result.exit_code == 2, out
    assert "Traceback" not in out and not isinstance(result.exception, OSError), out
    assert all(n in out for n in names), out
    assert "ncu-agent l1_norm: stage" not in out and "ncu-agent batch" not in out  # no banner came first
    return out


def test_run_dir_under_a_file(a_file: Path):
    out = _refused(["run", "l1_norm", "--run-dir", str(a_file / "x")], "error:", str(a_file / "x"))
    assert f"{a_file} is a file, not a directory" in out


def test_run_dir_that_is_a_file(a_file: Path):
    _refused(["run", "l1_norm", "--run-dir", str(a_file)], "error:", str(a_file))


@pytest.mark.skipif(not Path("/proc/self").exists(), reason="needs /proc")
def test_run_dir_under_proc():
    _refused(["run", "l1_norm", "--run-dir", "/proc/ncu-agent-run"], "error:", "/proc/ncu-agent-run")


@pytest.mark.parametrize(
    ("flag", "value"), [("--gpu", "gtx-nosuch"), ("--stages", "nosuch"), ("--search", "nosuch")]
)
def test_run_bad_option(flag: str, value: str, tmp_path: Path):
    _refused(["run", "l1_norm", flag, value, "--run-dir", str(tmp_path / "r")], "error:", value)
    assert not (tmp_path / "r").exists()  # options are refused before anything is written


def test_run_llm_error_keeps_brackets():
    out = _refused(["run", "l1_norm", "--llm"], "error:")
    assert "[llm] table" in out  # rich markup used to eat "[llm]"


def test_batch_out_under_a_file(a_file: Path):
    _refused(["batch", "l1_norm", "--out", str(a_file / "b")], "error:", str(a_file / "b"))


def test_batch_bad_gpus(tmp_path: Path):
    _refused(["batch", "l1_norm", "--gpus", "x,1", "--out", str(tmp_path / "b")], "error:", "x")
    assert not (tmp_path / "b").exists()


def test_experiment_out_under_a_file(a_file: Path):
    args = ["experiment", "l1_norm", "--arm", "A=model:m", "--out", str(a_file / "e")]
    _refused(args, "error:", str(a_file / "e"))


def test_export_out_under_a_file(a_file: Path):
    _refused(["export", str(RUN), "--out", str(a_file / "x.csv")], "error:", str(a_file / "x.csv"))


def test_report_out_under_a_file(a_file: Path):
    _refused(["report", str(RUN), "--out", str(a_file / "r.html")], "error:", str(a_file / "r.html"))


def test_profile_out_dir_under_a_file(a_file: Path, tmp_path: Path):
    cand = tmp_path / "cand.py"
    cand.write_text("class ModelNew: ...\n")
    args = ["profile", str(cand), "--problem", "l1_norm", "--out-dir", str(a_file / "p")]
    _refused(args, "error:", str(a_file / "p"))


@pytest.mark.parametrize(
    "args",
    [
        ["show", "/nonexistent/run"],
        ["diff", "/nonexistent/run", "1", "2"],
        ["report", "/nonexistent/run"],
        ["export", "/nonexistent/run"],
        ["check", "/nonexistent/cand.py", "--problem", "l1_norm"],
        ["render", "l1_norm", "--metrics", "/nonexistent/m.json"],
        ["render", "l1_norm", "--code", "/nonexistent/k.py"],
        ["profile", "--report", "/nonexistent/r.ncu-rep"],
    ],
)
def test_missing_input_paths(args: list[str]):
    _refused(args, "/nonexistent/")


def test_version_and_help_keep_brackets():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.startswith("ncu-agent ")
    help_text = runner.invoke(app, ["run", "--help"]).output
    assert "TOML config file with an [llm] table" in help_text


_PROBE = """
import json, sys
from agent.cli import app
codes = []
for args in json.loads(sys.argv[1]):
    try:
        app(args)
    except SystemExit as e:
        codes.append(e.code)
heavy = sorted(m for m in ("torch", "triton", "openai", "matplotlib") if m in sys.modules)
print(json.dumps({"codes": codes, "heavy": heavy}))
"""


def test_help_and_refusals_import_nothing_heavy():
    """Start-up time: a help page or a refusal must not wait for torch, triton, openai or matplotlib. One
    process runs them all: what any of them imported stays in sys.modules."""
    cases = [
        ["--help"],
        ["run", "--help"],
        ["run", "l1_norm", "--gpu", "nosuch"],
        ["run", "l1_norm", "--stages", "nosuch"],
        ["run", "l1_norm", "--run-dir", "/proc/ncu-agent-run"],
        ["batch", "l1_norm", "--gpus", "x"],
        ["check", "/nonexistent.py", "--problem", "l1_norm"],
    ]
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps(cases)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    probe = json.loads(done.stdout.strip().splitlines()[-1])
    assert probe == {"codes": [0, 0, 2, 2, 2, 2, 2], "heavy": []}, (probe, done.stderr[-2000:])
