"""The trainer's Prometheus metrics (``inspectloop_trainer_*``) on the injected registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from inspectloop.core.metrics import ServiceMetrics

#: Retraining takes minutes to an hour: buckets from 30 s to 4 h.
RETRAIN_BUCKETS = (30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0)


class TrainerMetrics:
    """Every metric the trainer exports; created once per CollectorRegistry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        metrics = ServiceMetrics("trainer", registry)
        self.retrains = metrics.counter(
            "retrains",
            "requests",
            "Retrain requests handled, by outcome: validated (registered and published), "
            "rejected (registered, a validation gate failed), failed (dead-lettered: too few "
            "labels, or the training itself failed), unavailable (the registry or Ray could not "
            "be reached; the request is redelivered).",
            ["outcome"],
        )
        self.retrain_duration = metrics.histogram(
            "retrain_duration",
            "seconds",
            "Time from taking a retrain request to its outcome (labels, snapshot, training, "
            "validation, packaging, registration), by outcome.",
            ["outcome"],
            buckets=RETRAIN_BUCKETS,
        )
        self.retrains_running = metrics.gauge(
            "retrains_running",
            "requests",
            "Retrain requests being worked on now (0 or 1: one at a time).",
        )
        self.labels_stored = metrics.counter(
            "labels_stored",
            "images",
            "Operator-labelled images stored for training, by line.",
            ["line"],
        )
        self.labels_corrected = metrics.counter(
            "labels_corrected",
            "images",
            "Verdicts that changed an image's label (an operator overruling an earlier verdict), "
            "by line: a rising rate says the operators disagree.",
            ["line"],
        )
        self.training_progress = metrics.gauge(
            "training_progress",
            "ratio",
            "How far the running training is (0..1, by optimiser steps); 0 when none runs.",
        )
        self.training_eta = metrics.gauge(
            "training_eta",
            "seconds",
            "Seconds the running training still needs at its pace so far; 0 when none runs.",
        )
        self.training_epoch = metrics.gauge(
            "training_epoch",
            "epochs",
            "The epoch the running training is in (from 1); 0 when none runs.",
        )
        self.training_planned = metrics.gauge(
            "training_planned",
            "epochs",
            "Epochs the running training will train; 0 when none runs.",
        )
