"""The monitor service: inspections, feedback and changeovers in; alerts, line modes and
retrain requests out.

One consumer reads the three topics, so each line's state is touched by one thread. The state of
every line changed in a batch is written to SQLite just before the batch's offsets are committed
(the bus's ``before_commit``), in one transaction: after a crash the monitor resumes from the
last commit with exactly the state that matches it, and the events after it are redelivered
and processed again. Published events carry ids derived from the event that caused them, so a
redelivery publishes nothing new downstream.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from google.protobuf.message import Message

from inspectloop.core.bus import EventBus
from inspectloop.core.bus.base import TopicPartition
from inspectloop.core.errors import PermanentError
from inspectloop.core.events import Event, Topic
from inspectloop.core.topics import (
    CHANGEOVERS,
    DRIFT_ALERTS,
    FEEDBACK,
    INSPECTIONS,
    LINE_MODES,
    MODELS,
    RETRAIN_REQUESTS,
)
from inspectloop.monitor.line import MODE_NAMES, LineMonitor, Output
from inspectloop.monitor.metrics import MonitorMetrics
from inspectloop.monitor.settings import MonitorSection
from inspectloop.v1.feedback_pb2 import FeedbackVerdict, OperatorFeedback
from inspectloop.v1.inspection_pb2 import InspectionEvent
from inspectloop.v1.models_pb2 import ModelVersion
from inspectloop.v1.monitor_pb2 import (
    AlertSeverity,
    ChangeoverAnnounced,
    DriftAlert,
    LineModeChanged,
    RetrainReason,
    RetrainRequest,
)

log = logging.getLogger(__name__)

CONSUMED = (INSPECTIONS, FEEDBACK, CHANGEOVERS, MODELS)
PRODUCED = (DRIFT_ALERTS, LINE_MODES, RETRAIN_REQUESTS)
GROUP = "monitor"

_OUTPUT_TOPICS: dict[type[Message], Topic[Any]] = {
    DriftAlert: DRIFT_ALERTS,
    LineModeChanged: LINE_MODES,
    RetrainRequest: RETRAIN_REQUESTS,
}


class StateStore:
    """Each line's state as one JSON document in SQLite."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(path, check_same_thread=False)
        self._conn.execute(
            "CREATE TABLE IF NOT EXISTS line_state (line TEXT PRIMARY KEY, state TEXT NOT NULL)"
        )
        self._conn.commit()

    def load(self) -> dict[str, dict[str, Any]]:
        rows = self._conn.execute("SELECT line, state FROM line_state").fetchall()
        return {line: json.loads(state) for line, state in rows}

    def save(self, states: Mapping[str, dict[str, Any]]) -> None:
        with self._conn:
            self._conn.executemany(
                "INSERT INTO line_state (line, state) VALUES (?, ?) "
                "ON CONFLICT(line) DO UPDATE SET state = excluded.state",
                [(line, json.dumps(state)) for line, state in states.items()],
            )

    def close(self) -> None:
        self._conn.close()


