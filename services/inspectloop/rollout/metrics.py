"""The rollout controller's Prometheus metrics (``inspectloop_rollout_*``)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from inspectloop.core.metrics import ServiceMetrics


class RolloutMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        metrics = ServiceMetrics("rollout", registry)
        self.transitions = metrics.counter(
            "transitions",
            "transitions",
            "Rollout phases entered, by model and phase (rolled_back: a canary failed its "
            "analysis; failed: the rollout could not proceed).",
            ["model", "phase"],
        )
        self.checks = metrics.counter(
            "analysis",
            "checks",
            "Analysis checks evaluated, by metric and outcome (pass, fail, inconclusive).",
            ["metric", "outcome"],
        )
        self.canary_weight = metrics.gauge(
            "canary_weight",
            "ratio",
            "Share of traffic the rolled-out version decides (1 once promoted).",
            ["model", "version"],
        )
        self.active = metrics.gauge(
            "active", "rollouts", "Rollouts not yet in a final phase (production, rolled back)."
        )
        self.source_up = metrics.gauge(
            "metrics_source_up",
            "info",
            "1 when the last analysis could read its metrics source, 0 when it could not (the "
            "rollouts are held).",
        )
