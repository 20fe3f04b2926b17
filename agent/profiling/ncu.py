"""Profiling candidates with Nsight Compute: metric sets, the ncu command, one ncu run for many candidates.

`profile_candidates` runs `ncu ... python -m agent.profiling.target REQUEST.json` once for all candidates
(process start, imports and inputs are paid once: 3 candidates took 10.3 s where one took 8.0 s on the
H200), keeps the `.ncu-rep` in `out_dir`, reads it back and gives each candidate the launches of its own
NVTX range `ncu_agent_c<i>`. Every failure (ncu missing, no counter permission, nothing profiled, a
timeout, an unreadable report, a candidate that raised) is a `ProfileResult` with `ok=False`, never an
exception.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from enum import StrEnum
from pathlib import Path
from typing import Any, NamedTuple

from pydantic import BaseModel, Field, ValidationError

from agent.evaluation import confine
from agent.evaluation.sandbox import BOOTSTRAP, die_with_parent, read_tail, worker_env
from agent.profiling.metric_sets import MetricSet, load_metric_set
from agent.profiling.read import (
    KernelLaunch,
    NcuProfile,
    NcuReportError,
    ranked_rules,
    read_report,
    seed_json,
)
from agent.profiling.target import RANGE_PREFIX, CandidateStatus, ProfileCandidate, ProfileRequest
from agent.records import NcuMetrics, ProblemSpec

ALL_RANGES = f"regex:{RANGE_PREFIX}[0-9]+/"
DEFAULT_NCU = "/usr/local/cuda/bin/ncu"
PERMISSION_MARK = "ERR_NVGPUCTRPERM"
NO_KERNELS_MARK = "No kernels were profiled"
MAX_LOG_SCAN = 64 * 1024**2


def find_ncu() -> str | None:
    """The ncu binary: $NCU, else ncu on PATH, else the CUDA toolkit's."""
    env = os.environ.get("NCU")
    if env:
        return shutil.which(env) or None
    return shutil.which("ncu") or shutil.which(DEFAULT_NCU)


def build_ncu_command(
    ncu: str,
    metric_set: MetricSet,
    report_path: Path | str,
    target_argv: list[str],
    range_regex: str = ALL_RANGES,
) -> list[str]:
    """ncu's argv: clocks left alone, only launches inside our NVTX ranges, the set's metrics, one report."""
    out = str(report_path).removesuffix(".ncu-rep")  # ncu appends the suffix itself
    cmd = [ncu, "--clock-control", "none", "--nvtx", "--nvtx-include", range_regex]
    if metric_set.set:
        cmd += ["--set", metric_set.set]
    for section in metric_set.sections:
        cmd += ["--section", section]
    if metric_set.metrics:
        cmd += ["--metrics", ",".join(metric_set.metrics)]
    return [*cmd, "-f", "-o", out, *target_argv]


class ProfileFailure(StrEnum):
    NCU_MISSING = "ncu_missing"
    PERMISSION = "permission"  # no access to the GPU's performance counters
    TIMEOUT = "timeout"
    NO_KERNELS = "no_kernels"  # nothing ran inside the candidate's NVTX range
    NO_REPORT = "no_report"
    UNREADABLE = "unreadable"
    CANDIDATE = "candidate"  # the candidate failed to import, build or run in the profiling process


class ProfileProvenance(BaseModel):
    ncu_version: str | None = None
    gpu_name: str | None = None
    launch_indices: list[int] = Field(
        default_factory=list, description="Indices of its launches in the report."
    )
    pinned_config: dict[str, dict[str, Any]] = Field(default_factory=dict, description="As asked for.")
    ran_config: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="Per autotuned kernel, the config it ran in the range (as reported).",
    )
    metric_set: str
    command: list[str] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)


class ProfileResult(BaseModel):
    """What profiling gave one candidate."""

    index: int
    ok: bool
    error: str | None = None
    error_kind: ProfileFailure | None = None
    report_path: Path | None = None
    metrics: NcuMetrics = Field(
        default_factory=dict, description="The seed prompt's form: kernel name -> one dict per launch."
    )
    rules: list[str] = Field(default_factory=list, description="ncu's findings, most important first.")
    launches: list[KernelLaunch] = Field(default_factory=list)
    provenance: ProfileProvenance
    wall_s: float = Field(
        default=0.0, description="Wall time of the whole ncu process, shared by its candidates."
    )


class _NcuRun(BaseModel):
    returncode: int | None
    timed_out: bool
    log_tail: str
    wall_s: float


