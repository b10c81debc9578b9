"""The rollout controller against the real components: a Prometheus server scraping the
gateway's and the monitor's real metrics endpoints, the real Triton with the tiny models
(versions 1 and 2 pass every image, version 3 rejects every one), the registry service in its
own process, and the embedded bus. Simulated operators label the decisions: every reject of
these good images is a false reject.

Printed: time from candidate to promotion, and from the regression's first canary traffic to
the rollback, against the configured interval.
"""

from __future__ import annotations

import bisect
import os
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from inspectloop.core.blobstore import FilesystemBlobStore
from inspectloop.core.bus import EventBus, build_bus
from inspectloop.core.events import Event, Topic
from inspectloop.core.metrics import LATENCY_BUCKETS, MetricsServer, serve_metrics
from inspectloop.core.onnx_contract import sha256_file
from inspectloop.core.readiness import poll_until
from inspectloop.core.registry_client import RegistryClient
from inspectloop.core.settings import BusSettings, LocalBusSettings
from inspectloop.core.topics import (
    EDGE_HEARTBEATS,
    FEEDBACK,
    INSPECTIONS,
    LINE_MODES,
    MODELS,
    ROLLOUTS,
    ROUTING,
)
from inspectloop.devtools.harness import PrometheusServer
from inspectloop.devtools.harness.process import ManagedProcess
from inspectloop.devtools.registry_process import RegistryUser, registry_process
from inspectloop.devtools.tiny_models import NAME, png, write_edge_model
from inspectloop.edge.agent import FOLLOWED, PRODUCED, EdgeAgent
from inspectloop.edge.metrics import EdgeMetrics
from inspectloop.edge.models import ModelStore
from inspectloop.edge.outbox import Outbox
from inspectloop.edge.settings import EdgeSection
from inspectloop.gateway.metrics import GatewayMetrics
from inspectloop.gateway.service import InspectionGateway
from inspectloop.gateway.settings import GatewaySection
from inspectloop.inspection.settings import TritonSettings
from inspectloop.inspection.triton import TritonScorer
from inspectloop.monitor.metrics import MonitorMetrics
from inspectloop.monitor.service import MonitorService, StateStore
from inspectloop.monitor.settings import MonitorSection
from inspectloop.rollout.analysis import Analyzer, PrometheusSource, Thresholds
from inspectloop.rollout.embedded import EmbeddedSource
from inspectloop.rollout.fleet import EdgeFleet
from inspectloop.rollout.machine import (
    APPROVE_CANARY,
    APPROVE_PRODUCTION,
    Phase,
    Policy,
    RolloutStatus,
)
from inspectloop.rollout.metrics import RolloutMetrics
from inspectloop.rollout.service import RolloutController, RolloutStore
from inspectloop.v1.common_pb2 import DECISION_REJECT, Scope
from inspectloop.v1.feedback_pb2 import (
    FEEDBACK_VERDICT_FALSE_REJECT,
    FEEDBACK_VERDICT_GOOD_CONFIRMED,
    OperatorFeedback,
)
from inspectloop.v1.inspect_service_pb2 import InspectRequest
from inspectloop.v1.models_pb2 import (
    MODEL_STAGE_REJECTED,
    MODEL_STAGE_VALIDATED,
    ModelStage,
    ModelVersion,
)
from inspectloop.v1.rollout_pb2 import RolloutEvent, RolloutPhase

pytestmark = pytest.mark.integration

SERVICE_TOKEN = "ilr_" + "s" * 40
QUALITY_TOKEN = "ilr_" + "q" * 40
QUALITY_PASSWORD = "quality-officer-password"
INTERVAL_S = 3.0
THRESHOLD = 2
LINE = "rollout-line-1"
THRESHOLDS = Thresholds(
    window_s=10,
    quality_window_s=30,
    min_requests=15,
    min_labelled=10,
    max_false_reject_rate=0.05,
)
POLICY = Policy(
    step_weights_bps=(2500, 5000),
    shadow_intervals=1,
    watch_intervals=1,
    failure_threshold=THRESHOLD,
    # As the registry requires by default.
    approvals_required=frozenset({APPROVE_CANARY, APPROVE_PRODUCTION}),
)


