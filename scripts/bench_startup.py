"""How long `ncu-agent` takes to answer when it has nothing to compute: help pages and refusals of bad
options. Prints the median of 5 wall-clock runs per command, then the slowest imports of the CLI (from
`python -X importtime`). Run it from a checkout: `python scripts/bench_startup.py [--repeats N]`.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time

CASES = {
    "ncu-agent --help": ["--help"],
    "ncu-agent run --help": ["run", "--help"],
    "ncu-agent run l1_norm --gpu nosuch": ["run", "l1_norm", "--gpu", "nosuch"],
    "ncu-agent run l1_norm --stages nosuch": ["run", "l1_norm", "--stages", "nosuch"],
    "ncu-agent --version": ["--version"],
}


# The floor on this machine at this moment: a bare interpreter, and the CLI library alone.
FLOORS = {"python -c pass": ["-c", "pass"], "python -c 'import typer'": ["-c", "import typer"]}


def times_s(args: list[str], module: bool = True) -> tuple[float, float]:
    """(wall, CPU) seconds of one run; CPU (user + system of the child) moves less on a shared machine."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, *(["-m", "agent"] if module else []), *args], capture_output=True, check=False
    )
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def slowest_imports(args: list[str], top: int) -> list[tuple[float, str]]:
    """(cumulative seconds, module) of the `top` slowest imports, three levels deep, made answering `args`."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "agent", *args],
        capture_output=True,
        text=True,
        check=False,
    )
    rows = []
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _, cumulative, name = line.split("|")
        depth = (len(name) - len(name.lstrip())) // 2  # importtime indents two spaces a level
        if depth <= 2:  # the CLI, its own modules and what they import directly
            rows.append((int(cumulative) / 1e6, "  " * depth + name.strip()))
    return sorted(rows, reverse=True)[:top]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--top", type=int, default=12)
    a = parser.parse_args()
    print(f"load average: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"| command | wall, median of {a.repeats} (s) | min (s) | CPU, median (s) |")
    print("| --- | --- | --- | --- |")
    for label, args in [*FLOORS.items(), *CASES.items()]:
        runs = [times_s(args, module=label.startswith("ncu-agent")) for _ in range(a.repeats)]
        wall, cpu = [r[0] for r in runs], [r[1] for r in runs]
        print(
            f"| `{label}` | {statistics.median(wall):.2f} | {min(wall):.2f} | {statistics.median(cpu):.2f} |"
        )
    for label in ("ncu-agent run l1_norm --gpu nosuch",):
        print(f"\nslowest imports of `{label}` (cumulative s, indented by depth):")
        for seconds, name in slowest_imports(CASES[label], a.top):
            print(f"  {seconds:6.3f}  {name}")


if __name__ == "__main__":
    main()
