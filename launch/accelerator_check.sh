#!/usr/bin/env bash
# The prepared accelerator check: `ardiff bench accelerator` at paper size in one process
# (well under 10 minutes on one H100/H200-class GPU); writes accelerator.json and its log.
#
# On a GPU machine without network whose python3 has jax (the `device` tool's; see
# README "Check an accelerator"):
#   bash launch/accelerator_check.sh --prepare   # here: wheels that image lacks -> .wheels/
#   bash launch/accelerator_check.sh             # there, with .wheels carried; OUT= for results
# On a machine with network (a TPU VM, a cluster node):
#   JAX_EXTRA=tpu bash launch/setup.sh && .venv/bin/ardiff bench accelerator
# Extra arguments go to the benchmark (e.g. --skip sampling).
set -euo pipefail
cd "$(dirname "$0")/.."
# What the check imports that the workplace's CUDA image (jax, flax, optax, orbax,
# absl, etils, cloudpickle, protobuf, psutil, PyYAML) does not hold.
WHEELS="grain array-record portpicker ml-collections"

if [[ "${1:-}" == "--prepare" ]]; then
  python=.venv/bin/python
  [[ -x $python ]] || python=python3
  rm -rf .wheels && mkdir -p .wheels
  for name in $WHEELS; do
    version=$($python -m pip show "$name" 2>/dev/null | awk '/^Version:/ {print $2}')
    $python -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
      --platform manylinux2014_x86_64 --platform any -d .wheels "$name${version:+==$version}"
  done
  echo "accelerator_check: $(ls .wheels | wc -l) wheels in .wheels ($(du -sh .wheels | cut -f1)); carry .wheels"
  exit 0
fi

out=${OUT:-bench_results}
mkdir -p "$out"
python=${PYTHON:-python3}
path=$PWD
if [[ -d .wheels ]]; then
  $python -m pip install --quiet --no-index --no-deps --target .wheels/site .wheels/*.whl
  path=$path:$PWD/.wheels/site
fi
export PYTHONPATH=$path${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
$python -m ardiffusion_jax.bench accelerator --out "$out/accelerator.json" "$@" 2>&1 \
  | tee "$out/accelerator.log"
