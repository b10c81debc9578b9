"""The monitor service on simulator streams inspected by a real model, over real buses.

Design A, the redesign B and design A under lighting drift are rendered by the simulator and
inspected by a small CNN trained on design A; the resulting InspectionEvents go through Kafka (a
real broker) or the embedded bus to the monitor service, exactly as the gateway publishes them.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from inspectloop.core.bus import EventBus, build_bus
from inspectloop.core.bus.base import DLQ_REASON, Consumer
from inspectloop.core.events import Topic, header
from inspectloop.core.settings import BusSettings, KafkaSettings, LocalBusSettings
from inspectloop.core.topics import (
    FEEDBACK,
    INSPECTIONS,
)
from inspectloop.devtools.harness import KafkaBroker
from inspectloop.devtools.inspected_streams import (
    inspect,
    render_stream,
    train_design_a_model,
)
from inspectloop.monitor.metrics import MonitorMetrics
from inspectloop.monitor.service import CONSUMED, GROUP, PRODUCED, MonitorService, StateStore
from inspectloop.monitor.settings import MonitorSection
from inspectloop.trainer.model import InspectionCNN
from inspectloop.v1.common_pb2 import (
    DECISION_REJECT,
    LINE_MODE_MANUAL,
)
from inspectloop.v1.feedback_pb2 import (
    FEEDBACK_VERDICT_CONFIRMED_DEFECT,
    FEEDBACK_VERDICT_FALSE_REJECT,
    OperatorFeedback,
)
from inspectloop.v1.inspection_pb2 import InspectionEvent
from inspectloop.v1.monitor_pb2 import (
    ALERT_SEVERITY_CRITICAL,
    RETRAIN_REASON_DRIFT,
    DriftAlert,
    LineModeChanged,
    RetrainRequest,
)

WARM_UP = MonitorSection().detectors.reference_size
LINE = "line-1"


@pytest.fixture(scope="module")
def model() -> InspectionCNN:
    return train_design_a_model()


@pytest.fixture(scope="module")
def design_a(model: InspectionCNN) -> list[InspectionEvent]:
    """Design A on line 1: the reference and a stable stretch after it."""
    return inspect(model, render_stream("A", WARM_UP + 200, seed=1), LINE, "A")


def local_bus(directory: Path) -> EventBus:
    return build_bus(
        BusSettings(backend="local", max_batch=200, local=LocalBusSettings(directory=directory)),
        "test",
        CollectorRegistry(),
    )


class RunningMonitor:
    """The monitor service on ``bus``, consuming in a thread, its state in ``state``."""

    def __init__(self, bus: EventBus, state: Path) -> None:
        self.registry = CollectorRegistry()
        self.service = MonitorService(
            MonitorSection(),
            bus=bus,
            store=StateStore(state),
            metrics=MonitorMetrics(self.registry),
        )
        self.consumer = bus.consumer(
            GROUP, CONSUMED, self.service.handle, before_commit=self.service.persist
        )
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.consumer.run, args=(self.stop,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=60)
        self.consumer.close()

    def wait(self, condition: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert self.thread.is_alive(), "the monitor's consumer died"
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.05)

    def seen(self, line: str = LINE) -> int:
        return self.service.inspections_seen(line)

    def metric(self, name: str, **labels: str) -> float | None:
        return self.registry.get_sample_value(name, labels)


class Outputs:
    """Everything the monitor published, read back from the bus."""

    def __init__(self, bus: EventBus) -> None:
        self.events: list[Any] = []
        self._consumer: Consumer = bus.consumer(
            f"check-{uuid.uuid4().hex[:6]}", PRODUCED, lambda e: self.events.append(e.message)
        )

    def of(self, kind: type) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]

    def drain_until(self, condition: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert time.monotonic() < deadline, f"timed out waiting for {what}: {self.events}"
            self._consumer.poll_once(0.5)

    def close(self) -> None:
        self._consumer.close()


def publish(bus: EventBus, topic: Topic[Any], messages: list[Any]) -> None:
    deliveries = [bus.publish(topic, m) for m in messages]
    for delivery in deliveries:
        delivery.result(90)


def feedback_for(events: list[InspectionEvent], truth: list[str]) -> list[OperatorFeedback]:
    """What operators say about the rejects among ``events`` (the line is in manual mode)."""
    out = []
    for event, label in zip(events, truth, strict=True):
        if event.decision != DECISION_REJECT:
            continue
        out.append(
            OperatorFeedback(
                feedback_id=str(uuid.uuid4()),
                inspection_id=event.inspection_id,
                line=event.line,
                sku=event.sku,
                label_design=event.label_design,
                image=event.image,
                verdict=FEEDBACK_VERDICT_FALSE_REJECT
                if label == "good"
                else FEEDBACK_VERDICT_CONFIRMED_DEFECT,
                defect_class=label,
                operator_id="op-7",
                model=event.model,
                original_decision=event.decision,
            )
        )
    return out


def test_redesign_on_kafka_goes_manual_and_requests_a_model_with_evidence(
    kafka_broker: KafkaBroker,
    model: InspectionCNN,
    design_a: list[InspectionEvent],
    tmp_path: Path,
) -> None:
    bus = build_bus(
        BusSettings(
            backend="kafka",
            kafka=KafkaSettings(bootstrap_servers=kafka_broker.bootstrap_servers),
        ),
        "test",
        CollectorRegistry(),
    )
    bus.ensure_topics([*CONSUMED, *PRODUCED])
    redesign = render_stream("B", 400, seed=2)
    b_events = inspect(model, redesign, LINE, "B")
    monitor = RunningMonitor(bus, tmp_path / "state.sqlite3")
    outputs = Outputs(bus)
    try:
        publish(bus, INSPECTIONS, design_a)
        # Bad input on the way: an undecodable record and an inspection without features.
        bus.publish_raw(INSPECTIONS.name, LINE.encode(), b"\x00garbage", []).result(30)
        broken = InspectionEvent(inspection_id="broken", line=LINE)
        broken.model.name, broken.model.version = design_a[0].model.name, "1"
        publish(bus, INSPECTIONS, [broken])
        publish(bus, INSPECTIONS, b_events)
        monitor.wait(lambda: monitor.seen() == len(design_a) + len(b_events), 300, "all events")

        outputs.drain_until(
            lambda: any(m.new_mode == LINE_MODE_MANUAL for m in outputs.of(LineModeChanged)),
            120,
            "the line to go manual",
        )
        line = monitor.service.lines[LINE]
        detected_after = min(a.onset_seq for a in line.alarms.values()) - len(design_a)
        assert 0 < detected_after <= 100, f"redesign detected after {detected_after} images"
        alerts = outputs.of(DriftAlert)
        assert not any(a.nuisance for a in alerts)
        critical = [a for a in alerts if a.severity == ALERT_SEVERITY_CRITICAL]
        assert {"feature_mmd", "reject_rate_cusum"} <= {a.detector for a in critical}
        assert all(a.statistic > a.threshold > 0 and a.window.size for a in critical)
        monitor.wait(
            lambda: (
                monitor.metric("inspectloop_monitor_line_mode_info", line=LINE, mode="manual") == 1
            ),
            30,
            "the line mode metric",
        )
        assert outputs.of(RetrainRequest) == []  # not enough labelled images yet

        # Operators review everything in manual mode; their labels let the monitor ask.
        publish(bus, FEEDBACK, feedback_for(b_events, redesign.labels))
        outputs.drain_until(lambda: bool(outputs.of(RetrainRequest)), 120, "a retrain request")
        (request,) = outputs.of(RetrainRequest)
        assert request.reason == RETRAIN_REASON_DRIFT
        assert list(request.scope.lines) == [LINE]
        assert list(request.scope.label_designs) == ["B"]
        assert request.parent_model.name == design_a[0].model.name
        assert request.parent_model.version == "1"
        assert request.min_labelled_images == MonitorSection().retrain.min_labelled_images
        evidence = {e.detector: e for e in request.evidence}
        assert {"feature_mmd", "reject_rate_cusum"} <= set(evidence)
        assert evidence["feature_mmd"].sample_images[0].uri.startswith("blob://")

        # The bad records are in the dead-letter topic with their reasons.
        reasons: list[str] = []
        source = bus.raw_source(f"dlq-{uuid.uuid4().hex[:6]}", [INSPECTIONS.dlq])
        try:
            deadline = time.monotonic() + 60
            while len(reasons) < 2 and time.monotonic() < deadline:
                reasons += [header(r.headers, DLQ_REASON) or "" for r in source.poll(100, 0.5)]
        finally:
            source.close()
        assert any("missing header ce_id" in r for r in reasons), reasons
        assert any("inspection broken has no feature vector" in r for r in reasons), reasons
    finally:
        outputs.close()
        monitor.close()
        bus.close()


def test_lighting_drift_is_recorded_as_a_nuisance_and_triggers_nothing(
    model: InspectionCNN, design_a: list[InspectionEvent], tmp_path: Path
) -> None:
    bus = local_bus(tmp_path / "bus")
    bus.ensure_topics([*CONSUMED, *PRODUCED])
    dimmer = inspect(model, render_stream("A", 1500, seed=3, lighting_drift=0.6), LINE, "A")
    monitor = RunningMonitor(bus, tmp_path / "state.sqlite3")
    outputs = Outputs(bus)
    try:
        publish(bus, INSPECTIONS, design_a + dimmer)
        monitor.wait(lambda: monitor.seen() == len(design_a) + len(dimmer), 300, "all events")
        outputs.drain_until(lambda: bool(outputs.of(DriftAlert)), 60, "the image statistics alert")
        time_out = time.monotonic() + 5  # let any further output arrive; none may be a mode
        while time.monotonic() < time_out:
            outputs.drain_until(lambda: True, 1, "")
        alerts = outputs.of(DriftAlert)
        assert "image_stats" in {a.detector for a in alerts}
        assert all(a.nuisance for a in alerts), [a.detector for a in alerts if not a.nuisance]
        assert "brightness" in alerts[0].nuisance_explanation
        assert outputs.of(LineModeChanged) == []
        assert outputs.of(RetrainRequest) == []
        brightness = np.mean([e.image_stats.brightness for e in dimmer[-200:]]) / np.mean(
            [e.image_stats.brightness for e in design_a]
        )
        assert brightness < 0.8  # the drift is real: a fifth darker or more
    finally:
        outputs.close()
        monitor.close()
        bus.close()


def test_restart_mid_stream_keeps_state_and_raises_no_alarm(
    design_a: list[InspectionEvent], tmp_path: Path
) -> None:
    bus = local_bus(tmp_path / "bus")
    bus.ensure_topics([*CONSUMED, *PRODUCED])
    state = tmp_path / "state.sqlite3"
    first_half, second_half = design_a[: WARM_UP + 100], design_a[WARM_UP + 100 :]
    publish(bus, INSPECTIONS, first_half)
    monitor = RunningMonitor(bus, state)
    monitor.wait(lambda: monitor.seen() == len(first_half), 120, "the first half")
    reference = monitor.service.lines[LINE].reference
    assert reference is not None
    monitor.close()

    publish(bus, INSPECTIONS, second_half)
    restarted = RunningMonitor(bus, state)
    outputs = Outputs(bus)
    try:
        line = restarted.service.lines[LINE]
        assert line.reference is not None
        assert line.reference.reference_id == reference.reference_id  # no second warm-up
        assert line.reference.thresholds == reference.thresholds
        restarted.wait(lambda: restarted.seen() == len(design_a), 120, "the second half")
        assert line.window is not None and len(line.window) == MonitorSection().detectors.window
        outputs.drain_until(lambda: True, 2, "")
        assert outputs.events == []
    finally:
        outputs.close()
        restarted.close()
        bus.close()


@pytest.mark.timeout(1200)
def test_a_stable_stream_of_100000_inspections_raises_no_alarm(
    model: InspectionCNN, tmp_path: Path
) -> None:
    """100,000 distinct design A labels (the same line conditions throughout), rendered and
    published in chunks before the monitor starts, so that it is timed apart."""
    bus = local_bus(tmp_path / "bus")
    bus.ensure_topics([*CONSUMED, *PRODUCED])
    total, chunk = 100_000, 10_000
    for k in range(total // chunk):
        events = inspect(model, render_stream("A", chunk, seed=1000 + k), LINE, "A")
        publish(bus, INSPECTIONS, events)
    monitor = RunningMonitor(bus, tmp_path / "state.sqlite3")
    outputs = Outputs(bus)
    try:
        monitor.wait(lambda: monitor.seen() == total, 600, "all inspections")
        outputs.drain_until(lambda: True, 2, "")
        assert outputs.events == []
        line = monitor.service.lines[LINE]
        assert line.reference is not None and not line.alarms
        monitored = monitor.metric(
            "inspectloop_monitor_inspections_events_total", line=LINE, outcome="monitored"
        )
        assert monitored == total - WARM_UP
        statistic = "inspectloop_monitor_drift_statistic_score"
        monitor.wait(
            lambda: monitor.metric(statistic, line=LINE, detector="feature_mmd") is not None,
            30,
            "the drift metrics",
        )
        for detector, threshold in line.reference.thresholds.items():
            value = monitor.metric(statistic, line=LINE, detector=detector)
            assert value is not None and value < threshold
    finally:
        outputs.close()
        monitor.close()
        bus.close()
