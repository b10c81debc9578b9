"""From a model's probabilities to the line's answer: the decision and whether an operator
must confirm it, under the line's mode (DESIGN.md: auto, guarded, manual).

- ``auto``: the model decides; only a decision below ``low_confidence_threshold`` is reviewed.
- ``guarded`` (drift suspected): every reject, and every pass below ``review_threshold``.
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

from inspectloop.gateway.settings import DecisionSettings
from inspectloop.v1.common_pb2 import (
    DECISION_PASS,
    DECISION_REJECT,
    LINE_MODE_AUTO,
    LINE_MODE_GUARDED,
    LINE_MODE_MANUAL,
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

GOOD = "good"
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


def prediction(probabilities: npt.NDArray[np.float32], classes: Sequence[str]) -> Prediction:
    top = int(np.argmax(probabilities))
    return Prediction(
        scores=[
            ClassScore(class_name=c, score=float(p))
            for c, p in zip(classes, probabilities, strict=True)
        ],
        top_class=classes[top],
        confidence=float(probabilities[top]),
    )


def decision_of(pred: Prediction) -> Decision:
    """Pass when the most likely class is ``good``, reject otherwise."""
    return DECISION_PASS if pred.top_class == GOOD else DECISION_REJECT


@dataclass(frozen=True)
class Review:
    required: bool
    reason: ReviewReason
    detail: str
    threshold: float  # the low-confidence threshold applied to passes


def review(
    mode: LineMode, decision: Decision, confidence: float, settings: DecisionSettings
) -> Review:
    low = settings.low_confidence_threshold
    if mode == LINE_MODE_MANUAL:
        return Review(True, REVIEW_REASON_MANUAL_MODE, "line in manual mode", low)
    if mode == LINE_MODE_GUARDED:
        threshold = settings.review_threshold
        if decision == DECISION_REJECT:
            return Review(True, REVIEW_REASON_GUARDED_REJECT, "reject in guarded mode", threshold)
        if confidence < threshold:
            return Review(
                True,
                REVIEW_REASON_GUARDED_LOW_CONFIDENCE,
                f"confidence {confidence:.2f} < {threshold:.2f} in guarded mode",
                threshold,
            )
        return Review(False, REVIEW_REASON_UNSPECIFIED, "", threshold)
    if confidence < low:
        return Review(
            True, REVIEW_REASON_LOW_CONFIDENCE, f"confidence {confidence:.2f} < {low:.2f}", low
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
