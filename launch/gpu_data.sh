#!/usr/bin/env bash
# Moving the offline datasets (and the few wheels a bare GPU box lacks) to a machine that takes at most 64 MiB
# per copy. CIFAR-10's archive (166 MB) goes in parts, one per copy, and is put back together there.
#
#   bash launch/gpu_data.sh pack SHARED_DATASETS [PARTS=build/gpu_parts] [PART_MB=60]   # here
#       -> PARTS/p0 (mnist/, SHA256SUMS, wheels/), PARTS/p1, p2, ... (CIFAR-10 archive pieces), one copy each
#   bash launch/gpu_data.sh assemble [PARTS=build/gpu_parts] [DATA=build/gpu_data]       # there
#       -> DATA/mnist/, DATA/cifar10-jpeg75/cifar-10-binary.tar.gz, checked against SHA256SUMS
#
# wheels/ (pure Python, from PyPI here): ml_collections and PyYAML (the configs), pytest and its two
# dependencies (the device tests). Nothing else is installed there.
set -euo pipefail
cmd="${1:?usage: bash launch/gpu_data.sh pack SHARED_DATASETS [PARTS] [PART_MB] | assemble [PARTS] [DATA]}"
case "$cmd" in
  pack)
    src="${2:?pack needs the shared datasets folder (holding mnist/ and cifar10-jpeg75/)}"
    parts="${3:-build/gpu_parts}"
    part_mb="${4:-60}"
    rm -rf "$parts" && mkdir -p "$parts/p0"
    cp -r "$src/mnist" "$parts/p0/mnist"
    cp "$src/SHA256SUMS" "$parts/p0/SHA256SUMS"
    if [ -z "${JST_GPU_NO_WHEELS:-}" ]; then
      python3 -m pip download -q --no-deps -d "$parts/p0/wheels" ml_collections pytest pluggy iniconfig
      for py in 3.10 3.11 3.12 3.13; do  # PyYAML is compiled: one wheel per Python the box may have
        python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$py" \
          --platform manylinux2014_x86_64 -d "$parts/p0/wheels" PyYAML || true
      done
    fi
    tmp="$(mktemp -d)"
    split -b "${part_mb}M" -d -a 2 "$src/cifar10-jpeg75/cifar-10-binary.tar.gz" "$tmp/cifar.part-"
    i=1
    for piece in "$tmp"/cifar.part-*; do
      mkdir -p "$parts/p$i" && mv "$piece" "$parts/p$i/"
      i=$((i + 1))
    done
    rmdir "$tmp"
    du -sh "$parts"/p* | sed 's/^/  /'
    echo "copy each of $parts/p0 .. p$((i - 1)) in its own call (carry), then: bash launch/gpu_data.sh assemble $parts"
    ;;
  assemble)
    parts="${2:-build/gpu_parts}"
    data="${3:-build/gpu_data}"
    mkdir -p "$data/cifar10-jpeg75"
    rm -rf "$data/mnist" && cp -r "$parts/p0/mnist" "$data/mnist"
    cp "$parts/p0/SHA256SUMS" "$data/SHA256SUMS"
    if [ -d "$parts/p0/wheels" ]; then rm -rf "$data/wheels" && cp -r "$parts/p0/wheels" "$data/wheels"; fi
    cat "$parts"/p[1-9]*/cifar.part-* > "$data/cifar10-jpeg75/cifar-10-binary.tar.gz"
    (cd "$data" && sha256sum -c --quiet SHA256SUMS) \
      || { echo "gpu_data.sh: checksums differ: a part is missing or damaged; copy the parts again" >&2; exit 1; }
    echo "assembled $data (checksums match)"
    ;;
  *)
    echo "unknown command $cmd: pack or assemble" >&2
    exit 2
    ;;
esac
