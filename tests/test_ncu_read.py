"""Parsing real Nsight Compute reports recorded on the H200 (tests/fixtures/ncu, see scripts/ncu_probe.sh)."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

from agent.profiling import read as ncu_read
from agent.profiling.metric_sets import list_metric_sets, load_metric_set
from agent.profiling.read import (
    NcuReportError,
    import_ncu_report,
    ranked_rules,
    read_report,
    seed_json,
    strip_markup,
)

try:
    import_ncu_report()
except NcuReportError as e:
    pytest.skip(str(e), allow_module_level=True)

FIXTURES = Path(__file__).parent / "fixtures" / "ncu"
SEED_PROMPT = Path("/work/shared/seed/001_ea722989ee827a64.txt")
KERNEL = "l1_norm_kernel_autotune"
SEED_METRICS = [
    "sm__throughput.avg.pct_of_peak_sustained_elapsed",
    "launch__grid_size",
    "sm__warps_active.avg.pct_of_peak_sustained_active",
    "dram__throughput.avg.pct_of_peak_sustained_elapsed",
    "lts__t_sector_hit_rate.pct",
]


def _seed_prompt_json() -> dict:
    text = SEED_PROMPT.read_text()
    start = text.index("[NCU PROFILING METRICS]") + len("[NCU PROFILING METRICS]")
    return json.JSONDecoder().raw_decode(text[start:].lstrip())[0]


def test_seed_metric_set_matches_the_seed_prompt():
    if SEED_PROMPT.exists():
        assert load_metric_set("seed").metrics == list(next(iter(_seed_prompt_json().values()))[0])
    assert load_metric_set("seed").metrics == SEED_METRICS


def test_seed_report_gives_the_seed_json():
    profile = read_report(FIXTURES / "l1_seed.ncu-rep", metrics=SEED_METRICS)
    assert [la.kernel for la in profile.launches] == [KERNEL]
    out = seed_json(profile, SEED_METRICS)
    assert list(out) == [KERNEL]
    (row,) = out[KERNEL]
    assert list(row) == SEED_METRICS
    assert row["launch__grid_size"] == 32768
    for name in SEED_METRICS:
        if name.endswith("pct") or "pct_of_peak" in name:
            assert isinstance(row[name], float) and 0 < row[name] <= 100
            assert row[name] == round(row[name], 2)
    json.dumps(out)  # numbers, not ncu objects


def test_seed_report_launch_and_device():
    profile = read_report(FIXTURES / "l1_seed.ncu-rep")
    (la,) = profile.launches
    assert la.index == 0 and la.range_name == "ncu_agent_c0" and la.candidate_index == 0
    assert la.grid == (32768, 1, 1) and la.grid_size == 32768
    assert la.block_size == 256 and la.block == (256, 1, 1)
    assert "H200" in (profile.device_name or "")
    assert profile.ncu_version and profile.ncu_version.startswith("2025.3.1")
    assert len(la.metrics) > 200  # metrics=None: all the report has
    assert profile.rules == []  # --metrics alone: ncu stores no rule results


def test_multi_range_report_splits_per_candidate():
    profile = read_report(FIXTURES / "l1_seed_multi.ncu-rep", metrics=SEED_METRICS)
    assert [la.range_name for la in profile.launches] == ["ncu_agent_c0", "ncu_agent_c1", "ncu_agent_c2"]
    assert [la.candidate_index for la in profile.launches] == [0, 1, 2]
    assert [la.index for la in profile.launches] == [0, 1, 2]
    for i in range(3):
        sub = read_report(
            FIXTURES / "l1_seed_multi.ncu-rep", metrics=SEED_METRICS, range_name=f"ncu_agent_c{i}"
        )
        assert [la.index for la in sub.launches] == [i]
        assert list(seed_json(sub)[KERNEL][0]) == SEED_METRICS
    assert read_report(FIXTURES / "l1_seed_multi.ncu-rep", range_name="ncu_agent_c7").launches == []


def test_full_report_rules_ranked_by_estimated_speedup():
    profile = read_report(FIXTURES / "l1_full.ncu-rep")
    assert "H200" in (profile.device_name or "")
    assert len(profile.launches[0].metrics) > 2000
    ids = {r.rule_id for r in profile.rules}
    assert {"SOLBottleneck", "UncoalescedGlobalAccess", "CPIStall"} <= ids
    unc = [r for r in profile.rules if r.rule_id == "UncoalescedGlobalAccess" and r.message]
    assert unc and unc[0].speedup_type == "global" and 17 < (unc[0].speedup_pct or 0) < 19
    assert all("@" not in r.message for r in profile.rules)  # markup stripped

    lines = ranked_rules(profile, k=5)
    assert 1 <= len(lines) <= 5
    assert lines[0].startswith("[est. speedup ")
    assert any("Uncoalesced" in line for line in lines)
    assert all(len(line) < 340 for line in lines)
    pcts = [int(m.group(1)) for line in lines if (m := re.match(r"\[est\. speedup (\d+)%\]", line))]
    assert pcts == sorted(pcts, reverse=True)
    everything = ranked_rules(profile, k=100)
    assert len(everything) == len(set(everything))  # de-duplicated
    assert len(everything) < len(profile.rules)  # the empty-message rule is skipped


def test_full_report_carries_every_metric_of_every_set():
    profile = read_report(FIXTURES / "l1_full.ncu-rep")
    have = set(profile.launches[0].metrics) | set(
        read_report(FIXTURES / "l1_seed.ncu-rep").launches[0].metrics
    )
    for name in list_metric_sets():
        ms = load_metric_set(name)
        assert set(ms.display_metrics) <= have, (name, set(ms.display_metrics) - have)


def test_strip_markup():
    text = (
        "Look at the @section:MemoryWorkloadAnalysis:Memory Workload Analysis@ section. The "
        "@url:CUDA Programming Guide:https://docs.nvidia.com/cuda/x.html#device-memory-accesses@ has more; "
        "see @source:kernel.py:101:kernel.py, line 102@."
    )
    assert strip_markup(text) == (
        "Look at the Memory Workload Analysis section. The CUDA Programming Guide has more; "
        "see kernel.py, line 102."
    )


def test_missing_and_broken_reports(tmp_path):
    with pytest.raises(NcuReportError, match="no such report"):
        read_report(tmp_path / "absent.ncu-rep")
    bad = tmp_path / "bad.ncu-rep"
    bad.write_bytes(b"not a report")
    with pytest.raises(NcuReportError):
        read_report(bad)


def test_reader_is_looked_for_beside_ncu(tmp_path, monkeypatch):
    (tmp_path / "cuda" / "bin").mkdir(parents=True)
    (tmp_path / "cuda" / "bin" / "ncu").write_text("")
    extras = tmp_path / "cuda" / "nsight-compute-2025.3.1" / "extras" / "python"
    extras.mkdir(parents=True)
    monkeypatch.setenv("NCU", str(tmp_path / "cuda" / "bin" / "ncu"))
    assert extras in ncu_read._candidate_dirs()


def test_missing_reader_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "ncu_report", None)  # makes `import ncu_report` fail
    monkeypatch.setattr(ncu_read, "_candidate_dirs", lambda: [])
    with pytest.raises(NcuReportError, match="pip install ncu-report"):
        import_ncu_report()