@dataclass
class Plant:
    """The services a rollout judges, with a line's traffic and its operators."""

    bus: EventBus
    gateway: InspectionGateway
    registry: RegistryClient
    quality: RegistryClient  # a quality officer's session, for signatures
    registry_url: str
    scrape_targets: list[str]
    sent: int = 0

    def traffic(self, requests: int = 12) -> None:
        """One burst of inspections on the line, each labelled by an operator."""
        for _ in range(requests):
            self.sent += 1
            answer = self.gateway.inspect(
                InspectRequest(
                    line=LINE,
                    request_id=f"{LINE}-{uuid.uuid4().hex}",
                    image=png(self.sent),
                    content_type="image/png",
                )
            )
            verdict = (
                FEEDBACK_VERDICT_FALSE_REJECT
                if answer.decision == DECISION_REJECT
                else FEEDBACK_VERDICT_GOOD_CONFIRMED
            )
            self.bus.publish(
                FEEDBACK,
                OperatorFeedback(
                    feedback_id=str(uuid.uuid4()),
                    inspection_id=answer.inspection_id,
                    line=LINE,
                    verdict=verdict,
                    model=answer.model,
                    original_decision=answer.decision,
                ),
            )

    def register(self, version: int, edge_model: Path) -> None:
        sha = sha256_file(edge_model)
        self.registry.upload_artifact(edge_model, sha)
        artifact = {
            "kind": "onnx_int8",
            "sha256": sha,
            "size_bytes": edge_model.stat().st_size,
            "filename": "model.int8.onnx",
        }
        record = self.registry.register_version(
            NAME,
            {
                "stage": "validated",
                "artifacts": [artifact],
                "lineage": {
                    "dataset_snapshot_id": "tiny",
                    "dataset_sha256": "0" * 64,
                    "code_version": "test",
                },
                "classes": ["good", "scratch", "smudge", "misprint"],
                "input_width": 32,
                "input_height": 32,
                "scope": {"lines": [LINE]},
            },
        )
        assert record["version"] == version

    def announce(self, version: int, stage: ModelStage = MODEL_STAGE_VALIDATED) -> None:
        """The trainer's ModelVersion event for a version (validated unless told)."""
        self.bus.publish(
            MODELS,
            ModelVersion(
                name=NAME,
                version=str(version),
                stage=stage,
                scope=Scope(lines=[LINE]),
            ),
        )

    def sign(self, version: int, *meanings: str) -> None:
        for meaning in meanings or (APPROVE_CANARY, APPROVE_PRODUCTION):
            self.quality.approve(NAME, version, meaning, QUALITY_PASSWORD, "tested")

    def stage(self, version: int) -> str:
        return str(self.registry.version(NAME, version)["stage"])


