"""The edge agent on real components: the registry service in its own process (reached through a
proxy that can tamper with artifacts or cut the network), int8 ONNX models run by onnxruntime,
and the bus: a dedicated Kafka broker that the offline test kills and restarts (never the
session's broker), or the embedded bus.

- offline for a simulated 10 minutes (an injected clock; the broker really down, the agent
  restarted meanwhile): every inspection is answered, buffered, and delivered exactly once, in
  order, after the broker is back;
- a tampered artifact is refused: the old model keeps answering, the node reports DEGRADED;
- a routing change swaps to the canary and back, the way back from disk with the registry away;
- as deployed (``python -m inspectloop.edge.agent`` from the edge install, without the platform's
  packages, on the session's Kafka broker): the line's software gets its answers over the gRPC
  Inspect API, bad requests are refused with a reason, and every answered inspection reaches the
  bus once.
"""

from __future__ import annotations

import os
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from prometheus_client import CollectorRegistry

from inspectloop.core.bus import EventBus, build_bus
from inspectloop.core.errors import BackendUnavailableError, PermanentError
from inspectloop.core.events import Event
from inspectloop.core.onnx_contract import sha256_file
from inspectloop.core.readiness import poll_until
from inspectloop.core.registry_client import RegistryClient
from inspectloop.core.settings import BusSettings, KafkaSettings, LocalBusSettings
from inspectloop.core.topics import EDGE_HEARTBEATS, INSPECTIONS, ROUTING
from inspectloop.devtools.harness import KafkaBroker
from inspectloop.devtools.harness.process import ManagedProcess, pick_free_ports
from inspectloop.devtools.registry_process import (
    RegistryProxy,
    RegistryUser,
    registry_process,
    registry_proxy,
)
from inspectloop.devtools.tiny_models import SPEC, png, write_edge_model
from inspectloop.edge.agent import FOLLOWED, PRODUCED, EdgeAgent
from inspectloop.edge.metrics import EdgeMetrics
from inspectloop.edge.models import SIGNATURE_MEDIA_TYPE, ModelStore, load_public_key
from inspectloop.edge.outbox import Outbox
from inspectloop.edge.settings import EdgeSection
from inspectloop.inspection.decision import inspection_id
from inspectloop.simulator.traffic import GrpcInspectClient
from inspectloop.v1.common_pb2 import (
    DECISION_PASS,
    DECISION_REJECT,
    DECISION_UNSPECIFIED,
    MODEL_ROLE_EDGE,
    REVIEW_REASON_MODEL_UNAVAILABLE,
    ModelRef,
)
from inspectloop.v1.edge_pb2 import (
    EDGE_NODE_STATE_DEGRADED,
    EDGE_NODE_STATE_FALLBACK,
    EDGE_NODE_STATE_READY,
    EdgeHeartbeat,
)
from inspectloop.v1.inspect_service_pb2 import InspectRequest, InspectResponse
from inspectloop.v1.rollout_pb2 import Routing

pytestmark = pytest.mark.integration

TOKEN = "ilr_" + "e" * 40
MODEL = "edge-tiny"
T0 = datetime(2025, 3, 1, 6, 0, tzinfo=UTC)
WAIT_S = 60.0
# The edge agent's own install, as on a line PC (no torch, Ray or Triton): scripts/setup.sh
# makes it beside this environment.
EDGE_PYTHON = Path(sys.prefix + "-edge") / "bin" / "python"


# --- the registry, a proxy in front of it, and three signed int8 models ------------------------


