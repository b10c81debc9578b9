"""The edge agent on a line PC: follows routing for its line and wave, keeps a verified model on
disk, inspects with onnxruntime under the gateway's decision rules, buffers every inspection in
an on-disk outbox until the bus acknowledges it, and reports itself in heartbeats.

Threads:

- follower: a consumer of the routing and line-mode topics (a fresh group read from the start,
  like the gateway's). It only records the wanted routing; it never downloads, so a refused
  artifact can never send a routing record to the dead-letter topic.
- loop: applies the wanted routing (download, verify, swap; retried after ``sync_retry_s`` when
  it failed), sends heartbeats when due.
- drain: moves the outbox to the bus (``outbox.OutboxDrainer``).
- the Inspect API's gRPC workers (``edge.server``, started by ``main``): the line's software asks
  them, they call :meth:`EdgeAgent.inspect`.

Inspection never needs the network: the model is on disk and the event goes to the outbox.
Times written into events and heartbeats come from an injectable clock, so that tests can
simulate a long outage without waiting for it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp
from prometheus_client import CollectorRegistry

from inspectloop import __version__
from inspectloop.core.bus import EventBus
from inspectloop.core.bus.base import Consumer
from inspectloop.core.errors import BackendUnavailableError, InspectloopError, PermanentError
from inspectloop.core.events import Event
from inspectloop.core.topics import EDGE_HEARTBEATS, INSPECTIONS, LINE_MODES, ROUTING
from inspectloop.edge.metrics import EdgeMetrics
from inspectloop.edge.models import ArtifactRejectedError, InstalledModel, ModelStore
from inspectloop.edge.outbox import Outbox, OutboxDrainer
from inspectloop.edge.settings import EdgeSection, EdgeSettings
from inspectloop.inspection.decision import (
    LineModes,
)
from inspectloop.inspection.onnx import OnnxScorer
from inspectloop.inspection.pipeline import InspectionPipeline
from inspectloop.inspection.scorer import ServedModel
from inspectloop.v1.common_pb2 import (
    DECISION_PASS,
    MODEL_ROLE_CANARY,
    MODEL_ROLE_EDGE,
    MODEL_ROLE_STABLE,
    ModelRef,
)
from inspectloop.v1.edge_pb2 import (
    EDGE_NODE_STATE_DEGRADED,
    EDGE_NODE_STATE_FALLBACK,
    EDGE_NODE_STATE_READY,
    EDGE_NODE_STATE_SYNCING,
    EdgeHeartbeat,
    EdgeNodeState,
)
from inspectloop.v1.inspect_service_pb2 import InspectRequest
from inspectloop.v1.inspection_pb2 import InspectionEvent
from inspectloop.v1.monitor_pb2 import LineModeChanged
from inspectloop.v1.rollout_pb2 import Routing

log = logging.getLogger(__name__)

FOLLOWED = (ROUTING, LINE_MODES)
PRODUCED = (INSPECTIONS, EDGE_HEARTBEATS)
STATE_FILENAME = "agent-state.json"
# Without a model there is no input size; images are still decoded for their statistics.
FALLBACK_SIZE = 64

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


def wanted_model(routing: Routing, wave: int) -> ModelRef:
    """The version a node of ``wave`` runs under ``routing``: the canary once the rollout's
    edge wave has reached the node (``0 < edge_wave`` and ``wave <= edge_wave``), else stable.
    The role says which of the two it is."""
    canary = routing.canary
    if canary.name and routing.edge_wave > 0 and wave <= routing.edge_wave:
        return ModelRef(name=canary.name, version=canary.version, role=MODEL_ROLE_CANARY)
    stable = routing.stable
    return ModelRef(name=stable.name, version=stable.version, role=MODEL_ROLE_STABLE)


def _timestamp(when: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(when)
    return ts


@dataclass(frozen=True)
class LoadedModel:
    installed: InstalledModel
    served: ServedModel

    @classmethod
    def open(cls, installed: InstalledModel, scorer: OnnxScorer) -> LoadedModel:
        """Open the model in ``scorer`` and check it keeps the ONNX contract (raises
        ArtifactRejectedError)."""
        try:
            served = scorer.add(installed.name, installed.version, installed.model_path)
        except Exception as exc:  # any failure to open means the artifact cannot serve
            raise ArtifactRejectedError(
                "invalid_model",
                f"{installed.name} v{installed.version} cannot be served: {exc}",
            ) from exc
        return cls(installed, served)

    @property
    def ref(self) -> ModelRef:
        return ModelRef(
            name=self.installed.name, version=self.installed.version, role=MODEL_ROLE_EDGE
        )


class EdgeAgent:
    def __init__(
        self,
        settings: EdgeSection,
        *,
        connect: Callable[[], EventBus],
        store: ModelStore,
        outbox: Outbox,
        metrics: EdgeMetrics,
        clock: Clock = utc_now,
    ) -> None:
        self.settings = settings
        # The bus is connected in the background: a line PC that boots while the network is
        # down must inspect all the same (the outbox keeps the events).
        self._connect = connect
        self.bus: EventBus | None = None
        self.drainer: OutboxDrainer | None = None
        self._connected = threading.Event()
        self._bus_error = ""
        self._follow = True
        self.store = store
        self.outbox = outbox
        self.metrics = metrics
        self.clock = clock
        self.modes = LineModes()
        self.scorer = OnnxScorer(settings.inference_threads)
        self.pipeline = InspectionPipeline(
            self.scorer, settings.decision, settings.images, observer=self, clock=clock
        )
        self._lock = threading.Lock()
        self._model: LoadedModel | None = None
        self._generation = 0
        self._wanted: Routing | None = None
        self._syncing = False
        self._sync_error = ""
        self._sync_failed_at: float | None = None  # monotonic
        self._drain_error = ""
        self._last_sync_at: datetime | None = None
        self._last_heartbeat: datetime | None = None
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._consumer: Consumer | None = None
        self._state_path = store.root / STATE_FILENAME

    # --- start and stop ------------------------------------------------------------------------

    def start(self, *, follow: bool = True) -> None:
        """Load the model on disk, then (once the bus is reachable) follow routing, drain the
        outbox and send heartbeats. ``follow=False``: no routing consumer (tests, tools)."""
        self._follow = follow
        self._load_from_disk()
        self._spawn("edge-loop", self._loop)
        self._spawn("edge-drain", self._drain_loop)

    def _ensure_connected(self) -> bool:
        if self.bus is not None:
            return True
        try:
            bus = self._connect()
        except (InspectloopError, OSError) as exc:
            if not self._bus_error:
                log.warning("bus unreachable, inspecting offline: %s", exc)
            self._bus_error = f"bus unreachable: {exc}"
            return False
        self.bus = bus
        line = self.settings.line
        self.drainer = OutboxDrainer(
            self.outbox,
            bus,
            {INSPECTIONS.name: INSPECTIONS},
            batch=self.settings.drain_batch,
            ack_timeout_s=self.settings.ack_timeout_s,
            on_published=lambda n: self.metrics.published.labels(line=line).inc(n),
        )
        if self._follow:
            consumer = bus.consumer(
                f"edge-{self.settings.node_id}-{uuid.uuid4()}", FOLLOWED, self.on_event
            )
            self._consumer = consumer
            self._spawn("edge-follower", lambda: consumer.run(self._stop))
        self._bus_error = ""
        self._connected.set()
        log.info("connected to the bus")
        return True

    def _spawn(self, name: str, target: Callable[[], None]) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def close(self) -> None:
        """Stop the threads and release the bus; the outbox and the models stay on disk."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)
        if self._consumer is not None:
            self._consumer.close()
        if self.bus is not None:
            # Unacknowledged sends may fail here (bus away): their records are still in the
            # outbox and go out after the next start.
            with contextlib.suppress(InspectloopError):
                self.bus.close()

    def _load_from_disk(self) -> None:
        try:
            state = json.loads(self._state_path.read_text())
            self._generation = int(state.get("routing_generation", 0))
        except (OSError, ValueError):
            self._generation = 0
        for installed in (self.store.current(), self.store.previous()):
            if installed is None:
                continue
            try:
                self.store.verify_on_disk(installed)
                loaded = LoadedModel.open(installed, self.scorer)
            except (ArtifactRejectedError, OSError) as exc:
                log.error("model on disk refused: %s", exc)
                self._sync_error = str(exc)
                continue
            self.store.activate(installed)  # a no-op unless current was broken
            self._set_model(loaded)
            return
        log.warning("no verified model on disk: every image goes to human review until one is")

    # --- following routing ---------------------------------------------------------------------

    def on_event(self, event: Event[Any]) -> None:
        """Record a routing for this line (applied by the loop) or apply a line mode."""
        message = event.message
        if isinstance(message, Routing):
            if message.line != self.settings.line:
                return
            if not message.stable.name:
                raise PermanentError(f"routing {event.envelope.event_id} names no stable model")
            with self._lock:
                newest = max(self._generation, self._wanted.generation if self._wanted else 0)
                if message.generation > newest:
                    self._wanted = message
                    self._sync_failed_at = None  # a new routing is tried at once
                    log.info("line %s: routing generation %d", message.line, message.generation)
        elif isinstance(message, LineModeChanged):
            if message.line != self.settings.line:
                return
            try:
                self.modes.apply(message)
            except ValueError as exc:
                raise PermanentError(str(exc)) from None

    def sync(self) -> bool:
        """Apply the wanted routing if there is one; True when it was applied."""
        with self._lock:
            routing = self._wanted
            failed_at = self._sync_failed_at
        if routing is None:
            return False
        if failed_at is not None and time.monotonic() - failed_at < self.settings.sync_retry_s:
            return False
        ref = wanted_model(routing, self.settings.wave)
        self._syncing = True
        try:
            # A routing is trusted only as far as the registry approved its version for the
            # role this node runs it in (whoever can write the topic could name any version).
            approved_for = (
                ("canary" if ref.role == MODEL_ROLE_CANARY else "production")
                if self.settings.verify_routing
                else None
            )
            installed, downloaded = self.store.prepare(
                ref.name, ref.version, approved_for=approved_for
            )
            loaded = (
                self._model
                if self._model is not None and self._model.installed.key == installed.key
                else LoadedModel.open(installed, self.scorer)
            )
            self.store.activate(installed)
        except (InspectloopError, OSError) as exc:
            reason = exc.reason if isinstance(exc, ArtifactRejectedError) else "unavailable"
            if isinstance(exc, ArtifactRejectedError):
                self.metrics.artifact_rejections.labels(
                    line=self.settings.line, reason=reason
                ).inc()
            self.metrics.sync_failures.labels(line=self.settings.line).inc()
            log.error(
                "routing generation %d (%s v%s) not applied, still serving %s: %s",
                routing.generation,
                ref.name,
                ref.version,
                self._describe(self._model),
                exc,
            )
            with self._lock:
                self._sync_error = f"{ref.name} v{ref.version}: {exc}"
                self._sync_failed_at = time.monotonic()
            return False
        finally:
            self._syncing = False
        if loaded is not self._model:
            self.metrics.models_loaded.labels(
                line=self.settings.line, model=ref.name, version=ref.version
            ).inc()
        self._set_model(loaded)
        with self._lock:
            self._generation = routing.generation
            if self._wanted is routing:
                self._wanted = None
            self._sync_error = ""
            self._sync_failed_at = None
        self._save_state()
        self.metrics.routing_generation.labels(line=self.settings.line).set(routing.generation)
        log.info(
            "routing generation %d applied: %s v%s (%s, %s)",
            routing.generation,
            ref.name,
            ref.version,
            "canary" if ref.role == MODEL_ROLE_CANARY else "stable",
            "downloaded" if downloaded else "from disk",
        )
        return True

    def _set_model(self, loaded: LoadedModel) -> None:
        with self._lock:
            old, self._model = self._model, loaded
        if old is not None and old.installed.key != loaded.installed.key:
            self.scorer.remove(old.installed.name, old.installed.version)
        info = self.metrics.model_info
        line = self.settings.line
        info.clear()  # series of earlier models go (one line per agent)
        for role, installed in (("current", loaded.installed), ("previous", self.store.previous())):
            if installed is not None:
                info.labels(
                    line=line, model=installed.name, version=installed.version, role=role
                ).set(1)

    def _save_state(self) -> None:
        tmp = self._state_path.with_suffix(f".{uuid.uuid4().hex}.tmp")
        tmp.write_text(json.dumps({"routing_generation": self._generation}))
        os.replace(tmp, self._state_path)

    @staticmethod
    def _describe(model: LoadedModel | None) -> str:
        if model is None:
            return "no model"
        return f"{model.installed.name} v{model.installed.version}"

    # --- inspecting ----------------------------------------------------------------------------

    def inspect(
        self,
        image: bytes,
        *,
        content_type: str = "",
        request_id: str | None = None,
        station: str | None = None,
        camera: str = "",
        sku: str = "",
        label_design: str = "",
        captured_at: datetime | None = None,
    ) -> InspectionEvent:
        """Decide on one image with the loaded model and buffer its InspectionEvent durably.

        Raises InvalidImageError for an image that cannot be inspected. Without a verified
        model the image goes to human review (decision unspecified)."""
        request = InspectRequest(
            line=self.settings.line,
            request_id=request_id or str(uuid.uuid4()),
            image=image,
            content_type=content_type,
            station=self.settings.station if station is None else station,
            camera=camera,
            sku=sku,
            label_design=label_design,
        )
        if captured_at is not None:
            request.captured_at.FromDatetime(captured_at)
        return self.inspect_request(request)

    def inspect_request(self, request: InspectRequest) -> InspectionEvent:
        """:meth:`inspect` for a request of the Inspect API (its line is this node's)."""
        started = time.perf_counter()
        line = self.settings.line
        with self._lock:
            model = self._model
            generation = self._generation
        checked = self.pipeline.check(request)
        mode = self.modes.mode(line)
        node = self.settings.node_id
        try:
            if model is None:
                raise BackendUnavailableError("no verified model on the edge node")
            event = self.pipeline.inspect(
                request, checked, model.ref, mode=mode, generation=generation, edge_node_id=node
            )
        except BackendUnavailableError as exc:  # none yet, or swapped out meanwhile
            event = self.pipeline.unscored(
                request,
                checked,
                mode=mode,
                detail=str(exc),
                generation=generation,
                edge_node_id=node,
            )
        # The image stays on the line PC (no blob store here): its hash identifies it.
        event.latency_ms = (time.perf_counter() - started) * 1000
        if not request.HasField("captured_at"):
            event.captured_at.CopyFrom(event.decided_at)
        self.outbox.append(
            INSPECTIONS.name,
            event.inspection_id,
            event.SerializeToString(),
            event.captured_at.ToDatetime(tzinfo=UTC),
        )
        self.metrics.inspections.labels(
            line=line,
            decision="pass"
            if event.decision == DECISION_PASS
            else ("reject" if event.decision else "review"),
            version=event.model.version,
        ).inc()
        return event

    # --- the pipeline's observer --------------------------------------------------------------

    def scored(self, model: ModelRef, seconds: float) -> None:
        self.metrics.infer_latency.labels(line=self.settings.line).observe(seconds)

    def failed(self, model: ModelRef) -> None:
        pass  # a swapped-out model; the unit goes to review, counted as such

    def compared(self, shadow: ModelRef, decider: ModelRef, agree: bool) -> None:
        pass  # the edge runs no shadows

    # --- loops ---------------------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception:  # the loop must outlive any one failure; it is logged
                log.exception("edge agent loop")
            self._stop.wait(self.settings.loop_interval_s)

    def run_once(self) -> None:
        """One pass of the loop: connect the bus if needed, apply a wanted routing, send a
        heartbeat if one is due."""
        self._ensure_connected()
        self.sync()
        self._update_gauges()
        now = self.clock()
        last = self._last_heartbeat
        if last is None or (now - last).total_seconds() >= self.settings.heartbeat_interval_s:
            self._last_heartbeat = now
            self.send_heartbeat()

    def _drain_loop(self) -> None:
        while not self._stop.is_set():
            if not self._connected.wait(self.settings.drain_idle_s):
                continue
            drainer = self.drainer
            assert drainer is not None  # set before _connected
            if not self.outbox.wait_for_records(self.settings.drain_idle_s):
                self._drain_succeeded()
                continue
            try:
                drainer.drain_once()
            except BackendUnavailableError as exc:
                self.metrics.drain_failures.labels(line=self.settings.line).inc()
                if not self._drain_error:
                    log.warning("outbox cannot drain, buffering on disk: %s", exc)
                self._drain_error = f"outbox cannot drain: {exc}"
                self._stop.wait(self.settings.drain_idle_s)
            except Exception as exc:  # keep draining; the record stays in the outbox
                log.exception("outbox drain")
                self._drain_error = f"outbox drain failed: {exc}"
                self._stop.wait(self.settings.drain_idle_s)
            else:
                self._drain_succeeded()

    def _drain_succeeded(self) -> None:
        if self._drain_error:
            log.info("outbox draining again")
        self._drain_error = ""
        self._last_sync_at = self.clock()

    def _update_gauges(self) -> None:
        line = self.settings.line
        self.metrics.outbox_depth.labels(line=line).set(self.outbox.depth())
        oldest = self.outbox.oldest_time()
        age = (self.clock() - oldest).total_seconds() if oldest else 0.0
        self.metrics.outbox_oldest_age.labels(line=line).set(max(age, 0.0))
        self.metrics.degraded.labels(line=line).set(int(self.state() == EDGE_NODE_STATE_DEGRADED))

    # --- state and heartbeats ------------------------------------------------------------------

    @property
    def loaded(self) -> InstalledModel | None:
        model = self._model
        return model.installed if model is not None else None

    @property
    def routing_generation(self) -> int:
        return self._generation

    @property
    def last_error(self) -> str:
        return self._sync_error or self._bus_error or self._drain_error

    def state(self) -> EdgeNodeState:
        if self._model is None:
            return EDGE_NODE_STATE_FALLBACK
        if self._syncing:
            return EDGE_NODE_STATE_SYNCING
        if self.last_error:
            return EDGE_NODE_STATE_DEGRADED
        return EDGE_NODE_STATE_READY

    def heartbeat(self) -> EdgeHeartbeat:
        s = self.settings
        beat = EdgeHeartbeat(
            node_id=s.node_id,
            line=s.line,
            station=s.station,
            wave=s.wave,
            outbox_depth=self.outbox.depth(),
            routing_generation=self._generation,
            state=self.state(),
            last_error=self.last_error[:2000],
            agent_version=__version__,
            sent_at=_timestamp(self.clock()),
        )
        model = self._model
        if model is not None:
            beat.loaded_model.CopyFrom(model.ref)
            beat.loaded_model_sha256 = model.installed.sha256
        previous = self.store.previous()
        if previous is not None:
            beat.previous_model.CopyFrom(
                ModelRef(name=previous.name, version=previous.version, role=MODEL_ROLE_EDGE)
            )
        oldest = self.outbox.oldest_time()
        if oldest is not None:
            beat.oldest_outbox_at.CopyFrom(_timestamp(oldest))
        if self._last_sync_at is not None:
            beat.last_sync_at.CopyFrom(_timestamp(self._last_sync_at))
        return beat

    def send_heartbeat(self) -> EdgeHeartbeat:
        """Publish a heartbeat; not buffered (a stale heartbeat is worth nothing)."""
        beat = self.heartbeat()
        if self.bus is None:
            return beat
        try:
            self.bus.publish(EDGE_HEARTBEATS, beat, time=self.clock())
        except InspectloopError as exc:
            log.debug("heartbeat not sent: %s", exc)
        return beat


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def build_agent(
    settings: EdgeSettings, registry: CollectorRegistry, *, clock: Clock = utc_now
) -> EdgeAgent:
    """The agent from ``EdgeSettings`` (``main`` and the CLI); the caller starts and closes it."""
    from inspectloop.core.bus import build_bus  # noqa: PLC0415
    from inspectloop.core.registry_client import RegistryClient  # noqa: PLC0415
    from inspectloop.edge.models import load_public_key  # noqa: PLC0415

    section: EdgeSection = settings.edge
    assert section.store_dir is not None and section.outbox_path is not None  # derived

    def connect() -> EventBus:
        bus = build_bus(settings.bus, settings.service, registry)
        bus.ensure_topics([*FOLLOWED, *PRODUCED])
        return bus

    token = section.registry_token.get_secret_value() if section.registry_token else None
    store = ModelStore(
        Path(section.store_dir),
        RegistryClient(section.registry_url, token),
        kind=section.artifact_kind,
        public_key=load_public_key(section.public_key_file) if section.public_key_file else None,
    )
    return EdgeAgent(
        section,
        connect=connect,
        store=store,
        outbox=Outbox(Path(section.outbox_path)),
        metrics=EdgeMetrics(registry),
        clock=clock,
    )


