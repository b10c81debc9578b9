"""Every metric name the services export, for checking rules and dashboards against."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from inspectloop.core.bus.metrics import BusMetrics
from inspectloop.core.metrics import metric_names
from inspectloop.gateway.metrics import GatewayMetrics
from inspectloop.monitor.metrics import MonitorMetrics
from inspectloop.registry.metrics import RegistryMetrics
from inspectloop.rollout.metrics import RolloutMetrics
from inspectloop.trainer.metrics import TrainerMetrics


def exported_metrics() -> frozenset[str]:
    registry = CollectorRegistry()
    services = (
        BusMetrics,
        GatewayMetrics,
        MonitorMetrics,
        RegistryMetrics,
        RolloutMetrics,
        TrainerMetrics,
    )
    for metrics in services:
        metrics(registry)
    return frozenset(metric_names(registry))