def _run_ncu(cmd: list[str], log_path: Path, timeout_s: float, workdir: Path) -> _NcuRun:
    start = time.perf_counter()
    timed_out = False
    parent = os.getpid()
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            cmd,
            cwd=workdir,
            env=worker_env(box=workdir),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own group, for the kill below; and it dies with us:
            preexec_fn=lambda: die_with_parent(parent),  # a killed batch job leaves no ncu running
        )
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            timed_out = True
        finally:
            # ncu leads its own session: the target it started and anything that target left die too.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    wall = time.perf_counter() - start
    return _NcuRun(returncode=proc.returncode, timed_out=timed_out, log_tail=read_tail(log_path), wall_s=wall)


PERMISSION_HELP = (
    "ncu may not read the GPU's performance counters (ERR_NVGPUCTRPERM): the driver restricts them to "
    "administrators. Run as root, or load the nvidia module with NVreg_RestrictProfilingToAdminUsers=0 "
    "(https://developer.nvidia.com/ERR_NVGPUCTRPERM). `--clock-control none` leaves the clocks alone, but "
    "reading counters still needs this access."
)


def _log_has(log_path: Path, mark: str) -> bool:
    """Whether ncu printed `mark` anywhere: the target's own output may have pushed it out of the tail."""
    try:
        with log_path.open("rb") as f:
            return mark.encode() in f.read(MAX_LOG_SCAN)
    except OSError:
        return False


def _global_failure(
    run: _NcuRun, report: Path, log_path: Path, timeout_s: float
) -> tuple[ProfileFailure, str] | None:
    if run.timed_out:
        return ProfileFailure.TIMEOUT, f"ncu ran past {timeout_s:g} s and was killed with its target"
    if _log_has(log_path, PERMISSION_MARK):
        return ProfileFailure.PERMISSION, PERMISSION_HELP
    if report.is_file():
        return None
    if _log_has(log_path, NO_KERNELS_MARK):
        return ProfileFailure.NO_KERNELS, (
            "ncu profiled no kernel: none was launched inside an ncu_agent_c<i> NVTX range "
            f"(ncu exit code {run.returncode}). Its output ends:\n{run.log_tail[-1500:]}"
        )
    return ProfileFailure.NO_REPORT, (
        f"ncu exited with code {run.returncode} and wrote no report {report.name}. Its output ends:\n"
        f"{run.log_tail[-1500:]}"
    )


def _read_status(path: Path) -> CandidateStatus:
    try:
        return CandidateStatus.model_validate_json(path.read_text())
    except (OSError, ValidationError):
        return CandidateStatus()


def profile_candidates(
    problem: ProblemSpec,
    candidates: list[ProfileCandidate],
    metric_set: MetricSet | str,
    out_dir: Path | str,
    timeout_s: float = 300,
    *,
    ncu: str | None = None,
    seed: int = 0,
    name: str = "profile",
    rules_k: int = 5,
) -> list[ProfileResult]:
    """Profile every candidate in one ncu process; one result per candidate, in order."""
    ms = metric_set if isinstance(metric_set, MetricSet) else load_metric_set(metric_set)
    candidates = [ProfileCandidate.model_validate(c) for c in candidates]
    if not candidates:
        return []
    # The target runs in a temporary directory: relative paths would point nowhere there.
    problem = problem.model_copy(
        update={
            "reference_path": problem.reference_path.resolve(),
            "kernel_path": problem.kernel_path.resolve() if problem.kernel_path else None,
        }
    )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = _Files(out / f"{name}.ncu-rep", out / f"{name}.status.json", out / f"{name}.ncu.log")
    exe = ncu or find_ncu()
    if exe is None:
        hint = f" (NCU={os.environ['NCU']} is not an executable)" if os.environ.get("NCU") else ""
        return _fail_all(
            candidates,
            ms,
            ProfileFailure.NCU_MISSING,
            f"ncu not found{hint}: install Nsight Compute or set NCU=...",
        )
    base, box = confine.make_box(None)  # ncu and the target write only here; results are moved to `out`
    for stale in (
        files.report,
        files.status,
    ):  # a report left by an earlier run must never pass for this one's
        stale.unlink(missing_ok=True)
    req_path = out / f"{name}.request.json"
    req = ProfileRequest(
        problem=problem, candidates=candidates, seed=seed, status_path=box / files.status.name
    )
    req_path.write_text(req.model_dump_json(indent=1))
    shutil.copy(req_path, box / req_path.name)
    ranges = f"{RANGE_PREFIX}0/" if len(candidates) == 1 else ALL_RANGES
    target = [
        sys.executable,
        "-P",
        str(BOOTSTRAP),
        "--module",
        "agent.profiling.target",
        str(box / req_path.name),
    ]
    cmd = build_ncu_command(exe, ms, box / files.report.name, target, ranges)
    run = _run_in_box(cmd, problem, files, timeout_s, base, box)
    return _results(candidates, ms, files, run, cmd, timeout_s, rules_k)