@pytest.fixture(scope="module")
def edge_models(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    """The int8 ONNX of each tiny version, as edge agents run them."""
    work = tmp_path_factory.mktemp("edge-models")
    return {v: write_edge_model(v, work / str(v)) for v in (1, 2, 3)}


@pytest.fixture
def plant(
    tmp_path: Path,
    served_models: str,
    prometheus_server: PrometheusServer,
    edge_models: dict[int, Path],
) -> Iterator[Plant]:
    """Version 1 in production on the line, behind a gateway and a monitor whose metrics the
    session's Prometheus scrapes; the registry holds versions 1 (production), 2 and 3."""
    bus = build_bus(
        BusSettings(backend="local", local=LocalBusSettings(directory=tmp_path / "bus")),
        "test",
        CollectorRegistry(),
    )
    bus.ensure_topics(
        [INSPECTIONS, FEEDBACK, ROUTING, LINE_MODES, MODELS, ROLLOUTS, EDGE_HEARTBEATS]
    )
    gateway_registry, monitor_registry = CollectorRegistry(), CollectorRegistry()
    settings = GatewaySection(
        model_name=NAME,
        default_version="1",
        triton=TritonSettings(url=served_models, timeout_s=10, readiness_ttl_s=0.2),
    )
    gateway = InspectionGateway(
        settings,
        bus=bus,
        blobs=FilesystemBlobStore(tmp_path / "blobs", 1 << 20),
        triton=TritonScorer(settings.triton),
        metrics=GatewayMetrics(gateway_registry),
    )
    gateway.follow()
    monitor = MonitorService(
        MonitorSection(),
        bus=bus,
        store=StateStore(tmp_path / "monitor.sqlite"),
        metrics=MonitorMetrics(monitor_registry),
    )
    stop = threading.Event()
    feedback = bus.consumer("monitor", [FEEDBACK], monitor.handle, before_commit=monitor.persist)
    consuming = threading.Thread(target=feedback.run, args=(stop,), daemon=True)
    consuming.start()
    servers: list[MetricsServer] = [
        serve_metrics(r, "127.0.0.1", 0) for r in (gateway_registry, monitor_registry)
    ]
    targets = [f"127.0.0.1:{s.port}" for s in servers]
    prometheus_server.set_scrape_targets(targets)
    users = [
        RegistryUser("rollout", "service", SERVICE_TOKEN),
        RegistryUser("qa", "quality", QUALITY_TOKEN, QUALITY_PASSWORD),
    ]
    with registry_process(tmp_path / "registry", users) as url:
        registry = RegistryClient(url, SERVICE_TOKEN)
        quality = RegistryClient(url, QUALITY_TOKEN)
        scraped = [f"http://{t}/metrics" for t in targets]
        plant = Plant(bus, gateway, registry, quality, url, scraped)
        plant.register(1, edge_models[1])
        plant.sign(1)
        for stage in ("shadow", "canary", "production"):
            registry.transition(NAME, 1, stage, "the line's first model")
        plant.register(2, edge_models[2])
        plant.register(3, edge_models[3])
        try:
            yield plant
        finally:
            stop.set()
            consuming.join(timeout=30)
            feedback.close()
            gateway.close()
            for server in servers:
                server.close()
            registry.close()
            quality.close()
            bus.close()


@dataclass
class Controller:
    controller: RolloutController
    store: RolloutStore
    stop: threading.Event
    thread: threading.Thread

    def status(self, version: int) -> RolloutStatus | None:
        return self.store.get(f"{NAME}-v{version}")


@pytest.fixture
def start_controller(
    plant: Plant, tmp_path: Path, prometheus_server: PrometheusServer
) -> Iterator[Callable[..., Controller]]:
    started: list[Controller] = []

    def start(
        thresholds: Thresholds = THRESHOLDS,
        source: str = "prometheus",
        fleet: EdgeFleet | None = None,
    ) -> Controller:
        analysis_source = (
            PrometheusSource(prometheus_server.url)
            if source == "prometheus"
            else EmbeddedSource(plant.scrape_targets, interval_s=1.0).start()
        )
        store = RolloutStore(tmp_path / "rollout.sqlite")
        controller = RolloutController(
            policy=POLICY,
            analysis_interval_s=INTERVAL_S,
            bus=plant.bus,
            registry=RegistryClient(plant.registry_url, SERVICE_TOKEN),
            analyzer=Analyzer(analysis_source, thresholds, fleet),
            store=store,
            metrics=RolloutMetrics(CollectorRegistry()),
            fleet=fleet,
        )
        stop = threading.Event()
        thread = threading.Thread(target=controller.run, args=(stop, 0.2), daemon=True)
        thread.start()
        handle = Controller(controller, store, stop, thread)
        started.append(handle)
        return handle

    yield start
    for handle in started:
        handle.stop.set()
        handle.thread.join(timeout=30)
        handle.store.close()


def drive(plant: Plant, until: Callable[[], bool], timeout: float, what: str) -> None:
    """Line traffic, labelled, until ``until()`` holds."""
    deadline = time.monotonic() + timeout
    while not until():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        plant.traffic()


def read_topic(bus: EventBus, topic: Topic[Any]) -> list[Event[Any]]:
    """Everything on ``topic`` so far, from the start."""
    events: list[Event[Any]] = []
    with bus.consumer(f"check-{uuid.uuid4().hex[:6]}", [topic], events.append) as consumer:
        while consumer.poll_once(0.2):
            pass
    return events


def rollout_events(bus: EventBus) -> list[RolloutEvent]:
    return [e.message for e in read_topic(bus, ROLLOUTS)]


def phase_of(controller: Controller, version: int) -> Phase | None:
    status = controller.status(version)
    return status.phase if status else None


def waiting_for(controller: Controller, version: int) -> str | None:
    status = controller.status(version)
    return status.waiting_for if status else None


def test_a_good_canary_is_promoted_step_by_step(
    plant: Plant, start_controller: Callable[..., Controller]
) -> None:
    controller = start_controller()
    started = time.monotonic()
    plant.sign(2)
    plant.announce(2)
    drive(plant, lambda: phase_of(controller, 2) is Phase.PRODUCTION, 150, "the promotion")
    elapsed = time.monotonic() - started
    print(
        f"\ncandidate -> promotion complete: {elapsed:.1f} s with an analysis interval of "
        f"{INTERVAL_S:g} s ({len(POLICY.step_weights_bps)} canary steps, shadow "
        f"{POLICY.shadow_intervals}, watch {POLICY.watch_intervals} intervals)"
    )
    assert (plant.stage(2), plant.stage(1)) == ("production", "archived")
    events = rollout_events(plant.bus)
    assert [RolloutPhase.Name(e.phase) for e in events] == [
        "ROLLOUT_PHASE_SHADOW",
        "ROLLOUT_PHASE_CANARY",
        "ROLLOUT_PHASE_CANARY",
        "ROLLOUT_PHASE_PRODUCTION_WATCH",
        "ROLLOUT_PHASE_PRODUCTION",
    ]
    assert [e.canary_weight_bps for e in events][1:3] == [2500, 5000]
    # Every check passed on data: none was skipped for lack of it at the end.
    final = controller.status(2)
    assert final is not None and final.failed_checks == 0
    # The line is on version 2 now.
    plant.traffic(5)
    routing = plant.gateway.routing.get(LINE)
    assert (routing.stable.version, routing.canary.version) == ("2", "")


def test_a_version_that_failed_its_validation_is_never_routed(
    plant: Plant, start_controller: Callable[..., Controller]
) -> None:
    # The trainer announces version 3 rejected (its independent validation failed its gates),
    # then version 2 validated. The controller reads the topic in order: once version 2 is in
    # shadow, version 3's announcement was read, and ignored.
    controller = start_controller()
    plant.sign(3)
    plant.sign(2)
    plant.announce(3, MODEL_STAGE_REJECTED)
    plant.announce(2)
    drive(plant, lambda: phase_of(controller, 2) is not None, 60, "version 2's rollout")
    assert controller.status(3) is None
    assert {e.version for e in rollout_events(plant.bus)} <= {"2"}
    routing = plant.gateway.routing.get(LINE)
    assert "3" not in (routing.stable.version, routing.canary.version)
    assert plant.stage(3) == "validated"  # untouched by the rollout


def test_a_regression_is_rolled_back_within_interval_times_threshold(
    plant: Plant, start_controller: Callable[..., Controller]
) -> None:
    # Version 3 rejects good parts: operators confirm false rejects. Disagreement with the
    # stable is not judged here (as after a redesign), so the label-delayed quality catches it.
    lenient = Thresholds(**{**THRESHOLDS.__dict__, "max_disagreement_rate": None})
    controller = start_controller(lenient)
    plant.sign(3)
    plant.announce(3)
    drive(plant, lambda: phase_of(controller, 3) is Phase.CANARY, 90, "the canary")
    canary_at = time.monotonic()
    drive(plant, lambda: phase_of(controller, 3) is Phase.ROLLED_BACK, 60, "the rollback")
    took = time.monotonic() - canary_at
    print(
        f"\ninjected regression (false rejects) -> rollback: {took:.1f} s; configured "
        f"interval x threshold = {INTERVAL_S * THRESHOLD:g} s"
    )
    # One interval may pass before the first labels and scrapes of the canary are in.
    assert took <= INTERVAL_S * (THRESHOLD + 1) + 2
    assert (plant.stage(3), plant.stage(1)) == ("rolled_back", "production")
    status = controller.status(3)
    assert status is not None and "false_reject_rate" in status.reason
    # Traffic is back on version 1 alone.
    poll_until(
        lambda: plant.gateway.routing.get(LINE).canary.version == "", timeout=10, what="the routing"
    )
    before = plant.sent
    plant.traffic(20)
    assert plant.sent == before + 20
    assert plant.gateway.routing.get(LINE).stable.version == "1"


def test_prometheus_down_mid_analysis_never_promotes(
    plant: Plant,
    start_controller: Callable[..., Controller],
    prometheus_server: PrometheusServer,
) -> None:
    controller = start_controller()
    plant.sign(2)
    plant.announce(2)
    drive(plant, lambda: phase_of(controller, 2) is Phase.CANARY, 90, "the canary")
    prometheus_server.stop()
    try:
        held_at = time.monotonic()
        drive(plant, lambda: waiting_for(controller, 2) == "metrics", INTERVAL_S * 3, "the hold")
        # Several intervals of good traffic without metrics: no step, no promotion.
        drive(plant, lambda: time.monotonic() - held_at > INTERVAL_S * 4, 60, "four intervals")
        status = controller.status(2)
        assert status is not None
        assert (status.phase, status.step_index) == (Phase.CANARY, 0)
        assert plant.stage(2) == "canary"
    finally:
        prometheus_server.start()
    drive(plant, lambda: phase_of(controller, 2) is Phase.PRODUCTION, 150, "the promotion")
    held = [e for e in rollout_events(plant.bus) if "metrics source unavailable" in e.reason]
    assert len(held) == 1


def test_embedded_source_answers_as_prometheus_does(
    plant: Plant, prometheus_server: PrometheusServer
) -> None:
    embedded = EmbeddedSource(plant.scrape_targets, interval_s=0.5).start()
    prometheus = PrometheusSource(prometheus_server.url)
    try:
        labels = {"model": [NAME], "version": ["1"]}
        count = "inspectloop_gateway_infer_duration_seconds_count"
        drive(
            plant,
            lambda: (
                (prometheus.increase(count, labels, 20) or 0) > 100
                and (embedded.increase(count, labels, 20) or 0) > 100
            ),
            60,
            "data in both sources",
        )
        # Prometheus takes up new targets up to 5 s late: both must hold a whole window.
        both_since = time.monotonic()
        drive(plant, lambda: time.monotonic() - both_since > 22, 60, "a whole window in both")
        # Both see the same traffic: Prometheus extrapolates to the window's edges and the two
        # scrape at other moments, so they agree within the scrape interval's share of the
        # window, and their quantiles within a bucket of the histogram (interpolation inside a
        # bucket depends on which few slow requests each window holds), not exactly.
        a, b = prometheus.increase(count, labels, 20), embedded.increase(count, labels, 20)
        assert a is not None and b is not None
        assert abs(a - b) <= 0.25 * max(a, b), (a, b)
        for q in (0.5, 0.99):
            a = prometheus.quantile(q, "inspectloop_gateway_infer_duration_seconds", labels, 20)
            b = embedded.quantile(q, "inspectloop_gateway_infer_duration_seconds", labels, 20)
            assert a is not None and b is not None
            buckets = (
                bisect.bisect_left(LATENCY_BUCKETS, a),
                bisect.bisect_left(LATENCY_BUCKETS, b),
            )
            assert abs(buckets[0] - buckets[1]) <= 1, (q, a, b)
        assert embedded.increase(count, {"model": [NAME], "version": ["9"]}, 20) is None
    finally:
        embedded.close()
        prometheus.close()


def test_a_killed_controller_resumes_its_rollout(
    plant: Plant, tmp_path: Path, prometheus_server: PrometheusServer
) -> None:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("INSPECTLOOP_")},
        "INSPECTLOOP_DATA_DIR": str(tmp_path / "controller"),
        "INSPECTLOOP_BUS__BACKEND": "local",
        "INSPECTLOOP_BUS__LOCAL__DIRECTORY": str(tmp_path / "bus"),
        "INSPECTLOOP_ROLLOUT__REGISTRY_URL": plant.registry_url,
        "INSPECTLOOP_ROLLOUT__REGISTRY_TOKEN": SERVICE_TOKEN,
        "INSPECTLOOP_ROLLOUT__STEP_WEIGHTS_BPS": "[2500, 5000]",
        "INSPECTLOOP_ROLLOUT__SHADOW_INTERVALS": "1",
        "INSPECTLOOP_ROLLOUT__WATCH_INTERVALS": "1",
        "INSPECTLOOP_ROLLOUT__TICK_S": "0.2",
        "INSPECTLOOP_ROLLOUT__ANALYSIS__INTERVAL_S": str(INTERVAL_S),
        "INSPECTLOOP_ROLLOUT__ANALYSIS__WINDOW_S": "10",
        "INSPECTLOOP_ROLLOUT__ANALYSIS__QUALITY_WINDOW_S": "30",
        "INSPECTLOOP_ROLLOUT__ANALYSIS__MIN_REQUESTS": "15",
        "INSPECTLOOP_ROLLOUT__ANALYSIS__MIN_LABELLED": "10",
        "INSPECTLOOP_ROLLOUT__METRICS_SOURCE__KIND": "prometheus",
        "INSPECTLOOP_ROLLOUT__METRICS_SOURCE__PROMETHEUS_URL": prometheus_server.url,
        "INSPECTLOOP_LOGGING__JSON_FORMAT": "false",
    }
    state = RolloutStore(tmp_path / "controller" / "rollout.sqlite")

    def phase() -> Phase | None:
        status = state.get(f"{NAME}-v2")
        return status.phase if status else None

    def start() -> ManagedProcess:
        process = ManagedProcess(
            "rollout",
            [sys.executable, "-m", "inspectloop.rollout.service"],
            tmp_path / "rollout.log",
            env=env,
        )
        process.start()
        return process

    first = start()
    try:
        plant.sign(2)
        plant.announce(2)
        drive(plant, lambda: phase() is Phase.CANARY, 120, "the canary")
        assert first.pid is not None
        os.kill(first.pid, signal.SIGKILL)
        poll_until(lambda: not first.is_running(), timeout=10, what="the controller to die")
        killed = state.get(f"{NAME}-v2")
        assert killed is not None
    finally:
        first.stop()
    second = start()
    try:
        drive(plant, lambda: phase() is Phase.PRODUCTION, 150, "the promotion")
    finally:
        second.stop()
        state.close()
    # Resumed, not restarted: once de-duplicated by event id (an action repeated after the
    # kill republishes its event under the same id), the phases went forward only.
    events = {e.event_id: e for e in rollout_events(plant.bus)}.values()
    assert [RolloutPhase.Name(e.phase) for e in events] == [
        "ROLLOUT_PHASE_SHADOW",
        "ROLLOUT_PHASE_CANARY",
        "ROLLOUT_PHASE_CANARY",
        "ROLLOUT_PHASE_PRODUCTION_WATCH",
        "ROLLOUT_PHASE_PRODUCTION",
    ]
    assert (plant.stage(2), plant.stage(1)) == ("production", "archived")


