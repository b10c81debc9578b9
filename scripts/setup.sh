#!/usr/bin/env bash
# Set-up of a fresh machine, idempotent. What it installs depends on what you will run:
#
#   bash scripts/setup.sh              the main job (`inspectloop demo`): the Python environment
#                                      and Triton's backends (Triton ships in nvidia-pytriton)
#   bash scripts/setup.sh --platform   + what `inspectloop up` runs on: Java 17 and Kafka's jars
#                                      (Maven Central), Debian's Prometheus
#   bash scripts/setup.sh --tests      + what only the tests use: the developer tools, the edge
#                                      agent's own install (.venv-edge), PostgreSQL, Helm (built
#                                      through the Go module proxy)
#
# Every step says what it does; those that are done already take a second.
set -euo pipefail
cd "$(dirname "$0")/.."

level=main
case "${1:-}" in
  "") ;;
  --platform) level=platform ;;
  --tests) level=tests ;;
  *) echo "usage: bash scripts/setup.sh [--platform | --tests]" >&2; exit 2 ;;
esac

step() { echo "setup: $*" >&2; }
VENV=${INSPECTLOOP_VENV:-.venv}
CACHE=${INSPECTLOOP_CACHE_DIR:-$HOME/.cache/inspectloop}

if [ ! -x "$VENV/bin/python" ]; then
  step "creating the Python environment $VENV"
  python3 -m venv "$VENV"
fi
extras=all
[ "$level" = tests ] && extras=all,dev
step "installing inspectloop[$extras] into $VENV (first time: several minutes and about 7 GiB, most of it PyTorch's CUDA wheel)"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet -e ".[$extras]"

step "preparing Triton's CPU backends in $CACHE"
"$VENV/bin/inspectloop" harness fetch triton

if [ "$level" = main ]; then
  step "ready for: bash scripts/demo.sh"
  exit 0
fi

# Java 17 and Maven fetch and run the Kafka broker; install them where the machine lacks them.
if ! command -v java >/dev/null || ! command -v mvn >/dev/null; then
  step "installing Java 17 and Maven (Debian packages)"
  apt-get update -qq && apt-get install -y -qq --no-install-recommends openjdk-17-jre-headless maven
fi
step "fetching Kafka's jars from Maven Central (once) and installing Debian's Prometheus"
"$VENV/bin/inspectloop" harness fetch kafka
"$VENV/bin/inspectloop" harness fetch prometheus

if [ "$level" = platform ]; then
  step "ready for: inspectloop up"
  exit 0
fi

# The edge agent's own install, as on a line PC: the package without its [all] extras (no
# torch, Ray or Triton). tests/ run the agent from it.
EDGE_VENV="$VENV-edge"
if [ ! -x "$EDGE_VENV/bin/python" ]; then
  step "creating the edge agent's own environment $EDGE_VENV"
  python3 -m venv "$EDGE_VENV"
fi
step "installing the package alone (the edge agent's install) into $EDGE_VENV"
"$EDGE_VENV/bin/python" -m pip install --quiet --upgrade pip
"$EDGE_VENV/bin/python" -m pip install --quiet -e .

step "installing PostgreSQL (Debian packages) for the registry's database tests"
"$VENV/bin/inspectloop" harness fetch postgres

# Helm (for the chart's checks in tests/integration/test_chart.py), built from source through the
# Go module proxy into the cache directory, once.
HELM_VERSION=v3.22.0
PATH="$PATH:/usr/local/go/bin"
HELM_BIN="$CACHE/bin"
if [ ! -x "$HELM_BIN/helm" ]; then
  if ! command -v go >/dev/null; then
    echo "setup: Go is needed to install helm $HELM_VERSION (go install)" >&2
    exit 1
  fi
  step "building helm $HELM_VERSION through the Go module proxy (once, about two minutes)"
  mkdir -p "$HELM_BIN"
  GOBIN="$HELM_BIN" go install "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
fi
step "ready for: bash scripts/test.sh"
