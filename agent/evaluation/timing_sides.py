"""Who runs the timed calls, and on which clock (agent/evaluation/timing.py measures with them).

A measurement interleaves its fns round by round. The fns may live in two processes: the judge times the
eager and `torch.compile` baselines in its own process (`LocalSide`), and the candidate is timed in its
worker (`RemoteSide`, agent/evaluation/runners.py), which the candidate shares and the judge does not.
Two processes on one GPU are two CUDA contexts, which the GPU time-slices: if both had work queued at
once, each would be timed with the other's kernels in its windows. So a measurement over two sides runs
them in turns of `TURN_ROUNDS` rounds, each side synchronizing before it hands over; within a side, its
fns are interleaved call by call as before.

Clocks: on a GPU, CUDA events on the current stream with the L2 flushed (a 256 MiB buffer zeroed) before
each call; on the CPU, the host's monotonic clock with a 32 MiB buffer zeroed (the last-level cache),
which is how the two-process protocol is tested without a GPU.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol

FLUSH_BYTES = 256 * 1024**2
HOST_FLUSH_BYTES = 32 * 1024**2
TURN_ROUNDS = 8  # rounds each side runs before the other takes its turn (two sides only)


class Clock(Protocol):
    def flush(self) -> None: ...
    def mark(self) -> Any: ...
    def sync(self) -> None: ...
    def elapsed_ms(self, start: Any, end: Any) -> float: ...


class CudaClock:
    """CUDA events on the current stream; the L2 flushed by zeroing a 256 MiB buffer."""

    def __init__(self) -> None:
        import torch

        self.torch = torch
        self.buffer = torch.empty(FLUSH_BYTES // 4, dtype=torch.int32, device="cuda")
        self._elapsed = torch.cuda.Event.elapsed_time  # bound now: see LocalSide.timed

    def flush(self) -> None:
        self.buffer.zero_()

    def mark(self) -> Any:
        event = self.torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def sync(self) -> None:
        self.torch.cuda.synchronize()

    def elapsed_ms(self, start: Any, end: Any) -> float:
        return float(self._elapsed(start, end))


class HostClock:
    """The host's monotonic clock (CPU tensors run synchronously); the last-level cache flushed by zeroing
    32 MiB."""

    def __init__(self) -> None:
        import torch

        self.buffer = torch.empty(HOST_FLUSH_BYTES // 4, dtype=torch.int32)

    def flush(self) -> None:
        self.buffer.zero_()

    def mark(self) -> int:
        return time.perf_counter_ns()

    def sync(self) -> None:
        pass

    def elapsed_ms(self, start: int, end: int) -> float:
        return (end - start) / 1e6


def clock_for(device: str) -> Clock:
    return CudaClock() if device == "cuda" else HostClock()


def _graphed(fn: Callable[[], Any]) -> Callable[[], Any]:
    """fn captured once in a CUDA graph (after its warm-up): replays cost no Python or launch overhead."""
    import torch

    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    torch.cuda.synchronize()
    return graph.replay


class Side(Protocol):
    """Fns timed in one process."""

    names: list[str]

    def warm(self, calls: int) -> None: ...
    def round_s(self) -> float: ...
    def timed(self, names: list[str], rounds: int) -> dict[str, list[float]]: ...


class LocalSide:
    """Fns in this process, interleaved call by call, one synchronize per batch of rounds."""

    def __init__(self, fns: dict[str, Callable[[], Any]], clock: Clock | None = None, graphs: bool = False):
        self.fns = dict(fns)
        self.names = list(fns)
        self.clock = clock or CudaClock()
        self.graphs = graphs
        self.graphed = False

    def warm(self, calls: int) -> None:
        for fn in self.fns.values():
            for _ in range(max(1, calls)):  # the first call compiles and autotunes
                fn()
        self.clock.sync()
        if self.graphs and not self.graphed:
            self.fns = {name: _graphed(fn) for name, fn in self.fns.items()}
            self.graphed = True

    def round_s(self) -> float:
        """One round of every fn, flushes included."""
        start = self.clock.mark()
        for fn in self.fns.values():
            self.clock.flush()
            fn()
        end = self.clock.mark()
        self.clock.sync()
        return self.clock.elapsed_ms(start, end) / 1e3

    def timed(self, names: list[str], rounds: int) -> dict[str, list[float]]:
        # The clock's functions are bound before the first call: where the candidate runs in this process,
        # a patch it makes during a call does not reach the times of the batch it was made in, and the
        # tamper watch read after the batch sees it.
        flush, mark, sync, elapsed = self.clock.flush, self.clock.mark, self.clock.sync, self.clock.elapsed_ms
        marks: dict[str, list[tuple[Any, Any]]] = {name: [] for name in names}
        fns = [(name, self.fns[name], marks[name]) for name in names]
        for _ in range(rounds):
            for _name, fn, kept in fns:
                flush()
                start = mark()
                fn()
                end = mark()
                kept.append((start, end))
        sync()
        return {name: [elapsed(s, e) for s, e in pairs] for name, pairs in marks.items()}


class RemoteSide:
    """The candidate timed in its worker (`Time` commands through the runner); the judge never runs it."""

    def __init__(self, runner: Any, name: str = "candidate"):
        self.runner = runner
        self.names = [name]

    def warm(self, calls: int) -> None:
        self.runner.time(0, max(1, calls))

    def round_s(self) -> float:
        return self.runner.time(1, 0, round_only=True)[0] / 1e3

    def timed(self, names: list[str], rounds: int) -> dict[str, list[float]]:
        return {self.names[0]: self.runner.time(rounds, 0)} if names else {}


def in_turns(sides: list[Side]) -> Callable[[list[str], int], dict[str, list[float]]]:
    """`timed(names, rounds)` over every side: one side alone runs all its rounds at once; two or more take
    turns of `TURN_ROUNDS` rounds, so no two processes have work on the GPU at the same time."""

    def timed(names: list[str], rounds: int) -> dict[str, list[float]]:
        out: dict[str, list[float]] = {name: [] for name in names}
        turn = rounds if len(sides) == 1 else TURN_ROUNDS
        done = 0
        while done < rounds:
            n = min(turn, rounds - done)
            for side in sides:
                mine = [name for name in names if name in side.names]
                if mine:
                    for name, t in side.timed(mine, n).items():
                        out[name].extend(t)
            done += n
        return out

    return timed
