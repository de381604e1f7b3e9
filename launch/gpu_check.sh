#!/usr/bin/env bash
# The GPU pack: every device check jst needs, as one prepared command for a lent GPU machine (jax, flax, optax,
# chex, orbax, absl installed; no internet, no TensorFlow, no ml_collections), under 9 minutes on one H200.
#
#   bash launch/gpu_data.sh pack ../shared/datasets          # here: data and wheels in parts of <= 60 MB
#   (copy build/gpu_parts/p0, p1, ... to the machine, one call each, then there:)
#   bash launch/gpu_data.sh assemble && bash launch/gpu_check.sh OUT [DATA=build/gpu_data]
#
# Steps, each under the time left (JST_GPU_CHECK_BUDGET_S, default 510 s), each logged under OUT/logs, one
# line per step in OUT/steps.txt; a failing step does not stop the next:
#   1. the machine (nvidia-smi, jax devices);
#   2. the device-touching tests: training step and segments, masks, expansion, seeds as lanes, a tiny
#      end-to-end search without TensorFlow;
#   3. the seeds benchmark of the paper's MNIST: 1, 16, 64 seeds as lanes of one program (goal: 64 <= 2x one);
#   4. as many convolutional cells as fit, in issue 34's order: cifar10_dense_curve_long (the budget's curve),
#      cifar10_converged (defined once its budget is committed; skipped before), conv2_converged; committed parts
#      are skipped, a hand-off archive in $JST_HANDOFF_DIR (an earlier call's OUT/handoff, carried in) resumes
#      its part, and the part cut off by the time limit is paused (SIGTERM) and packed into OUT/handoff; records
#      under OUT/results (copy them into docs/results/ and commit; keep OUT/handoff outside the repository and
#      carry it to the next call);
#   5. OUT/gpu_check.tar.gz: all of the above in one archive (workdirs only as hand-off archives).
# The two defined studies are 4.43M Adam steps (cifar10_converged's share depends on its budget): hours on one
# H200 by our estimate, so the design takes many calls; README.md ("On a lent GPU machine") gives the estimate.
# JST_GPU_CHECK_SCALE=toy runs the same steps at toy scale on any machine (tests/test_gpu_pack.py, on CPU).
set -uo pipefail
out_arg="${1:?usage: bash launch/gpu_check.sh OUT [DATA]}"
data="$(cd "${2:-build/gpu_data}" && pwd)" || { echo "gpu_check.sh: no data folder ${2:-build/gpu_data}" >&2; exit 2; }
scale="${JST_GPU_CHECK_SCALE:-full}"
budget_s="${JST_GPU_CHECK_BUDGET_S:-510}"
mkdir -p "$out_arg/logs"
out="$(cd "$out_arg" && pwd)"
cd "$(dirname "$0")/.."
t0=$(date +%s)
left() { echo $(( budget_s - ($(date +%s) - t0) )); }
step() {  # step NAME COMMAND...: runs under the time left, logs, records rc and seconds
  local name="$1" start rc
  shift
  start=$(date +%s)
  if [ "$(left)" -le 5 ]; then echo "$name skipped (no time left)" | tee -a "$out/steps.txt"; return; fi
  timeout --signal=TERM --kill-after=20 "$(left)" "$@" > "$out/logs/$name.txt" 2>&1
  rc=$?
  echo "$name rc=$rc $(( $(date +%s) - start ))s" | tee -a "$out/steps.txt"
}
: > "$out/steps.txt"
export JST_SHARED_DATASETS="$data" JST_MANUAL_DIR="$data/mnist" XLA_PYTHON_CLIENT_PREALLOCATE=false

# 0. What a bare box lacks, from the wheels carried with the data (pure Python, installed without internet).
python3 -c "import ml_collections, pytest" 2> /dev/null \
  || step install python3 -m pip install -q --no-index --find-links "$data/wheels" ml_collections pytest

# 1. The machine.
step machine bash -c 'nvidia-smi -L 2> /dev/null; python3 -c "import jax; print(jax.__version__, jax.devices())"'

# 2. Device-touching tests.
if [ "$scale" = toy ]; then
  tests=(tests/test_train.py::test_pruned_weights_stay_exactly_zero tests/test_sparsity.py)
  seeds=1,2 steps=20 rounds=1 studies=(toy) cifar="$data/mnist" max_parts=1
else
  tests=(tests/test_train.py tests/test_masks.py tests/test_expand.py tests/test_library_refusals.py
         tests/test_sparsity.py tests/test_seeds.py tests/test_no_tensorflow.py)
  seeds=1,16,64 steps=0 rounds=0 studies=(cifar10_dense_curve_long cifar10_converged conv2_converged)
  cifar="$data/cifar10-jpeg75" max_parts=0
fi
step tests python3 -m pytest -q -p no:cacheprovider "${tests[@]}"

# 3. Seeds as lanes: the paper's MNIST growth, 1 vs 16 vs 64 seeds in one program.
step seeds python3 benchmarks/bench_seeds.py --lanes_only --policies=juvenile --seeds="$seeds" \
  --steps_per_round="$steps" --num_rounds="$rounds" --out="$out/bench"

# 4. Convolutional cells, study after study: the carried hand-off archives and each study's committed records are
#    copied first, so only its missing parts train, while time is left; a part cut off is packed for the next call.
mkdir -p "$out/results" "$out/handoff"
[ -n "${JST_HANDOFF_DIR:-}" ] && [ -d "$JST_HANDOFF_DIR" ] && cp -r "$JST_HANDOFF_DIR/." "$out/handoff/"
for study in "${studies[@]}"; do
  if ! python3 -c "import sys; from jst.studies import catalog as s; sys.exit(sys.argv[1] not in
      {**s.STUDIES, **s.TEST_STUDIES})" "$study" 2> /dev/null; then
    echo "cells_$study skipped (not defined yet: its budget is committed first)" | tee -a "$out/steps.txt"
    continue
  fi
  [ -d "docs/results/$study" ] && cp -r "docs/results/$study" "$out/results/"
  JST_MANUAL_DIR="$cifar" step "cells_$study" python3 launch/study.py run "$study" --results_dir="$out/results" \
    --workdir_root="$out/studies" --handoff_dir="$out/handoff" --max_parts="$max_parts"
  python3 launch/study.py handoff "$study" --results_dir="$out/results" --workdir_root="$out/studies" \
    --handoff_dir="$out/handoff" \
    >> "$out/logs/cells_$study.txt" 2>&1
done

# 5. One archive of it all (workdirs only as hand-off archives).
tar -czf "$out/gpu_check.tar.gz" -C "$out" steps.txt logs bench results handoff 2> /dev/null
echo "gpu_check.sh: $(( $(date +%s) - t0 ))s; $out/gpu_check.tar.gz" | tee -a "$out/steps.txt"
