"""Reading Nsight Compute reports (`.ncu-rep`) with NVIDIA's `ncu_report` module.

`ncu_report` comes from PyPI (`pip install ncu-report`, which reads reports on machines without a GPU)
or from the Nsight Compute install (`<install>/extras/python`). Each profiled kernel launch is an
"action"; the NVTX push/pop ranges open at its launch are in `action.nvtx_state()`, which is how a
launch is matched to the candidate whose range (`ncu_agent_c<i>`) was open. Rule results (ncu's guided
analysis) come from `action.rule_results_as_dicts()`; their estimated speedup is in the dict's
`speedup_estimation` = {"type": 1 local | 2 global, "speedup": percent}, absent when the rule gives none.
`profile_report_table` shows a report as `ncu-agent profile` prints it.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from pydantic import BaseModel, Field
from rich.table import Table

from agent.prompt.text import clip_sentences

RANGE_PREFIX = "ncu_agent_c"  # NVTX range names must not contain '/': ncu's filter reads it as a separator
_RANGE_RE = re.compile(rf"^{RANGE_PREFIX}(\d+)$")
_MARKUP_RE = re.compile(r"@(section|url|source|metric|table|rule):([^@]*)@")
_VERSION_RE = re.compile(rb"(\d{4}\.\d+\.\d+(?:\.\d+)?) \(build \d+\)")
_MSG_TYPES = {0: "none", 1: "info", 2: "optimization", 3: "warning", 4: "error"}
_TYPE_RANK = {"error": 4, "warning": 3, "optimization": 2, "info": 1, "none": 0}
_SPEEDUP_TYPES = {0: "unknown", 1: "local", 2: "global"}
MAX_RULE_CHARS = 300
REPORT_MAGIC = b"NVR\x00"

Value = float | int | str


class NcuReportError(Exception):
    """The report cannot be read, or the reader module is missing."""


class KernelLaunch(BaseModel):
    """One profiled kernel launch (an ncu "action")."""

    kernel: str
    index: int = Field(description="Position of the launch within the report, from 0.")
    range_name: str | None = Field(
        default=None,
        description="The NVTX range it ran in: ours (ncu_agent_c<i>) if open, else the innermost.",
    )
    nvtx_ranges: list[str] = Field(
        default_factory=list, description="Every NVTX push/pop range open at launch."
    )
    grid: tuple[int, int, int] | None = None
    block: tuple[int, int, int] | None = None
    grid_size: int | None = None
    block_size: int | None = None
    metrics: dict[str, Value] = Field(default_factory=dict)

    @property
    def candidate_index(self) -> int | None:
        """i of the `ncu_agent_c<i>` range the launch ran in, if any."""
        m = _RANGE_RE.match(self.range_name or "")
        return int(m.group(1)) if m else None


class NcuRule(BaseModel):
    """One guided-analysis result of ncu for one launch."""

    rule_id: str
    name: str = ""
    section: str = ""
    title: str = ""
    message: str = ""
    type: str = Field(default="none", description="none, info, optimization, warning or error.")
    speedup_pct: float | None = Field(default=None, description="ncu's estimated speedup, in percent.")
    speedup_type: str | None = Field(default=None, description="global (of the kernel's time) or local.")
    launch_index: int


class NcuProfile(BaseModel):
    """What a report holds: the launches (with their metrics) and the rule results."""

    report_path: Path
    ncu_version: str | None = None
    device_name: str | None = None
    launches: list[KernelLaunch] = Field(default_factory=list)
    rules: list[NcuRule] = Field(default_factory=list)

    def select(self, range_name: str) -> NcuProfile:
        """The launches (and their rules) that ran inside the NVTX range `range_name`."""
        keep = [la for la in self.launches if _in_range(la, range_name)]
        indices = {la.index for la in keep}
        rules = [r for r in self.rules if r.launch_index in indices]
        return self.model_copy(update={"launches": keep, "rules": rules})


def _in_range(launch: KernelLaunch, range_name: str) -> bool:
    return launch.range_name == range_name or range_name in launch.nvtx_ranges


def _candidate_dirs() -> list[Path]:
    """Where an Nsight Compute install keeps ncu_report.py, newest install first."""
    dirs: list[Path] = []
    ncu = os.environ.get("NCU") or shutil.which("ncu") or "/usr/local/cuda/bin/ncu"
    for exe in dict.fromkeys([Path(ncu), Path(ncu).resolve()]):
        dirs.append(exe.parent / "extras" / "python")  # <install>/ncu, the CUDA toolkit's layout
        for up in (exe.parent.parent, exe.parent.parent.parent):
            dirs += [Path(p) for p in sorted(glob.glob(f"{up}/nsight-compute*/extras/python"), reverse=True)]
    dirs += [Path(p) for p in sorted(glob.glob("/opt/nvidia/nsight-compute/*/extras/python"), reverse=True)]
    return dirs


def import_ncu_report() -> ModuleType:
    """The `ncu_report` module: installed, or found beside the ncu binary."""
    try:
        import ncu_report

        return ncu_report
    except ImportError:
        pass
    for d in _candidate_dirs():
        if (d / "ncu_report.py").is_file():
            sys.path.insert(0, str(d))
            try:
                import ncu_report

                return ncu_report
            except ImportError:
                sys.path.remove(str(d))
    raise NcuReportError(
        "cannot import ncu_report (Nsight Compute's report reader): `pip install ncu-report`, or put "
        "<Nsight Compute>/extras/python on PYTHONPATH"
    )


def _metric_value(metric: Any) -> Value | None:
    try:
        value = metric.value()
    except Exception:
        return None
    return value if isinstance(value, int | float | str) else None


def _version_from_file(path: Path) -> str | None:
    """The ncu version that wrote the report: stored in the session record near the file's end."""
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            f.seek(max(0, size - (1 << 20)))
            m = _VERSION_RE.search(f.read())
    except OSError:
        return None
    return m.group(1).decode() if m else None


