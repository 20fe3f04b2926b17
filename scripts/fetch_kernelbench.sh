#!/usr/bin/env bash
# KernelBench level-1 problems and H100 baseline timings at a fixed commit, copied into .kernelbench/
# (git-ignored, carried by the device tool) for the `kernelbench` step of scripts/gpu_suite.sh:
#   bash scripts/fetch_kernelbench.sh MIRROR_GIT_DIR
# MIRROR_GIT_DIR: a clone (bare or not) of github.com/ScalingIntelligence/KernelBench. The commit is
# b6c5259, the one that wrote results/timing/H100_*; level 1 last changed before it (06e49e8), so the
# problem sizes here are those its baselines were timed at.
set -euo pipefail
[ $# -eq 1 ] || { echo "usage: $0 MIRROR_GIT_DIR" >&2; exit 2; }
MIRROR=$1
COMMIT=${KERNELBENCH_COMMIT:-b6c5259}
cd "$(dirname "$0")/.."
# 24 problems of different kinds: elementwise, softmax-like, norms, reductions, matmuls, pooling, conv,
# scans, losses. All run through the first stage; the scripted model answers those with replies in
# KB_REPLIES (scripts/gpu_suite.sh).
PROBLEMS=(1_Square_matrix_multiplication_ 4_Matrix_vector_multiplication_ 9_Tall_skinny_matrix_multiplication_
  19_ReLU 20_LeakyReLU 21_Sigmoid 22_Tanh 25_Swish 26_GELU_ 23_Softmax 24_LogSoftmax
  36_RMSNorm_ 37_FrobeniusNorm_ 38_L1Norm_ 39_L2Norm_ 40_LayerNorm
  47_Sum_reduction_over_a_dimension 48_Mean_reduction_over_a_dimension 49_Max_reduction_over_a_dimension
  42_Max_Pooling_2D 67_conv_standard_1D 89_cumsum 94_MSELoss 88_MinGPTNewGelu)
rm -rf .kernelbench
mkdir -p .kernelbench/level1 .kernelbench/timing
for p in "${PROBLEMS[@]}"; do
  git --git-dir="$MIRROR" show "$COMMIT:KernelBench/level1/$p.py" > ".kernelbench/level1/$p.py"
done
for hw in H100_Modal H100_PCIe_LambdaLabs; do
  for f in baseline_time_torch baseline_time_torch_compile_inductor_default; do
    git --git-dir="$MIRROR" show "$COMMIT:results/timing/$hw/$f.json" > ".kernelbench/timing/${hw}__$f.json"
  done
done
git --git-dir="$MIRROR" rev-parse "$COMMIT" > .kernelbench/COMMIT
echo "$(ls .kernelbench/level1 | wc -l) problems at $(cat .kernelbench/COMMIT)"
