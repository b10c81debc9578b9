"""From a model's scores to the line's answer: the decision and whether an operator must
confirm it, under the line's mode (DESIGN.md: auto, guarded, manual).

The decision combines the model's two families: a unit passes only if the classifier's most
likely class is ``good`` *and* the anomaly detector does not flag it (score >= 1). A unit the
classifier passes and the detector flags is rejected and goes to a person, who names the defect
(the next training learns it).

- ``auto``: the model decides; a decision below ``low_confidence_threshold`` and an
  anomaly-only reject are reviewed.
- ``guarded`` (drift suspected, or too little evidence for a class): every reject, every pass
  below ``review_threshold``, and a ``guarded_pass_sample`` share of the other passes.
- ``manual`` (the model is known wrong): every image.

Line modes arrive as ``LineModeChanged`` events from the monitor; a change with a generation not
above the line's current one is stale (a replay or an out-of-order copy) and ignored.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import grpc
import numpy as np
import numpy.typing as npt

from inspectloop.core.taxonomy import GOOD_CLASS
from inspectloop.inspection.settings import DecisionSettings
from inspectloop.v1.common_pb2 import (
    DECISION_PASS,
    DECISION_REJECT,
    LINE_MODE_AUTO,
    LINE_MODE_GUARDED,
    LINE_MODE_MANUAL,
    REVIEW_REASON_ANOMALY,
    REVIEW_REASON_AUDIT_SAMPLE,
    REVIEW_REASON_GUARDED_LOW_CONFIDENCE,
    REVIEW_REASON_GUARDED_REJECT,
    REVIEW_REASON_LOW_CONFIDENCE,
    REVIEW_REASON_MANUAL_MODE,
    REVIEW_REASON_UNSPECIFIED,
    ClassScore,
    Decision,
    LineMode,
    Prediction,
    ReviewReason,
)
from inspectloop.v1.inspect_service_pb2 import InspectResponse
from inspectloop.v1.inspection_pb2 import InspectionEvent
from inspectloop.v1.monitor_pb2 import LineModeChanged

MODE_NAMES = {LINE_MODE_AUTO: "auto", LINE_MODE_GUARDED: "guarded", LINE_MODE_MANUAL: "manual"}
_INSPECTION_NAMESPACE = uuid.UUID("0d5f2b8e-8c1e-4c4b-9a57-6f0f3c1e2a90")


def inspection_id(line: str, request_id: str) -> str:
    """The id of a line's request's inspection: the same for every retry of the request, whether
    the gateway or the line's edge agent answers it."""
    return str(uuid.uuid5(_INSPECTION_NAMESPACE, f"{line}/{request_id}"))


def answer_of(event: InspectionEvent) -> InspectResponse:
    """The line's answer to the request its InspectionEvent records (gateway and edge agent)."""
    return InspectResponse(
        decision=event.decision,
        prediction=event.prediction,
        model=event.model,
        human_review_required=event.human_review_required,
        review_reason=event.review_reason,
        review_detail=event.review_detail,
        inspection_id=event.inspection_id,
        latency_ms=event.latency_ms,
        line_mode=event.line_mode,
    )


def grpc_code(http_status: int) -> grpc.StatusCode:
    """The gRPC status of a refused inspect request, from its HTTP status (413, 503, other 4xx)."""
    if http_status == 503:
        return grpc.StatusCode.UNAVAILABLE
    if http_status == 413:
        return grpc.StatusCode.RESOURCE_EXHAUSTED
    return grpc.StatusCode.INVALID_ARGUMENT


def prediction(
    probabilities: npt.NDArray[np.float32], classes: Sequence[str], anomaly_score: float = 0.0
) -> Prediction:
    top = int(np.argmax(probabilities))
    return Prediction(
        scores=[
            ClassScore(class_name=c, score=float(p))
            for c, p in zip(classes, probabilities, strict=True)
        ],
        top_class=classes[top],
        confidence=float(probabilities[top]),
        anomaly_score=float(anomaly_score),
    )