def _nvtx_ranges(action: Any) -> list[str]:
    try:
        state = action.nvtx_state()
        if state is None:
            return []
        names: list[str] = []
        for d in state.domains():
            names += [str(r) for r in state.domain_by_id(d).push_pop_ranges()]
        return names
    except Exception:
        return []


def _dims(values: dict[str, Value], prefix: str) -> tuple[int, int, int] | None:
    dims = [values.get(f"{prefix}_{axis}") for axis in "xyz"]
    if all(isinstance(v, int) for v in dims):
        return (int(dims[0]), int(dims[1]), int(dims[2]))  # type: ignore[arg-type]
    return None


def _launch(action: Any, index: int, wanted: list[str] | None) -> KernelLaunch:
    names = list(action.metric_names()) if wanted is None else wanted
    extra = [f"launch__{k}_dim_{a}" for k in ("grid", "block") for a in "xyz"] + [
        "launch__grid_size",
        "launch__block_size",
    ]
    values: dict[str, Value] = {}
    for name in dict.fromkeys([*names, *extra]):
        metric = action.metric_by_name(name)
        if metric is not None and (v := _metric_value(metric)) is not None:
            values[name] = v
    ranges = _nvtx_ranges(action)
    ours = [r for r in ranges if _RANGE_RE.match(r)]
    grid_size, block_size = values.get("launch__grid_size"), values.get("launch__block_size")
    return KernelLaunch(
        kernel=str(action.name()),
        index=index,
        range_name=ours[-1] if ours else (ranges[-1] if ranges else None),
        nvtx_ranges=ranges,
        grid=_dims(values, "launch__grid_dim"),
        block=_dims(values, "launch__block_dim"),
        grid_size=grid_size if isinstance(grid_size, int) else None,
        block_size=block_size if isinstance(block_size, int) else None,
        metrics={k: values[k] for k in names if k in values},
    )


def strip_markup(text: str) -> str:
    """ncu's link markup to plain text: `@section:Id:Name@` -> Name, `@url:Name:https://...@` -> Name."""

    def plain(m: re.Match[str]) -> str:
        kind, body = m.group(1), m.group(2)
        return body.split(":", 1)[0] if kind == "url" else body.rsplit(":", 1)[-1]

    return _MARKUP_RE.sub(plain, text)


def _rule(d: dict[str, Any], launch_index: int) -> NcuRule:
    msg = d.get("rule_message") or {}
    speed = d.get("speedup_estimation") or {}
    pct = speed.get("speedup")
    return NcuRule(
        rule_id=str(d.get("rule_identifier", "")),
        name=str(d.get("name", "")),
        section=str(d.get("section_identifier", "")),
        title=strip_markup(str(msg.get("title", ""))),
        message=strip_markup(str(msg.get("message", ""))),
        type=_MSG_TYPES.get(msg.get("type", 0), "none"),
        speedup_pct=float(pct) if isinstance(pct, int | float) else None,
        speedup_type=_SPEEDUP_TYPES.get(speed.get("type", 0)) if speed else None,
        launch_index=launch_index,
    )


