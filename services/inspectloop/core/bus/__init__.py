"""The event bus: one interface, a Kafka and an embedded backend, picked by settings."""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import CollectorRegistry

from inspectloop.core.bus.base import (
    Consumer,
    Delivery,
    EventBus,
    Handler,
    RecordMetadata,
    TopicPartition,
)
from inspectloop.core.bus.dedupe import Deduplicator
from inspectloop.core.bus.kafka import KafkaAdmin, KafkaProducerAdapter, KafkaSource
from inspectloop.core.bus.local import LocalAdmin, LocalLog, LocalProducer, LocalSource
from inspectloop.core.bus.metrics import BusMetrics
from inspectloop.core.settings import BusSettings

__all__ = [
    "Consumer",
    "Deduplicator",
    "Delivery",
    "EventBus",
    "Handler",
    "RecordMetadata",
    "TopicPartition",
    "build_bus",
]


def build_bus(settings: BusSettings, source_name: str, registry: CollectorRegistry) -> EventBus:
    """The one place that picks a backend. ``source_name`` goes into every event's ce_source."""
    metrics = BusMetrics(registry)
    if settings.backend == "kafka":

        def kafka_source(group: str, topics: Sequence[str]) -> KafkaSource:
            return KafkaSource(settings, group, topics)

        return EventBus(
            settings,
            source_name,
            producer=KafkaProducerAdapter(settings),
            source_factory=kafka_source,
            admin=KafkaAdmin(settings),
            metrics=metrics,
        )

    if settings.local.directory is None:  # CommonSettings derives it from data_dir
        raise ValueError("local bus directory is not set")
    log = LocalLog(settings.local.directory)

    def local_source(group: str, topics: Sequence[str]) -> LocalSource:
        return LocalSource(log, settings, group, topics)

    return EventBus(
        settings,
        source_name,
        producer=LocalProducer(log),
        source_factory=local_source,
        admin=LocalAdmin(log),
        metrics=metrics,
    )
