"""The registry process: HTTP API under uvicorn, plus a bus consumer that feeds the audit log.

:func:`main` builds the settings once, configures logging, creates the schema and the
bootstrap accounts, starts :class:`BusAuditRecorder` on a thread (when
``registry.consume_events``) and serves the API until SIGINT/SIGTERM.

The consumer records what other services announce (model versions on the models topic, rollout
steps on the rollouts topic, each line's routing and its mode changes) in the audit log,
exactly once per event id. It never changes a version's stage: stage changes go through the
API, where the lifecycle and the required signatures are enforced. Each record notes the
registry's own stage of the versions it names, so that an announcement that disagrees with the
registry (a routing to a version that is not approved for it) stands out.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from prometheus_client import CollectorRegistry
from sqlalchemy import Engine

from inspectloop.core.blobstore import build_blob_store
from inspectloop.core.bus import Consumer, EventBus, build_bus
from inspectloop.core.events import Event, Topic
from inspectloop.core.logging import configure_logging, log_context
from inspectloop.core.settings import load_settings
from inspectloop.core.topics import LINE_MODES, MODELS, ROLLOUTS, ROUTING
from inspectloop.registry.api import create_app
from inspectloop.registry.db import create_registry_engine, ensure_schema, redacted_url
from inspectloop.registry.lifecycle import Stage
from inspectloop.registry.metrics import RegistryMetrics
from inspectloop.registry.settings import RegistrySettings
from inspectloop.registry.store import RegistryStore, subject_of
from inspectloop.v1.common_pb2 import LineMode, ModelRef
from inspectloop.v1.models_pb2 import ModelStage, ModelVersion
from inspectloop.v1.monitor_pb2 import LineModeChanged
from inspectloop.v1.rollout_pb2 import RolloutEvent, RolloutPhase, Routing

# What the registry's consumer records in the audit log.
AUDITED_TOPICS: tuple[Topic[Any], ...] = (MODELS, ROLLOUTS, ROUTING, LINE_MODES)

__all__ = [
    "AUDITED_TOPICS",
    "BusAuditRecorder",
    "RegistryRuntime",
    "build_runtime",
    "main",
    "serve",
]

logger = logging.getLogger(__name__)


def _version_number(text: str) -> int | None:
    return int(text) if text.isdigit() else None


class BusAuditRecorder:
    """Bus handler: one audit record per model-version or rollout event, once per event id."""

    def __init__(self, store: RegistryStore, metrics: RegistryMetrics | None = None) -> None:
        self.store = store
        self.metrics = metrics

    def handle(self, event: Event[Any]) -> None:
        message = event.message
        source = event.envelope.source or "unknown"
        with log_context(event_id=event.envelope.event_id):
            if isinstance(message, ModelVersion):
                action, name, version, details = self._model_version(message)
                subject, actor = self._version_subject(name, version, details), source
            elif isinstance(message, RolloutEvent):
                action, name, version, details = self._rollout(message)
                subject = self._version_subject(name, version, details)
                actor = message.actor or source
            elif isinstance(message, Routing):
                action, subject, details = (
                    "bus.routing",
                    f"line/{message.line}",
                    self._routing(message),
                )
                actor = source
            elif isinstance(message, LineModeChanged):
                action, subject, details = (
                    "bus.line-mode",
                    f"line/{message.line}",
                    {
                        "previous_mode": LineMode.Name(message.previous_mode),
                        "new_mode": LineMode.Name(message.new_mode),
                        "reason": message.reason,
                        "generation": message.generation,
                        "triggering_alert_ids": list(message.triggering_alert_ids),
                    },
                )
                actor = message.changed_by or source
            else:  # only subscribed topics arrive; anything else is a wiring mistake
                logger.warning("ignoring event of type %s", type(message).__name__)
                return
            details.update(
                {
                    "event_id": event.envelope.event_id,
                    "source": event.envelope.source,
                    "event_time": event.envelope.time.isoformat(),
                }
            )
            recorded = self.store.record_event(
                event.envelope.event_id,
                actor=actor,
                action=action,
                subject=subject,
                details=details,
            )
            if self.metrics is not None:
                self.metrics.bus_events.labels(
                    topic=event.topic, outcome="recorded" if recorded else "duplicate"
                ).inc()

    def _stage_of(self, name: str, version: str) -> str | None:
        number = _version_number(version)
        stage = self.store.current_stage(name, number) if number else None
        return stage.value if stage else None

    def _version_subject(self, name: str, version: str, details: dict[str, Any]) -> str:
        """The audit subject of a version, noting the registry's own stage in ``details``."""
        details["registry_stage"] = self._stage_of(name, version)
        number = _version_number(version)
        return subject_of(name, number) if number else f"model/{name}/{version}"

    def _routing(self, message: Routing) -> dict[str, Any]:
        def ref(model: ModelRef) -> dict[str, Any] | None:
            if not model.name:
                return None
            return {
                "model": model.name,
                "version": model.version,
                "registry_stage": self._stage_of(model.name, model.version),
            }

        return {
            "generation": message.generation,
            "stable": ref(message.stable),
            "canary": ref(message.canary),
            "canary_weight_bps": message.canary_weight_bps,
            "shadows": [ref(s) for s in message.shadows],
            "edge_wave": message.edge_wave,
            "rollout_id": message.rollout_id,
        }

    @staticmethod
    def _model_version(message: ModelVersion) -> tuple[str, str, str, dict[str, Any]]:
        stage = Stage.from_proto_name(ModelStage.Name(message.stage))
        return (
            "bus.model-version",
            message.name,
            message.version,
            {
                "announced_stage": stage.value if stage else None,
                "rejection_reasons": list(message.rejection_reasons),
                "artifacts": [a.sha256 for a in message.artifacts],
            },
        )

    @staticmethod
    def _rollout(message: RolloutEvent) -> tuple[str, str, str, dict[str, Any]]:
        return (
            "bus.rollout-event",
            message.model_name,
            message.version,
            {
                "rollout_id": message.rollout_id,
                "phase": RolloutPhase.Name(message.phase),
                "previous_phase": RolloutPhase.Name(message.previous_phase),
                "step_index": message.step_index,
                "canary_weight_bps": message.canary_weight_bps,
                "failed_checks": message.failed_checks,
                "reason": message.reason,
                "lines": list(message.lines),
                "stable_version": message.stable_version,
                "approval_id": message.approval_id,
            },
        )


