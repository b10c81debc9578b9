"""The gateway's core against the real Triton server and the bus: routing, shadows, line modes,
bad images, and a Triton that cannot answer."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaAdminClient
from kafka.admin import ConfigResource, ConfigResourceType, NewTopic
from prometheus_client import CollectorRegistry

from inspectloop.core.blobstore import FilesystemBlobStore
from inspectloop.core.bus import EventBus, build_bus
from inspectloop.core.bus.kafka import KafkaAdmin
from inspectloop.core.errors import BackendUnavailableError
from inspectloop.core.events import Topic
from inspectloop.core.settings import BusSettings, KafkaSettings
from inspectloop.core.topics import INSPECTIONS, LINE_MODES, ROUTING
from inspectloop.devtools.harness.kafka import KafkaBroker
from inspectloop.devtools.harness.process import pick_free_port
from inspectloop.devtools.tiny_models import NAME, REJECTS, SPEC, png
from inspectloop.gateway.metrics import GatewayMetrics
from inspectloop.gateway.routing import canary_bucket
from inspectloop.gateway.service import InspectionGateway, InvalidRequestError
from inspectloop.gateway.settings import GatewaySection
from inspectloop.inspection.decision import inspection_id
from inspectloop.inspection.images import InvalidImageError
from inspectloop.inspection.settings import TritonSettings
from inspectloop.inspection.triton import TritonScorer
from inspectloop.v1.common_pb2 import (
    DECISION_PASS,
    DECISION_REJECT,
    LINE_MODE_AUTO,
    LINE_MODE_GUARDED,
    LINE_MODE_MANUAL,
    MODEL_ROLE_CANARY,
    MODEL_ROLE_SHADOW,
    MODEL_ROLE_STABLE,
    REVIEW_REASON_GUARDED_REJECT,
    REVIEW_REASON_MANUAL_MODE,
    REVIEW_REASON_UNSPECIFIED,
    ModelRef,
)
from inspectloop.v1.inspect_service_pb2 import InspectRequest, InspectResponse
from inspectloop.v1.inspection_pb2 import InspectionEvent
from inspectloop.v1.monitor_pb2 import LineModeChanged
from inspectloop.v1.rollout_pb2 import Routing

pytestmark = pytest.mark.integration


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


class Published:
    """The InspectionEvents on the bus, read back by a consumer of their own."""

    def __init__(self, bus: EventBus) -> None:
        self.events: list[InspectionEvent] = []
        self._consumer = bus.consumer(
            f"check-{uuid.uuid4().hex[:6]}", [INSPECTIONS], lambda e: self.events.append(e.message)
        )

    def drain(self, count: int, timeout: float = 30) -> list[InspectionEvent]:
        deadline = time.monotonic() + timeout
        while len(self.events) < count:
            assert time.monotonic() < deadline, f"{len(self.events)} of {count} events arrived"
            self._consumer.poll_once(0.2)
        self._consumer.poll_once(0.2)  # and nothing more
        return self.events


def make_gateway(bus: EventBus, tmp_path: Path, triton_url: str) -> InspectionGateway:
    settings = GatewaySection(
        model_name=NAME,
        default_version="1",
        triton=TritonSettings(url=triton_url, timeout_s=10, readiness_ttl_s=0.2),
    )
    return InspectionGateway(
        settings,
        bus=bus,
        blobs=FilesystemBlobStore(tmp_path / "blobs", 1 << 20),
        triton=TritonScorer(settings.triton),
        metrics=GatewayMetrics(CollectorRegistry()),
    )


@pytest.fixture
def gateway(bus: EventBus, tmp_path: Path, served_models: str) -> Iterator[InspectionGateway]:
    gateway = make_gateway(bus, tmp_path, served_models)
    gateway.follow()
    yield gateway
    gateway.close()


def route(line: str, generation: int, canary: str = "", weight: int = 0, **kw: Any) -> Routing:
    routing = Routing(line=line, generation=generation, canary_weight_bps=weight)
    routing.stable.CopyFrom(ModelRef(name=NAME, version=kw.get("stable", "1")))
    if canary:
        routing.canary.CopyFrom(ModelRef(name=NAME, version=canary))
    routing.shadows.extend(ModelRef(name=NAME, version=v) for v in kw.get("shadows", ()))
    return routing


def request(line: str, i: int, **kw: Any) -> InspectRequest:
    return InspectRequest(
        line=line, request_id=f"{line}-{i}", image=png(i), content_type="image/png", **kw
    )


def test_canary_split_shadows_and_the_published_inspection(
    bus: EventBus, gateway: InspectionGateway
) -> None:
    published = Published(bus)
    bus.publish(ROUTING, route("line-1", 1, canary="2", weight=3000, shadows=(REJECTS,)))
    wait_for(lambda: gateway.routing.get("line-1").generation == 1, 30, "the routing")

    n = 240
    answers = [gateway.inspect(request("line-1", i, sku="SKU-01")) for i in range(n)]
    expected_canary = {f"line-1-{i}" for i in range(n) if canary_bucket(f"line-1-{i}") < 3000}
    canary = {f"line-1-{i}" for i, a in enumerate(answers) if a.model.role == MODEL_ROLE_CANARY}
    assert canary == expected_canary
    assert abs(len(canary) / n - 0.3) < 4 * (0.3 * 0.7 / n) ** 0.5
    assert {a.model.version for a in answers if a.model.role == MODEL_ROLE_STABLE} == {"1"}
    assert {a.model.version for a in answers if a.model.role == MODEL_ROLE_CANARY} == {"2"}
    # The shadow rejects everything; no decision follows it.
    assert all(a.decision == DECISION_PASS and not a.human_review_required for a in answers)

    events = {e.inspection_id: e for e in published.drain(n)}
    assert len(events) == n
    for i, answer in enumerate(answers):
        event = events[answer.inspection_id]
        assert event.request_id == f"line-1-{i}" and event.sku == "SKU-01"
        assert event.model == answer.model and event.decision == answer.decision
        assert event.routing_generation == 1
        assert len(event.feature_vector) == SPEC.embedding_dim
        assert event.HasField("image_stats") and event.image_stats.brightness > 0
        (shadow,) = event.shadow_results
        assert shadow.model.version == REJECTS and shadow.model.role == MODEL_ROLE_SHADOW
        assert shadow.would_decide == DECISION_REJECT
        assert gateway.blobs.get(event.image.sha256) == png(i)
        assert (event.image.width, event.image.height) == (48, 48)
    # A retry of a request is the same inspection.
    again = gateway.inspect(request("line-1", 7))
    assert again.inspection_id == answers[7].inspection_id == inspection_id("line-1", "line-1-7")


def mode_is(gateway: InspectionGateway, line: str, mode: int) -> Callable[[], bool]:
    return lambda: gateway.modes.mode(line) == mode


def test_line_modes_from_the_monitor_are_obeyed(bus: EventBus, gateway: InspectionGateway) -> None:
    bus.publish(ROUTING, route("line-2", 1, stable=REJECTS))
    wait_for(lambda: gateway.routing.get("line-2").generation == 1, 30, "the routing")
    auto = gateway.inspect(request("line-2", 0))
    assert auto.decision == DECISION_REJECT and not auto.human_review_required
    assert auto.review_reason == REVIEW_REASON_UNSPECIFIED

    for generation, mode, reason in (
        (1, LINE_MODE_GUARDED, REVIEW_REASON_GUARDED_REJECT),
        (2, LINE_MODE_MANUAL, REVIEW_REASON_MANUAL_MODE),
    ):
        bus.publish(
            LINE_MODES,
            LineModeChanged(line="line-2", new_mode=mode, generation=generation, reason="test"),
        )
        wait_for(mode_is(gateway, "line-2", mode), 30, f"mode {mode}")
        answer = gateway.inspect(request("line-2", generation))
        assert answer.human_review_required and answer.review_reason == reason
        assert answer.line_mode == mode
    # Another line is not affected.
    assert not gateway.inspect(request("line-9", 0)).human_review_required


def test_bad_requests_are_refused_with_reasons_and_publish_nothing(
    bus: EventBus, gateway: InspectionGateway
) -> None:
    published = Published(bus)
    with pytest.raises(InvalidImageError, match="not a PNG or JPEG"):
        gateway.inspect(InspectRequest(line="line-1", request_id="bad", image=b"GIF89a..."))
    with pytest.raises(InvalidImageError, match="each side must be within"):
        gateway.inspect(InspectRequest(line="line-1", image=png(0, side=8)))
    with pytest.raises(InvalidRequestError, match="no line"):
        gateway.inspect(InspectRequest(image=png(0)))
    with pytest.raises(InvalidRequestError, match="is not 1-64 letters"):
        gateway.inspect(InspectRequest(line="line 1; drop", image=png(0)))
    gateway.inspect(request("line-1", 0))
    assert len(published.drain(1)) == 1
    errors = gateway.metrics.errors
    assert errors.labels(kind="invalid_image", line="line-1")._value.get() == 2


def test_versions_triton_cannot_serve_get_no_traffic(
    bus: EventBus, gateway: InspectionGateway, tmp_path: Path
) -> None:
    # Version 9 is not in the repository: its canary share goes to stable.
    bus.publish(ROUTING, route("line-3", 1, canary="9", weight=10000, shadows=("8",)))
    wait_for(lambda: gateway.routing.get("line-3").generation == 1, 30, "the routing")
    answers = [gateway.inspect(request("line-3", i)) for i in range(20)]
    assert {(a.model.version, a.model.role) for a in answers} == {("1", MODEL_ROLE_STABLE)}
    ready = gateway.metrics.model_ready
    assert ready.labels(model=NAME, version="9")._value.get() == 0
    assert ready.labels(model=NAME, version="1")._value.get() == 1


def test_triton_down_is_unavailable_with_a_reason_and_loses_nothing(
    bus: EventBus, tmp_path: Path
) -> None:
    published = Published(bus)
    down = make_gateway(bus, tmp_path, f"127.0.0.1:{pick_free_port()}")
    down.follow()
    with pytest.raises(BackendUnavailableError, match=rf"{NAME} v1 .* is not ready on Triton"):
        down.inspect(request("line-1", 0))
    # The request's own fault is still named, before any backend is asked.
    with pytest.raises(InvalidImageError, match="not a PNG or JPEG"):
        down.inspect(InspectRequest(line="line-1", request_id="bad", image=b"GIF89a..."))
    assert down.metrics.errors.labels(kind="unavailable", line="line-1")._value.get() == 1
    assert published.drain(0) == []


@pytest.fixture
def kafka_bus(kafka_broker: KafkaBroker) -> Iterator[EventBus]:
    """A bus on the real broker, with the gateway's topics as the platform creates them."""
    settings = BusSettings(
        backend="kafka", kafka=KafkaSettings(bootstrap_servers=kafka_broker.bootstrap_servers)
    )
    bus = build_bus(settings, "test", CollectorRegistry())
    bus.ensure_topics([INSPECTIONS, ROUTING, LINE_MODES])
    yield bus
    bus.close()


