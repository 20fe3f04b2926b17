"""The messages between the judge's side and a serving worker (`python -m agent.evaluation.worker --serve`).

One JSON line each way per command. A command names its `op`; the worker answers with the reply of that
command, or `Refused` (the candidate was rejected: a verdict, not a fault). Tensors never travel here:
they cross as `torch.save` files whose paths the commands name (agent/evaluation/candidate_session.py).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, Field, TypeAdapter, ValidationError

from agent.evaluation.cuda_ipc import SharedTensor, TensorMeta
from agent.records import Check, EvalRequest, EvalResult, RetuneNote, Status


class Load(BaseModel):
    """Import the candidate's source as a module in `dir` (the worker's working directory from then on)."""

    op: Literal["load"] = "load"
    dir: str
    source: str
    device: str
    allow_torch: list[str] = []  # the torch-op policy's names (agent.evaluation.torch_policy)
    quick_autotune: bool = False  # the judge re-tunes on the GPU: the autotuner's own pick may be quick


class Build(BaseModel):
    """Build the candidate's ModelNew `key` from the init inputs and state dict saved at `path`."""

    op: Literal["build"] = "build"
    key: str
    seed: int
    path: str


class Call(BaseModel):
    """Call model `key` on the inputs saved at `inputs`; outputs and inputs after the call go to `outputs`.
    `mode` "same" or "refresh": fill the tensors of the previous call (same data pointers) with these
    values; "again": call with the tensors of the previous call untouched (nothing is loaded); anything
    else: the loaded tensors as they are. `poison`: deterministic algorithms and NaN-filled torch.empty
    on for this call (the judge draws it)."""

    op: Literal["call"] = "call"
    key: str
    inputs: str
    outputs: str
    mode: str
    config: int = 0
    where: str
    poison: bool = True
    shared: list[SharedTensor | None] = []  # CUDA IPC: the tensor inputs, in the judge's buffers
    ipc: bool = False  # the outputs wait for `Fetch` instead of going to the file `outputs`


class Fetch(BaseModel):
    """Copy the last call's outputs and inputs (as they were after it) into the judge's buffers (CUDA IPC);
    None: nothing to copy there."""

    op: Literal["fetch"] = "fetch"
    outputs: list[SharedTensor | None]
    inputs: list[SharedTensor | None]


class Probe(BaseModel):
    """Map a judge's buffer of known bytes and say what it holds: whether CUDA IPC works here."""

    op: Literal["probe"] = "probe"
    shared: SharedTensor


class Retune(BaseModel):
    """Re-choose the configs of model `key`'s autotuned kernels by timing them on the inputs of its last call
    (agent/evaluation/retune.py); the judge then checks the pinned configs' outputs."""

    op: Literal["retune"] = "retune"
    key: str


class TimeStart(BaseModel):
    """Start timing model `key` on the inputs saved at `inputs` (loaded into tensors of their own), with
    the tensor inputs in the judge's buffers when `shared` is given (CUDA IPC)."""

    op: Literal["time_start"] = "time_start"
    key: str
    inputs: str
    shared: list[SharedTensor | None] = []


class Time(BaseModel):
    """`warmup` untimed calls, then `rounds` timed ones (a cold cache before each); `round_only`: one round,
    flush included, timed as a whole (to plan how many rounds fit)."""

    op: Literal["time"] = "time"
    rounds: int = Field(ge=0, le=100_000)
    warmup: int = Field(default=0, ge=0, le=1000)
    round_only: bool = False


class TimeEnd(BaseModel):
    """End the timing: the kept outputs go to `outputs`, or with `ipc` wait for `Fetch`."""

    op: Literal["time_end"] = "time_end"
    outputs: str
    ipc: bool = False


class Finish(BaseModel):
    """Unload the candidate; the reply says whether the process is clean enough to be reused."""

    op: Literal["finish"] = "finish"


class Evaluate(BaseModel):
    """Judge and candidate in the worker (the one-process layout, `evaluate(split=False)`)."""

    op: Literal["evaluate"] = "evaluate"
    request: EvalRequest
    dir: str


class Bye(BaseModel):
    """End the worker's loop; it exits."""

    op: Literal["bye"] = "bye"


Command = Annotated[
    Load | Build | Call | Fetch | Probe | Retune | TimeStart | Time | TimeEnd | Finish | Evaluate | Bye,
    Field(discriminator="op"),
]
COMMAND: TypeAdapter[Command] = TypeAdapter(Command)


class Done(BaseModel):
    """The command did what it said."""

    ok: Literal[True] = True
    note: str = ""  # what a build did with the reference's weights (agent.evaluation.weights)


class Refused(BaseModel):
    """The candidate was rejected while the command ran (or the harness failed: `reason` says which)."""

    ok: Literal[False] = False
    status: Status
    reason: str
    rule: str | None = None


R = TypeVar("R", bound=Done)


class Called(Done):
    """What the worker saw during a `Call`: kernel launches, its own kernels, the guards' findings."""

    launches: dict[str, int]
    own: list[str]
    checks: list[Check]
    aliasing: list[tuple[int, int]]
    max_configs: int = 1
    outputs_meta: list[TensorMeta | None] | None = None  # CUDA IPC: what `Fetch` will copy
    inputs_meta: list[TensorMeta | None] | None = None
    work: dict[
        str, float
    ] = {}  # host_ms: the thread's CPU time outside launches; ops: the candidate's ATen ops


class Probed(Done):
    sum: int  # of the buffer's bytes as the worker read them


class Retuned(Done):
    notes: list[RetuneNote]
    chosen: dict[str, dict[str, Any]] = {}


class Timed(Done):
    times_ms: list[float]
    tamper: Check | None = None  # the tamper watch after the calls (the timing code is watched too)


class TimeEnded(Done):
    calls: int  # the candidate's calls while timed, warm-ups included
    own_launches: int  # launches of the candidate's own kernels in those calls
    kept: list[int]  # which calls' outputs were kept (saved at TimeEnd.outputs)
    per_call: list[int] = []  # how many outputs each kept call has
    outputs_meta: list[TensorMeta | None] | None = None  # CUDA IPC: the kept outputs, one after another
    chosen: dict[str, dict[str, Any]] = {}  # each autotuned kernel's config in the timed calls


class Finished(Done):
    clean: bool
    why: str = ""


class Evaluated(Done):
    result: EvalResult
    clean: bool
    why: str = ""


def read_reply(reply: dict[str, Any], kind: type[R]) -> R | Refused:
    """The worker's reply as `kind`, or as `Refused`; ValueError when it is neither."""
    try:
        return Refused.model_validate(reply) if reply.get("ok") is False else kind.model_validate(reply)
    except ValidationError as e:
        raise ValueError(f"the worker's reply could not be read: {e}"[:2000]) from None
