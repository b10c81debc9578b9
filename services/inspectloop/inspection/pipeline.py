"""The inspection pipeline: one image in, one InspectionEvent out, written once for every front
end (the gateway's HTTP and gRPC APIs, the edge agent's gRPC API).

Per request: check the image against the limits (before any model is asked, so a bad image is
a 4xx even while no model can answer), bring it to the deciding model's input size, score it
with the :class:`~inspectloop.inspection.scorer.Scorer` (classifier and anomaly detector in one
call), decide under the line's mode (:mod:`~inspectloop.inspection.decision`), score the
shadows on the same pixels (recorded, never deciding) and build the event. What a front end
adds around it is its own: routing, the blob store and the bus (the gateway), the verified model
store and the outbox (the edge agent). :func:`~inspectloop.inspection.decision.answer_of` turns
the event into the line's answer.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Protocol

import numpy as np
import numpy.typing as npt
from google.protobuf.timestamp_pb2 import Timestamp

from inspectloop.core.errors import BackendUnavailableError
from inspectloop.core.imagestats import image_stats
from inspectloop.inspection.decision import (
    audit_draw,
    decision_of,
    inspection_id,
    prediction,
    review,
)
from inspectloop.inspection.images import CheckedImage, DecodedImage, check_image
from inspectloop.inspection.scorer import Scorer, ServedModel
from inspectloop.inspection.settings import DecisionSettings, ImageLimits
from inspectloop.v1.common_pb2 import (
    DECISION_UNSPECIFIED,
    REVIEW_REASON_MODEL_UNAVAILABLE,
    ImageRef,
    LineMode,
    ModelRef,
)
from inspectloop.v1.inspect_service_pb2 import InspectRequest
from inspectloop.v1.inspection_pb2 import InspectionEvent, ShadowResult

log = logging.getLogger(__name__)

# Without a model there is no input size; images are still decoded for their statistics.
FALLBACK_SIZE = 64


class Observer(Protocol):
    """What a front end counts about inference (its metrics)."""

    def scored(self, model: ModelRef, seconds: float) -> None: ...

    def failed(self, model: ModelRef) -> None: ...

    def compared(self, shadow: ModelRef, decider: ModelRef, agree: bool) -> None: ...


class _Unobserved:
    def scored(self, model: ModelRef, seconds: float) -> None:
        pass

    def failed(self, model: ModelRef) -> None:
        pass

    def compared(self, shadow: ModelRef, decider: ModelRef, agree: bool) -> None:
        pass


def utc_now() -> datetime:
    return datetime.now(UTC)


def _timestamp(when: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(when)
    return ts


class InspectionPipeline:
    def __init__(
        self,
        scorer: Scorer,
        decision: DecisionSettings,
        limits: ImageLimits,
        *,
        observer: Observer | None = None,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.scorer = scorer
        self.decision = decision
        self.limits = limits
        self.observer: Observer = observer or _Unobserved()
        self.clock = clock

    def check(self, request: InspectRequest) -> CheckedImage:
        """The request's image, decoded once every limit is checked; InvalidImageError (4xx)
        otherwise."""
        return check_image(request.image, request.content_type, self.limits)

    def inspect(
        self,
        request: InspectRequest,
        checked: CheckedImage,
        decider: ModelRef,
        *,
        mode: LineMode,
        shadows: Sequence[ModelRef] = (),
        generation: int = 0,
        edge_node_id: str = "",
    ) -> InspectionEvent:
        """Score with ``decider`` and decide; raises BackendUnavailableError (nothing built)
        when the decider cannot answer. Shadows that cannot answer are left out, and
        counted."""
        served = self.scorer.served(decider.name, decider.version)
        image = checked.at_size(served.input_size)
        batch = image.pixels[None]
        try:
            scores = self.scorer.score(decider.name, decider.version, batch)[0]
        except BackendUnavailableError:
            self.observer.failed(decider)
            raise
        self.observer.scored(decider, scores.seconds)
        pred = prediction(scores.probabilities, served.classes, scores.anomaly_score)
        request_id = request.request_id or str(uuid.uuid4())
        verdict = review(mode, pred, self.decision, audit_draw(request_id))
        event = self._event(
            request, request_id, image, mode=mode, generation=generation, edge_node_id=edge_node_id
        )
        event.model.CopyFrom(decider)
        event.prediction.CopyFrom(pred)
        event.decision = decision_of(pred)
        event.human_review_required = verdict.required
        event.review_reason = verdict.reason
        event.review_detail = verdict.detail
        event.review_threshold = verdict.threshold
        event.feature_vector.extend(np.asarray(scores.features).tolist())
        event.inference_latency_ms = scores.seconds * 1000
        event.shadow_results.extend(self._shadows(decider, shadows, batch, served, event))
        return event

    def unscored(
        self,
        request: InspectRequest,
        checked: CheckedImage,
        *,
        mode: LineMode,
        detail: str,
        generation: int = 0,
        edge_node_id: str = "",
    ) -> InspectionEvent:
        """No model can decide: the unit goes to a person (decision unspecified)."""
        request_id = request.request_id or str(uuid.uuid4())
        image = checked.at_size(FALLBACK_SIZE)
        event = self._event(
            request, request_id, image, mode=mode, generation=generation, edge_node_id=edge_node_id
        )
        event.decision = DECISION_UNSPECIFIED
        event.human_review_required = True
        event.review_reason = REVIEW_REASON_MODEL_UNAVAILABLE
        event.review_detail = detail
        return event

    def _event(
        self,
        request: InspectRequest,
        request_id: str,
        image: DecodedImage,
        *,
        mode: LineMode,
        generation: int,
        edge_node_id: str,
    ) -> InspectionEvent:
        now = _timestamp(self.clock())
        return InspectionEvent(
            inspection_id=inspection_id(request.line, request_id),
            request_id=request_id,
            line=request.line,
            station=request.station,
            camera=request.camera,
            sku=request.sku,
            label_design=request.label_design,
            # The front end stores the bytes where it keeps them and fills in the URI.
            image=ImageRef(
                sha256=hashlib.sha256(request.image).hexdigest(),
                size_bytes=len(request.image),
                width=image.width,
                height=image.height,
                content_type=image.content_type,
            ),
            line_mode=mode,
            image_stats=image_stats(image.pixels),
            captured_at=request.captured_at if request.HasField("captured_at") else now,
            decided_at=now,
            routing_generation=generation,
            edge_node_id=edge_node_id,
        )

    def _shadows(
        self,
        decider: ModelRef,
        shadows: Sequence[ModelRef],
        batch: npt.NDArray[np.uint8],
        served: ServedModel,
        event: InspectionEvent,
    ) -> list[ShadowResult]:
        results = []
        for shadow in shadows:
            try:
                theirs = self.scorer.served(shadow.name, shadow.version)
                if theirs.classes != served.classes or theirs.input_size != batch.shape[1]:
                    raise BackendUnavailableError(
                        f"shadow {shadow.name} takes other inputs or classes than the decider"
                    )
                scores = self.scorer.score(shadow.name, shadow.version, batch)[0]
            except BackendUnavailableError as exc:
                self.observer.failed(shadow)
                log.warning("shadow %s v%s: %s", shadow.name, shadow.version, exc)
                continue
            self.observer.scored(shadow, scores.seconds)
            pred = prediction(scores.probabilities, served.classes, scores.anomaly_score)
            would_decide = decision_of(pred)
            self.observer.compared(shadow, decider, would_decide == event.decision)
            results.append(
                ShadowResult(
                    model=shadow,
                    prediction=pred,
                    would_decide=would_decide,
                    latency_ms=scores.seconds * 1000,
                )
            )
        return results
