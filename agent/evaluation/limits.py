"""The harness's own limits on a worker, sized to the problem so that they never fail an honest candidate.

A worker writes the candidate's outputs (and its inputs after the call) to a file that the judge reads
back (agent.evaluation.runners.RemoteRunner), under RLIMIT_FSIZE; on the CPU its address space is
capped too. Fixed caps failed every problem whose tensors outgrew them (a level-1 LayerNorm's output is
1 GiB): here both grow with the bytes of one call, found on the meta device without allocating, and a
write that still meets the cap is reported as the harness's limit (`limit_hit`), never the candidate's.
"""

from __future__ import annotations

import errno
import resource

from pydantic import BaseModel

from agent.evaluation.sandbox import CPU_ADDRESS_SPACE_BYTES as MIN_ADDRESS_SPACE_BYTES
from agent.evaluation.sandbox import MAX_FILE_BYTES as MIN_FILE_BYTES  # also caps the worker's log files
from agent.problem import ProblemError, inspect_problem
from agent.records import ProblemSpec

MIB = 1024**2
FILE_HEADROOM = 2  # outputs and inputs-after share one file; dtypes can widen (float64 outputs)
ADDRESS_SPACE_HEADROOM = 8  # inputs, outputs, a copy of each on the way through files, the interpreter's


class WorkerLimits(BaseModel):
    file_bytes: int = MIN_FILE_BYTES
    address_space_bytes: int | None = MIN_ADDRESS_SPACE_BYTES


def call_bytes(spec: ProblemSpec, small: bool) -> int:
    """Bytes of one call's inputs and outputs at the size evaluated (meta device; 0 if it cannot tell)."""
    try:
        shapes = inspect_problem(spec, small)
    except ProblemError:
        return 0
    inputs = sum(t.nbytes for t in shapes.inputs)
    outputs = sum(t.nbytes for t in shapes.outputs) if shapes.outputs else 2 * inputs
    return inputs + outputs


def limits_for(spec: ProblemSpec, device: str, small: bool) -> WorkerLimits:
    """Caps that hold one call's tensors with room to spare (the address space only on the CPU: CUDA
    reserves huge virtual ranges up front)."""
    need = call_bytes(spec, small)
    return WorkerLimits(
        file_bytes=max(MIN_FILE_BYTES, FILE_HEADROOM * need + 64 * MIB),
        address_space_bytes=max(MIN_ADDRESS_SPACE_BYTES, ADDRESS_SPACE_HEADROOM * need + 8 * 1024**3)
        if device == "cpu"
        else None,
    )


def limit_hit(e: BaseException, what: str, nbytes: int) -> str | None:
    """The verdict's text when writing `what` met the file-size cap (torch.save reports it as an
    'unexpected pos' error or EFBIG); None for any other error."""
    if not (
        (isinstance(e, OSError) and e.errno == errno.EFBIG)
        or "unexpected pos" in str(e)
        or "File too large" in str(e)
    ):
        return None
    cap = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    return (
        f"the harness's per-file write limit (RLIMIT_FSIZE, {cap / MIB:.0f} MiB) was hit writing {what} "
        f"({nbytes / MIB:.0f} MiB): a limit of the harness, not of the candidate"
    )