@pytest.fixture(scope="module")
def registry_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The registry service as it runs in production: its own process, on SQLite."""
    users = [RegistryUser("edge", "service", TOKEN)]
    # Stages need no signature here, so that the fixture can approve its versions by transition.
    with registry_process(
        tmp_path_factory.mktemp("edge-registry"),
        users,
        settings={"INSPECTLOOP_REGISTRY__REQUIRE_SIGNATURE_FOR": "[]"},
    ) as url:
        yield url


@pytest.fixture
def proxy(registry_url: str) -> Iterator[RegistryProxy]:
    with registry_proxy(registry_url) as state:
        yield state


@dataclass(frozen=True)
class EdgeModels:
    # our label ("pass-1", "pass-2", "reject", "unapproved") -> registry version; all but
    # "unapproved" (only validated) have been in production
    versions: dict[str, str]
    int8_sha256: dict[str, str]  # registry version -> sha256 of its int8 artifact
    public_key: Path


@pytest.fixture(scope="module")
def edge_models(registry_url: str, tmp_path_factory: pytest.TempPathFactory) -> EdgeModels:
    """Three versions of MODEL with known answers (two pass every image, one rejects every
    image), quantized to int8 and signed, registered in the registry."""
    work = tmp_path_factory.mktemp("edge-models")
    key = Ed25519PrivateKey.generate()
    public = work / "edge-signing.pub.pem"
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    client = RegistryClient(registry_url, TOKEN)
    versions: dict[str, str] = {}
    shas: dict[str, str] = {}
    try:
        for label, seed in (("pass-1", 1), ("pass-2", 2), ("reject", 3), ("unapproved", 1)):
            int8 = write_edge_model(seed, work / label)
            sig = work / f"{label}.int8.onnx.sig"
            sig.write_bytes(key.sign(int8.read_bytes()))
            artifacts = []
            for path, extra in (
                (int8, {"filename": "model.int8.onnx"}),
                (sig, {"filename": "model.int8.onnx.sig", "media_type": SIGNATURE_MEDIA_TYPE}),
            ):
                sha = sha256_file(path)
                client.upload_artifact(path, sha)
                artifacts.append(
                    {"kind": "onnx_int8", "sha256": sha, "size_bytes": path.stat().st_size} | extra
                )
            record = client.register_version(
                MODEL,
                {
                    "stage": "validated",
                    "artifacts": artifacts,
                    "lineage": {
                        "dataset_snapshot_id": "snap-edge",
                        "dataset_sha256": "d" * 64,
                        "code_version": "test",
                    },
                    "classes": list(SPEC.classes),
                    "input_width": SPEC.input_size,
                    "input_height": SPEC.input_size,
                },
            )
            version = str(record["version"])
            if label != "unapproved":
                for stage in ("shadow", "canary", "production"):
                    client.transition(MODEL, int(version), stage, "approved for the edge tests")
            versions[label] = version
            shas[version] = sha256_file(int8)
    finally:
        client.close()
    return EdgeModels(versions, shas, public)


# --- the agent -----------------------------------------------------------------------------------


class FakeClock:
    """The agent's wall clock, moved by the test: ten minutes pass in no time."""

    def __init__(self, start: datetime) -> None:
        self._now = start
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            return self._now

    def advance(self, delta: timedelta) -> datetime:
        with self._lock:
            self._now += delta
            return self._now


def make_agent(
    tmp: Path,
    connect: Callable[[], EventBus],
    registry_url: str,
    *,
    line: str,
    wave: int = 1,
    clock: Callable[[], datetime] | None = None,
    public_key: Path | None = None,
) -> EdgeAgent:
    settings = EdgeSection(
        node_id=f"{line}-pc-1",
        line=line,
        wave=wave,
        model_name=MODEL,
        registry_url=registry_url,
        store_dir=tmp / "edge" / "models",
        outbox_path=tmp / "edge" / "outbox.sqlite3",
        heartbeat_interval_s=0.2,
        loop_interval_s=0.05,
        sync_retry_s=0.5,
        drain_idle_s=0.05,
        ack_timeout_s=2.0,
    )
    assert settings.store_dir is not None and settings.outbox_path is not None
    store = ModelStore(
        settings.store_dir,
        RegistryClient(registry_url, TOKEN, timeout_s=10),
        public_key=load_public_key(public_key) if public_key else None,
    )
    return EdgeAgent(
        settings,
        connect=connect,
        store=store,
        outbox=Outbox(settings.outbox_path),
        metrics=EdgeMetrics(CollectorRegistry()),
        **({"clock": clock} if clock else {}),
    )