def main() -> None:
    """``python -m inspectloop.edge.agent`` (or ``inspectloop edge run``): run until SIGTERM."""
    import signal  # noqa: PLC0415

    from inspectloop.core.logging import configure_logging  # noqa: PLC0415
    from inspectloop.core.metrics import serve_metrics  # noqa: PLC0415
    from inspectloop.core.settings import load_settings  # noqa: PLC0415
    from inspectloop.edge.server import serve_inspect  # noqa: PLC0415

    settings = load_settings(EdgeSettings, service="edge")
    configure_logging(settings.logging, settings.service)
    registry = CollectorRegistry()
    agent = build_agent(settings, registry)
    server = (
        serve_metrics(registry, settings.metrics.host, settings.metrics.port)
        if settings.metrics.port
        else None
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    agent.start()
    inspect_api = serve_inspect(agent) if settings.edge.grpc_port else None
    log.info(
        "edge agent %s on line %s (wave %d) serving %s; Inspect API %s",
        settings.edge.node_id,
        settings.edge.line,
        settings.edge.wave,
        agent._describe(agent._model),
        f"on {settings.edge.grpc_host}:{settings.edge.grpc_port}" if inspect_api else "off",
    )
    try:
        stop.wait()
    finally:
        # Requests in flight finish (their events reach the outbox) before the agent closes.
        if inspect_api is not None:
            inspect_api.stop(grace=5).wait()
        agent.close()
        agent.outbox.close()
        if server is not None:
            server.close()


if __name__ == "__main__":
    main()
