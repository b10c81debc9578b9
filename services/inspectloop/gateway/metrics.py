"""The gateway's Prometheus metrics (``inspectloop_gateway_*``) on the injected registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from inspectloop.core.metrics import LATENCY_BUCKETS, ServiceMetrics


class GatewayMetrics:
    """Every metric the gateway exports; created once per CollectorRegistry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        metrics = ServiceMetrics("gateway", registry)
        self.requests = metrics.counter(
            "inspect",
            "requests",
            "Inspections answered, by line, decision, deciding model, version and role.",
            ["line", "decision", "model", "version", "role"],
        )
        self.latency = metrics.histogram(
            "request_duration",
            "seconds",
            "Time from an inspect request received to its answer.",
            ["line"],
            buckets=LATENCY_BUCKETS,
        )
        self.infer_latency = metrics.histogram(
            "infer_duration",
            "seconds",
            "Time of one Triton inference call, by model, version and role.",
            ["model", "version", "role"],
            buckets=LATENCY_BUCKETS,
        )
        self.reviews = metrics.counter(
            "human_review",
            "reviews",
            "Inspections flagged for human review, by line and reason.",
            ["line", "reason"],
        )
        self.errors = metrics.counter(
            "errors",
            "errors",
            "Requests that failed, by kind (invalid_image, invalid_request, unavailable, "
            "internal) and line.",
            ["kind", "line"],
        )
        self.infer_failures = metrics.counter(
            "infer",
            "errors",
            "Triton inferences that failed, by model, version and role (a failed shadow never "
            "affects a decision; a failed decider answers 503). The rollout controller's error "
            "rate of a version.",
            ["model", "version", "role"],
        )
        self.shadow_comparisons = metrics.counter(
            "shadow",
            "predictions",
            "Shadow decisions compared with the deciding version's, by the shadow's model and "
            "version, the decider's version and outcome (agree, disagree): the rollout "
            "controller's disagreement rate.",
            ["model", "version", "decider_version", "outcome"],
        )
        self.model_ready = metrics.gauge(
            "model_ready",
            "info",
            "1 when Triton serves a routed model version, 0 when it cannot (it gets no traffic); "
            "a version leaves when routing no longer names it.",
            ["model", "version"],
        )
        self.model_load_failures = metrics.counter(
            "model_load_failures",
            "errors",
            "Model versions Triton failed to load; the serving versions are left untouched.",
            ["model", "version"],
        )
        self.routing_refused = metrics.counter(
            "routing_refused",
            "events",
            "Routing events refused because the registry never approved a version they name "
            "for its role (a forged or mistaken routing); the line keeps its routing.",
            ["line"],
        )
        self.routing_generation = metrics.gauge(
            "routing_generation",
            "info",
            "Generation of the routing applied per line.",
            ["line"],
        )
