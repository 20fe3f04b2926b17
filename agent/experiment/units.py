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
import re
import shutil
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agent.batch.inputs import ProblemEntry, write_atomic
from agent.config import RunOptions
from agent.prompt.stages import Stage
from agent.records import EvalResult, Status
from agent.run_setup import RunPlan

CONFIG_FILE = "experiment.json"
UNIT_FILE = "unit.json"
FINAL = ("done", "budget", "failed")  # a unit that ended otherwise ("error", killed) runs again on resume
ARM_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,39}$")
_ALIASES = {"stage": "stages", "template_dir": "prompts", "templates": "prompts", "llm_config": "config"}
_SHARED = {  # LLM settings an arm may not change: they are the experiment's controls, or secrets
    "api_key": "keys come from the environment or a config file's api_key_env, never from the command line",
    "max_requests": "budgets are the same for every arm: use --max-requests",
    "max_tokens_total": "budgets are the same for every arm: use --max-tokens-total",
    "cache_path": "each unit has its own cache in the experiment directory",
    "use_cache": "each unit has its own cache in the experiment directory",
}


class ExperimentError(ValueError):
    """An arm, or an experiment directory, that cannot run (bad syntax, unknown stage, changed machine...)."""


class Arm(BaseModel):
    """One arm: what differs from the other arms. Everything not named here is the experiment's."""

    model_config = ConfigDict(extra="forbid")

    name: str
    spec: str = Field(default="", description="As given on the command line.")
    stages: list[str] | None = Field(default=None, description="Bundled stage names or stage TOML paths.")
    prompts: str | None = Field(default=None, description="A template folder searched before prompts/.")
    llm_config: str | None = Field(default=None, description="A TOML file with an [llm] table.")
    search: str | None = Field(default=None, description="The built-in search instead of the LLM.")
    llm: dict[str, Any] = Field(default_factory=dict, description="LLM settings (model, temperature...).")


def _abs(value: str) -> str:
    return str(Path(value).expanduser().resolve())


def _is_path(stage: str) -> bool:
    return stage.endswith(".toml") or "/" in stage


def parse_arm(text: str) -> Arm:
    """`NAME=KEY:VALUE,KEY:VALUE...` (or KEY=VALUE). Paths are made absolute: resume works from anywhere."""
    from agent.llm.settings import LLMSettings

    name, sep, spec = text.partition("=")
    name = name.strip()
    if not sep or not spec.strip():
        raise ExperimentError(
            f"--arm {text!r}: write NAME=SPEC, e.g. A=model:gpt-4o or "
            "B=stage:./micro_rules.toml,temperature:0.2"
        )
    if not ARM_NAME.match(name):
        raise ExperimentError(
            f"--arm {text!r}: an arm's name is letters, digits, '.', '_' or '-' (40 at most)"
        )
    arm = Arm(name=name, spec=spec.strip())
    seen: set[str] = set()
    for item in (i.strip() for i in spec.split(",")):
        if not item:
            continue
        m = re.match(r"^([A-Za-z_]+)\s*[:=]\s*(.+)$", item)
        if not m:
            raise ExperimentError(f"--arm {name}: {item!r} is not KEY:VALUE")
        key, value = _ALIASES.get(m[1].lower(), m[1].lower()), m[2].strip()
        if key in seen:
            raise ExperimentError(f"--arm {name}: {key} is given twice")
        seen.add(key)
        if key == "stages":
            arm.stages = [_abs(s) if _is_path(s) else s for s in value.split("+") if s.strip()]
        elif key == "prompts":
            arm.prompts = _abs(value)
        elif key == "config":
            arm.llm_config = _abs(value)
        elif key == "search":
            arm.search = value
        elif key in _SHARED:
            raise ExperimentError(f"--arm {name}: {key} cannot differ between arms: {_SHARED[key]}")
        elif key in LLMSettings.model_fields:
            arm.llm[key] = value
        else:
            known = [
                "stage",
                "prompts",
                "config",
                "search",
                *sorted(set(LLMSettings.model_fields) - set(_SHARED)),
            ]
            raise ExperimentError(f"--arm {name}: unknown key {key!r}; known keys: {', '.join(known)}")
    return arm


class ExperimentConfig(BaseModel):
    """experiment.json: what the experiment runs. It never changes once the experiment has started."""

    version: int = 1
    created_at: str = Field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    arms: list[Arm]
    problems: list[ProblemEntry]
    samples: int = Field(ge=1)
    seed: int = 0
    run: RunOptions = Field(
        description="Shared: default stages, target GPU, iterations, LLM defaults, budgets."
    )
    send_seed: bool = Field(default=True, description="Send each unit's seed to the endpoint as `seed`.")
    reuse_checks: bool = Field(
        default=True, description="On the CPU, check each (problem, source) once per experiment."
    )
    machine: str | None = Field(default=None, description="Where it ran ('cpu' or the GPU's name).")
    fingerprints: dict[str, str] = Field(default_factory=dict, description="Per arm, its template set.")

    def arm(self, name: str) -> Arm:
        return next(a for a in self.arms if a.name == name)

    @classmethod
    def load(cls, exp_dir: Path) -> ExperimentConfig:
        path = Path(exp_dir) / CONFIG_FILE
        if not path.is_file():
            raise ExperimentError(f"{exp_dir}: no {CONFIG_FILE} (not an experiment directory)")
        return cls.model_validate_json(path.read_text())

    def save(self, exp_dir: Path) -> None:
        write_atomic(Path(exp_dir) / CONFIG_FILE, self.model_dump_json(indent=1))


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


