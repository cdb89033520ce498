#!/usr/bin/env bash
# Set up .venv if needed, then run the test suite (extra arguments go to pytest).
# Two pytest-xdist workers (TEST_WORKERS), a test file per worker (tests/conftest.py: pytest_xdist_make_scheduler),
# one OpenMP thread per process: two workers fill two cores, and oversubscribed OpenMP barriers stall for seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
exec .venv/bin/python -m pytest -q -n "${TEST_WORKERS:-2}" --dist loadfile "$@"