@dataclass
class RegistryRuntime:
    """Everything :func:`serve` runs, built from settings (tests build it with their own)."""

    settings: RegistrySettings
    engine: Engine
    store: RegistryStore
    metrics_registry: CollectorRegistry
    metrics: RegistryMetrics
    bus: EventBus | None = None
    consumer: Consumer | None = None
    _threads: list[threading.Thread] = field(default_factory=list)

    def start_consumer(self) -> None:
        if self.consumer is None:
            return
        thread = threading.Thread(target=self.consumer.run, name="registry-bus", daemon=True)
        thread.start()
        self._threads.append(thread)

    def close(self) -> None:
        if self.consumer is not None:
            self.consumer.stop()
        for thread in self._threads:
            thread.join(timeout=10)
        if self.bus is not None:
            self.bus.close()
        self.engine.dispose()


class _GracefulServer(uvicorn.Server):
    """uvicorn re-raises SIGINT/SIGTERM once it has shut down gracefully, which would end the
    process before :func:`serve` closes the bus consumer and the database; this server only
    stops, so the process closes everything and exits with code 0."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        with super().capture_signals():
            try:
                yield
            finally:
                if self._captured_signals:
                    logger.info("stopping on signal %s", self._captured_signals[-1])
                self._captured_signals.clear()


def build_runtime(settings: RegistrySettings) -> RegistryRuntime:
    """Engine, schema, bootstrap accounts, store, metrics and (optionally) the bus consumer."""
    engine = create_registry_engine(settings.database_url, pool_size=settings.registry.pool_size)
    ensure_schema(engine)
    metrics_registry = CollectorRegistry()
    metrics = RegistryMetrics(metrics_registry)
    store = RegistryStore(
        engine,
        build_blob_store(settings.blob_store),
        require_signature_for=settings.registry.require_signature_for,
        require_artifacts_present=settings.registry.require_artifacts_present,
        max_failed_signatures=settings.registry.max_failed_signatures,
        metrics=metrics,
    )
    store.bootstrap(settings.registry.bootstrap_users)
    runtime = RegistryRuntime(settings, engine, store, metrics_registry, metrics)
    if settings.registry.consume_events:
        bus = build_bus(settings.bus, settings.service, metrics_registry)
        bus.ensure_topics(AUDITED_TOPICS)
        recorder = BusAuditRecorder(store, metrics)
        runtime.bus = bus
        runtime.consumer = bus.consumer(
            settings.registry.consumer_group, AUDITED_TOPICS, recorder.handle
        )
    return runtime


def serve(settings: RegistrySettings) -> None:
    """Run the registry until interrupted."""
    runtime = build_runtime(settings)
    app = create_app(
        settings,
        runtime.engine,
        runtime.store.blob_store,
        metrics_registry=runtime.metrics_registry,
        store=runtime.store,
    )
    logger.info(
        "registry on http://%s:%d, database %s",
        settings.registry.host,
        settings.registry.port,
        redacted_url(settings.database_url),
    )
    runtime.start_consumer()
    try:
        config = uvicorn.Config(
            app,
            host=settings.registry.host,
            port=settings.registry.port,
            log_config=None,  # our JSON handler on the root logger formats uvicorn's lines too
            access_log=False,
        )
        _GracefulServer(config).run()
    finally:
        runtime.close()


def main() -> None:
    """Entry point: settings from INSPECTLOOP_* variables, then :func:`serve`."""
    settings = load_settings(RegistrySettings)
    configure_logging(settings.logging, settings.service)
    serve(settings)


if __name__ == "__main__":
    main()
