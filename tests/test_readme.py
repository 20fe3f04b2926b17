"""The README's two commands are the ones CI runs, so they stay true on a fresh machine."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```(?:bash|sh)\n(.*?)```", text, re.S)
    return [line.strip() for line in blocks[0].splitlines() if line.strip() and not line.startswith("#")][:2]


def test_readme_opens_with_install_and_test_commands():
    install_and_run, test = _readme_commands()
    assert "pip install" in install_and_run and "ncu-agent run kernels/l1_norm" in install_and_run
    assert test.startswith("python -m pytest")


def test_ci_runs_the_readme_commands_verbatim():
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    for command in _readme_commands():
        assert command in ci, f".ci/run does not run the README's command: {command}"
