#!/usr/bin/env bash
# Sets up .venv with the test extras and runs the test suite (what CI runs).
# Extra arguments go to pytest, e.g. `bash launch/test.sh -m slow` for the slow tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash launch/setup.sh --test
if [[ $# -eq 0 ]]; then set -- -m "not slow" tests/acceptance colabs tests/unit; fi
# Notebooks run under nbmake at smoke size. Tests are spread over ARDIFF_TEST_WORKERS
# processes (pytest-xdist); those that share an expensive fixture are one xdist_group and
# stay on one worker (the demo run of test_pipeline.py). 0 runs everything in this process.
export ARDIFF_SMOKE=1
workers=${ARDIFF_TEST_WORKERS:-2}
parallel=()
if [[ "$workers" != 0 ]]; then parallel=(-n "$workers" --dist loadgroup); fi
# A notebook cell may train the smoke models (sample.ipynb does when it runs before
# train_tiny.ipynb): on a slow 2-core machine beside the other worker that took over
# nbmake's default 300 s (2026-12-06).
exec .venv/bin/python -m pytest -q --nbmake --nbmake-timeout=1200 "${parallel[@]}" "$@"
