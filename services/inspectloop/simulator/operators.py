"""Simulated operators: they review what the system sends them and say what they found.

They read the inspections topic like the operator review UI does. A unit goes to an operator
when the system asked for human review, and every reject goes to the reject bin, where an
operator confirms it or calls it a false reject. A defective unit that passed without review
escapes; some escapes are found downstream and reported later. Operators make mistakes at a
configured rate. Each verdict is published as ``OperatorFeedback`` after a delay.

Choices are random but reproducible: each is drawn from a generator seeded by the run's seed
and the inspection id, so a redelivered inspection gets the same verdict, and the feedback id is
derived from the inspection id, so its consumers can de-duplicate it.
"""

from __future__ import annotations

import hashlib
import heapq
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from google.protobuf.timestamp_pb2 import Timestamp

from inspectloop.core.bus import EventBus
from inspectloop.core.bus.dedupe import derived_event_id
from inspectloop.core.events import Event
from inspectloop.core.topics import FEEDBACK
from inspectloop.simulator.scenario import OperatorSpec
from inspectloop.simulator.traffic import GroundTruthStore, UnitTruth
from inspectloop.v1.common_pb2 import DECISION_PASS, DECISION_REJECT
from inspectloop.v1.feedback_pb2 import (
    FEEDBACK_VERDICT_CONFIRMED_DEFECT,
    FEEDBACK_VERDICT_ESCAPE_REPORTED,
    FEEDBACK_VERDICT_FALSE_REJECT,
    FEEDBACK_VERDICT_GOOD_CONFIRMED,
    OperatorFeedback,
)
from inspectloop.v1.inspection_pb2 import InspectionEvent

log = logging.getLogger(__name__)


@dataclass(order=True)
class _Due:
    due_at: float
    feedback: OperatorFeedback = field(compare=False)


def decide_verdict(
    truth: UnitTruth, inspection: InspectionEvent, spec: OperatorSpec, rng: np.random.Generator
) -> tuple[int, str, float] | None:
    """(verdict, defect class the operator names, delay in seconds), or None when nobody looks."""
    reviewed = inspection.human_review_required or inspection.decision == DECISION_REJECT
    if reviewed:
        sees_defect = truth.is_defective
        if rng.random() < spec.error_rate:
            sees_defect = not sees_defect  # an operator's mistake
        if inspection.decision == DECISION_REJECT:
            verdict = (
                FEEDBACK_VERDICT_CONFIRMED_DEFECT if sees_defect else FEEDBACK_VERDICT_FALSE_REJECT
            )
        else:
            verdict = (
                FEEDBACK_VERDICT_ESCAPE_REPORTED if sees_defect else FEEDBACK_VERDICT_GOOD_CONFIRMED
            )
        defect_class = truth.defect_class if sees_defect and truth.is_defective else ""
        if sees_defect and not truth.is_defective:
            defect_class = "unknown"
        return verdict, defect_class, spec.review_delay_s
    escaped = inspection.decision == DECISION_PASS and truth.is_defective
    if escaped and rng.random() < spec.escape_report_rate:
        return FEEDBACK_VERDICT_ESCAPE_REPORTED, truth.defect_class, spec.escape_report_delay_s
    return None


class OperatorSimulator:
    """Consumes inspections, schedules verdicts, publishes them when due.

    ``time_scale`` is simulated seconds per wall second, as for the line simulator, so that
    review delays shrink in a fast run.
    """

    def __init__(
        self,
        bus: EventBus,
        truth: GroundTruthStore,
        spec: OperatorSpec,
        seed: int,
        *,
        time_scale: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._bus = bus
        self._truth = truth
        self._spec = spec
        self._seed = seed
        self._time_scale = time_scale
        self._clock = clock
        self._due: list[_Due] = []
        self.published = 0
        self.unknown_inspections = 0

    def _rng(self, inspection_id: str) -> np.random.Generator:
        digest = hashlib.sha256(f"{self._seed}/{inspection_id}".encode()).digest()
        return np.random.default_rng(int.from_bytes(digest[:8], "big"))

    def handle(self, event: Event[InspectionEvent]) -> None:
        inspection = event.message
        truth = self._truth.get(inspection.request_id)
        if truth is None:
            # Traffic from a real line, not from this simulator: nothing to say about it.
            self.unknown_inspections += 1
            return
        rng = self._rng(inspection.inspection_id)
        outcome = decide_verdict(truth, inspection, self._spec, rng)
        if outcome is None:
            return
        verdict, defect_class, delay_s = outcome
        operator = self._spec.operator_ids[int(rng.integers(0, len(self._spec.operator_ids)))]
        feedback = OperatorFeedback(
            feedback_id=derived_event_id(inspection.inspection_id, "operator-feedback"),
            inspection_id=inspection.inspection_id,
            line=inspection.line,
            station=inspection.station,
            sku=inspection.sku,
            # The operator sees which label is in front of them, announced or not.
            label_design=inspection.label_design or truth.design,
            image=inspection.image,
            verdict=verdict,  # type: ignore[arg-type]
            defect_class=defect_class,
            operator_id=operator,
            model=inspection.model,
            original_decision=inspection.decision,
        )
        heapq.heappush(self._due, _Due(self._clock() + delay_s / self._time_scale, feedback))

    def publish_due(self) -> int:
        """Publish every verdict whose delay has passed; returns how many."""
        count = 0
        now = self._clock()
        while self._due and self._due[0].due_at <= now:
            feedback = heapq.heappop(self._due).feedback
            stamp = Timestamp()
            stamp.GetCurrentTime()
            feedback.reviewed_at.CopyFrom(stamp)
            self._bus.publish(FEEDBACK, feedback, event_id=feedback.feedback_id)
            count += 1
        if count:
            self._bus.flush()
            self.published += count
        return count

    @property
    def pending(self) -> int:
        return len(self._due)
