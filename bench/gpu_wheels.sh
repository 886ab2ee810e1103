#!/usr/bin/env bash
# Wheels for the packages the device lacks (its Python is 3.12 on x86-64 with torch,
# transformers, peft, accelerate, pyarrow, tokenizers, matplotlib, numpy, pandas, requests,
# httpx, pyyaml, filelock, tqdm, ... but no pydantic, datasets, nrclex or empath), into .whl/
# (ignored by git, carried by the device call; bench/gpu_run.sh installs them there with
# `pip install --no-index --no-deps --target /tmp/site .whl/*.whl`). Each at the version this
# checkout's .venv has, so the device runs what the tests ran. One version of each: .whl/ is
# emptied first. Needs PyPI (pip download), not the device.
#
#   bash bench/gpu_wheels.sh          # then: du -sh .whl (the device call carries 64 MiB in all)
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
# With their own dependencies that the device lacks (typing_extensions: pydantic needs a newer
# one than an image may have; defusedxml: nltk).
NAMES=(pydantic pydantic_core annotated-types typing-inspection typing_extensions
       datasets dill multiprocess nrclex textblob nltk defusedxml empath)
# The third judge, where the checkout uses it: nade and what it needs (its models ship inside).
if grep -q '"nade' pyproject.toml; then
  NAMES+=(nade fasttext-numpy2 lightgbm)
fi
PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64
           --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64
           --platform manylinux1_x86_64 --platform manylinux_2_24_x86_64)
mkdir -p .whl
rm -f .whl/*.whl
for name in "${NAMES[@]}"; do
  version=$("$PY" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" \
            "$name" 2>/dev/null || true)
  spec="$name${version:+==$version}"
  if ! "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
       --implementation cp "${PLATFORMS[@]}" -d .whl "$spec" 2>/dev/null; then
    # No wheel on PyPI (empath ships only its source): build one here; it is pure Python.
    "$PY" -m pip wheel -q --no-deps -w .whl "$spec"
  fi
done
ls -l .whl
du -ch .whl/*.whl | tail -1