class _Files(NamedTuple):
    """Where one profiling run leaves its report, the target's status and ncu's log."""

    report: Path
    status: Path
    log: Path


def _provenance(ms: MetricSet, candidate: ProfileCandidate, **kw: Any) -> ProfileProvenance:
    return ProfileProvenance(metric_set=ms.name, pinned_config=candidate.pinned_configs, **kw)


def _fail_all(
    candidates: list[ProfileCandidate], ms: MetricSet, kind: ProfileFailure, msg: str, **kw: Any
) -> list[ProfileResult]:
    return [
        ProfileResult(index=i, ok=False, error=msg, error_kind=kind, provenance=_provenance(ms, c), **kw)
        for i, c in enumerate(candidates)
    ]


def _run_in_box(
    cmd: list[str], problem: ProblemSpec, files: _Files, timeout_s: float, base: Path, box: Path
) -> _NcuRun:
    """ncu in the box, its report and the target's status moved out of it; the box removed."""
    try:
        run = _run_ncu(
            confine.box_for(cmd, box, [problem.reference_path], gpu=True), files.log, timeout_s, box
        )
        for made in (files.report, files.status):  # out of the box: the run's directory is never the target's
            with contextlib.suppress(OSError):
                shutil.move(box / made.name, made)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return run


def _results(
    candidates: list[ProfileCandidate],
    ms: MetricSet,
    files: _Files,
    run: _NcuRun,
    cmd: list[str],
    timeout_s: float,
    rules_k: int,
) -> list[ProfileResult]:
    """One result per candidate from the run, its report and the target's status."""
    status = _read_status(files.status)
    common: dict[str, Any] = {"wall_s": run.wall_s}

    failure = _global_failure(run, files.report, files.log, timeout_s)
    if failure is not None and failure[0] in (ProfileFailure.TIMEOUT, ProfileFailure.PERMISSION):
        return _fail_all(candidates, ms, *failure, **common)
    profile: NcuProfile | None = None
    if failure is None:
        try:
            profile = read_report(files.report, metrics=ms.display_metrics)
        except NcuReportError as e:
            failure = (ProfileFailure.UNREADABLE, str(e))
    return [
        _candidate_result(i, c, ms, status, failure, profile, files.report, cmd, rules_k, common)
        for i, c in enumerate(candidates)
    ]


def _candidate_result(
    i: int,
    candidate: ProfileCandidate,
    ms: MetricSet,
    status: CandidateStatus,
    failure: tuple[ProfileFailure, str] | None,
    profile: NcuProfile | None,
    report: Path,
    cmd: list[str],
    rules_k: int,
    common: dict[str, Any],
) -> ProfileResult:
    """Candidate i's result: its own error, else the run's, else its NVTX range of the report."""
    notes = status.notes.get(i, [])
    kind: ProfileFailure | None
    msg: str | None
    if i in status.errors:
        kind, msg = ProfileFailure.CANDIDATE, status.errors[i]
    elif failure is not None:
        kind, msg = failure
    else:
        kind, msg = None, None
    sub = profile.select(f"{RANGE_PREFIX}{i}") if profile is not None else None
    if kind is None and sub is not None and not sub.launches:
        kind, msg = ProfileFailure.NO_KERNELS, f"no kernel was profiled in NVTX range {RANGE_PREFIX}{i}"
        if profile is not None and not profile.launches:
            msg += f" (the report {report.name} holds no launch at all: empty or truncated?)"
    prov = _provenance(
        ms,
        candidate,
        ncu_version=profile.ncu_version if profile else None,
        gpu_name=profile.device_name if profile else None,
        launch_indices=[la.index for la in sub.launches] if sub else [],
        command=cmd,
        notes=notes,
        ran_config=status.ran_configs.get(i, {}),
    )
    return ProfileResult(
        index=i,
        ok=kind is None,
        error=msg,
        error_kind=kind,
        report_path=report if report.is_file() else None,
        metrics=seed_json(sub, ms.display_metrics) if sub and kind is None else {},
        rules=ranked_rules(sub, rules_k) if sub and kind is None else [],
        launches=sub.launches if sub else [],
        provenance=prov,
        **common,
    )
