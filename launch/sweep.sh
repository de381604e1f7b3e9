#!/usr/bin/env bash
# Runs one config for several seeds and variants, then writes one report. Each variant is one process
# training all its seeds at once (--config.num_seeds: the seeds are lanes of one compiled program).
#   bash launch/sweep.sh OUT_DIR CONFIG "SEEDS" "NAME:--overrides ..." ["NAME:--overrides ..." ...]
# SEEDS: consecutive seeds, as "42 43 44" or "42-44" (-> --config.seed=42 --config.num_seeds=3).
# Example (the seed paper's MNIST experiment, both policies, 5 seeds):
#   bash launch/sweep.sh runs/paper_mnist configs/mnist.py "42-46" \
#     "juvenile:--config.method=juvenile" "lth:--config.method=lth"
# Extra flags for every run (e.g. the offline data folder) come from $JST_FLAGS; a variant's own
# overrides come after them and win. Rerunning the same command resumes unfinished variants. It prints each
# variant's progress lines and ends with a paired table: every variant against the first (final rounds, by seed).
set -euo pipefail
usage() {
  echo 'usage: bash launch/sweep.sh OUT_DIR CONFIG "SEEDS" "NAME:--overrides ..." ["NAME:--overrides ..." ...]' >&2
  echo '  SEEDS: consecutive seeds, "42 43 44" or "42-44"' >&2
  echo '  e.g. bash launch/sweep.sh runs/paper_mnist configs/mnist.py "42-46" "juvenile:--config.method=juvenile"' >&2
  exit 2
}
[ $# -lt 4 ] && usage
out=$1; config=$2; seeds=$3; shift 3
[[ $seeds =~ ^\ *[0-9]+(-[0-9]+|(\ +[0-9]+)*)\ *$ ]] || usage
if [[ $seeds =~ ^([0-9]+)-([0-9]+)$ ]]; then
  first=${BASH_REMATCH[1]}; last=${BASH_REMATCH[2]}
else
  read -r -a list <<< "$seeds"
  first=${list[0]:-}; last=${list[${#list[@]}-1]:-}
  for i in "${!list[@]}"; do
    [ "${list[$i]}" -eq $((first + i)) ] 2>/dev/null || {
      echo "sweep.sh: SEEDS must be consecutive (one process trains seeds seed..seed+num_seeds-1); got \"$seeds\"" >&2
      exit 2; }
  done
fi
[[ $first =~ ^[0-9]+$ && $last =~ ^[0-9]+$ && $last -ge $first ]] || usage
num_seeds=$((last - first + 1))
for variant in "$@"; do
  [[ $variant == *:* && ${variant%%:*} =~ ^[A-Za-z0-9_.-]+$ ]] || {
    echo "sweep.sh: each variant is NAME:--overrides with NAME of letters, digits, '_', '.', '-' (it names a folder of OUT_DIR); got \"$variant\"" >&2
    exit 2; }
done
mkdir -p "$out"
# Compiled programs are cached across the variants (JAX's persistent compilation cache) in OUT_DIR/xla_cache
# unless JAX_COMPILATION_CACHE_DIR is set.
export JAX_COMPILATION_CACHE_DIR="${JAX_COMPILATION_CACHE_DIR:-$out/xla_cache}"
here="$(cd "$(dirname "$0")" && pwd)"
dirs=()
total=$#; i=0; began=$SECONDS
for variant in "$@"; do
  i=$((i + 1)); name=${variant%%:*}; overrides=${variant#*:}
  dir="$out/$name"; t0=$SECONDS
  echo "variant $i/$total: $name (seeds $first-$last) -> $dir (full log: $dir.log)"
  # Progress lines (round, step, ETA) go to the terminal without absl's prefix; everything goes to the log.
  # shellcheck disable=SC2086
  python "$here/main.py" --config="$config" --config.seed="$first" --config.num_seeds="$num_seeds" \
    --config.name="$name" ${JST_FLAGS:-} $overrides --config.write_report=False --workdir="$dir" 2>&1 \
    | tee "$dir.log" | { grep --line-buffered -E ' step [0-9]+/[0-9]+ .*ETA' || true; } \
    | sed -u -E "s/^[IWEF][0-9]{4} [0-9:.]+ +[0-9]+ [^]]*\] /  /" \
    || { echo "FAILED: $dir (see $dir.log)"; exit 1; }
  echo "done $i/$total: $dir (seeds $first-$last) in $((SECONDS - t0)) s; sweep $((SECONDS - began)) s so far"
  dirs+=("$dir")
done
# The report; with several variants it ends with each one paired against the first (final rounds, by seed).
python "$here/report.py" "${dirs[@]}" --out="$out/report" --title="$(basename "$out")"