def routing(
    line: str,
    generation: int,
    stable: str,
    canary: str | None = None,
    edge_wave: int = 0,
) -> Routing:
    r = Routing(
        line=line,
        generation=generation,
        stable=ModelRef(name=MODEL, version=stable),
        edge_wave=edge_wave,
    )
    if canary is not None:
        r.canary.CopyFrom(ModelRef(name=MODEL, version=canary))
        r.canary_weight_bps = 1000
    return r


def publish_routing(bus: EventBus, r: Routing) -> None:
    bus.publish(ROUTING, r).result(30)


def wait_for(check: Callable[[], object], what: str, timeout: float = WAIT_S) -> None:
    poll_until(lambda: bool(check()), timeout=timeout, what=what, interval=0.05)


def loaded_version(agent: EdgeAgent) -> str | None:
    loaded = agent.loaded
    return loaded.version if loaded else None


def local_bus(directory: Path) -> EventBus:
    bus = build_bus(
        BusSettings(backend="local", local=LocalBusSettings(directory=directory)),
        "edge-test",
        CollectorRegistry(),
    )
    bus.ensure_topics([*FOLLOWED, *PRODUCED])
    return bus


def read_all(bus: EventBus, topic: Any, expected: int, line: str) -> list[Event[Any]]:
    """Every event of ``line`` on ``topic`` from the start: at least ``expected`` of them, then
    until a poll finds nothing more (so that a late duplicate would be seen too)."""
    seen: list[Event[Any]] = []

    def handle(event: Event[Any]) -> None:
        if event.message.line == line:
            seen.append(event)

    with bus.consumer(f"reader-{os.urandom(4).hex()}", [topic], handle) as consumer:
        wait_for(
            lambda: consumer.poll_once(1.0) >= 0 and len(seen) >= expected,
            f"{expected} events of {line}",
        )
        while consumer.poll_once(2.0):
            pass
    return seen


def first_event(bus: EventBus, topic: Any, match: Callable[[Any], bool]) -> Any:
    """The first message on ``topic`` (from the start) that ``match`` accepts."""
    found: list[Any] = []

    def handle(event: Event[Any]) -> None:
        if not found and match(event.message):
            found.append(event.message)

    with bus.consumer(f"reader-{os.urandom(4).hex()}", [topic], handle) as consumer:
        wait_for(lambda: consumer.poll_once(0.5) >= 0 and found, f"a matching {topic.name}")
    return found[0]


# --- (a) offline for ten minutes -------------------------------------------------------------


@pytest.fixture
def dedicated_broker(harness_cache_dir: Path, tmp_path: Path) -> Iterator[KafkaBroker]:
    """A broker of this test's own: it is killed and restarted, which the session's broker that
    other tests share must never be."""
    broker = KafkaBroker(harness_cache_dir, tmp_path / "kafka")
    broker.start()
    yield broker
    broker.stop()


