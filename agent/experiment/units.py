"""Prompt experiments: arms (template set, stage file, model, sampling) x problems x samples, resumable.

    EXP_DIR/experiment.json              what runs: arms, problems, samples, seed, the shared run options
    EXP_DIR/runs/ARM/PROBLEM/sK/         one run directory per unit, as `ncu-agent run` makes it
                                         (records.sqlite, best_kernel.py), plus log.txt and unit.json
    EXP_DIR/cache/ARM/PROBLEM/sK.sqlite  the unit's LLM replies: a restarted unit gets them back for free
    EXP_DIR/results.json, report.html    metrics and paired statistics (agent/experiment/findings.py)

Controlled: every arm runs the same problems from the same starting kernels with the same budgets, and
sample k of a problem gets the same seed in every arm (sent to the endpoint as `seed`). Units run one at a
time, arms interleaved: for each sample, for each problem, every arm, the arms' order rotated at each
step, so that drift (a warming GPU, a busy endpoint) hits the arms alike. A unit is done when unit.json
says so (done, budget, or failed: its starting kernel was rejected); resume skips those and starts any
other unit again from nothing (its LLM replies come back from its cache).
"""

from __future__ import annotations

import hashlib
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from agent.batch.inputs import write_atomic
from agent.evaluation.evaluate import evaluate
from agent.evaluation.torch_policy import merged
from agent.experiment.design import (
    CONFIG_FILE,
    ArmSetup,
    ExperimentConfig,
    ExperimentError,
    prepare_arm,
    seeded_client,
)
from agent.problem import ProblemError, load_problem
from agent.records import EvalResult, Status
from agent.store import Store

UNIT_FILE = "unit.json"
FINAL = ("done", "budget", "failed")  # a unit that ended otherwise ("error", killed) runs again on resume


@dataclass(frozen=True)
class Unit:
    arm: str
    problem: str
    sample: int


class UnitOutcome(BaseModel):
    """unit.json: how one (arm, problem, sample) ended."""

    arm: str
    problem: str
    sample: int
    seed: int
    status: Literal["done", "budget", "failed", "error"]
    reason: str = ""
    run_id: int | None = None
    device: str = ""
    wall_s: float = 0.0
    finished_at: str = ""


def schedule(arms: list[str], problems: list[str], samples: int) -> list[Unit]:
    """Sample by sample, problem by problem, every arm; the arms' order rotates at each step, so each arm
    goes first equally often and none is always run right after another."""
    out = []
    for k in range(samples):
        for i, p in enumerate(problems):
            r = (k * len(problems) + i) % len(arms)
            out += [Unit(a, p, k) for a in arms[r:] + arms[:r]]
    return out


