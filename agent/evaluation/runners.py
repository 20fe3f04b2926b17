"""The runners the judge (`agent.evaluation.judge`) reaches the candidate session
(agent/evaluation/candidate_session.py) by:
- `RemoteRunner`: the session in a worker process (`python -m agent.evaluation.worker --serve`), reached over
  its pipes; inputs and outputs cross as `torch.save` files read back with `weights_only=True`.
- `InProcessRunner`: the session in the judge's own process (the GPU path).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from agent.evaluation.candidate_session import CallResult, CandidateSession
from agent.evaluation.messages import (
    Build,
    Call,
    Called,
    Done,
    Finish,
    Finished,
    Load,
    R,
    Refused,
    Retune,
    Retuned,
    Time,
    Timed,
    TimeEnd,
    TimeEnded,
    TimeStart,
    read_reply,
)
from agent.evaluation.verdicts import MAX_TEXT, Rejected
from agent.records import Status


class InProcessRunner:
    """The candidate in the judge's own process (the GPU path)."""

    in_process = True

    def __init__(self, device: str, workdir: Path, watch: Any):
        self.session = CandidateSession(device, workdir, watch)

    def load(self, source: str, allow_torch: list[str] | None = None, quick_autotune: bool = False) -> None:
        self.session.load(source, allow_torch)  # this process's autotune settings are the worker's

    def build(self, key: str, seed: int, init_inputs: list[Any], state_dict: dict[str, Any]) -> str:
        self.session.build(key, seed, init_inputs, state_dict)
        return self.session.weights

    def call(
        self, key: str, inputs: list[Any], mode: str, config: int, where: str, poison: bool = True
    ) -> CallResult:
        return self.session.call(key, inputs, where, config, poison)  # the judge passes the very objects

    def model(self, key: str) -> Any:
        return self.session.models[key]

    def finish(self) -> tuple[bool, str]:
        return self.session.clean()


class RemoteRunner:
    """The candidate in a worker process (`--serve`), reached over its pipes; tensors cross as files."""

    in_process = False

    def __init__(self, worker: Any, device: str, deadline: float):
        self.worker = worker
        self.device = device
        self.deadline = deadline
        self.dir: Path | None = None
        self.count = 0

    def _request(self, message: BaseModel, kind: type[R]) -> R:
        """Send `message`; its reply as `kind`, or Rejected (the candidate's verdict, or a reply that could
        not be read)."""
        try:
            reply = read_reply(self.worker.request(message, max(0.0, self.deadline - time.monotonic())), kind)
        except ValueError as e:
            raise Rejected(Status.CRASHED, str(e)) from None
        if isinstance(reply, Refused):
            raise Rejected(reply.status, reply.reason, reply.rule)
        return reply

    def _path(self, stem: str) -> Path:
        assert self.dir is not None
        self.count += 1
        return self.dir / f"{stem}_{self.count}.pt"

    def load(self, source: str, allow_torch: list[str] | None = None, quick_autotune: bool = False) -> None:
        self.dir = self.worker.new_dir()
        load = Load(
            dir=str(self.dir),
            source=source,
            device=self.device,
            allow_torch=allow_torch or [],
            quick_autotune=quick_autotune,
        )
        self._request(load, Done)

    def build(self, key: str, seed: int, init_inputs: list[Any], state_dict: dict[str, Any]) -> str:
        import torch

        path = self._path("build")
        torch.save(
            {"init": list(init_inputs), "state": {k: v.detach().cpu() for k, v in state_dict.items()}}, path
        )
        return self._request(Build(key=key, seed=seed, path=str(path)), Done).note

    def call(
        self, key: str, inputs: list[Any], mode: str, config: int, where: str, poison: bool = True
    ) -> CallResult:
        import torch

        src, dst = self._path("inputs"), self._path("outputs")
        if mode != "again":  # "again": the worker calls with the very tensors it holds, untouched
            torch.save([x.detach().cpu() if isinstance(x, torch.Tensor) else x for x in inputs], src)
        reply = self._request(
            Call(
                key=key,
                inputs=str(src),
                outputs=str(dst),
                mode=mode,
                config=config,
                where=where,
                poison=poison,
            ),
            Called,
        )
        try:
            data = torch.load(dst, weights_only=True, map_location=self.device)
            outputs, inputs_after = list(data["outputs"]), list(data["inputs_after"])
        except Exception as e:
            raise Rejected(
                Status.CRASHED, f"{where}: the worker's outputs could not be read: {e}"[:MAX_TEXT]
            ) from None
        finally:
            for p in (src, dst):
                p.unlink(missing_ok=True)
        return CallResult(
            outputs=outputs,
            inputs_after=inputs_after,
            launches=reply.launches,
            own_kernels=reply.own,
            checks=reply.checks,
            aliasing=reply.aliasing,
            max_configs=reply.max_configs,
            work=reply.work,
        )

    def model(self, key: str) -> Any:
        raise RuntimeError("the candidate's model lives in another process")

    def retune(self, key: str) -> Retuned:
        """Re-tune model `key`'s autotuned kernels in the worker, on the inputs of its last call."""
        return self._request(Retune(key=key), Retuned)

    def time_start(self, key: str, inputs: list[Any]) -> None:
        """Hand the worker the inputs to time model `key` on (tensors of its own: the judge's stay here)."""
        import torch

        path = self._path("timed_inputs")
        torch.save([x.detach().cpu() if isinstance(x, torch.Tensor) else x for x in inputs], path)
        try:
            self._request(TimeStart(key=key, inputs=str(path)), Done)
        finally:
            path.unlink(missing_ok=True)

    def time(self, rounds: int, warmup: int = 0, round_only: bool = False) -> list[float]:
        """The worker's times of `rounds` candidate calls (after `warmup` untimed ones), in ms; a tampered
        harness rejects the candidate."""
        reply = self._request(Time(rounds=rounds, warmup=warmup, round_only=round_only), Timed)
        if reply.tamper is not None and not reply.tamper.passed:
            raise Rejected(Status.CHEATING, f"tamper failed (while timing): {reply.tamper.detail}", "tamper")
        if len(reply.times_ms) != (1 if round_only else rounds):
            raise Rejected(Status.CRASHED, f"the worker sent {len(reply.times_ms)} times for {rounds} calls")
        return reply.times_ms

    def time_end(self) -> tuple[TimeEnded, list[list[Any]]]:
        """End the timing: what the worker counted, and the outputs of the timed calls it kept."""
        import torch

        path = self._path("timed_outputs")
        try:
            ended = self._request(TimeEnd(outputs=str(path)), TimeEnded)
            try:
                kept = torch.load(path, weights_only=True, map_location=self.device)
            except Exception as e:
                raise Rejected(
                    Status.CRASHED, f"the kept outputs of timed calls could not be read: {e}"[:MAX_TEXT]
                ) from None
        finally:
            path.unlink(missing_ok=True)
        if not isinstance(kept, list) or len(kept) != len(ended.kept):
            raise Rejected(Status.CRASHED, "the worker's kept outputs do not match its list of kept calls")
        return ended, [list(outs) for outs in kept]

    def finish(self) -> tuple[bool, str]:
        if not self.worker.alive:
            return False, "the worker is gone"
        try:
            reply = read_reply(
                self.worker.request(Finish(), max(1.0, self.deadline - time.monotonic())), Finished
            )
        except ValueError as e:
            return False, str(e)
        if isinstance(reply, Refused):
            return False, reply.reason
        return reply.clean, reply.why