# --- an arm's setup ------------------------------------------------------------------------------------
def load_stage_file(path: Path, dirs: list[Path]) -> Stage:
    """A stage TOML outside prompts/stages; its template is looked up in `dirs`, then in prompts/."""
    from agent.prompt.stages import StageError
    from agent.resources import prompts_dir
    from agent.source.stage_rules import RULES

    try:
        stage = Stage.model_validate(tomllib.loads(path.read_text()))
    except (OSError, tomllib.TOMLDecodeError, ValidationError) as e:
        raise StageError(f"stage file {path}: {e}") from None
    if not any((d / stage.template).is_file() for d in [*dirs, prompts_dir()]):
        where = ", ".join(str(d) for d in [*dirs, prompts_dir()])
        raise StageError(f"stage file {path} uses template {stage.template!r}, found in none of {where}")
    unknown = [r for r in stage.constraints.rule_ids() if r not in RULES]
    if unknown:
        raise StageError(f"stage file {path} names unknown constraint rule(s) {', '.join(unknown)}")
    return stage


@dataclass
class ArmSetup:
    arm: Arm
    plan: RunPlan  # its LLM settings still point at no unit's cache (see for_unit)
    template_dirs: list[Path]
    fingerprint: str

    def for_unit(self, cache_path: Path) -> RunPlan:
        from dataclasses import replace

        llm = self.plan.llm_settings.model_copy(update={"cache_path": cache_path, "use_cache": True})
        llm._sources = self.plan.llm_settings._sources
        return replace(self.plan, llm_settings=llm)


def _fingerprint(dirs: list[Path], stage_files: list[Path]) -> str:
    """A hash of everything that can shape an arm's prompts: its folders, prompts/ (not its report pages)."""
    from agent.resources import prompts_dir

    h = hashlib.sha256()
    for d in [*dirs, prompts_dir()]:
        for f in sorted(d.rglob("*")):
            rel = f.relative_to(d)
            if f.suffix in (".j2", ".toml") and rel.parts[0] != "report":
                h.update(f"{rel}\0".encode() + f.read_bytes())
    for f in stage_files:
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def prepare_arm(cfg: ExperimentConfig, arm: Arm) -> ArmSetup:
    """An arm's stages, template folders, target GPU and LLM settings; ExperimentError if any is bad."""
    from agent.llm.settings import LLMConfigError, load_llm_settings
    from agent.prompt.gpus import find_gpu, resolve_gpu
    from agent.prompt.stages import default_pipeline, load_stage
    from agent.proposers.search import SearchProposer

    names = arm.stages or cfg.run.stages or default_pipeline()
    files = [Path(s) for s in names if _is_path(s)]
    dirs = ([Path(arm.prompts)] if arm.prompts else []) + list(dict.fromkeys(f.parent for f in files))
    try:
        for d in dirs:
            if not d.is_dir():
                raise ValueError(f"template folder {d} does not exist")
        stages = [load_stage_file(Path(s), dirs) if _is_path(s) else load_stage(s) for s in names]
        target = resolve_gpu(cfg.run.gpu)
        overrides = {**cfg.run.llm_overrides, **arm.llm}
        llm = load_llm_settings(Path(arm.llm_config) if arm.llm_config else cfg.run.llm_config, overrides)
        if arm.search is None:
            llm.require_model()
        elif arm.search not in SearchProposer.STRATEGIES:
            raise ValueError(f"search {arm.search!r}: choose one of {', '.join(SearchProposer.STRATEGIES)}")
    except (KeyError, ValueError, LLMConfigError) as e:
        raise ExperimentError(f"arm {arm.name}: {e}") from None
    options = cfg.run.model_copy(
        update={"stages": names, "llm": arm.search is None, "search": arm.search or cfg.run.search}
    )
    note = "" if target is not None else " (no GPU detected and no --gpu: prompts target the H200)"
    plan = RunPlan(options, stages, target or find_gpu("h200"), note, llm)
    return ArmSetup(arm, plan, dirs, _fingerprint(dirs, files))


def _seeded_client(settings: Any, seed: int) -> Any:
    """A ChatClient that sends `seed` with every request (endpoints that support it sample reproducibly)."""
    from agent.llm.client import ChatClient

    class SeededChatClient(ChatClient):
        def _request(self, prompt: str, n: int, temperature: float) -> tuple[int, str]:
            extra: dict[str, Any] = {"n": n} if n > 1 else {}
            raw = self._client.chat.completions.with_raw_response.create(
                model=self.model,
                messages=[{"role": "user", "content": prompt}],
                temperature=temperature,
                max_tokens=self.settings.max_tokens,
                seed=seed,
                **extra,
            )
            return raw.status_code, raw.text

    return SeededChatClient(settings)


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
        from agent.store import Store

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
        from agent.evaluation.evaluate import evaluate

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
    from agent.batch.hooks import FileReporter
    from agent.loop import LoopHooks
    from agent.problem import ProblemError, load_problem
    from agent.prompt.render import template_dirs
    from agent.run_setup import ProblemRun, run_one
    from agent.store import Store

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
            client=_seeded_client(plan.llm_settings, seed) if cfg.send_seed and plan.options.llm else None,
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
