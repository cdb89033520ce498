#!/usr/bin/env bash
# Every GPU measurement of the model cards in one run, one markdown table (benchmarks/gpu_suite.py has the details).
# Usage: benchmarks/gpu_suite.sh [--out gpu_suite.md] [--budget 480] [--dry-run]
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-.venv/bin/python}"
[ -x "$python" ] || python=python
exec "$python" benchmarks/gpu_suite.py "$@"