def test_a_starting_replica_never_decides_a_manual_line_in_auto(
    kafka_bus: EventBus, tmp_path: Path, served_models: str
) -> None:
    line = f"line-{uuid.uuid4().hex[:8]}"
    # A long history to replay, ending in manual.
    for generation in range(1, 301):
        mode = LINE_MODE_MANUAL if generation % 2 == 0 else LINE_MODE_AUTO
        kafka_bus.publish(
            LINE_MODES,
            LineModeChanged(line=line, new_mode=mode, generation=generation, reason="test"),
        )
    kafka_bus.flush(30)

    gateway = make_gateway(kafka_bus, tmp_path, served_models)
    starting = threading.Thread(target=gateway.follow)
    starting.start()
    refused, answers = 0, list[InspectResponse]()
    try:
        i = 0
        while starting.is_alive() or not answers:
            i += 1
            try:
                answers.append(gateway.inspect(request(line, i)))
            except BackendUnavailableError as exc:
                assert "still reading" in str(exc)
                refused += 1
                time.sleep(0.01)
        starting.join()
        answers.append(gateway.inspect(request(line, i + 1)))
    finally:
        starting.join()
        gateway.close()
    assert {(a.line_mode, a.review_reason) for a in answers} == {
        (LINE_MODE_MANUAL, REVIEW_REASON_MANUAL_MODE)
    }
    assert refused > 0  # requests came while the replica was still replaying
    assert all(a.human_review_required for a in answers)
    assert gateway.metrics.errors.labels(kind="unavailable", line=line)._value.get() == refused


