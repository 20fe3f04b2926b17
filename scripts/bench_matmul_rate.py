"""How steady the measured fp16 matmul rate (the roofline's FLOP ceiling) is: the rate as measured before
(10 calls after 2 warm-ups) against the sustained one (`timing.measure_matmul_tflops`), each taken after
the GPU idled, several times.

    python scripts/bench_matmul_rate.py [--times 5] [--idle 2] [--out rate.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from agent.evaluation import timing


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--times", type=int, default=5)
    ap.add_argument("--idle", type=float, default=2.0, help="seconds idle before each measurement")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    rates: dict[str, list[float]] = {"short (10 calls, 2 warm-ups)": [], "sustained": []}
    for _ in range(args.times):
        for label, kw in (
            ("short (10 calls, 2 warm-ups)", {"reps": 10, "sustain_s": 0.0}),
            ("sustained", {}),
        ):
            time.sleep(args.idle)
            rates[label].append(round(timing.measure_matmul_tflops(**kw), 1))
    result = {
        label: {"tflops": r, "spread": (max(r) - min(r)) / sorted(r)[len(r) // 2]}
        for label, r in rates.items()
    }
    print(json.dumps(result, indent=1))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
