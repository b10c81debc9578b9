"""The inspection gateway's core: one request in, one decision out, one InspectionEvent on
the bus. The HTTP and gRPC front ends (``app``) only translate to and from ``InspectRequest``.

Per request: route (stable or canary by a hash of the request id, shadows alongside; see
``routing``), run the inspection pipeline (:mod:`inspectloop.inspection.pipeline`: image checks,
Triton's scores, the decision under the line's mode, the shadows), store the encoded image in the
blob store under its SHA-256, publish the InspectionEvent (its id derived from the line and
request id, so that a retried request is the same inspection to every consumer) and answer.

Routing and line modes are followed from their topics by a consumer of its own per process
(a fresh consumer group, read from the start): the gateway keeps nothing durable, and a
restarted replica rebuilds both tables from the topics (compacted: every line's newest state
is kept). Until it has read everything they held when it joined, it decides nothing: a line
set to ``manual`` must never be decided in ``auto`` by a replica still replaying.
"""

from __future__ import annotations

import logging
import re
import threading
import time
import uuid
from typing import Any

from inspectloop.core.blobstore import BlobStore
from inspectloop.core.bus import EventBus
from inspectloop.core.bus.base import Consumer
from inspectloop.core.errors import BackendUnavailableError, PermanentError
from inspectloop.core.events import Event
from inspectloop.core.topics import INSPECTIONS, LINE_MODES, ROUTING
from inspectloop.gateway.metrics import GatewayMetrics
from inspectloop.gateway.repository import RepositorySync
from inspectloop.gateway.routing import RoutingTable
from inspectloop.gateway.settings import GatewaySection
from inspectloop.inspection.approval import unapproved
from inspectloop.inspection.decision import (
    LineModes,
    answer_of,
)
from inspectloop.inspection.images import InvalidImageError
from inspectloop.inspection.pipeline import InspectionPipeline
from inspectloop.inspection.triton import TritonScorer
from inspectloop.v1.common_pb2 import (
    ModelRef,
    ModelRole,
    ReviewReason,
)
from inspectloop.v1.inspect_service_pb2 import InspectRequest, InspectResponse
from inspectloop.v1.inspection_pb2 import InspectionEvent
from inspectloop.v1.monitor_pb2 import LineModeChanged
from inspectloop.v1.rollout_pb2 import Routing

log = logging.getLogger(__name__)

FOLLOWED = (ROUTING, LINE_MODES)
PRODUCED = (INSPECTIONS,)
# Line ids label metrics and key the bus: a bounded, printable alphabet.
LINE_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


class InvalidRequestError(PermanentError):
    """The request itself is incomplete (no line, no image); answered with 400."""


def _role(role: ModelRole) -> str:
    return ModelRole.Name(role).removeprefix("MODEL_ROLE_").lower()


