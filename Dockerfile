# syntax=docker/dockerfile:1.7
# The inspectloop image: one image for every service, the command picks the service
# (the Helm chart sets it): `inspectloop registry serve`, `python -m inspectloop.monitor.service`,
# `python -m inspectloop.trainer.service`; also the image of the KubeRay head and workers.
#
#   docker build -t ghcr.io/inspectloop/inspectloop:0.1.0 .
#   docker build --build-arg PACKAGE=inspectloop -t ghcr.io/inspectloop/inspectloop-edge:0.1.0 .
#
# Base image pinned by tag; pin the digest too when you build releases:
#   python:3.11.14-slim-bookworm@sha256:<digest of the tag at release time>
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

# --- builder: every dependency as a wheel --------------------------------------------------
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
# Dependencies first (cached while only the sources change), then the package itself.
COPY pyproject.toml README.md ./
COPY services ./services
RUN python -m pip wheel --wheel-dir /wheels ".[all]"

# --- runtime ----------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="inspectloop" \
      org.opencontainers.image.description="Drift monitoring, retraining and validated rollouts of inspection models" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/inspectloop/inspectloop"
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    INSPECTLOOP_DATA_DIR=/var/lib/inspectloop
# wget: KubeRay's probes of the Ray head and workers run it inside this image.
RUN apt-get update \
    && apt-get install -y --no-install-recommends wget \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 inspectloop \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/inspectloop \
       --shell /usr/sbin/nologin inspectloop \
    && install -d -o 10001 -g 10001 /var/lib/inspectloop
# The wheels are bind-mounted from the builder: they never become a layer of this image.
# PACKAGE=inspectloop builds the edge agent's image: the package without its [all] extras
# (no torch, Ray or Triton), for line PCs (the chart's edge.image).
ARG PACKAGE="inspectloop[all]"
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    python -m pip install --no-index --find-links=/wheels "${PACKAGE}"
USER 10001:10001
WORKDIR /var/lib/inspectloop
# Registry API; the bus consumers' /metrics (INSPECTLOOP_METRICS__PORT in the chart).
EXPOSE 8600 9090
ENTRYPOINT ["inspectloop"]
CMD ["--help"]
