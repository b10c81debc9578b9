#!/usr/bin/env bash
# The main job: sets up what is missing (as scripts/test.sh does), then runs the plant story end to
# end on the embedded defaults and writes its report. Arguments go to `inspectloop demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
VENV=${INSPECTLOOP_VENV:-.venv}
exec "$VENV/bin/inspectloop" demo "$@"
