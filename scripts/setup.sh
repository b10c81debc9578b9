#!/usr/bin/env bash
# Everything a fresh machine needs, idempotent: the Python environment and the real components
# (Kafka's jars from Maven Central, Debian's Prometheus, Helm through the Go module proxy;
# Triton ships inside nvidia-pytriton).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${INSPECTLOOP_VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet -e ".[all,dev]"

# The edge agent's own install, as on a line PC: the package without its [all] extras (no
# torch, Ray or Triton). tests/ run the agent from it.
EDGE_VENV="$VENV-edge"
if [ ! -x "$EDGE_VENV/bin/python" ]; then
  python3 -m venv "$EDGE_VENV"
fi
"$EDGE_VENV/bin/python" -m pip install --quiet --upgrade pip
"$EDGE_VENV/bin/python" -m pip install --quiet -e .

# Java 17 and Maven fetch and run the Kafka broker; install them where the machine lacks them.
if ! command -v java >/dev/null || ! command -v mvn >/dev/null; then
  apt-get update -qq && apt-get install -y -qq --no-install-recommends openjdk-17-jre-headless maven
fi

"$VENV/bin/inspectloop" harness fetch all

# Helm (for the chart's checks in tests/integration/test_chart.py), built from source through the
# Go module proxy into the cache directory, once.
HELM_VERSION=v3.22.0
PATH="$PATH:/usr/local/go/bin"
HELM_BIN="${INSPECTLOOP_CACHE_DIR:-$HOME/.cache/inspectloop}/bin"
if [ ! -x "$HELM_BIN/helm" ]; then
  if ! command -v go >/dev/null; then
    echo "setup: Go is needed to install helm $HELM_VERSION (go install)" >&2
    exit 1
  fi
  mkdir -p "$HELM_BIN"
  GOBIN="$HELM_BIN" go install "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
fi
