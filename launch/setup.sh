#!/usr/bin/env bash
# Creates .venv (Python 3.12 when available, else python3) and installs ardiffusion_jax
# with the pinned versions in launch/constraints.txt. Safe to re-run: it skips the
# install when nothing it depends on changed.
#   bash launch/setup.sh          # package only
#   bash launch/setup.sh --test   # plus the test extras (pytest, nbmake, scipy, torch)
#   JAX_EXTRA=cuda12 bash launch/setup.sh   # GPU wheels (jax[cuda12]); JAX_EXTRA=tpu for TPU VMs
set -euo pipefail
cd "$(dirname "$0")/.."

extras=""
[[ "${1:-}" == "--test" ]] && extras="[test]"

find_python() {
  local candidate
  # A pyenv shim can exist without working, so run each candidate before trusting it.
  for candidate in python3.12 "$(pyenv root 2>/dev/null)"/versions/3.12*/bin/python3.12 python3; do
    if "$candidate" -c 'import sys; assert sys.version_info >= (3, 11)' >/dev/null 2>&1; then
      echo "$candidate"; return 0
    fi
  done
  echo "error: no working python3.12 or python3 (>= 3.11) found" >&2
  return 1
}

if [[ ! -x .venv/bin/python ]] || ! .venv/bin/python -c '' 2>/dev/null; then
  python=$(find_python)
  echo "creating .venv with $python ($("$python" --version))"
  rm -rf .venv
  "$python" -m venv .venv
fi

stamp=.venv/.installed$(echo "$extras" | tr -d '[]')
want=$( (cat pyproject.toml launch/constraints.txt; echo "${JAX_EXTRA:-}") | sha256sum | cut -d' ' -f1)
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  echo "setup: .venv is up to date"
  exit 0
fi
.venv/bin/python -m pip install --quiet --upgrade pip
# --no-compile: byte-compiling every module of torch and jax at install was half the
# install time (1.5 of 3 minutes on a 2-core CPU); Python compiles what is imported, once.
.venv/bin/python -m pip install --quiet --no-compile -c launch/constraints.txt -e ".$extras"
if [[ -n "${JAX_EXTRA:-}" ]]; then
  jax_version=$(.venv/bin/python -c 'import jax; print(jax.__version__)')
  .venv/bin/python -m pip install --quiet "jax[${JAX_EXTRA}]==${jax_version}"
fi
echo "$want" > "$stamp"
echo "setup: installed ardiffusion_jax$extras into .venv ($(.venv/bin/python --version))"