def test_the_rollout_waits_for_each_signature(
    plant: Plant, start_controller: Callable[..., Controller]
) -> None:
    controller = start_controller()
    plant.announce(2)
    drive(plant, lambda: waiting_for(controller, 2) == APPROVE_CANARY, 60, "the canary gate")
    # Without the signature nothing moves, whatever the analysis says.
    status = controller.status(2)
    assert status is not None and status.phase is Phase.PAUSED
    assert plant.stage(2) == "shadow"
    assert plant.gateway.routing.get(LINE).canary.version == ""
    plant.sign(2, APPROVE_CANARY)
    drive(plant, lambda: waiting_for(controller, 2) == APPROVE_PRODUCTION, 90, "the next gate")
    assert plant.stage(2) == "canary"
    plant.sign(2, APPROVE_PRODUCTION)
    drive(plant, lambda: phase_of(controller, 2) is Phase.PRODUCTION, 90, "the promotion")
    signed = [e for e in rollout_events(plant.bus) if e.approval_id]
    assert len(signed) == 2  # the canary and the promotion name their signatures


def edge_agent(tmp_path: Path, plant: Plant, wave: int) -> EdgeAgent:
    """A line PC of ``wave`` on the plant's bus, pulling from the plant's registry."""
    settings = EdgeSection(
        node_id=f"{LINE}-pc-{wave}",
        line=LINE,
        wave=wave,
        model_name=NAME,
        registry_url=plant.registry_url,
        store_dir=tmp_path / f"pc-{wave}" / "models",
        outbox_path=tmp_path / f"pc-{wave}" / "outbox.sqlite3",
        heartbeat_interval_s=0.3,
        loop_interval_s=0.05,
        sync_retry_s=0.5,
    )
    assert settings.store_dir is not None and settings.outbox_path is not None

    def connect() -> EventBus:
        bus = build_bus(
            BusSettings(backend="local", local=LocalBusSettings(directory=tmp_path / "bus")),
            f"edge-{wave}",
            CollectorRegistry(),
        )
        bus.ensure_topics([*FOLLOWED, *PRODUCED])
        return bus

    return EdgeAgent(
        settings,
        connect=connect,
        store=ModelStore(settings.store_dir, RegistryClient(plant.registry_url, SERVICE_TOKEN)),
        outbox=Outbox(settings.outbox_path),
        metrics=EdgeMetrics(CollectorRegistry()),
    )


