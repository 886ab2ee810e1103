#!/usr/bin/env bash
# Prepare the device call (bench/GPU.md), once, in the checkout the call sends: the wheels the
# device lacks into .whl/ (bench/gpu_wheels.sh) and the mirror packed into
# .gpu-mirror/mirror.tar.gz (the device gets the repo only, never ../shared). Both paths are
# ignored by git and named in the call's `carry`; what travels must stay under 64 MiB.
#
#   bash bench/gpu_prepare.sh [MIRROR]     # MIRROR: default ../shared/gutenberg
set -euo pipefail
cd "$(dirname "$0")/.."
mirror="${1:-../shared/gutenberg}"
[ -d "$mirror/cache/epub" ] || { echo "no Gutenberg mirror at $mirror" >&2; exit 2; }
bash bench/gpu_wheels.sh
mkdir -p .gpu-mirror
tar -C "$mirror" -czf .gpu-mirror/mirror.tar.gz.tmp MANIFEST.tsv cache
mv .gpu-mirror/mirror.tar.gz.tmp .gpu-mirror/mirror.tar.gz
tree=$(git ls-files -z --cached --others --exclude-standard | du -cb --files0-from=- | tail -1 | cut -f1)
carried=$(du -cb .whl .gpu-mirror | tail -1 | cut -f1)
total=$((tree + carried))
echo "travels: working tree $((tree / 1024)) KiB + .whl and .gpu-mirror $((carried / 1024)) KiB" \
     "= $((total / 1048576)) MiB of 64 MiB"
if [ "$total" -gt $((64 * 1048576)) ]; then
  echo "too much to carry: over 64 MiB" >&2
  exit 1
fi
