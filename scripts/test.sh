#!/usr/bin/env bash
# The test command: sets up what is missing, checks style, types and generated code, then runs
# every test (unit, integration against real Kafka, Prometheus and Triton, e2e).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --tests
VENV=${INSPECTLOOP_VENV:-.venv}
export PATH="$PWD/$VENV/bin:$PATH"

ruff check services tests benchmarks load-tests
ruff format --check services tests benchmarks load-tests
mypy
inspectloop dev gen-proto --check
pytest "$@"