class MonitorService:
    def __init__(
        self,
        settings: MonitorSection,
        *,
        bus: EventBus,
        store: StateStore,
        metrics: MonitorMetrics,
    ) -> None:
        self.settings = settings
        self._bus = bus
        self._store = store
        self._metrics = metrics
        self.lines: dict[str, LineMonitor] = {
            line: LineMonitor.from_state(state, settings) for line, state in store.load().items()
        }
        self._dirty: set[str] = set()
        self._lock = threading.Lock()
        for monitor in self.lines.values():
            monitor.requests_in_hour = self._requests_in_hour
            self._export(monitor)

    def inspections_seen(self, line: str) -> int:
        """Inspections of ``line``'s stable model handled so far. Read under the handling lock,
        so that every effect of them (alarms, outputs, counters) is visible to the caller."""
        with self._lock:
            monitor = self.lines.get(line)
            return monitor.seq if monitor is not None else 0

    def _line(self, line: str, what: str) -> LineMonitor:
        if not line:
            raise PermanentError(f"{what} has no line")
        monitor = self.lines.get(line)
        if monitor is None:
            monitor = self.lines[line] = LineMonitor(line, self.settings)
            monitor.requests_in_hour = self._requests_in_hour
        self._dirty.add(line)
        return monitor

    def _requests_in_hour(self, now: float) -> int:
        """Retrain requests of all lines in the hour before ``now`` (the plant-wide limit)."""
        return sum(1 for m in self.lines.values() for t in m.retrain_times if now - t < 3600)

    # --- handlers --------------------------------------------------------------------------

    def handle(self, event: Event[Any]) -> None:
        """The consumer's handler for every consumed topic."""
        handlers: dict[str, Callable[[Event[Any]], None]] = {
            INSPECTIONS.name: self.handle_inspection,
            FEEDBACK.name: self.handle_feedback,
            CHANGEOVERS.name: self.handle_changeover,
            MODELS.name: self.handle_model_version,
        }
        handlers[event.topic](event)

    def handle_inspection(self, event: Event[InspectionEvent]) -> None:
        inspection = event.message
        with self._lock:
            monitor = self._line(inspection.line, f"inspection {inspection.inspection_id}")
            warming = monitor.reference is None
            outputs, used = monitor.on_inspection(
                inspection, event.envelope.event_id, event.envelope.time.timestamp()
            )
            outcome = "ignored" if not used else "warm_up" if warming else "monitored"
            self._metrics.inspections.labels(line=monitor.line, outcome=outcome).inc()
            self._publish(outputs)

    def handle_feedback(self, event: Event[OperatorFeedback]) -> None:
        feedback = event.message
        with self._lock:
            monitor = self._line(feedback.line, f"feedback {feedback.feedback_id}")
            outputs = monitor.on_feedback(
                feedback, event.envelope.event_id, event.envelope.time.timestamp()
            )
            self._publish(outputs)
            self._metrics.feedback.labels(
                line=monitor.line,
                model=feedback.model.name,
                version=feedback.model.version,
                outcome=FeedbackVerdict.Name(feedback.verdict)
                .removeprefix("FEEDBACK_VERDICT_")
                .lower(),
            ).inc()

    def handle_changeover(self, event: Event[ChangeoverAnnounced]) -> None:
        changeover = event.message
        if not changeover.lines:
            raise PermanentError(f"changeover {changeover.changeover_id} names no line")
        with self._lock:
            for line in changeover.lines:
                monitor = self._line(line, f"changeover {changeover.changeover_id}")
                outputs = monitor.on_changeover(
                    changeover, event.envelope.event_id, event.envelope.time.timestamp()
                )
                self._publish(outputs)

    def handle_model_version(self, event: Event[ModelVersion]) -> None:
        """A validated version with open evidence classes: its lines run guarded once it is
        their stable model, until production feedback closes the bound."""
        model = event.message
        with self._lock:
            for line in dict.fromkeys(model.scope.lines):
                monitor = self._line(line, f"model {model.name} v{model.version}")
                self._publish(
                    monitor.on_model_version(
                        model, event.envelope.event_id, event.envelope.time.timestamp()
                    )
                )

    def persist(self, offsets: Mapping[TopicPartition, int] | None = None) -> None:
        """Writes the state of every line changed since the last call (``before_commit``), and
        exports their metrics (per batch: per inspection would cost more than the detectors)."""
        with self._lock:
            if self._dirty:
                self._store.save({line: self.lines[line].to_state() for line in self._dirty})
                for line in self._dirty:
                    self._export(self.lines[line])
                self._dirty.clear()

    # --- outputs ---------------------------------------------------------------------------

    def _publish(self, outputs: list[Output]) -> None:
        for output in outputs:
            message = output.message
            self._bus.publish(_OUTPUT_TOPICS[type(message)], message, event_id=output.event_id)
            self._count(message)

    def _count(self, message: Message) -> None:
        if isinstance(message, DriftAlert):
            outcome = (
                "nuisance"
                if message.nuisance
                else AlertSeverity.Name(message.severity).removeprefix("ALERT_SEVERITY_").lower()
            )
            self._metrics.alerts.labels(
                line=message.line, detector=message.detector, outcome=outcome
            ).inc()
            log.warning(
                "drift alert on line %s: %s %.4g > %.4g (%s)%s",
                message.line,
                message.detector,
                message.statistic,
                message.threshold,
                outcome,
                f": {message.nuisance_explanation}" if message.nuisance else "",
            )
        elif isinstance(message, LineModeChanged):
            mode = MODE_NAMES[message.new_mode]
            self._metrics.mode_changes.labels(line=message.line, mode=mode).inc()
            log.warning("line %s -> %s: %s", message.line, mode, message.reason)
        elif isinstance(message, RetrainRequest):
            reason = RetrainReason.Name(message.reason).removeprefix("RETRAIN_REASON_").lower()
            for line in message.scope.lines:
                self._metrics.retrain_requests.labels(line=line, reason=reason).inc()
            log.warning("retrain requested for %s: %s", list(message.scope.lines), reason)

    def _export(self, monitor: LineMonitor) -> None:
        m = self._metrics
        for mode, name in MODE_NAMES.items():
            m.line_mode.labels(line=monitor.line, mode=name).set(int(monitor.mode == mode))
        if monitor.reference is not None:
            for detector, threshold in monitor.reference.thresholds.items():
                m.drift_threshold.labels(line=monitor.line, detector=detector).set(threshold)
        for detector, value in monitor.last_statistics.items():
            if detector in monitor.rates():
                continue
            m.drift_statistic.labels(line=monitor.line, detector=detector).set(value)
        rates = monitor.rates()
        m.false_reject_rate.labels(line=monitor.line).set(rates["false_reject_rate"])
        m.escape_rate.labels(line=monitor.line).set(rates["escape_rate"])
        labelled = monitor.episode.labelled if monitor.episode is not None else 0
        m.labelled_images.labels(line=monitor.line).set(labelled)


def main() -> None:
    """``python -m inspectloop.monitor.service``: watch every line until SIGTERM."""
    import signal  # noqa: PLC0415

    from prometheus_client import CollectorRegistry  # noqa: PLC0415

    from inspectloop.core.bus import build_bus  # noqa: PLC0415
    from inspectloop.core.logging import configure_logging  # noqa: PLC0415
    from inspectloop.core.metrics import serve_metrics  # noqa: PLC0415
    from inspectloop.core.settings import load_settings  # noqa: PLC0415
    from inspectloop.monitor.settings import MonitorSettings  # noqa: PLC0415

    settings = load_settings(MonitorSettings, service="monitor")
    configure_logging(settings.logging, settings.service)
    assert settings.monitor.state_path is not None  # derived by MonitorSettings
    registry = CollectorRegistry()
    bus = build_bus(settings.bus, settings.service, registry)
    bus.ensure_topics([*CONSUMED, *PRODUCED])
    service = MonitorService(
        settings.monitor,
        bus=bus,
        store=StateStore(settings.monitor.state_path),
        metrics=MonitorMetrics(registry),
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    server = (
        serve_metrics(registry, settings.metrics.host, settings.metrics.port)
        if settings.metrics.port
        else None
    )
    consumer = bus.consumer(GROUP, CONSUMED, service.handle, before_commit=service.persist)
    log.info("monitor ready: %d lines restored", len(service.lines))
    try:
        consumer.run(stop)
    finally:
        consumer.close()
        if server is not None:
            server.close()
        bus.close()


if __name__ == "__main__":
    main()
