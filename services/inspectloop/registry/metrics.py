"""The registry's Prometheus metrics (``inspectloop_registry_*``) on the injected registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from inspectloop.core.metrics import ServiceMetrics


class RegistryMetrics:
    """Every metric the registry exports; created once per CollectorRegistry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        metrics = ServiceMetrics("registry", registry)
        self.requests = metrics.counter(
            "http",
            "requests",
            "HTTP requests handled, by endpoint (kind) and status class (outcome: 2xx, 4xx...).",
            ["kind", "outcome"],
        )
        self.request_seconds = metrics.histogram(
            "http_request", "seconds", "Time to handle one HTTP request, by endpoint.", ["kind"]
        )
        self.versions_registered = metrics.counter(
            "versions_registered",
            "versions",
            "Model versions registered, by initial stage (phase).",
            ["phase"],
        )
        self.transitions = metrics.counter(
            "stage",
            "transitions",
            "Stage transitions requested, by target stage (phase) and outcome (ok, refused).",
            ["phase", "outcome"],
        )
        self.signatures = metrics.counter(
            "signature",
            "attempts",
            "Electronic signature attempts, by outcome (signed, wrong_password, locked).",
            ["outcome"],
        )
        self.audit_records = metrics.counter(
            "audit",
            "records",
            "Records appended to the audit log, by kind (action family).",
            ["kind"],
        )
        self.artifact_bytes = metrics.counter(
            "artifact_upload", "bytes", "Bytes of newly stored artifacts."
        )
        self.dataset_versions = metrics.counter(
            "dataset_versions_created",
            "versions",
            "Dataset versions created, by kind (challenge, artwork).",
            ["kind"],
        )
        self.dataset_images = metrics.counter(
            "dataset",
            "images",
            "Items in newly created dataset versions, by kind (challenge, artwork).",
            ["kind"],
        )
        self.bus_events = metrics.counter(
            "bus_events_recorded",
            "events",
            "Bus events recorded in the audit log, by topic and outcome (recorded, duplicate).",
            ["topic", "outcome"],
        )
