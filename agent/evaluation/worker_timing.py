"""The worker's side of re-tuning and timing in the split layout (agent/evaluation/worker.py serves it).

The judge times the baselines in its own process and asks the worker, in turns, to time the candidate
(agent/evaluation/timing_sides.py). Here the candidate's calls run: on tensors of their own loaded from
the judge's file, with the cold-cache clock of the device, counted with their launches, a few outputs kept
at random (agent/evaluation/timed_calls.py). Candidate code runs in this process, so the timing functions
are bound before the candidate's first timed call (a patch of the clock's class made during a call does
not reach the chunk it was made in) and the tamper watch, which covers this module and the clocks, is read
after every chunk and sent with its times.
"""

from __future__ import annotations

from typing import Any

from agent.evaluation import cuda_ipc, retune, triton_hooks
from agent.evaluation.candidate_session import CandidateSession
from agent.evaluation.messages import Retune, Retuned, Time, Timed, TimeEnd, TimeEnded, TimeStart
from agent.evaluation.timed_calls import TimedCalls
from agent.evaluation.timing_sides import LocalSide, clock_for
from agent.evaluation.verdicts import candidate_raised


class WorkerTiming:
    """One candidate's timing in this worker: started by `TimeStart`, run by `Time`, ended by `TimeEnd`."""

    def __init__(self, session: CandidateSession, cmd: TimeStart):
        self.session = session
        self.inputs = cuda_ipc.load_inputs(cmd.inputs, cmd.shared, session.device)
        self.calls = TimedCalls(session.models[cmd.key], session.module.__name__)
        inputs = self.inputs
        self.side = LocalSide({"candidate": lambda: self.calls(*inputs)}, clock_for(session.device))

    def time(self, cmd: Time) -> Timed:
        import torch

        try:
            with torch.no_grad():
                if cmd.warmup:
                    self.side.warm(cmd.warmup)
                if cmd.round_only:
                    times = [self.side.round_s() * 1e3]
                elif cmd.rounds:
                    times = self.side.timed(["candidate"], cmd.rounds)["candidate"]
                else:
                    times = []
        except BaseException as e:
            raise candidate_raised(e, "while timing: the candidate raised ", self.session.file) from None
        return Timed(times_ms=times, tamper=self.session.watch.check())

    def end(self, cmd: TimeEnd) -> tuple[TimeEnded, list[Any]]:
        """What was counted, and the kept outputs one after another (with `ipc`, for the judge's `Fetch`;
        else saved to `cmd.outputs`)."""
        import torch

        self.calls.close()
        kept = self.calls.kept
        flat = [o for _, outs in kept for o in outs]
        ended = TimeEnded(
            calls=self.calls.calls,
            own_launches=self.calls.own_launches(),
            kept=[i for i, _ in kept],
            per_call=[len(outs) for _, outs in kept],
            chosen=triton_hooks.chosen_configs(),
        )
        if cmd.ipc:
            ended.outputs_meta = [cuda_ipc.meta(o) for o in flat]
        else:
            torch.save([o.detach().cpu() for o in flat], cmd.outputs)
        return ended, flat


def retune_in_worker(session: CandidateSession, cmd: Retune) -> Retuned:
    """Re-tune model `key`'s autotuned kernels on the inputs of its last call; the judge checks the pinned
    configs' outputs with its next call (a wrong one rejects the candidate)."""
    import torch

    model, inputs = session.models[cmd.key], session.inputs[cmd.key]

    def unchecked(_: Any) -> None:
        return None

    try:
        with torch.no_grad():
            notes, _ = retune.retune(list(triton_hooks.STATE.autotuners), lambda: model(*inputs), unchecked)
    except BaseException as e:
        raise candidate_raised(e, "while re-tuning its autotune configs: ", session.file) from None
    return Retuned(notes=notes, chosen=triton_hooks.chosen_configs())
