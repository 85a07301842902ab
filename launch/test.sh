#!/usr/bin/env bash
# Sets up .venv with the test extras and runs the test suite (what CI runs).
# Extra arguments go to pytest, e.g. `bash launch/test.sh -m slow` for the slow tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash launch/setup.sh --test
if [[ $# -eq 0 ]]; then set -- -m "not slow" tests colabs; fi
# Notebooks run under nbmake at smoke size.
export ARDIFF_SMOKE=1
exec .venv/bin/python -m pytest -q --nbmake "$@"
