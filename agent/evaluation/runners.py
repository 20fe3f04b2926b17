"""The runners the judge (`agent.evaluation.judge`) reaches the candidate session
(agent/evaluation/candidate_session.py) by:
- `RemoteRunner`: the session in a worker process (`python -m agent.evaluation.worker --serve`), reached over
  its pipes; inputs and outputs cross as `torch.save` files read back with `weights_only=True`.
- `InProcessRunner`: the session in the judge's own process (the one-process layout).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from agent.evaluation import cuda_ipc
from agent.evaluation.candidate_session import CallResult, CandidateSession
from agent.evaluation.messages import (
    Build,
    Call,
    Called,
    Done,
    Fetch,
    Finish,
    Finished,
    Load,
    Probe,
    Probed,
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

HEADROOM_BYTES = 512 << 20  # GPU memory the judge keeps free when it sizes buffers for the worker's tensors


class InProcessRunner:
    """The candidate in the judge's own process (the one-process layout)."""

    in_process = True
    transport = "none: the candidate runs in the judge's process"

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
        self.transport = "files (torch.save, read with weights_only)"

    @property
    def ipc(self) -> bool:
        return self.transport.startswith("CUDA IPC")

    def _choose_transport(self) -> None:
        """On a GPU, CUDA IPC when a probe buffer maps in the worker (decided once per worker), else files."""
        known = getattr(self.worker, "transport", None)
        if known is None:
            known = self.transport
            if self.device == "cuda":
                works, why = self._probe()
                known = (
                    "CUDA IPC (the judge's buffers, mapped by the worker)"
                    if works
                    else f"{self.transport}: CUDA IPC did not work here ({why})"
                )
            self.worker.transport = known
        self.transport = known

    def _probe(self) -> tuple[bool, str]:
        import torch

        if os.environ.get("NCU_AGENT_IPC", "1") == "0":
            return False, "NCU_AGENT_IPC=0"
        exported = cuda_ipc.Exported()
        try:
            x = torch.arange(4096, device="cuda") % 251
            shared = exported.share(x.to(torch.uint8))
            torch.cuda.synchronize()
            got = self._request(Probe(shared=shared), Probed).sum
            want = int(x.sum())
            return got == want, f"the worker read {got}, not {want}"
        except (cuda_ipc.IpcError, OSError, Rejected) as e:
            return False, str(getattr(e, "reason", e))[:300]
        finally:
            exported.release()

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
        self._choose_transport()  # before the candidate is imported
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
        src, dst = self._path("inputs"), self._path("outputs")
        exported = cuda_ipc.Exported() if self.ipc else None
        try:
            # "again": the worker calls with the very tensors it holds, untouched
            shared = self._send_inputs(inputs, src, exported) if mode != "again" else []
            call = Call(
                key=key,
                inputs=str(src),
                outputs=str(dst),
                mode=mode,
                config=config,
                where=where,
                poison=poison,
                shared=shared,
                ipc=self.ipc,
            )
            reply = self._request(call, Called)
            if exported is not None:
                exported.release()  # the worker holds its copies: the GPU memory is the outputs' now
            outputs, inputs_after = (
                self._fetch(reply.outputs_meta, reply.inputs_meta, inputs) if self.ipc else self._read(dst)
            )
        except cuda_ipc.IpcError as e:
            raise _ipc_failed(where, e) from None
        finally:
            if exported is not None:
                exported.release()
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

    def _send_inputs(
        self, inputs: list[Any], path: Path, exported: cuda_ipc.Exported | None
    ) -> list[cuda_ipc.SharedTensor | None]:
        """The inputs to `path` (torch.save); with CUDA IPC, the GPU tensors into the judge's buffers instead
        (their places in the file hold None)."""
        import torch

        shared: list[cuda_ipc.SharedTensor | None] = [
            exported.share(x.detach()) if exported is not None and _on_gpu(x) else None for x in inputs
        ]
        if exported is not None:
            torch.cuda.synchronize()  # the buffers are full before the worker maps them
        torch.save(
            [
                None if sh is not None else x.detach().cpu() if isinstance(x, torch.Tensor) else x
                for x, sh in zip(inputs, shared, strict=True)
            ],
            path,
        )
        return shared if exported is not None else []

    def _read(self, path: Path, kept: str = "") -> tuple[list[Any], list[Any]]:
        """A call's outputs and inputs-after from the worker's file (`kept`: a plain list under that name,
        the timed calls' outputs)."""
        import torch

        try:
            data = torch.load(path, weights_only=True, map_location=self.device)
            if kept:
                if not isinstance(data, list):
                    raise ValueError(f"not a list of {kept}")
                return list(data), []
            return list(data["outputs"]), list(data["inputs_after"])
        except Exception as e:
            raise Rejected(
                Status.CRASHED, f"the worker's outputs could not be read: {e}"[:MAX_TEXT]
            ) from None

    def _fetch(
        self,
        outputs_meta: list[cuda_ipc.TensorMeta | None] | None,
        inputs_meta: list[cuda_ipc.TensorMeta | None] | None,
        inputs: list[Any],
    ) -> tuple[list[Any], list[Any]]:
        """The worker's tensors (a call's outputs and inputs-after, or the kept outputs of timed calls),
        copied by the worker into buffers the judge allocated for the sizes it said (each within the GPU's
        free memory less a margin; a size past what the GPU has fails cleanly, as an allocation error)."""
        import torch

        if outputs_meta is None or inputs_meta is None or len(inputs_meta) != len(inputs):
            raise Rejected(Status.CRASHED, "the worker did not describe its tensors")
        limit = torch.cuda.mem_get_info()[0] - HEADROOM_BYTES
        exported = cuda_ipc.Exported()
        try:
            outs = [exported.empty(m, limit) if m is not None else None for m in outputs_meta]
            ins = [exported.empty(m, limit) if m is not None else None for m in inputs_meta]
            fetch = Fetch(
                outputs=[o[0] if o else None for o in outs], inputs=[i[0] if i else None for i in ins]
            )
            self._request(fetch, Done)
            outputs = [cuda_ipc.read_back(*o) if o else None for o in outs]
            after = [cuda_ipc.read_back(*i) if i else x for i, x in zip(ins, inputs, strict=True)]
            torch.cuda.synchronize()  # copied out before the buffers are freed
        finally:
            exported.release()
        return outputs, after

    def model(self, key: str) -> Any:
        raise RuntimeError("the candidate's model lives in another process")

    def retune(self, key: str) -> Retuned:
        """Re-tune model `key`'s autotuned kernels in the worker, on the inputs of its last call."""
        return self._request(Retune(key=key), Retuned)

    def time_start(self, key: str, inputs: list[Any]) -> None:
        """Hand the worker the inputs to time model `key` on (tensors of its own: the judge's stay here)."""
        path = self._path("timed_inputs")
        exported = cuda_ipc.Exported() if self.ipc else None
        try:
            shared = self._send_inputs(inputs, path, exported)
            self._request(TimeStart(key=key, inputs=str(path), shared=shared), Done)
        except cuda_ipc.IpcError as e:
            raise _ipc_failed("timing", e) from None
        finally:
            if exported is not None:
                exported.release()
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
        path = self._path("timed_outputs")
        try:
            ended = self._request(TimeEnd(outputs=str(path), ipc=self.ipc), TimeEnded)
            if self.ipc:
                flat, _ = self._fetch(ended.outputs_meta, [], [])
            else:
                flat, _ = self._read(path, "kept_outputs")
        except cuda_ipc.IpcError as e:
            raise _ipc_failed("timing", e) from None
        finally:
            path.unlink(missing_ok=True)
        if len(ended.per_call) != len(ended.kept) or sum(ended.per_call) != len(flat):
            raise Rejected(Status.CRASHED, "the worker's kept outputs do not match its list of kept calls")
        kept, at = [], 0
        for n in ended.per_call:
            kept.append(flat[at : at + n])
            at += n
        return ended, kept

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


def _on_gpu(x: Any) -> bool:
    import torch

    return isinstance(x, torch.Tensor) and x.is_cuda


def _ipc_failed(where: str, e: cuda_ipc.IpcError) -> Rejected:
    return Rejected(Status.CRASHED, f"{where}: CUDA IPC failed: {e}"[:MAX_TEXT])