def topic_config(kafka_broker: KafkaBroker, topic: str, key: str) -> str:
    admin = KafkaAdminClient(bootstrap_servers=kafka_broker.bootstrap_servers)
    try:
        configs = admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic)], config_filter="all"
        )
    finally:
        admin.close()
    return str(configs["topic"][topic][key]["value"])


def test_routing_and_line_mode_topics_are_compacted_also_when_created_by_an_older_release(
    kafka_bus: EventBus, kafka_broker: KafkaBroker
) -> None:
    for topic in (ROUTING, LINE_MODES):
        assert topic_config(kafka_broker, topic.name, "cleanup.policy") == "compact"
        assert topic_config(kafka_broker, topic.dlq, "cleanup.policy") == "delete"
    assert topic_config(kafka_broker, INSPECTIONS.name, "cleanup.policy") == "delete"

    # A state topic an older release created with the broker's defaults is compacted at start,
    # and keeps the settings an operator gave it.
    older = Topic(f"inspectloop.state-{uuid.uuid4().hex[:8]}.v1", Routing, compacted=True)
    admin = KafkaAdminClient(bootstrap_servers=kafka_broker.bootstrap_servers)
    try:
        admin.create_topics([NewTopic(older.name, 1, 1, topic_configs={"retention.ms": "3600000"})])
    finally:
        admin.close()
    assert topic_config(kafka_broker, older.name, "cleanup.policy") == "delete"
    kafka = KafkaAdmin(kafka_bus.settings)
    try:
        # Only topics that lack it are altered: a routine start needs no right to alter topics.
        assert kafka.not_compacted([ROUTING.name, older.name, INSPECTIONS.name]) == [
            older.name,
            INSPECTIONS.name,
        ]
    finally:
        kafka.close()
    kafka_bus.ensure_topics([older])
    assert topic_config(kafka_broker, older.name, "cleanup.policy") == "compact"
    assert topic_config(kafka_broker, older.name, "retention.ms") == "3600000"
