"""What an experiment compares: its arms (`--arm NAME=KEY:VALUE,...`), its config (experiment.json), and
each arm's setup (stages, template folders, target GPU, LLM settings) as a run plan
(agent/commands/run_setup.py). agent/experiment/units.py runs it."""

from __future__ import annotations

import hashlib
import re
import tomllib
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agent.batch.inputs import ProblemEntry, write_atomic
from agent.commands.run_setup import RunPlan
from agent.config import RunOptions
from agent.data.paths import prompts_dir
from agent.llm.client import ChatClient
from agent.llm.settings import LLMConfigError, LLMSettings, load_llm_settings
from agent.prompt.gpus import find_gpu, resolve_gpu
from agent.prompt.stages import Stage, StageError, default_pipeline, load_stage
from agent.proposers.search import SearchProposer
from agent.source.stage_rules import RULES

CONFIG_FILE = "experiment.json"
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


# --- an arm's setup ------------------------------------------------------------------------------------
def load_stage_file(path: Path, dirs: list[Path]) -> Stage:
    """A stage TOML outside prompts/stages; its template is looked up in `dirs`, then in prompts/."""

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

        llm = self.plan.llm_settings.model_copy(update={"cache_path": cache_path, "use_cache": True})
        llm._sources = self.plan.llm_settings._sources
        return replace(self.plan, llm_settings=llm)


def _fingerprint(dirs: list[Path], stage_files: list[Path]) -> str:
    """A hash of everything that can shape an arm's prompts: its folders, prompts/ (not its report pages)."""

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


def seeded_client(settings: Any, seed: int) -> Any:
    """A ChatClient that sends `seed` with every request (endpoints that support it sample reproducibly)."""

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