def test_offline_ten_minutes_every_event_delivered_once_in_order(
    dedicated_broker: KafkaBroker,
    edge_models: EdgeModels,
    proxy: RegistryProxy,
    tmp_path: Path,
) -> None:
    line = "edge-line-a"
    kafka = BusSettings(
        backend="kafka",
        partitions=2,
        kafka=KafkaSettings(
            bootstrap_servers=dedicated_broker.bootstrap_servers,
            request_timeout_ms=5_000,
            delivery_timeout_s=10.0,
        ),
    )

    def connect() -> EventBus:
        bus = build_bus(kafka, "edge", CollectorRegistry())
        bus.ensure_topics([*FOLLOWED, *PRODUCED])
        return bus

    control = connect()
    publish_routing(control, routing(line, 1, edge_models.versions["pass-1"]))
    control.close()
    clock = FakeClock(T0)
    expected: list[str] = []
    first = make_agent(tmp_path, connect, proxy.url, line=line, clock=clock)
    first.start()
    try:
        wait_for(lambda: loaded_version(first) == edge_models.versions["pass-1"], "model v1")
        for i in range(3):
            expected.append(first.inspect(png(i), captured_at=clock()).inspection_id)
        wait_for(lambda: first.outbox.depth() == 0, "online events acknowledged")

        dedicated_broker.kill()
        for i in range(60):  # five simulated minutes, one image every 5 s
            event = first.inspect(png(100 + i), captured_at=clock.advance(timedelta(seconds=5)))
            assert event.decision == DECISION_PASS
            expected.append(event.inspection_id)
        assert first.outbox.depth() == 60
        wait_for(lambda: "cannot drain" in first.last_error, "drain failure reported")
        beat = first.heartbeat()
        assert beat.state == EDGE_NODE_STATE_DEGRADED
        assert beat.outbox_depth == 60
        assert beat.oldest_outbox_at.ToDatetime(UTC) == T0 + timedelta(seconds=5)
        assert beat.loaded_model.version == edge_models.versions["pass-1"]
    finally:
        first.close()
        first.outbox.close()

    # The line PC restarts while the network is still down: the outbox and the model are on
    # disk, so it inspects at once; the bus is connected when it comes back.
    second = make_agent(tmp_path, connect, proxy.url, line=line, clock=clock)
    proxy.offline = True  # and the registry is unreachable too
    second.start()
    try:
        assert loaded_version(second) == edge_models.versions["pass-1"]
        assert second.outbox.depth() == 60
        for i in range(60):  # five more simulated minutes
            event = second.inspect(png(200 + i), captured_at=clock.advance(timedelta(seconds=5)))
            assert event.decision == DECISION_PASS
            expected.append(event.inspection_id)
        assert clock() - T0 == timedelta(minutes=10)
        beat = second.heartbeat()
        assert beat.outbox_depth == 120
        assert beat.oldest_outbox_at.ToDatetime(UTC) == T0 + timedelta(seconds=5)

        dedicated_broker.start()
        wait_for(lambda: second.outbox.depth() == 0, "outbox drained after reconnecting", 180)
        assert second.heartbeat().outbox_depth == 0
        assert not second.heartbeat().HasField("oldest_outbox_at")
        wait_for(lambda: second.state() == EDGE_NODE_STATE_READY, "READY again")
    finally:
        second.close()
        second.outbox.close()

    reader = connect()
    try:
        delivered = read_all(reader, INSPECTIONS, len(expected), line)
    finally:
        reader.close()
    ids = [e.envelope.event_id for e in delivered]
    duplicates = len(ids) - len(set(ids))
    assert duplicates == 0, f"{duplicates} events delivered more than once"
    assert ids == expected, "events missing or out of order"
    assert [e.message.inspection_id for e in delivered] == expected
    # Each event keeps its capture time, ten simulated minutes of them.
    captured = [e.message.captured_at.ToDatetime(UTC) for e in delivered]
    assert captured[-1] - captured[3] == timedelta(seconds=5 * 119)


# --- (b) a tampered artifact -------------------------------------------------------------------