def test_edge_nodes_take_the_candidate_wave_by_wave(
    plant: Plant, start_controller: Callable[..., Controller], tmp_path: Path
) -> None:
    agents = [edge_agent(tmp_path, plant, wave) for wave in (1, 2)]
    for agent in agents:
        agent.start()
    try:
        controller = start_controller(fleet=EdgeFleet(stale_after_s=30))
        plant.sign(2)
        plant.announce(2)
        drive(plant, lambda: phase_of(controller, 2) is Phase.PRODUCTION, 150, "the promotion")
        assert [loaded_version(a) for a in agents] == ["2", "2"]
    finally:
        for agent in agents:
            agent.close()
    # The heartbeats tell the order: wave 1 ran version 2 before wave 2 did, and each step
    # waited for its wave (the edge check passed in the analyses that moved the rollout on).
    beats = [e.message for e in read_topic(plant.bus, EDGE_HEARTBEATS)]
    first_on_2 = {
        wave: min(
            i for i, b in enumerate(beats) if b.wave == wave and b.loaded_model.version == "2"
        )
        for wave in (1, 2)
    }
    assert first_on_2[1] < first_on_2[2]
    edge_checks = [
        c for e in rollout_events(plant.bus) for c in e.analysis if c.metric == "edge_wave_loaded"
    ]
    assert edge_checks and all(c.result == 1 for c in edge_checks)  # ANALYSIS_RESULT_PASS


def loaded_version(agent: EdgeAgent) -> str | None:
    loaded = agent.loaded
    return loaded.version if loaded else None
