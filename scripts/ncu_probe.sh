set -x
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv
which ncu; ncu --version | tail -1
ls /opt/nvidia/nsight-compute/*/extras/python/
M=sm__throughput.avg.pct_of_peak_sustained_elapsed,launch__grid_size,sm__warps_active.avg.pct_of_peak_sustained_active,dram__throughput.avg.pct_of_peak_sustained_elapsed,lts__t_sector_hit_rate.pct

time ncu --clock-control none --nvtx --nvtx-include "ncu_agent_c0/" --metrics $M -f -o $OUT/l1_seed python3 scripts/ncu_probe.py kernels/l1_norm 1 2>&1 | tail -5
time ncu --clock-control none --nvtx --nvtx-include "regex:ncu_agent_c[0-9]+/" --metrics $M -f -o $OUT/l1_seed_multi python3 scripts/ncu_probe.py kernels/l1_norm 3 2>&1 | tail -5
time ncu --clock-control none --nvtx --nvtx-include "ncu_agent_c0/" --set full -f -o $OUT/l1_full python3 scripts/ncu_probe.py kernels/l1_norm 1 2>&1 | tail -5
ls -la $OUT
python3 - <<'PY'
import sys, glob, os
sys.path.insert(0, glob.glob('/opt/nvidia/nsight-compute/*/extras/python')[0])
import ncu_report
for f in sorted(glob.glob(os.environ['OUT']+'/*.ncu-rep')):
    ctx = ncu_report.load_report(f)
    for r in range(ctx.num_ranges()):
        rng = ctx.range_by_idx(r)
        for a in range(rng.num_actions()):
            act = rng.action_by_idx(a)
            print(f, r, a, act.name(), act.metric_by_name('launch__grid_size').value() if act.metric_by_name('launch__grid_size') else None, len(act.metric_names()))
            try:
                print('  nvtx:', act.nvtx_state().domains() if act.nvtx_state() else None)
            except Exception as e: print('  nvtx err', e)
            rr = act.rule_results_as_dicts() if hasattr(act,'rule_results_as_dicts') else []
            print('  rules:', len(rr), [ (d.get('rule_identifier') or d.get('name'), ) for d in rr][:20])
PY
