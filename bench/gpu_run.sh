#!/usr/bin/env bash
# The GPU run in one call (bench/GPU.md): the wheels in .whl/ installed into /tmp/site when
# there are any (the device lacks datasets, pydantic, nrclex, empath, ...), then
# bench/gpu_run.py all. What comes back is in $OUT (default ./gpu-out).
#
#   bash bench/gpu_run.sh               # on the device: scratch:small, every book, 256 samples
#   bash bench/gpu_run.sh --dry-run     # on the CPU: scratch:tiny, two books, a few minutes
#
# Other arguments go to bench/gpu_run.py (--work DIR, --mirror FOLDER|TAR.GZ).
set -uo pipefail
cd "$(dirname "$0")/.."
export OUT="${OUT:-$PWD/gpu-out}"
mkdir -p "$OUT"
PY="${PYTHON:-python3}"
dry=0
for arg in "$@"; do [ "$arg" = --dry-run ] && dry=1; done
site=""
# The wheels are built for the device's Python (3.12, x86-64): a dry run uses the local env.
if [ "$dry" = 0 ] && compgen -G ".whl/*.whl" >/dev/null; then
  site="${EMOVERSE_SITE:-/tmp/site}"
  if ! "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target "$site" .whl/*.whl >>"$OUT/run.log" 2>&1; then
    echo "the wheels in .whl/ did not install (see $OUT/run.log)" | tee -a "$OUT/run.log"
    exit 2
  fi
fi
export PYTHONPATH="${site:+$site:}$PWD${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg
export EMOVERSE_GPU_COMMAND="bash bench/gpu_run.sh${*:+ $*}"
exec "$PY" bench/gpu_run.py all --out "$OUT" "$@"