def test_a_tampered_artifact_is_refused_and_the_old_model_keeps_answering(
    edge_models: EdgeModels, proxy: RegistryProxy, tmp_path: Path
) -> None:
    line = "edge-line-b"
    bus = local_bus(tmp_path / "bus")
    agent = make_agent(tmp_path, lambda: local_bus(tmp_path / "bus"), proxy.url, line=line)
    agent.start()
    try:
        assert agent.state() == EDGE_NODE_STATE_FALLBACK
        good = edge_models.versions["pass-1"]
        bad = edge_models.versions["reject"]
        publish_routing(bus, routing(line, 1, good))
        wait_for(lambda: loaded_version(agent) == good, "first model")
        assert agent.inspect(png(1)).decision == DECISION_PASS

        proxy.tamper.add(edge_models.int8_sha256[bad])
        publish_routing(bus, routing(line, 2, bad))
        wait_for(lambda: "hashes to" in agent.last_error, "the refusal")
        assert agent.state() == EDGE_NODE_STATE_DEGRADED
        rejections = agent.metrics.artifact_rejections.labels(line=line, reason="sha256")
        assert rejections._value.get() >= 1
        assert agent.metrics.degraded.labels(line=line)._value.get() in (0, 1)
        # The old model is still the one that answers, and nothing of the new one is on disk.
        event = agent.inspect(png(2))
        assert event.decision == DECISION_PASS and event.model.version == good
        assert event.routing_generation == 1
        assert agent.store.find(MODEL, bad) is None
        beat = agent.heartbeat()
        assert beat.loaded_model.version == good and beat.routing_generation == 1
        assert beat.loaded_model_sha256 == edge_models.int8_sha256[good]
        assert beat.state == EDGE_NODE_STATE_DEGRADED and "hashes to" in beat.last_error
        # ... and the heartbeats on the bus say so.
        beat_on_bus = first_event(
            bus,
            EDGE_HEARTBEATS,
            lambda b: b.line == line and b.state == EDGE_NODE_STATE_DEGRADED,
        )
        assert isinstance(beat_on_bus, EdgeHeartbeat)
        assert beat_on_bus.loaded_model.version == good and "hashes to" in beat_on_bus.last_error

        # The mirror is repaired: the retry installs the genuine artifact.
        proxy.tamper.clear()
        wait_for(lambda: loaded_version(agent) == bad, "the genuine artifact after a retry")
        wait_for(lambda: agent.state() == EDGE_NODE_STATE_READY, "READY")
        assert agent.inspect(png(3)).decision == DECISION_REJECT
        wait_for(lambda: agent.outbox.depth() == 0, "inspections delivered")
    finally:
        agent.close()
        agent.outbox.close()
        bus.close()


def test_a_routing_to_a_version_the_registry_never_approved_is_refused(
    edge_models: EdgeModels, proxy: RegistryProxy, tmp_path: Path
) -> None:
    line = "edge-line-u"
    bus = local_bus(tmp_path / "bus")
    agent = make_agent(tmp_path, lambda: local_bus(tmp_path / "bus"), proxy.url, line=line)
    agent.start()
    try:
        good = edge_models.versions["pass-1"]
        forged = edge_models.versions["unapproved"]
        publish_routing(bus, routing(line, 1, good))
        wait_for(lambda: loaded_version(agent) == good, "first model")
        publish_routing(bus, routing(line, 2, forged))
        wait_for(lambda: "never approved for production" in agent.last_error, "the refusal")
        rejections = agent.metrics.artifact_rejections.labels(line=line, reason="unapproved")
        assert rejections._value.get() >= 1
        # The approved model keeps answering; nothing of the other one was downloaded.
        event = agent.inspect(png(1))
        assert event.decision == DECISION_PASS and event.model.version == good
        assert event.routing_generation == 1
        assert agent.store.find(MODEL, forged) is None
    finally:
        agent.close()
        agent.outbox.close()
        bus.close()


# --- (c) canary and rollback ------------------------------------------------------------------


