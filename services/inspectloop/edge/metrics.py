"""The edge agent's Prometheus metrics (``inspectloop_edge_*``) on the injected registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from inspectloop.core.metrics import LATENCY_BUCKETS, ServiceMetrics


class EdgeMetrics:
    """Every metric the edge agent exports; created once per CollectorRegistry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        metrics = ServiceMetrics("edge", registry)
        self.inspections = metrics.counter(
            "inspections",
            "images",
            "Images inspected on the node, by line, decision and model version.",
            ["line", "decision", "version"],
        )
        self.infer_latency = metrics.histogram(
            "infer_duration",
            "seconds",
            "Time of one onnxruntime inference on the node.",
            ["line"],
            buckets=LATENCY_BUCKETS,
        )
        self.outbox_depth = metrics.gauge(
            "outbox_depth",
            "records",
            "Events buffered on disk, not yet acknowledged by the bus.",
            ["line"],
        )
        self.outbox_oldest_age = metrics.gauge(
            "outbox_oldest_age",
            "seconds",
            "Age of the oldest buffered event (0 when the outbox is empty).",
            ["line"],
        )
        self.published = metrics.counter(
            "outbox_published",
            "events",
            "Buffered events the bus acknowledged (then removed from the outbox).",
            ["line"],
        )
        self.drain_failures = metrics.counter(
            "outbox_drain_failures",
            "errors",
            "Drain attempts that found the bus unreachable or unacknowledging.",
            ["line"],
        )
        self.artifact_rejections = metrics.counter(
            "artifact_rejections",
            "errors",
            "Downloaded artifacts refused, by reason (sha256, signature, missing, invalid_model).",
            ["line", "reason"],
        )
        self.sync_failures = metrics.counter(
            "sync_failures",
            "errors",
            "Routings that could not be applied (registry unreachable, artifact refused).",
            ["line"],
        )
        self.models_loaded = metrics.counter(
            "models_loaded",
            "models",
            "Model versions swapped in, by model and version.",
            ["line", "model", "version"],
        )
        self.model_info = metrics.gauge(
            "model",
            "info",
            "1 for the model version the node serves (role current) and the one kept for "
            "rollback (role previous).",
            ["line", "model", "version", "role"],
        )
        self.degraded = metrics.gauge(
            "degraded",
            "info",
            "1 while the node serves with an error (refused artifact, bus unreachable); the "
            "heartbeat carries the error.",
            ["line"],
        )
        self.routing_generation = metrics.gauge(
            "routing_generation",
            "info",
            "Generation of the routing the node has applied.",
            ["line"],
        )
