#!/usr/bin/env bash
# Everything ncu-agent measures on a GPU, in one call of the device tool (or on any CUDA machine):
#   bash scripts/gpu_suite.sh [STEP...]
# steps: env tests run sweep profcost fixtures llm compare stability evalcost (the default: all of these), and
# pipeline (the default pipeline over every bundled problem) and gpus (the same capped batch on GPU 0, then
# on GPUs 0 and 1: a two-GPU machine), which are asked for by name.
# Knobs: GPU_TESTS (test files for the tests step), STABILITY_PROBLEMS, STABILITY_ARGS (--baselines),
# EVALCOST_N, PIPELINE_PROBLEMS, PIPELINE_GPUS (0,1), PIPELINE_SECONDS, PIPELINE_RESUME, PIPELINE_DIR,
# PIPELINE_MINUTES (the batch's --time-limit), GPUS_SETS, GPUS_MAX_EVALS.
# Installs what the GPU machine lacks from wheels carried in .whl/ (scripts/fetch_wheels.sh makes them),
# writes logs and results under $OUT (default /tmp/ncu-agent-gpu), packed into $OUT/results.tar.gz.
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/ncu-agent-gpu}
mkdir -p "$OUT/work"
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  # Once per wheel set, under a lock: a second suite started beside this one (another GPU) must neither
  # reinstall into the directory this one imports from nor import from a half-written one.
  SITE=/tmp/site-$(ls .whl/*.whl | xargs -n1 basename | sort | sha256sum | cut -c1-12)
  (
    flock 9
    if [ ! -f "$SITE/.complete" ]; then
      rm -rf "$SITE"
      python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" .whl/*.whl \
        && touch "$SITE/.complete"
    fi
  ) 9>/tmp/ncu-agent-site.lock
  [ -f "$SITE/.complete" ] || { echo "wheel install failed"; exit 1; }
  export PYTHONPATH=$SITE:$ROOT
else
  export PYTHONPATH=$ROOT
fi
STEPS=${*:-env tests run sweep profcost fixtures llm compare stability evalcost}
W=$OUT/work
has() { [[ " $STEPS " == *" $1 "* ]]; }
step() { echo; echo "=== $1 ($(date -u +%H:%M:%S))"; }

if has env; then
  step env
  { date -u; nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,temperature.gpu,power.draw --format=csv
    python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name())"
    ncu --version | tail -1; } 2>&1 | tee "$W/env.txt"
fi

if has tests; then
  step "GPU tests"
  python3 -m pytest -q -m gpu -p no:cacheprovider ${GPU_TESTS:-tests} 2>&1 | tee "$W/gpu_tests.log" | tail -25
fi

if has run; then
  step "ncu-agent run kernels/l1_norm"
  rm -rf "$W/run_l1"
  /usr/bin/time -v python3 -m agent run kernels/l1_norm --run-dir "$W/run_l1" 2>"$W/run_l1.time" \
    | tee "$W/run_l1.log" | tail -45
  grep -E "Elapsed|Maximum resident" "$W/run_l1.time"
fi

if has sweep; then
  step "exhaustive micro sweep of kernels/l1_norm (do_bench, one process)"
  pick=()
  [ -f "$W/run_l1/best_kernel.py" ] && pick=(--pick "$W/run_l1/best_kernel.py")
  python3 scripts/bench_micro_sweep.py kernels/l1_norm "${pick[@]}" --out "$W/sweep_l1.json" 2>&1 | tee "$W/sweep_l1.log" | tail -25
fi

if has profcost; then
  step "profiling cost per candidate"
  python3 scripts/bench_profile_cost.py kernels/l1_norm --out "$W/profcost_l1.json" 2>&1 | tee "$W/profcost.log" | tail -20
fi

if has fixtures; then
  step "ncu fixtures for the bundled problems"
  mkdir -p "$W/fixtures"
  for p in kernels/*/; do
    name=$(basename "$p")
    python3 -m agent profile "$p/kernel.py" --problem "$p" --set seed --out-dir "$W/fixtures" \
      > "$W/fixtures/$name.log" 2>&1 && mv "$W/fixtures/kernel.ncu-rep" "$W/fixtures/${name}_seed.ncu-rep"
    echo "$name: $(tail -1 "$W/fixtures/$name.log")"
  done
fi

if has llm; then
  step "ncu-agent run --llm against the scripted model on loopback (a full turn)"
  python3 -m agent.llm.scripted --port 8765 > "$W/scripted_llm.log" 2>&1 &
  LLM_PID=$!
  sleep 2
  rm -rf "$W/run_llm"
  OPENAI_API_KEY=unused NCU_AGENT_LLM_CACHE="$W/llm_cache.sqlite" python3 -m agent run kernels/l1_norm --llm \
    --base-url http://127.0.0.1:8765/v1 --model scripted --samples 1 --stages micro --max-iterations 2 \
    --run-dir "$W/run_llm" 2>&1 | tee "$W/run_llm.log" | tail -25
  kill $LLM_PID
  ncu --import "$(ls "$W"/run_llm/profiles/*.ncu-rep | head -1)" --page details 2>&1 | head -30 | tee "$W/ncu_import.txt"
fi

if has stability; then
  step "the same kernels in 5 fresh worker processes, and do_bench"
  python3 scripts/bench_stability.py ${STABILITY_ARGS:-} ${STABILITY_PROBLEMS:-kernels/l1_norm kernels/matmul_fp16 kernels/softmax} --runs 5 \
    --out "$W/stability.json" 2>&1 | tee "$W/stability.log" | tail -8
fi

if has compare; then
  step "the fused output comparison on the GPU: its tests, and its cost against PyTorch's"
  python3 -m pytest -q -p no:cacheprovider tests/test_compare_kernel.py 2>&1 | tee "$W/compare_tests.log" | tail -5
  python3 scripts/bench_compare.py --out "$W/compare.json" 2>&1 | tee "$W/compare.log" | grep -v '^   ' | head -20
fi

if has evalcost; then
  step "cost of one evaluation, cold workers and a warm one"
  python3 scripts/bench_eval_cost.py kernels/l1_norm --n ${EVALCOST_N:-4} --out "$W/evalcost_l1.json" 2>&1 | tee "$W/evalcost.log" | tail -20
fi

if has pipeline; then
  # The uncapped pipeline outlasts one device call (matmul_fp16 alone runs > 7 min): the batch is stopped
  # by `timeout` after PIPELINE_SECONDS (its jobs, workers and ncu runs die with it), the summary of the
  # problems finished so far stays, and PIPELINE_RESUME=1 in the next call (same machine, kept ~30 s)
  # continues the others where they were (`ncu-agent batch --resume`). The batch lives outside $OUT (the
  # device tool empties $OUT for each call); its summary, log and records (without the .ncu-rep files)
  # are copied under $OUT/work/pipeline after each call. PIPELINE_MINUTES instead ends it for good at a
  # time limit (unfinished problems end as `budget`). PIPELINE_GPUS=0,1 on two GPUs.
  step "the default pipeline with the built-in search over every bundled problem (GPUs ${PIPELINE_GPUS:-0})"
  PDIR=${PIPELINE_DIR:-/tmp/ncu-agent-pipeline}
  if [ -n "${PIPELINE_RESUME:-}" ] && [ -f "$PDIR/batch.json" ]; then
    cmd=(python3 -m agent batch --resume "$PDIR" --gpus "${PIPELINE_GPUS:-0}")
  else
    rm -rf "$PDIR" "$PDIR.log"
    # Longest first (2026-11-26: matmul_fp16 > 410 s, l1_norm 165 s, the others 61-99 s), so two GPUs
    # pack them well; a batch runs explicit paths in the order given.
    cmd=(python3 -m agent batch ${PIPELINE_PROBLEMS:-kernels/matmul_fp16 kernels/l1_norm kernels/layernorm
         kernels/fused_elementwise kernels/softmax kernels/sum_reduction} --gpus "${PIPELINE_GPUS:-0}"
         ${PIPELINE_MINUTES:+--time-limit "$PIPELINE_MINUTES"} --out "$PDIR")
  fi
  timeout "${PIPELINE_SECONDS:-540}" "${cmd[@]}" >> "$PDIR.log" 2>&1
  echo "batch exit $? (124: stopped by timeout; PIPELINE_RESUME=1 continues it)"
  tail -25 "$PDIR.log"
  mkdir -p "$W/pipeline"
  cp "$PDIR.log" "$W/pipeline/batch.log"
  cp "$PDIR"/summary* "$W/pipeline/" 2>/dev/null
  tar -czf "$W/pipeline/records.tar.gz" --exclude='*.ncu-rep' -C "$(dirname "$PDIR")" "$(basename "$PDIR")"
fi

if has gpus; then
  # The same batch on one GPU, then on two; compare evaluations_per_min, the correct column, gpu_overlaps.
  # Each batch starts with empty Triton and inductor caches, so the second does not reuse the first's
  # compiled kernels (a fresh machine's first batch is cold; a later one would not be).
  for g in ${GPUS_SETS:-0 0,1}; do  # GPUS_SETS="0" then GPUS_SETS="0,1": one device call each
    step "batch on GPUs $g (--max-evaluations ${GPUS_MAX_EVALS:-3}, cold compile caches)"
    d="$W/gpus_${g//,/-}"
    rm -rf "$d" "$d.cache"
    TRITON_CACHE_DIR="$d.cache/triton" TORCHINDUCTOR_CACHE_DIR="$d.cache/inductor" \
      python3 -m agent batch kernels --gpus "$g" --max-evaluations "${GPUS_MAX_EVALS:-3}" --out "$d" > "$d.log" 2>&1
    rm -rf "$d.cache"
    python3 -c "import json,sys; o=json.load(open(sys.argv[1]))['overall']; print({k: o[k] for k in \
('problems', 'correct', 'evaluations', 'wall_s', 'evaluations_per_min', 'gpu_overlaps')})" "$d/summary.json"
  done
fi

tar -czf "$OUT/results.tar.gz" -C "$OUT" work
ls -la "$OUT/results.tar.gz"