def test_routing_swaps_to_the_canary_and_rolls_back_from_disk(
    edge_models: EdgeModels, proxy: RegistryProxy, tmp_path: Path
) -> None:
    line = "edge-line-c"
    stable = edge_models.versions["pass-2"]
    canary = edge_models.versions["reject"]
    bus = local_bus(tmp_path / "bus")
    agent = make_agent(
        tmp_path,
        lambda: local_bus(tmp_path / "bus"),
        proxy.url,
        line=line,
        public_key=edge_models.public_key,  # signatures checked on the way
    )
    agent.start()
    try:
        publish_routing(bus, routing(line, 1, stable))
        wait_for(lambda: loaded_version(agent) == stable, "stable")
        assert agent.inspect(png(1)).decision == DECISION_PASS
        # A canary that has not reached wave 1 yet changes nothing.
        publish_routing(bus, routing(line, 2, stable, canary=canary, edge_wave=0))
        wait_for(lambda: agent.routing_generation == 2, "generation 2")
        assert loaded_version(agent) == stable

        publish_routing(bus, routing(line, 3, stable, canary=canary, edge_wave=1))
        wait_for(lambda: loaded_version(agent) == canary, "canary")
        event = agent.inspect(png(2))
        assert event.decision == DECISION_REJECT
        assert (event.model.version, event.model.role) == (canary, MODEL_ROLE_EDGE)
        assert event.routing_generation == 3 and event.edge_node_id == f"{line}-pc-1"
        previous = agent.store.previous()
        assert previous is not None and previous.version == stable
        current = agent.store.current()
        assert current is not None and current.signed

        # Roll back with the registry out of reach: the previous version comes from disk.
        proxy.offline = True
        requests_before = proxy.requests
        publish_routing(bus, routing(line, 4, stable, canary=canary, edge_wave=0))
        wait_for(lambda: loaded_version(agent) == stable, "rolled back")
        assert agent.last_error == ""
        assert proxy.requests == requests_before
        assert agent.inspect(png(3)).decision == DECISION_PASS
        beat = agent.heartbeat()
        assert beat.loaded_model.version == stable and beat.previous_model.version == canary
        assert beat.routing_generation == 4 and beat.state == EDGE_NODE_STATE_READY

        # A stale routing (a replay of generation 3) is ignored; the next one is applied.
        publish_routing(bus, routing(line, 3, stable, canary=canary, edge_wave=1))
        publish_routing(bus, routing(line, 5, stable))
        wait_for(lambda: agent.routing_generation == 5, "generation 5")
        assert loaded_version(agent) == stable
        wait_for(lambda: agent.outbox.depth() == 0, "inspections delivered")
        delivered = read_all(bus, INSPECTIONS, 3, line)
        assert [e.message.decision for e in delivered] == [
            DECISION_PASS,
            DECISION_REJECT,
            DECISION_PASS,
        ]
    finally:
        agent.close()
        agent.outbox.close()
        bus.close()
    # After a restart the node serves what it served, from disk, at the applied generation.
    again = make_agent(tmp_path, lambda: local_bus(tmp_path / "bus"), proxy.url, line=line)
    again.start(follow=False)
    try:
        assert loaded_version(again) == stable and again.routing_generation == 5
    finally:
        again.close()
        again.outbox.close()


# --- (d) as deployed: its own process, answering the line over gRPC ----------------------------


