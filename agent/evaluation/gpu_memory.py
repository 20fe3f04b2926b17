"""Freed GPU memory back to the device, in whichever process held it: a serving worker after each
candidate (agent/evaluation/worker.py), and the judge after each split evaluation
(agent/evaluation/evaluate.py), so the next worker, the next candidate and the profiler find it free. The
baselines a process keeps between candidates are still referenced, so they stay."""

from __future__ import annotations

import contextlib
import gc
import sys


def release() -> None:
    gc.collect()
    if "torch" in sys.modules:  # a process that never imported torch holds no GPU memory
        import torch

        # after an illegal memory access the CUDA context is gone; its process is replaced anyway
        with contextlib.suppress(Exception):
            if torch.cuda.is_available() and torch.cuda.is_initialized():
                torch.cuda.empty_cache()
