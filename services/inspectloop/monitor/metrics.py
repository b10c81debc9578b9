"""The monitor's Prometheus metrics (``inspectloop_monitor_*``) on the injected registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from inspectloop.core.metrics import ServiceMetrics


class MonitorMetrics:
    """Every metric the monitor exports; created once per CollectorRegistry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        metrics = ServiceMetrics("monitor", registry)
        self.drift_statistic = metrics.gauge(
            "drift_statistic",
            "score",
            "Latest value of each drift detector's statistic on each line.",
            ["line", "detector"],
        )
        self.drift_threshold = metrics.gauge(
            "drift_threshold",
            "score",
            "Alarm threshold of each detector on each line, calibrated to the expected run "
            "time; an alarm fires when the statistic exceeds it.",
            ["line", "detector"],
        )
        self.line_mode = metrics.gauge(
            "line_mode",
            "info",
            "1 for the line's current mode (auto, guarded, manual), 0 for the others.",
            ["line", "mode"],
        )
        self.false_reject_rate = metrics.gauge(
            "false_reject_rate",
            "ratio",
            "Operator-confirmed false rejects per inspection over the quality window.",
            ["line"],
        )
        self.escape_rate = metrics.gauge(
            "escape_rate",
            "ratio",
            "Reported escapes per passed unit over the quality window.",
            ["line"],
        )
        self.labelled_images = metrics.gauge(
            "labelled",
            "images",
            "Operator-labelled images of the new appearance collected toward a retrain.",
            ["line"],
        )
        self.inspections = metrics.counter(
            "inspections",
            "events",
            "Inspections consumed, by outcome (warm_up, monitored, ignored: another model's).",
            ["line", "outcome"],
        )
        self.feedback = metrics.counter(
            "feedback",
            "reviews",
            "Operator verdicts consumed, by line, the judged model and version, and outcome "
            "(the verdict: confirmed_defect, false_reject, escape_reported, good_confirmed): the "
            "rollout controller's label-delayed quality of a version.",
            ["line", "model", "version", "outcome"],
        )
        self.alerts = metrics.counter(
            "drift_alerts",
            "events",
            "Drift alerts raised, by detector and outcome (info, warning, critical, nuisance).",
            ["line", "detector", "outcome"],
        )
        self.mode_changes = metrics.counter(
            "mode_changes",
            "events",
            "Line mode changes, by the mode entered.",
            ["line", "mode"],
        )
        self.retrain_requests = metrics.counter(
            "retrain_requests",
            "requests",
            "Retrain requests published, by reason.",
            ["line", "reason"],
        )