def test_the_agent_process_answers_the_line_over_grpc(
    kafka_broker: KafkaBroker, registry_url: str, edge_models: EdgeModels, tmp_path: Path
) -> None:
    line = f"edge-line-d-{os.urandom(3).hex()}"
    grpc_port, metrics_port = pick_free_ports(2)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("INSPECTLOOP_")},
        "INSPECTLOOP_DATA_DIR": str(tmp_path / "pc"),
        "INSPECTLOOP_BUS__BACKEND": "kafka",
        "INSPECTLOOP_BUS__KAFKA__BOOTSTRAP_SERVERS": kafka_broker.bootstrap_servers,
        "INSPECTLOOP_METRICS__PORT": str(metrics_port),
        "INSPECTLOOP_LOGGING__JSON_FORMAT": "false",
        "INSPECTLOOP_EDGE__NODE_ID": f"{line}-pc-1",
        "INSPECTLOOP_EDGE__LINE": line,
        "INSPECTLOOP_EDGE__MODEL_NAME": MODEL,
        "INSPECTLOOP_EDGE__REGISTRY_URL": registry_url,
        "INSPECTLOOP_EDGE__REGISTRY_TOKEN": TOKEN,
        "INSPECTLOOP_EDGE__PUBLIC_KEY_FILE": str(edge_models.public_key),
        "INSPECTLOOP_EDGE__GRPC_PORT": str(grpc_port),
        "INSPECTLOOP_EDGE__HEARTBEAT_INTERVAL_S": "0.5",
        "INSPECTLOOP_EDGE__LOOP_INTERVAL_S": "0.1",
    }
    bus = build_bus(
        BusSettings(
            backend="kafka", kafka=KafkaSettings(bootstrap_servers=kafka_broker.bootstrap_servers)
        ),
        "edge-test",
        CollectorRegistry(),
    )
    bus.ensure_topics([*FOLLOWED, *PRODUCED])
    process = ManagedProcess(
        "edge-agent",
        [str(EDGE_PYTHON), "-m", "inspectloop.edge.agent"],
        tmp_path / "edge.log",
        env=env,
    )
    client = GrpcInspectClient(f"127.0.0.1:{grpc_port}")

    def ask(request_id: str, image: bytes, **fields: str) -> InspectResponse:
        request = InspectRequest(
            line=fields.get("line", line), request_id=request_id, image=image, camera="cam-1"
        )
        request.content_type = fields.get("content_type", "image/png")
        return client.inspect(request, timeout_s=10)

    def answered_by(version: str) -> bool:
        try:
            return ask(f"probe-{uuid.uuid4().hex[:8]}", png(0)).model.version == version
        except BackendUnavailableError:  # the API is not up yet
            return False

    answered: list[str] = []
    process.start()
    try:
        # Before any routing the node has no model: it answers, and sends the part to a person.
        process.wait_ready(lambda: ask("first", png(1)) is not None, timeout=WAIT_S)
        first = ask("first", png(1))
        assert first.decision == DECISION_UNSPECIFIED and first.human_review_required
        assert first.review_reason == REVIEW_REASON_MODEL_UNAVAILABLE
        answered.append(first.inspection_id)

        stable, canary = edge_models.versions["pass-1"], edge_models.versions["reject"]
        publish_routing(bus, routing(line, 1, stable))
        wait_for(lambda: answered_by(stable), "answers from the stable version")
        passed = ask("unit-1", png(2))
        assert passed.decision == DECISION_PASS and not passed.human_review_required
        assert (passed.model.version, passed.model.role) == (stable, MODEL_ROLE_EDGE)
        assert passed.inspection_id == inspection_id(line, "unit-1")
        assert passed.prediction.top_class == "good" and passed.latency_ms > 0
        # A retried request is the same inspection.
        assert ask("unit-1", png(2)).inspection_id == passed.inspection_id
        answered.append(passed.inspection_id)

        # Bad requests are refused with the reason, and never reach the bus.
        with pytest.raises(PermanentError, match="INVALID_ARGUMENT: image bytes are not a PNG"):
            ask("bad-1", b"not an image at all")
        with pytest.raises(PermanentError, match=f"inspects line '{line}', not 'line-9'"):
            ask("bad-2", png(3), line="line-9")
        with pytest.raises(PermanentError, match="INVALID_ARGUMENT: the request has no image"):
            ask("bad-3", b"")

        # A new routing swaps the model without a restart.
        publish_routing(bus, routing(line, 2, stable, canary=canary, edge_wave=1))
        wait_for(lambda: answered_by(canary), "answers from the canary")
        rejected = ask("unit-2", png(4))
        assert rejected.decision == DECISION_REJECT and rejected.model.version == canary
        answered.append(rejected.inspection_id)

        # Every answered inspection reaches the bus once (probes too), with the node's id.
        wait_for(lambda: ask("unit-3", png(5)).model.version == canary, "one more answer")
        answered.append(inspection_id(line, "unit-3"))
        delivered = read_all(bus, INSPECTIONS, len(answered), line)
        ids = [e.message.inspection_id for e in delivered]
        assert len(ids) == len(set(ids)), "an inspection was delivered twice"
        assert set(answered) <= set(ids)
        assert not {inspection_id(line, f"bad-{n}") for n in (1, 2, 3)} & set(ids)
        assert {e.message.edge_node_id for e in delivered} == {f"{line}-pc-1"}
    finally:
        client.close()
        exit_code = process.stop(grace=30)
        bus.close()
    assert exit_code == 0, process.log_tail()
