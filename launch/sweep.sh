#!/usr/bin/env bash
# Runs one config for several seeds and variants, then writes one report.
#   bash launch/sweep.sh OUT_DIR CONFIG "SEEDS" "NAME:--overrides ..." ["NAME:--overrides ..." ...]
# Example (the seed paper's MNIST experiment, both policies, 3 seeds):
#   bash launch/sweep.sh runs/paper_mnist configs/mnist.py "42 43 44" \
#     "juvenile:--config.method=juvenile" "lth:--config.method=lth"
# Extra flags for every run (e.g. the offline data folder) come from $JST_FLAGS; a variant's own
# overrides come after them and win. Compiled programs are cached across the runs in
# OUT_DIR/xla_cache (JAX's persistent compilation cache) unless JAX_COMPILATION_CACHE_DIR is set.
set -euo pipefail
if [ $# -lt 4 ]; then
  echo 'usage: bash launch/sweep.sh OUT_DIR CONFIG "SEEDS" "NAME:--overrides ..." ["NAME:--overrides ..." ...]' >&2
  echo '  e.g. bash launch/sweep.sh runs/paper_mnist configs/mnist.py "42 43 44" "juvenile:--config.method=juvenile"' >&2
  exit 2
fi
out=$1; config=$2; seeds=$3; shift 3
mkdir -p "$out"
export JAX_COMPILATION_CACHE_DIR="${JAX_COMPILATION_CACHE_DIR:-$out/xla_cache}"
here="$(cd "$(dirname "$0")" && pwd)"
dirs=()
for variant in "$@"; do
  name=${variant%%:*}; overrides=${variant#*:}
  for seed in $seeds; do
    dir="$out/${name}_s${seed}"
    # shellcheck disable=SC2086
    python "$here/main.py" --config="$config" --config.seed="$seed" --config.name="$name" ${JST_FLAGS:-} $overrides \
      --config.write_report=False --workdir="$dir" > "$dir.log" 2>&1 || { echo "FAILED: $dir (see $dir.log)"; exit 1; }
    echo "done: $dir"
    dirs+=("$dir")
  done
done
python "$here/report.py" "${dirs[@]}" --out="$out/report" --title="$(basename "$out")"