def unit_seed(seed: int, problem: str, sample: int) -> int:
    """The seed of sample `sample` of `problem`: the same in every arm."""
    digest = hashlib.sha256(f"{seed}:{problem}:{sample}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def unit_dir(exp_dir: Path, u: Unit) -> Path:
    return Path(exp_dir) / "runs" / u.arm / u.problem / f"s{u.sample}"


def read_unit(udir: Path) -> UnitOutcome | None:
    try:
        return UnitOutcome.model_validate_json((udir / UNIT_FILE).read_text())
    except (OSError, ValueError):
        return None


def is_done(udir: Path) -> bool:
    outcome = read_unit(udir)
    return outcome is not None and outcome.status in FINAL


class CheckMemo:
    """On the CPU nothing is timed and a check is deterministic (fixed input seeds), so an experiment checks
    each (problem, source) once and gives the verdict to every unit that evaluates the same source: the
    starting kernel is evaluated by every unit. On a GPU every unit measures its own candidates. Timeouts
    and crashes are not reused (they can come from a busy machine)."""

    def __init__(self) -> None:
        self.results: dict[tuple[str, str], EvalResult] = {}
        self.reused = 0

    @staticmethod
    def _key(problem: str, source: str) -> tuple[str, str]:
        return problem, hashlib.sha256(source.encode("utf-8", "surrogatepass")).hexdigest()

    def _keep(self, key: tuple[str, str], result: EvalResult) -> None:
        if result.device == "cpu" and result.status not in (Status.TIMEOUT, Status.CRASHED):
            self.results[key] = result.model_copy(deep=True)

    def load(self, exp_dir: Path, cfg: ExperimentConfig) -> None:
        """What the finished units of an earlier invocation checked."""
        for u in schedule([a.name for a in cfg.arms], [p.name for p in cfg.problems], cfg.samples):
            udir = unit_dir(exp_dir, u)
            if not is_done(udir) or not (udir / Store.FILENAME).exists():
                continue
            store = Store.open_dir(udir)
            try:
                rows = store.conn.execute(
                    "SELECT c.source, e.result FROM candidates c JOIN evaluations e ON e.candidate_id = c.id"
                ).fetchall()
            finally:
                store.close()
            for source, result in rows:
                self._keep(self._key(u.problem, source), EvalResult.model_validate_json(result))

    def evaluator(self, problem_name: str) -> Callable[..., EvalResult]:
        def check(problem: Any, source: str, device: str | None = None, **kw: Any) -> EvalResult:
            if device != "cpu":
                return evaluate(problem, source, device, **kw)
            key = self._key(problem_name, source)
            hit = self.results.get(key)
            if hit is not None:
                self.reused += 1
                return hit.model_copy(deep=True)
            result = evaluate(problem, source, device, **kw)
            self._keep(key, result)
            return result

        return check


def _device() -> tuple[str, str]:
    import torch

    if torch.cuda.is_available():
        return "cuda", torch.cuda.get_device_name(0)
    return "cpu", "cpu"


# --- running ---------------------------------------------------------------------------------------------
def run_unit(
    exp_dir: Path, cfg: ExperimentConfig, setup: ArmSetup, u: Unit, memo: CheckMemo | None, device: str
) -> UnitOutcome:
    """One (arm, problem, sample), from nothing: an unfinished earlier attempt is removed first."""
    # deferred: the loop and the prompt templates (jinja2) load only when a unit runs
    from agent.batch.hooks import FileReporter
    from agent.commands.run_problem import ProblemRun, run_one
    from agent.loop import LoopHooks
    from agent.prompt.render import template_dirs

    udir = unit_dir(exp_dir, u)
    if udir.exists():
        shutil.rmtree(udir)
    udir.mkdir(parents=True)
    entry = next(p for p in cfg.problems if p.name == u.problem)
    seed = unit_seed(cfg.seed, u.problem, u.sample)
    cache = Path(exp_dir) / "cache" / u.arm / u.problem / f"s{u.sample}.sqlite"
    cache.parent.mkdir(parents=True, exist_ok=True)
    plan = setup.for_unit(cache)
    out = UnitOutcome(arm=u.arm, problem=u.problem, sample=u.sample, seed=seed, status="error", device=device)
    t0 = time.monotonic()
    store = Store.open_dir(udir)
    try:
        spec = load_problem(entry.path)
        spec.allow_torch = merged(spec.allow_torch, plan.options.allow_torch)
        if spec.kernel_path is None:
            raise ProblemError(entry.path, "no starting Triton kernel: an experiment starts from one")
        job = ProblemRun(
            plan,
            spec,
            spec.kernel_path,
            store,
            udir,
            device,
            FileReporter(udir / "log.txt"),
            problem=str(entry.path),
            record={
                "experiment": str(Path(exp_dir).resolve()),
                "arm": u.arm,
                "sample": u.sample,
                "seed": seed,
            },
            hooks=lambda run_id: LoopHooks(memo.evaluator(u.problem) if memo is not None else None),
            client=seeded_client(plan.llm_settings, seed) if cfg.send_seed and plan.options.llm else None,
        )
        with template_dirs(*setup.template_dirs):
            end = run_one(job)
        out.run_id, out.status, out.reason = end.run_id, end.status, end.reason
    except ProblemError as e:
        out.status, out.reason = "failed", str(e)
    finally:
        store.close()
    out.wall_s = time.monotonic() - t0
    out.finished_at = datetime.now(UTC).isoformat(timespec="seconds")
    write_atomic(udir / UNIT_FILE, out.model_dump_json(indent=1))  # last: until then the unit is unfinished
    return out


def create_experiment(exp_dir: Path, cfg: ExperimentConfig) -> None:
    """A new experiment directory; refuses one that holds an experiment already (resume it instead)."""
    exp_dir = Path(exp_dir)
    if (exp_dir / CONFIG_FILE).exists():
        raise ExperimentError(f"{exp_dir} holds an experiment already: resume it with --resume {exp_dir}")
    names = [a.name for a in cfg.arms]
    if len(names) < 2 or len(set(names)) != len(names):
        raise ExperimentError(f"an experiment needs two or more arms with distinct names (got {names})")
    cfg.fingerprints = {a.name: prepare_arm(cfg, a).fingerprint for a in cfg.arms}  # bad arms fail here
    exp_dir.mkdir(parents=True, exist_ok=True)
    cfg.save(exp_dir)


def run_experiment(exp_dir: Path, log: Callable[[str], None] = lambda m: None) -> list[str]:
    """Run (or resume) every unit not done yet, in the interleaved order; returns notes for the report."""
    import fcntl

    exp_dir = Path(exp_dir)
    ExperimentConfig.load(exp_dir)  # not an experiment: say so before making a lock file there
    with (exp_dir / ".lock").open("a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ExperimentError(f"{exp_dir} is being run by another invocation") from None
        return _run(exp_dir, log)


def _run(exp_dir: Path, log: Callable[[str], None]) -> list[str]:
    cfg = ExperimentConfig.load(exp_dir)
    setups = {a.name: prepare_arm(cfg, a) for a in cfg.arms}
    device, machine = _device()
    if cfg.machine is None:
        cfg.machine = machine
        cfg.save(exp_dir)
    elif cfg.machine != machine:
        raise ExperimentError(
            f"{exp_dir} ran on {cfg.machine}; this machine is {machine}: results from two machines "
            "cannot be compared, start a new experiment"
        )
    notes = [
        f"arm {n}: its templates changed since the experiment started (fingerprint {cfg.fingerprints[n]} -> "
        f"{s.fingerprint}): units before and after the change are mixed"
        for n, s in setups.items()
        if cfg.fingerprints.get(n) not in (None, s.fingerprint)
    ]
    for n in notes:
        log(f"warning: {n}")
    memo = CheckMemo() if cfg.reuse_checks and device == "cpu" else None
    if memo is not None:
        memo.load(exp_dir, cfg)
    units = schedule([a.name for a in cfg.arms], [p.name for p in cfg.problems], cfg.samples)
    todo = [u for u in units if not is_done(unit_dir(exp_dir, u))]
    log(f"{len(units) - len(todo)} of {len(units)} units done already; {len(todo)} to run")
    for i, u in enumerate(todo, 1):
        out = run_unit(exp_dir, cfg, setups[u.arm], u, memo, device)
        log(
            f"[{i}/{len(todo)}] s{u.sample} {u.problem} {u.arm}: {out.status} ({out.wall_s:.1f} s)"
            + (f" {out.reason[:100]}" if out.status != "done" else "")
        )
    if memo is not None and memo.reused:
        log(f"{memo.reused} checks reused on the CPU (the same source for the same problem)")
    return notes
