"""Start real components (Kafka, Prometheus, Triton) on loopback for tests, CI and developers.

Each component is fetched or installed once into a cache (``$INSPECTLOOP_CACHE_DIR`` or
``~/.cache/inspectloop``), runs as a :class:`ManagedProcess` in its own process group with its
output in a log file, and is waited on by polling readiness against a deadline.
"""

from inspectloop.core.readiness import poll_until
from inspectloop.devtools.harness.kafka import KafkaBroker, fetch_kafka
from inspectloop.devtools.harness.postgres import PostgresServer
from inspectloop.devtools.harness.process import (
    ManagedProcess,
    default_cache_dir,
    pick_free_port,
    pick_free_ports,
)
from inspectloop.devtools.harness.prometheus import PrometheusServer, ensure_installed
from inspectloop.devtools.harness.triton import (
    TritonServer,
    locate_distribution,
    prepare_backend_dir,
)

__all__ = [
    "KafkaBroker",
    "ManagedProcess",
    "PostgresServer",
    "PrometheusServer",
    "TritonServer",
    "default_cache_dir",
    "ensure_installed",
    "fetch_kafka",
    "locate_distribution",
    "pick_free_port",
    "pick_free_ports",
    "poll_until",
    "prepare_backend_dir",
]
