"""The tool's eager / torch.compile ratio per problem against KernelBench's published baseline timings.

    python scripts/compare_kernelbench_baseline.py SUMMARY.json [SUMMARY.json ...] TIMING_DIR [--out F.json]

Several summaries (one batch split over device calls) are read as one list of problems.

TIMING_DIR holds, per hardware, `<HW>__baseline_time_torch.json` and
`<HW>__baseline_time_torch_compile_inductor_default.json` (scripts/fetch_kernelbench.sh copies them); only
entries whose `hardware` names an H100 or H200 count. Both ratios are eager_ms / compile_ms (> 1:
torch.compile is faster). Prints the Spearman rank correlation over the problems both sides timed, and every
problem whose two ratios differ by more than 2x. KernelBench timed with
wall clock over 100 trials and another torch version, so only ranks and large gaps are worth reading.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HARDWARE = ("H100", "H200")
DISAGREE = 2.0


def _ranks(xs: list[float]) -> list[float]:
    """Average ranks (ties share the mean of their positions), as scipy.stats.rankdata does."""
    order = sorted(range(len(xs)), key=lambda i: xs[i])
    ranks = [0.0] * len(xs)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and xs[order[j + 1]] == xs[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman(a: list[float], b: list[float]) -> float | None:
    if len(a) < 3:
        return None
    try:
        from scipy.stats import spearmanr

        return float(spearmanr(a, b).statistic)
    except ImportError:  # the same statistic: Pearson's r of the ranks
        ra, rb = _ranks(a), _ranks(b)
        ma, mb = sum(ra) / len(ra), sum(rb) / len(rb)
        cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb, strict=True))
        va = sum((x - ma) ** 2 for x in ra) ** 0.5
        vb = sum((y - mb) ** 2 for y in rb) ** 0.5
        return cov / (va * vb) if va and vb else None


def _load_times(timing: Path, kind: str) -> dict[str, tuple[float, str]]:
    """problem stem -> (mean ms, hardware file) from the first H100/H200 file that has it."""
    out: dict[str, tuple[float, str]] = {}
    for f in sorted(timing.glob(f"*__{kind}.json")):
        for entries in json.loads(f.read_text()).values():
            for name, e in entries.items():
                if any(h in str(e.get("hardware", "")) for h in HARDWARE):
                    out.setdefault(Path(name).stem, (float(e["mean"]), f.name.split("__")[0]))
    return out


def compare(summary: dict, timing: Path) -> dict:
    eager = _load_times(timing, "baseline_time_torch")
    comp = _load_times(timing, "baseline_time_torch_compile_inductor_default")
    rows = []
    for p in summary["problems"]:
        stem = Path(p["name"]).stem.split("/")[-1]
        if not (p.get("eager_ms") and p.get("compile_ms")) or stem not in eager or stem not in comp:
            continue
        ours = p["eager_ms"] / p["compile_ms"]
        theirs = eager[stem][0] / comp[stem][0]
        gap = max(ours, theirs) / min(ours, theirs)
        rows.append(
            {
                "problem": stem,
                "ours": round(ours, 3),
                "kernelbench": round(theirs, 3),
                "gap": round(gap, 2),
                "hardware": eager[stem][1],
            }
        )
    rho = spearman([r["ours"] for r in rows], [r["kernelbench"] for r in rows])
    return {
        "n": len(rows),
        "spearman": rho,
        "rows": rows,
        "disagree": [r for r in rows if r["gap"] > DISAGREE],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("paths", type=Path, nargs="+", help="summary.json files, then the timing folder")
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    *summaries, timing = a.paths
    if not summaries or not all(s.is_file() for s in summaries) or not timing.is_dir():
        print(
            f"error: need summary.json files and a timing folder, got {' '.join(map(str, a.paths))}",
            file=sys.stderr,
        )
        sys.exit(2)
    problems = [p for s in summaries for p in json.loads(s.read_text())["problems"]]
    res = compare({"problems": problems}, timing)
    print(f"{res['n']} problems timed on both sides; Spearman rho of eager/compile: {res['spearman']}")
    for r in res["disagree"]:
        print(f"  > {DISAGREE:g}x apart: {r['problem']}: ours {r['ours']}, KernelBench {r['kernelbench']}")
    if a.out:
        a.out.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