def anomalous(pred: Prediction) -> bool:
    """Whether the anomaly detector flags the unit (its score is over its threshold)."""
    return pred.anomaly_score >= 1.0


def decision_of(pred: Prediction) -> Decision:
    """Pass when the most likely class is ``good`` and the anomaly detector does not flag the
    unit; reject otherwise."""
    return (
        DECISION_PASS if pred.top_class == GOOD_CLASS and not anomalous(pred) else DECISION_REJECT
    )


def audit_draw(request_id: str) -> float:
    """A number in [0, 1) fixed by the request id: the same retry is sampled the same way."""
    return uuid.uuid5(_INSPECTION_NAMESPACE, f"audit/{request_id}").int / 2**128


@dataclass(frozen=True)
class Review:
    required: bool
    reason: ReviewReason
    detail: str
    threshold: float  # the low-confidence threshold applied to passes


def review(
    mode: LineMode,
    pred: Prediction,
    settings: DecisionSettings,
    draw: float = 1.0,
) -> Review:
    """Whether a person must look at the unit, and why. ``draw`` (:func:`audit_draw`) picks
    the sampled passes of a guarded line."""
    if mode == LINE_MODE_MANUAL:
        low = settings.low_confidence_threshold
        return Review(True, REVIEW_REASON_MANUAL_MODE, "line in manual mode", low)
    if mode == LINE_MODE_GUARDED:
        return _guarded(pred, settings, draw)
    return _auto(pred, settings)


def _guarded(pred: Prediction, settings: DecisionSettings, draw: float) -> Review:
    threshold = settings.review_threshold
    if decision_of(pred) == DECISION_REJECT:
        return Review(True, REVIEW_REASON_GUARDED_REJECT, "reject in guarded mode", threshold)
    if pred.confidence < threshold:
        return Review(
            True,
            REVIEW_REASON_GUARDED_LOW_CONFIDENCE,
            f"confidence {pred.confidence:.2f} < {threshold:.2f} in guarded mode",
            threshold,
        )
    if draw < settings.guarded_pass_sample:
        return Review(
            True,
            REVIEW_REASON_AUDIT_SAMPLE,
            f"pass sampled for review in guarded mode ({settings.guarded_pass_sample:.0%})",
            threshold,
        )
    return Review(False, REVIEW_REASON_UNSPECIFIED, "", threshold)


def _auto(pred: Prediction, settings: DecisionSettings) -> Review:
    low = settings.low_confidence_threshold
    if decision_of(pred) == DECISION_REJECT and pred.top_class == GOOD_CLASS:
        return Review(
            True,
            REVIEW_REASON_ANOMALY,
            f"anomaly score {pred.anomaly_score:.2f} >= 1 on a unit the classifier passes",
            low,
        )
    if pred.confidence < low:
        return Review(
            True,
            REVIEW_REASON_LOW_CONFIDENCE,
            f"confidence {pred.confidence:.2f} < {low:.2f}",
            low,
        )
    return Review(False, REVIEW_REASON_UNSPECIFIED, "", low)


class LineModes:
    """Each line's mode as the monitor last set it (auto until it says otherwise)."""

    def __init__(self) -> None:
        self._modes: dict[str, tuple[int, LineMode]] = {}
        self._lock = threading.Lock()

    def apply(self, change: LineModeChanged) -> bool:
        if change.new_mode not in (LINE_MODE_AUTO, LINE_MODE_GUARDED, LINE_MODE_MANUAL):
            raise ValueError(f"line mode change {change.change_id} has no valid new mode")
        with self._lock:
            current = self._modes.get(change.line)
            if current is not None and change.generation <= current[0]:
                return False
            self._modes[change.line] = (change.generation, change.new_mode)
            return True

    def mode(self, line: str) -> LineMode:
        with self._lock:
            entry = self._modes.get(line)
        return entry[1] if entry else LINE_MODE_AUTO