def read_report(
    path: Path | str, metrics: list[str] | None = None, range_name: str | None = None
) -> NcuProfile:
    """Every launch of the report (or those in NVTX range `range_name`) with `metrics` (None: all)."""
    path = Path(path)
    if not path.is_file():
        raise NcuReportError(f"{path}: no such report")
    with path.open("rb") as f:
        if f.read(len(REPORT_MAGIC)) != REPORT_MAGIC:
            # ncu_report opens anything and shows it as a report of no launches: check the magic first.
            raise NcuReportError(f"{path}: not an Nsight Compute report (no {REPORT_MAGIC!r} header)")
    reader = import_ncu_report()
    try:
        ctx = reader.load_report(str(path))
    except Exception as e:
        raise NcuReportError(f"{path}: ncu_report cannot read it: {type(e).__name__}: {e}") from None
    launches: list[KernelLaunch] = []
    rules: list[NcuRule] = []
    device = None
    index = 0
    try:
        for r in range(ctx.num_ranges()):
            rng = ctx.range_by_idx(r)
            for j in range(rng.num_actions()):
                action = rng.action_by_idx(j)
                launches.append(_launch(action, index, metrics))
                if (
                    device is None
                    and (m := action.metric_by_name("device__attribute_display_name")) is not None
                ):
                    device = str(_metric_value(m))
                rules += [_rule(d, index) for d in action.rule_results_as_dicts()]
                index += 1
    except Exception as e:
        raise NcuReportError(f"{path}: reading it failed: {type(e).__name__}: {e}") from None
    profile = NcuProfile(
        report_path=path,
        ncu_version=_version_from_file(path),
        device_name=device,
        launches=launches,
        rules=rules,
    )
    return profile.select(range_name) if range_name is not None else profile


def _round(v: Value) -> Value:
    return round(v, 2) if isinstance(v, float) else v


def seed_json(profile: NcuProfile, metrics: list[str] | None = None) -> dict[str, list[dict[str, Value]]]:
    """The seed prompt's form: kernel name -> one dict per launch, metrics in order, floats to 2 decimals."""
    out: dict[str, list[dict[str, Value]]] = {}
    for launch in profile.launches:
        names = metrics if metrics is not None else list(launch.metrics)
        row = {k: _round(launch.metrics[k]) for k in names if k in launch.metrics}
        out.setdefault(launch.kernel, []).append(row)
    return out


def _rank_key(rule: NcuRule) -> tuple[int, float, int]:
    # Global estimates are fractions of the kernel's time and comparable with each other; local ones are
    # relative to one unit's metric, so they rank after every global estimate.
    tier = {"global": 2, "local": 1}.get(rule.speedup_type or "", 0) if rule.speedup_pct is not None else 0
    return (-tier, -(rule.speedup_pct or 0.0), -_TYPE_RANK.get(rule.type, 0))


def format_rule(rule: NcuRule, limit: int = MAX_RULE_CHARS) -> str:
    head = rule.title or rule.name or rule.rule_id
    if rule.name and rule.title and rule.name != rule.title:
        head = f"{rule.name} ({rule.title})"
    text = clip_sentences(f"{head}: {rule.message}", limit)  # whole sentences: a cut one misleads
    if rule.speedup_pct is None:
        return text
    scope = "local " if rule.speedup_type == "local" else ""
    return f"[est. {scope}speedup {rule.speedup_pct:.0f}%] {text}"


def ranked_rules(profile: NcuProfile, k: int = 5) -> list[str]:
    """The k most useful rule results as short lines: largest estimated speedup first, then severity."""
    seen: set[tuple[str, str]] = set()
    lines: list[str] = []
    for rule in sorted(profile.rules, key=_rank_key):
        if not rule.message.strip():
            continue
        key = (rule.title, rule.message)
        if key in seen:
            continue
        seen.add(key)
        lines.append(format_rule(rule))
        if len(lines) == k:
            break
    return lines


def _fmt(value: float | int | str) -> str:
    return f"{value:,.2f}" if isinstance(value, float) else f"{value:,}" if isinstance(value, int) else value


def profile_report_table(profile: NcuProfile, metrics: list[str] | None = None) -> Table:
    """One row per metric of each launch: kernel, launch (index and NVTX range), metric, value."""
    title = " ".join(
        x for x in (profile.device_name, f"ncu {profile.ncu_version}" if profile.ncu_version else "") if x
    )
    table = Table(title=title or None)
    for col in ("kernel", "launch", "metric"):
        table.add_column(col)
    table.add_column("value", justify="right")
    for la in profile.launches:
        names = metrics if metrics is not None else list(la.metrics)
        first = True
        for name in names:
            if name not in la.metrics:
                continue
            where = f"#{la.index}" + (f" {la.range_name}" if la.range_name else "")
            table.add_row(la.kernel if first else "", where if first else "", name, _fmt(la.metrics[name]))
            first = False
    return table