class InspectionGateway:
    def __init__(
        self,
        settings: GatewaySection,
        *,
        bus: EventBus,
        blobs: BlobStore,
        triton: TritonScorer,
        metrics: GatewayMetrics,
        sync: RepositorySync | None = None,
    ) -> None:
        self.settings = settings
        self.bus = bus
        self.blobs = blobs
        self.triton = triton
        self.metrics = metrics
        self.sync = sync
        self.pipeline = InspectionPipeline(
            triton, settings.decision, settings.images, observer=self
        )
        self.routing = RoutingTable(settings.model_name, settings.default_version)
        self.modes = LineModes()
        self._consumer: Consumer | None = None
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._unready: set[tuple[str, str]] = set()  # routed versions last seen not ready
        self._exported: set[tuple[str, str]] = set()  # versions with a model_ready series
        self._readiness_lock = threading.Lock()

    # --- following routing and line modes ----------------------------------------------------

    def on_event(self, event: Event[Any]) -> None:
        """Apply a Routing or LineModeChanged event (the follower's handler)."""
        message = event.message
        if isinstance(message, Routing):
            if message.generation > self.routing.get(message.line).generation:
                self._refuse_unapproved(event.envelope.event_id, message)
            try:
                applied = self.routing.apply(message)
            except ValueError as exc:
                raise PermanentError(f"routing {event.envelope.event_id}: {exc}") from None
            if applied:
                self.metrics.routing_generation.labels(line=message.line).set(message.generation)
                self.sync_models()
                log.info("line %s routing generation %d", message.line, message.generation)
        elif isinstance(message, LineModeChanged):
            try:
                applied = self.modes.apply(message)
            except ValueError as exc:
                raise PermanentError(str(exc)) from None
            if applied:
                log.info("line %s mode %d: %s", message.line, message.new_mode, message.reason)

    def _refuse_unapproved(self, event_id: str, routing: Routing) -> None:
        """Raise PermanentError (the event is dead-lettered) for a routing the registry did
        not approve; BackendUnavailableError pauses the follower while the registry is away."""
        if self.sync is None or not self.settings.models.verify_routing:
            return
        problems = unapproved(routing, self.sync.registry.version)
        if problems:
            self.metrics.routing_refused.labels(line=routing.line).inc()
            log.error(
                "routing %s for line %s refused: %s", event_id, routing.line, "; ".join(problems)
            )
            raise PermanentError(f"routing {event_id} refused: {'; '.join(problems)}")

    def sync_models(self) -> None:
        """Bring Triton's repository in step with routing (when the gateway manages it), and
        export whether each routed version is ready."""
        if self.sync is not None:
            self.sync.ensure(self.routing.models())
        with self._readiness_lock:  # the routing follower and the resync thread both call this
            routed = self.routing.models()
            for name, version in routed:
                ready = self.triton.ready(name, version)
                self.metrics.model_ready.labels(model=name, version=version).set(int(ready))
                if ready:
                    self._unready.discard((name, version))
                elif (name, version) not in self._unready:  # logged once, not every pass
                    self._unready.add((name, version))
                    log.warning("routed model %s v%s is not ready on Triton", name, version)
            # A version no longer routed leaves the gauge: a rolled-back canary stuck at 0
            # would otherwise keep InspectloopRoutedModelNotReady firing for good.
            for name, version in self._exported - routed:
                self.metrics.model_ready.remove(name, version)
                self._unready.discard((name, version))
            self._exported = routed

    def _resync_models(self) -> None:
        # Routing changes sync at once; this retries what the registry or Triton being
        # unreachable left out, and notices a routed version that stopped being ready.
        while not self._stop.wait(self.settings.models.retry_s):
            try:
                self.sync_models()
            except Exception:  # the loop must outlive one bad pass; the next one tries again
                log.exception("model sync pass failed")

    def follow(self) -> None:
        """Start following the routing and line-mode topics, and resyncing the models, on
        background threads; return once the state the topics held is applied (raises
        BackendUnavailableError, having stopped them, after ``state_load_timeout_s``)."""
        group = f"gateway-{uuid.uuid4()}"
        self._consumer = self.bus.consumer(group, FOLLOWED, self.on_event, rebuilds_state=True)
        self._threads = [
            threading.Thread(
                target=self._consumer.run, args=(self._stop,), name="gateway-follower", daemon=True
            ),
            threading.Thread(target=self._resync_models, name="gateway-model-sync", daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        timeout = self.settings.state_load_timeout_s
        if not self._consumer.caught_up.wait(timeout):
            self.close()
            raise BackendUnavailableError(
                f"the lines' routing and modes were not read from the bus within {timeout:g} s"
            )

    @property
    def loaded(self) -> bool:
        """Whether every line's routing and mode on the bus at start has been applied."""
        return self._consumer is not None and self._consumer.caught_up.is_set()

    def close(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)
        if self._consumer is not None:
            self._consumer.close()
        self.bus.flush(10)

    # --- inspecting ----------------------------------------------------------------------------

    def inspect(self, request: InspectRequest) -> InspectResponse:
        """Answer one request; raises InvalidImageError / InvalidRequestError (4xx) or
        BackendUnavailableError (503), having published nothing."""
        started = time.perf_counter()
        line = request.line
        try:
            response = self._inspect(request, started)
        except PermanentError as exc:
            kind = "invalid_image" if isinstance(exc, InvalidImageError) else "invalid_request"
            self.metrics.errors.labels(kind=kind, line=line or "unknown").inc()
            raise
        except BackendUnavailableError:
            self.metrics.errors.labels(kind="unavailable", line=line or "unknown").inc()
            raise
        return response

    def _inspect(self, request: InspectRequest, started: float) -> InspectResponse:
        if not request.line:
            raise InvalidRequestError("the request names no line")
        if not LINE_ID.fullmatch(request.line):
            raise InvalidRequestError(
                f"line id {request.line[:80]!r} is not 1-64 letters, digits, '.', '_' or '-'"
            )
        # The request's own faults first: a bad image is a 4xx even while no model can answer.
        checked = self.pipeline.check(request)
        if not self.loaded:
            raise BackendUnavailableError(
                "this gateway replica is still reading the lines' routing and modes from the bus"
            )
        if not request.request_id:  # one id for routing and the event: a retry routes the same
            with_id = InspectRequest()
            with_id.CopyFrom(request)
            with_id.request_id = str(uuid.uuid4())
            request = with_id
        route = self.routing.route(request.line, request.request_id, self.triton.ready)
        event = self.pipeline.inspect(
            request,
            checked,
            route.decider,
            mode=self.modes.mode(request.line),
            shadows=route.shadows,
            generation=route.generation,
        )
        blob = self.blobs.put(request.image, event.image.content_type)
        event.image.uri = blob.uri
        latency = time.perf_counter() - started
        event.latency_ms = latency * 1000
        self.bus.publish(INSPECTIONS, event, event_id=event.inspection_id)
        self._count(event, latency)
        return answer_of(event)

    # --- the pipeline's observer: inference metrics ----------------------------------------

    def scored(self, model: ModelRef, seconds: float) -> None:
        self.metrics.infer_latency.labels(
            model=model.name, version=model.version, role=_role(model.role)
        ).observe(seconds)

    def failed(self, model: ModelRef) -> None:
        self.metrics.infer_failures.labels(
            model=model.name, version=model.version, role=_role(model.role)
        ).inc()

    def compared(self, shadow: ModelRef, decider: ModelRef, agree: bool) -> None:
        self.metrics.shadow_comparisons.labels(
            model=shadow.name,
            version=shadow.version,
            decider_version=decider.version,
            outcome="agree" if agree else "disagree",
        ).inc()

    def _count(self, event: InspectionEvent, latency: float) -> None:
        m = self.metrics
        m.requests.labels(
            line=event.line,
            decision="pass" if event.decision == 1 else "reject",
            model=event.model.name,
            version=event.model.version,
            role=_role(event.model.role),
        ).inc()
        m.latency.labels(line=event.line).observe(latency)
        if event.human_review_required:
            reason = ReviewReason.Name(event.review_reason).removeprefix("REVIEW_REASON_").lower()
            m.reviews.labels(line=event.line, reason=reason).inc()
