#!/usr/bin/env bash
# Everything a fresh machine needs, idempotent: the Python environment and the real components
# (Kafka's jars from Maven Central, Debian's Prometheus; Triton ships inside nvidia-pytriton).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${INSPECTLOOP_VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet -e ".[dev]"

# Java 17 and Maven fetch and run the Kafka broker; install them where the machine lacks them.
if ! command -v java >/dev/null || ! command -v mvn >/dev/null; then
  apt-get update -qq && apt-get install -y -qq --no-install-recommends openjdk-17-jre-headless maven
fi

"$VENV/bin/inspectloop" harness fetch all
