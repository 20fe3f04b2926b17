#!/usr/bin/env bash
# Everything ncu-agent measures on a GPU, in one call of the device tool (or on any CUDA machine):
#   bash scripts/gpu_suite.sh [STEP...]
# The default, in order of priority (docs/measurements.md "GPU runs planned" splits them over device calls):
#   env kernelbench sandbox judge evalrate memgrowth
#   split (by name): the split layout's GPU tests, CUDA IPC into the sandbox, its times against one process.
#   kernelbench: KernelBench level 1 (.kernelbench/, scripts/fetch_kernelbench.sh) through `batch --llm`
#     against the scripted endpoint; fast_p summary, and eager/compile ratios against KernelBench's own.
#   sandbox: the escape tests on the GPU, and the cost per warm evaluation with and without bwrap.
#   judge: the adversarial and real-world corpora through the GPU path; timing spread and do_bench.
#   evalrate: warm evaluations/min of full-size L1-norm candidates at OLD_COMMIT (.oldrev/) and at HEAD.
#   memgrowth: the warm worker's GPU memory per evaluation, parallel compile on and off.
#   multigpu (by name, on nvidia-h200-x2): the kernelbench batch on GPU 0, then on GPUs 0,1.
# Older steps, by name: tests run sweep profcost fixtures llm compare stability evalcost pipeline gpus.
# Each new step writes small raw outputs under $OUT/<step>/; the older ones under $OUT/work.
# Knobs: KB_PROBLEMS (a folder of KernelBench files, default .kernelbench/level1), KB_REPLIES (the scripted
# model's first versions: NAME.py or NAME/N.py per problem), KB_STAGES, KB_ITERS, KB_MINUTES, KB_MAX_EVALS,
# KB_NAMES (problem number prefixes, e.g. "1 4 19": a part of KB_PROBLEMS), SANDBOX_N, EVALRATE_N, OLD_COMMIT, MEMGROWTH_N, GPU_TESTS, STABILITY_PROBLEMS, STABILITY_ARGS, EVALCOST_N,
# PIPELINE_PROBLEMS, PIPELINE_GPUS, PIPELINE_SECONDS, PIPELINE_RESUME, PIPELINE_DIR, PIPELINE_MINUTES,
# GPUS_SETS, GPUS_MAX_EVALS.
# Installs what the GPU machine lacks from .whl/ (scripts/fetch_wheels.sh): the wheels into the interpreter's
# own site-packages (a worker's PYTHONPATH is the repo alone, and inside bwrap only system paths are bound,
# so a --target folder would not be seen by workers), bubblewrap's .deb unpacked under /tmp/bwrap when the
# machine has no `bwrap`. Results are packed into $OUT/results.tar.gz.
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/ncu-agent-gpu}
mkdir -p "$OUT/work"
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
export PYTHONPATH=$ROOT
export NCU_AGENT_FULL_TESTS=1  # the GPU machine runs the full tier of every test file it names (tests/conftest.py)
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  # Once per wheel set, under a lock: a second suite started beside this one (another GPU) must not import
  # from a half-installed set.
  MARK=/tmp/ncu-agent-wheels-$(ls .whl/*.whl | xargs -n1 basename | sort | sha256sum | cut -c1-12)
  (
    flock 9
    if [ ! -f "$MARK" ]; then
      python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir .whl/*.whl \
        || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
          --break-system-packages .whl/*.whl
      [ $? -eq 0 ] && touch "$MARK"
    fi
  ) 9>/tmp/ncu-agent-site.lock
  [ -f "$MARK" ] || { echo "wheel install failed"; exit 1; }
fi
if ! command -v bwrap >/dev/null && ls .whl/bubblewrap_*.deb >/dev/null 2>&1; then
  # Unpacked aside, never over /: the sandbox finds it on PATH (agent/evaluation/confine.py bwrap_path).
  dpkg -x "$(ls .whl/bubblewrap_*.deb | head -1)" /tmp/bwrap && export PATH=/tmp/bwrap/usr/bin:$PATH
fi
STEPS=${*:-env kernelbench sandbox judge evalrate memgrowth}
W=$OUT/work
has() { [[ " $STEPS " == *" $1 "* ]]; }
step() { echo; echo "=== $1 ($(date -u +%H:%M:%S))"; }

if has env; then
  step env
  mkdir -p "$OUT/env"
  { date -u; echo "commit $(cat .oldrev/HEAD 2>/dev/null) kernelbench $(cat .kernelbench/COMMIT 2>/dev/null)"
    nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,temperature.gpu,power.draw --format=csv
    python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name())"
    python3 -c "from agent.evaluation import confine; print('bwrap', confine.bwrap_path(), 'isolation', confine.isolation())"
    python3 -c "import pydantic, openai, pyseccomp, ncu_report; print('wheels ok')"
    ncu --version | tail -1; } 2>&1 | tee "$OUT/env/env.txt"
fi

# A KernelBench batch through `batch --llm` against the scripted endpoint on loopback: kb_batch OUTDIR GPUS
# [extra batch args]. The batch lives under /tmp (records with .ncu-rep files are large); its summary, log
# and a tarball of the records without .ncu-rep files go to OUTDIR.
kb_batch() {
  local out=$1 gpus=$2; shift 2
  local kb=${KB_PROBLEMS:-.kernelbench/level1} port=$((8770 + RANDOM % 100))
  local d=/tmp/ncu-agent-kb-${gpus//,/-}
  [ -d "$kb" ] || { echo "no $kb: run scripts/fetch_kernelbench.sh here and carry .kernelbench"; return 1; }
  if [ -n "${KB_NAMES:-}" ]; then  # a part of the folder (one batch split over device calls): name prefixes
    rm -rf /tmp/kb-part && mkdir -p /tmp/kb-part
    for n in $KB_NAMES; do cp "$kb/${n}_"*.py /tmp/kb-part/; done
    kb=/tmp/kb-part
  fi
  mkdir -p "$out"
  rm -rf "$d" "$d.cache"
  python3 -m agent.llm.scripted --port "$port" --references "$kb" \
    --replies "${KB_REPLIES:-tests/kernelbench_l1_replies}" > "$out/scripted_llm.log" 2>&1 &
  local llm=$!
  sleep 2
  # Empty Triton and inductor caches: a one-GPU and a two-GPU batch start equally cold.
  OPENAI_API_KEY=unused NCU_AGENT_LLM_CACHE="$d.cache/llm.sqlite" TRITON_CACHE_DIR="$d.cache/triton" \
    TORCHINDUCTOR_CACHE_DIR="$d.cache/inductor" timeout "${KB_SECONDS:-560}" \
    python3 -m agent batch "$kb" --llm --model scripted --base-url "http://127.0.0.1:$port/v1" --samples 1 \
    --stages "${KB_STAGES:-first,micro}" --max-iterations "${KB_ITERS:-2}" --time-limit "${KB_MINUTES:-8}" \
    --gpus "$gpus" --out "$d" "$@" > "$out/batch.log" 2>&1
  echo "batch exit $?"
  kill "$llm"
  tail -40 "$out/batch.log"
  cp "$d"/summary* "$out/" 2>/dev/null
  tar -czf "$out/records.tar.gz" --exclude='*.ncu-rep' --exclude='*.sqlite-wal' -C /tmp "$(basename "$d")"
  rm -rf "$d.cache"
}

if has split; then
  step "the split layout on the GPU: CUDA IPC into the box, its times against one process, its tests"
  mkdir -p "$OUT/split"
  timeout 120 python3 scripts/ipc_probe.py 2>&1 | tee "$OUT/split/ipc_probe.txt"
  timeout "${LAYOUT_SECONDS:-300}" python3 scripts/bench_layouts.py \
    ${LAYOUT_PROBLEMS:-kernels/softmax kernels/matmul_fp16 kernels/l1_norm} --rounds "${LAYOUT_ROUNDS:-3}" \
    --out "$OUT/split/layouts.json" 2>&1 | tee "$OUT/split/layouts.log" | tail -20
  timeout "${SPLIT_TESTS_SECONDS:-300}" python3 -m pytest -q -p no:cacheprovider -m gpu -rs \
    tests/test_split_timing.py tests/test_evaluate.py tests/test_retune.py tests/test_timing.py 2>&1 \
    | tee "$OUT/split/gpu_tests.log" | tail -30
fi

if has kernelbench; then
  step "KernelBench level 1: batch --llm (scripted), fast_p, eager/compile against KernelBench's timings"
  kb_batch "$OUT/kernelbench" 0
  python3 scripts/compare_kernelbench_baseline.py "$OUT/kernelbench/summary.json" .kernelbench/timing \
    --out "$OUT/kernelbench/baseline_compare.json" 2>&1 | tee "$OUT/kernelbench/baseline_compare.txt"
fi

if has sandbox; then
  step "the sandbox on the GPU: escape tests, and its cost per warm evaluation"
  mkdir -p "$OUT/sandbox"
  python3 -m pytest -q -p no:cacheprovider -m "gpu or not gpu" tests/test_sandbox_escapes.py 2>&1 \
    | tee "$OUT/sandbox/escape_tests.log" | tail -25
  python3 scripts/bench_sandbox_cost.py "${SANDBOX_N:-6}" cuda 2>&1 | tee "$OUT/sandbox/cost_cuda.txt"
fi

if has judge; then
  step "the judge on the GPU: adversarial and real-world corpora, timing spread and do_bench"
  mkdir -p "$OUT/judge"
  python3 -m pytest -q -p no:cacheprovider -m "gpu or not gpu" -rs tests/test_adversarial.py \
    tests/test_realcode.py 2>&1 | tee "$OUT/judge/corpus_tests.log" | tail -40
  python3 scripts/bench_stability.py --baselines ${STABILITY_PROBLEMS:-kernels/l1_norm kernels/matmul_fp16 kernels/softmax} \
    --runs 5 --out "$OUT/judge/stability.json" 2>&1 | tee "$OUT/judge/stability.log" | tail -12
  rm -rf "$OUT/judge/stability_tmp"
fi

if has evalrate; then
  # Both trees in the same call, old first (the machine's clocks and caches as alike as one call allows);
  # each with its own Triton/inductor caches so neither reuses the other's compiled kernels.
  OLD=${OLD_COMMIT:-1dc3a4c}
  step "warm evaluations/min, full-size L1 norm: $OLD, then HEAD"
  mkdir -p "$OUT/evalrate"
  if [ -f ".oldrev/$OLD.tar.gz" ]; then
    rm -rf "/tmp/old-$OLD" && mkdir -p "/tmp/old-$OLD" && tar -xzf ".oldrev/$OLD.tar.gz" -C "/tmp/old-$OLD"
    (cd "/tmp/old-$OLD" && PYTHONPATH=$PWD TRITON_CACHE_DIR=/tmp/er-old/triton TORCHINDUCTOR_CACHE_DIR=/tmp/er-old/ind \
      python3 scripts/bench_eval_cost.py kernels/l1_norm --n "${EVALRATE_N:-6}" --out "$OUT/evalrate/$OLD.json") \
      2>&1 | tee "$OUT/evalrate/$OLD.log" | tail -12
  else
    echo "no .oldrev/$OLD.tar.gz: run scripts/fetch_wheels.sh here and carry .oldrev"
  fi
  TRITON_CACHE_DIR=/tmp/er-head/triton TORCHINDUCTOR_CACHE_DIR=/tmp/er-head/ind \
    python3 scripts/bench_eval_cost.py kernels/l1_norm --n "${EVALRATE_N:-6}" --out "$OUT/evalrate/head.json" \
    2>&1 | tee "$OUT/evalrate/head.log" | tail -12
fi

if has memgrowth; then
  # The worker's memory_allocated() growth check (agent/evaluation/worker.py _GpuMemory) names the GiB in
  # the reason a worker is replaced, which bench_eval_cost records; nvidia-smi samples each process's
  # GPU memory (allocator reserve included) every 500 ms beside it.
  for pc in 1 0; do
    step "warm worker GPU memory, NCU_AGENT_PARALLEL_COMPILE=$pc"
    mkdir -p "$OUT/memgrowth"
    nvidia-smi --query-compute-apps=timestamp,pid,used_memory --format=csv,noheader -lms 500 \
      > "$OUT/memgrowth/smi_pc$pc.csv" 2>&1 &
    SMI=$!
    NCU_AGENT_PARALLEL_COMPILE=$pc python3 scripts/bench_eval_cost.py kernels/l1_norm --n "${MEMGROWTH_N:-8}" \
      --out "$OUT/memgrowth/evalcost_pc$pc.json" 2>&1 | tee "$OUT/memgrowth/evalcost_pc$pc.log" | tail -8
    kill "$SMI"
  done
fi

if has multigpu; then
  # The same KernelBench batch on GPU 0, then on GPUs 0 and 1; compare evaluations_per_min, the correct
  # column and gpu_overlaps of the two summaries.
  for g in ${GPUS_SETS:-0 0,1}; do
    step "KernelBench batch on GPUs $g (--max-evaluations ${KB_MAX_EVALS:-4})"
    kb_batch "$OUT/multigpu/gpus_${g//,/-}" "$g" --max-evaluations "${KB_MAX_EVALS:-4}"
    python3 -c "import json,sys; o=json.load(open(sys.argv[1]))['overall']; print({k: o[k] for k in \
('problems', 'correct', 'evaluations', 'wall_s', 'evaluations_per_min', 'gpu_overlaps')})" \
      "$OUT/multigpu/gpus_${g//,/-}/summary.json"
  done
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

tar -czf "$OUT/results.tar.gz" --exclude=results.tar.gz -C "$OUT" .
ls -la "$OUT/results.tar.gz"
