"""Metrics every bus reports, whichever backend carries it."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from inspectloop.core.metrics import ServiceMetrics


class BusMetrics:
    """Counters and timings of one process's bus, registered in the service's registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        metrics = ServiceMetrics("bus", registry)
        self.published = metrics.counter(
            "published", "events", "Records handed to the bus for publishing.", ["topic"]
        )
        self.consumed = metrics.counter(
            "consumed",
            "events",
            "Records consumed, by outcome: ok, dlq (dead-lettered), paused (redelivered) or "
            "undelivered (handled, but their outputs failed: redelivered).",
            ["topic", "group", "outcome"],
        )
        self.dead_lettered = metrics.counter(
            "dead_lettered",
            "events",
            "Records sent to <topic>.dlq, by error kind (decode, permanent, transient, "
            "unexpected).",
            ["topic", "kind"],
        )
        self.handle_seconds = metrics.histogram(
            "handle",
            "seconds",
            "Time a handler took for one record, retries included.",
            ["topic", "group"],
        )
