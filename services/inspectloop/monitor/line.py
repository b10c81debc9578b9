"""One line's monitor: windows, detectors, quality, mode and retrain policy.

``LineMonitor`` is fed the line's inspections, operator feedback and changeovers, in bus order,
and answers with the events to publish (drift alerts, mode changes, retrain requests). It does
no I/O; the service publishes what it returns and persists its state at each commit.

How the detectors' alarms become a line mode (DESIGN.md: auto, guarded, manual):

- evidence that the model is wrong: the reject rate rose (CUSUM), or operators confirm false
  rejects or report escapes above the validated rates;
- evidence that the product looks different: feature drift (MMD) or confidence drift (KS);
- a nuisance explanation: the image statistics moved (light, exposure, focus).

Model wrong and looking different, or quality confirmed by operators: critical, ``manual``, and
a retrain is requested once enough images of the new appearance are labelled. Either alone:
warning, ``guarded``. Looking different while the image statistics moved and the reject rate did
not: a nuisance, recorded as an info alert, no mode change. When every alarm has cleared the
line returns to ``auto``; a newly stable model is watched in ``guarded`` while its reference
is taken, then the line returns to ``auto``.
"""

from __future__ import annotations

import base64
import math
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from inspectloop.core.bus.dedupe import derived_event_id
from inspectloop.core.errors import PermanentError
from inspectloop.monitor.calibration import CalibrationPlan
from inspectloop.monitor.detectors import (
    CONFIDENCE_KS,
    ESCAPE_RATE,
    FALSE_REJECT_RATE,
    FEATURE_MMD,
    IMAGE_STAT_NAMES,
    IMAGE_STATS,
    REJECT_RATE_CUSUM,
    Array,
    wilson_interval,
    z_for_confidence,
)
from inspectloop.monitor.evidence import OpenEvidence
from inspectloop.monitor.reference import Reference, ReferenceSettings, WarmUp
from inspectloop.monitor.settings import MonitorSection
from inspectloop.monitor.window import DriftWindow
from inspectloop.v1.common_pb2 import (
    DECISION_REJECT,
    LINE_MODE_AUTO,
    LINE_MODE_GUARDED,
    LINE_MODE_MANUAL,
    MODEL_ROLE_STABLE,
    ImageRef,
    LineMode,
    ModelRef,
)
from inspectloop.v1.feedback_pb2 import (
    FEEDBACK_VERDICT_CONFIRMED_DEFECT,
    FEEDBACK_VERDICT_ESCAPE_REPORTED,
    FEEDBACK_VERDICT_FALSE_REJECT,
    FEEDBACK_VERDICT_UNSPECIFIED,
    OperatorFeedback,
)
from inspectloop.v1.inspection_pb2 import InspectionEvent
from inspectloop.v1.models_pb2 import MODEL_STAGE_VALIDATED, ModelVersion
from inspectloop.v1.monitor_pb2 import (
    ALERT_SEVERITY_CRITICAL,
    ALERT_SEVERITY_INFO,
    ALERT_SEVERITY_UNSPECIFIED,
    ALERT_SEVERITY_WARNING,
    DRIFT_KIND_ESCAPES,
    DRIFT_KIND_FALSE_REJECTS,
    DRIFT_KIND_FEATURE,
    DRIFT_KIND_IMAGE_STATISTICS,
    DRIFT_KIND_PREDICTION,
    RETRAIN_REASON_CHANGEOVER,
    RETRAIN_REASON_DRIFT,
    RETRAIN_REASON_ESCAPES,
    RETRAIN_REASON_FALSE_REJECTS,
    AlertSeverity,
    ChangeoverAnnounced,
    DriftAlert,
    LineModeChanged,
    RetrainReason,
    RetrainRequest,
)

MODE_NAMES = {LINE_MODE_AUTO: "auto", LINE_MODE_GUARDED: "guarded", LINE_MODE_MANUAL: "manual"}

_KINDS = {
    FEATURE_MMD: DRIFT_KIND_FEATURE,
    IMAGE_STATS: DRIFT_KIND_IMAGE_STATISTICS,
    CONFIDENCE_KS: DRIFT_KIND_PREDICTION,
    REJECT_RATE_CUSUM: DRIFT_KIND_PREDICTION,
    FALSE_REJECT_RATE: DRIFT_KIND_FALSE_REJECTS,
    ESCAPE_RATE: DRIFT_KIND_ESCAPES,
}
_APPEARANCE = (FEATURE_MMD, CONFIDENCE_KS)
_QUALITY = (FALSE_REJECT_RATE, ESCAPE_RATE)


@dataclass(frozen=True)
class Output:
    """An event the service must publish, with the id that makes a replay harmless."""

    message: Message
    event_id: str


@dataclass
class Alarm:
    """A detector whose statistic crossed its threshold; latched until it clears."""

    alert_id: str
    detector: str
    statistic: float
    threshold: float
    onset_seq: int
    window_start: float
    window_end: float
    below: int = 0  # consecutive checks below the threshold


@dataclass
class Episode:
    """A period in which the line's model is known to be wrong (or a changeover is due):
    labelled images are counted toward the retrain it ends in."""

    reason: RetrainReason
    onset_seq: int
    detail: str
    alert_ids: list[str]
    changeover_id: str = ""
    sku: str = ""
    label_design: str = ""
    labelled: int = 0
    skus: set[str] = field(default_factory=set)
    label_designs: set[str] = field(default_factory=set)
    requested_at: float | None = None


class Observation(NamedTuple):
    """What the monitor keeps of one inspection in the quality window."""

    seq: int
    rejected: bool
    sku: str
    label_design: str
    verdict: int = FEEDBACK_VERDICT_UNSPECIFIED


def _timestamp(seconds: float) -> Timestamp:
    ts = Timestamp()
    ts.FromNanoseconds(int(seconds * 1e9))
    return ts


class LineMonitor:
    """State and decisions for one line."""

    def __init__(self, line: str, settings: MonitorSection) -> None:
        self.line = line
        self.settings = settings
        det = settings.detectors
        self.reference_settings = ReferenceSettings(
            components=det.feature_components,
            plan=calibration_plan(settings),
            reject_rate_shift=det.reject_rate_shift,
            interval_z=z_for_confidence(settings.quality.confidence),
        )
        self.mode: LineMode = LINE_MODE_AUTO
        self.mode_generation = 0
        self.mode_reason = ""
        self.model: ModelRef | None = None
        self.reference: Reference | None = None
        self.recovering = False  # a newly stable model, watched in guarded mode
        # The stable version's open evidence classes (guarded until closed), and those of
        # versions announced for the line that are not stable yet ("name/version" -> ...).
        self.evidence: OpenEvidence | None = None
        self.announced: dict[str, OpenEvidence] = {}
        self.unfit = ""  # why the stable model cannot be the line's reference, if it cannot
        self.seq = 0  # inspections of the line's stable model seen
        self.warm_up: list[tuple[Array, Array, float, bool]] = []
        self.window: DriftWindow | None = None  # exists once the reference does
        self.cusum = 0.0
        self.since_check = 0
        self.alarms: dict[str, Alarm] = {}
        self.last_statistics: dict[str, float] = {}
        self.quality: OrderedDict[str, Observation] = OrderedDict()
        self.episode: Episode | None = None
        self.samples: deque[ImageRef] = deque(maxlen=settings.retrain.sample_images)
        self.retrain_times: list[float] = []  # this line's requests (for the cooldown)
        # Requests of every line in the hour before a time; the service shares it between its
        # lines so that the per-hour limit holds for the plant, not per line.
        self.requests_in_hour: Callable[[float], int] = lambda now: sum(
            1 for t in self.retrain_times if now - t < 3600
        )

    # --- inputs ----------------------------------------------------------------------------

    def on_inspection(
        self, inspection: InspectionEvent, event_id: str, now: float
    ) -> tuple[list[Output], bool]:
        """Outputs, and whether the inspection was used (False: another model's, ignored)."""
        outputs: list[Output] = []
        model = inspection.model
        if model.role == MODEL_ROLE_STABLE and not self._is_current(model):
            outputs += self._new_model(model, event_id, now)
        if self.model is None or not self._is_current(model):
            return outputs, False  # a canary's or an old version's decision: not this reference
        if inspection.inspection_id and inspection.inspection_id in self.quality:
            # A retried request's inspection (its id is derived from the line's request id),
            # or a redelivered event: counted once, while it is among the recent inspections.
            return outputs, False
        features, stats = _observation(inspection)
        rejected = inspection.decision == DECISION_REJECT
        confidence = float(inspection.prediction.confidence)
        self.seq += 1
        self._remember(inspection, rejected)
        if inspection.image.uri:
            self.samples.append(inspection.image)
        if self.reference is None or self.window is None:
            self._check_dimension(features, self.warm_up[0][0] if self.warm_up else None)
            self.warm_up.append((np.array(features), np.array(stats), confidence, rejected))
            if len(self.warm_up) >= self.settings.detectors.reference_size:
                outputs += self._build_reference(event_id, now)
            return outputs, True
        self._check_dimension(features, self.reference.feature_mean)
        self.window.append(features, stats, confidence, _seconds(inspection.captured_at) or now)
        self.cusum = self.reference.cusum.update(self.cusum, rejected)
        self.since_check += 1
        if self.since_check >= self.settings.detectors.check_every and self.window.full:
            self.since_check = 0
            outputs += self._check(event_id, now)
        return outputs, True

    def on_feedback(self, feedback: OperatorFeedback, event_id: str, now: float) -> list[Output]:
        observation = self.quality.get(feedback.inspection_id)
        if observation is None or observation.verdict != FEEDBACK_VERDICT_UNSPECIFIED:
            return []  # not one of this model's recent inspections, or already counted
        self.quality[feedback.inspection_id] = Observation(
            observation.seq,
            observation.rejected,
            observation.sku,
            observation.label_design,
            feedback.verdict,
        )
        episode = self.episode
        if episode is not None and observation.seq >= episode.onset_seq:
            design = feedback.label_design or observation.label_design
            if not episode.label_design or design in ("", episode.label_design):
                episode.labelled += 1
                if observation.sku:
                    episode.skus.add(observation.sku)
                if design:
                    episode.label_designs.add(design)
        outputs = self._observe_evidence(feedback, event_id, now)
        outputs += self._check_quality(event_id, now)
        outputs += self._maybe_retrain(event_id, now)
        return outputs

    def on_model_version(self, model: ModelVersion, event_id: str, now: float) -> list[Output]:
        """A version announced for this line: remember its open evidence classes, if any, for
        when it becomes the line's stable model."""
        evidence = OpenEvidence.of(model) if model.stage == MODEL_STAGE_VALIDATED else None
        if evidence is None:
            return []
        key = f"{model.name}/{model.version}"
        self.announced[key] = evidence
        while len(self.announced) > 8:  # versions that never became stable
            self.announced.pop(next(iter(self.announced)))
        if self.model is not None and self._is_current(
            ModelRef(name=model.name, version=model.version)
        ):
            self.evidence = self.announced.pop(key)
            return self._settle(event_id, now)
        return []

    def _observe_evidence(
        self, feedback: OperatorFeedback, event_id: str, now: float
    ) -> list[Output]:
        evidence = self.evidence
        if evidence is None or not evidence.open_classes():
            return []
        if feedback.verdict == FEEDBACK_VERDICT_CONFIRMED_DEFECT:
            evidence.observe(feedback.defect_class, detected=True)
        elif feedback.verdict == FEEDBACK_VERDICT_ESCAPE_REPORTED:
            evidence.observe(
                feedback.defect_class, detected=False, weight=self.settings.evidence.escape_weight
            )
        if evidence.open_classes():
            return []
        return self._settle(
            event_id, now, "operator-confirmed units closed the version's evidence bound"
        )

    def on_changeover(
        self, changeover: ChangeoverAnnounced, event_id: str, now: float
    ) -> list[Output]:
        """A new SKU or label design is announced: guard the line and collect labels for it."""
        self.episode = Episode(
            reason=RETRAIN_REASON_CHANGEOVER,
            onset_seq=self.seq + 1,
            detail=f"changeover to sku {changeover.sku or '?'} design "
            f"{changeover.label_design or '?'} announced by {changeover.announced_by or '?'}",
            alert_ids=[],
            changeover_id=changeover.changeover_id,
            sku=changeover.sku,
            label_design=changeover.label_design,
        )
        return self._set_mode(
            max(self.mode, LINE_MODE_GUARDED), self.episode.detail, [], event_id, now
        )

    # --- model changes and the reference ---------------------------------------------------

    def _is_current(self, model: ModelRef) -> bool:
        return (
            self.model is not None
            and model.name == self.model.name
            and model.version == self.model.version
        )

    def _new_model(self, model: ModelRef, event_id: str, now: float) -> list[Output]:
        first = self.model is None
        self.model = ModelRef(name=model.name, version=model.version, role=MODEL_ROLE_STABLE)
        self.reference = None
        self.unfit = ""
        self.warm_up = []
        self.window = None
        self.cusum = 0.0
        self.since_check = 0
        self.alarms = {}
        self.quality.clear()
        self.episode = None
        self.evidence = self.announced.pop(f"{model.name}/{model.version}", None)
        if first and self.mode == LINE_MODE_AUTO and self.evidence is None:
            return []  # the line's first model: nothing to distrust yet
        self.recovering = True
        return self._set_mode(
            LINE_MODE_GUARDED,
            f"model {model.name} v{model.version} became stable; guarded while its reference "
            "is taken",
            [],
            event_id,
            now,
        )

    def _build_reference(self, event_id: str, now: float) -> list[Output]:
        assert self.model is not None
        features, stats, confidences, rejects = zip(*self.warm_up, strict=True)
        warm_up = WarmUp(
            np.stack(features), np.stack(stats), np.array(confidences), np.array(rejects)
        )
        self.reference = Reference.build(
            derived_event_id(event_id, "reference"),
            self.model.name,
            self.model.version,
            warm_up,
            self.reference_settings,
        )
        self.warm_up = []
        self.window = DriftWindow(self.reference, self.settings.detectors.window)
        limit = self.settings.quality.max_reference_reject_rate
        if self.reference.reject_rate > limit:
            # Not a reference but a wrong model: manual until another model is stable, and the
            # warm-up's images already count toward the retrain.
            self.unfit = (
                f"model {self.model.name} v{self.model.version} rejected "
                f"{self.reference.reject_rate:.0%} of its first {self.reference.size} "
                f"inspections (> {limit:.0%}): it does not fit this line"
            )
            self.recovering = False
            self.episode = Episode(
                RETRAIN_REASON_DRIFT, self.seq - self.reference.size + 1, self.unfit, []
            )
            return self._set_mode(LINE_MODE_MANUAL, self.unfit, [], event_id, now)
        if self.recovering:
            self.recovering = False
            return self._settle(event_id, now, "the new model's reference is taken")
        return []

    # --- detectors -------------------------------------------------------------------------

    def _check(self, event_id: str, now: float) -> list[Output]:
        ref, window = self.reference, self.window
        assert ref is not None and window is not None
        values = {**window.statistics(), REJECT_RATE_CUSUM: self.cusum}
        self.last_statistics.update(values)
        start, end = window.time_span()
        fired = []
        for detector, value in values.items():
            threshold = ref.thresholds[detector]
            alarm = self.alarms.get(detector)
            if value > threshold:
                if alarm is None:
                    alarm = Alarm(
                        derived_event_id(event_id, f"alert:{detector}"),
                        detector,
                        value,
                        threshold,
                        self.seq,
                        start,
                        end,
                    )
                    self.alarms[detector] = alarm
                    fired.append(alarm)
                alarm.below = 0
                alarm.statistic = max(alarm.statistic, value)
            elif alarm is not None:
                alarm.below += 1
                if alarm.below >= self.settings.detectors.clear_checks:
                    del self.alarms[detector]
        nuisance = self._nuisance_explanation(window) if fired else ""
        return self._judge(fired, nuisance, event_id, now)

    def _nuisance_explanation(self, window: DriftWindow) -> str:
        """Which image statistics moved beyond the threshold, largest shift first."""
        ref = window.reference
        means, z = window.image_stat_means(), window.image_stat_shifts()
        moved = [int(c) for c in np.argsort(-z) if z[c] > ref.thresholds[IMAGE_STATS]]
        parts = [
            f"{IMAGE_STAT_NAMES[c]} {means[c] / ref.stats_mean[c] - 1:+.0%}"
            for c in moved or [int(np.argmax(z))]
            if ref.stats_mean[c]
        ]
        return ", ".join(parts) + " with the reject rate unchanged"

    def _check_quality(self, event_id: str, now: float) -> list[Output]:
        """Operator-confirmed false rejects and reported escapes against the validated rates."""
        q = self.settings.quality
        z = z_for_confidence(q.confidence)
        n = len(self.quality)
        passed = sum(1 for o in self.quality.values() if not o.rejected)
        false_rejects = sum(
            1 for o in self.quality.values() if o.verdict == FEEDBACK_VERDICT_FALSE_REJECT
        )
        escapes = sum(
            1 for o in self.quality.values() if o.verdict == FEEDBACK_VERDICT_ESCAPE_REPORTED
        )
        fired = []
        cleared = False
        for detector, hits, total, limit in (
            (FALSE_REJECT_RATE, false_rejects, n, q.max_false_reject_rate),
            (ESCAPE_RATE, escapes, passed, q.max_escape_rate),
        ):
            rate = hits / total if total else 0.0
            self.last_statistics[detector] = rate
            low = wilson_interval(hits, total, z)[0]
            if low > limit and detector not in self.alarms:
                first = next(iter(self.quality.values()), None)
                alarm = Alarm(
                    derived_event_id(event_id, f"alert:{detector}"),
                    detector,
                    rate,
                    limit,
                    first.seq if first else self.seq,
                    now,
                    now,
                )
                self.alarms[detector] = alarm
                fired.append(alarm)
            elif low <= limit and detector in self.alarms:
                del self.alarms[detector]
                cleared = True
        if not fired and not cleared:
            return []
        return self._judge(fired, "", event_id, now)

    # --- decisions -------------------------------------------------------------------------

    def severity(self) -> tuple[AlertSeverity, bool]:
        """The line's alert severity from its active alarms, and whether it is a nuisance."""
        active = set(self.alarms)
        if active & set(_QUALITY):
            return ALERT_SEVERITY_CRITICAL, False
        appearance = bool(active & set(_APPEARANCE))
        if REJECT_RATE_CUSUM in active:
            return (ALERT_SEVERITY_CRITICAL if appearance else ALERT_SEVERITY_WARNING), False
        if appearance:
            if IMAGE_STATS in active:
                return ALERT_SEVERITY_INFO, True
            return ALERT_SEVERITY_WARNING, False
        if IMAGE_STATS in active:
            return ALERT_SEVERITY_INFO, True
        return ALERT_SEVERITY_UNSPECIFIED, False

    def _judge(
        self, fired: list[Alarm], nuisance_explanation: str, event_id: str, now: float
    ) -> list[Output]:
        severity, nuisance = self.severity()
        outputs = [
            self._alert(a, severity or ALERT_SEVERITY_INFO, nuisance, nuisance_explanation)
            for a in fired
        ]
        if severity == ALERT_SEVERITY_CRITICAL and (
            self.episode is None or self.episode.reason == RETRAIN_REASON_CHANGEOVER
        ):
            active = set(self.alarms)
            reason = (
                RETRAIN_REASON_ESCAPES
                if ESCAPE_RATE in active
                else RETRAIN_REASON_FALSE_REJECTS
                if FALSE_REJECT_RATE in active
                else RETRAIN_REASON_DRIFT
            )
            onset = min(a.onset_seq for a in self.alarms.values())
            if self.episode is None:
                self.episode = Episode(reason, onset, self._describe(), [])
            self.episode.alert_ids = [a.alert_id for a in self.alarms.values()]
        outputs += self._settle(event_id, now)
        outputs += self._maybe_retrain(event_id, now)
        return outputs

    def _settle(self, event_id: str, now: float, reason: str = "") -> list[Output]:
        """Sets the mode the active alarms call for."""
        reason = reason or self._describe()
        severity, _ = self.severity()
        if self.unfit:
            mode, reason = LINE_MODE_MANUAL, self.unfit
        elif severity == ALERT_SEVERITY_CRITICAL:
            mode = LINE_MODE_MANUAL
        elif severity == ALERT_SEVERITY_WARNING or self.recovering:
            mode = LINE_MODE_GUARDED
            # Only a recovering line gets here with no alarm to name.
            reason = reason or (
                "every alarm has cleared; guarded while the new model's reference is taken"
            )
        elif self.evidence is not None and self.evidence.open_classes():
            mode = LINE_MODE_GUARDED
            reason = (
                f"v{self.evidence.version} has too little real evidence for "
                f"{self.evidence.describe()}: guarded until operator-confirmed units close "
                f"the bound ({self.evidence.required:.2f})"
            )
        elif self.episode is not None and self.episode.reason == RETRAIN_REASON_CHANGEOVER:
            mode = max(LINE_MODE_GUARDED, self.mode)
        else:
            mode = LINE_MODE_AUTO
            if self.episode is not None and self.episode.requested_at is None:
                self.episode = None  # the change went away before a model was asked for
            reason = reason or "every drift and quality alarm has cleared"
        ids = [a.alert_id for a in self.alarms.values()]
        return self._set_mode(mode, reason, ids, event_id, now)

    def _describe(self) -> str:
        parts = [
            f"{a.detector} {a.statistic:.4g} > {a.threshold:.4g}"
            for a in sorted(self.alarms.values(), key=lambda a: a.detector)
        ]
        return "; ".join(parts)

    def _set_mode(
        self, mode: LineMode, reason: str, alert_ids: list[str], event_id: str, now: float
    ) -> list[Output]:
        if mode == self.mode:
            return []
        previous = self.mode
        self.mode = mode
        self.mode_reason = reason
        self.mode_generation += 1
        change = LineModeChanged(
            change_id=derived_event_id(event_id, f"mode:{self.mode_generation}"),
            line=self.line,
            previous_mode=previous,
            new_mode=mode,
            reason=reason,
            triggering_alert_ids=alert_ids,
            changed_by="monitor",
            changed_at=_timestamp(now),
            generation=self.mode_generation,
        )
        return [Output(change, change.change_id)]

    def _alert(
        self, alarm: Alarm, severity: AlertSeverity, nuisance: bool, explanation: str
    ) -> Output:
        ref = self.reference
        alert = DriftAlert(
            alert_id=alarm.alert_id,
            line=self.line,
            detector=alarm.detector,
            kind=_KINDS[alarm.detector],
            statistic=alarm.statistic,
            threshold=alarm.threshold,
            severity=severity,
            nuisance=nuisance,
            nuisance_explanation=explanation if nuisance else "",
            reference_id=ref.reference_id if ref else "",
            detected_at=_timestamp(alarm.window_end),
        )
        alert.window.size = (
            len(self.window or ()) if alarm.detector not in _QUALITY else len(self.quality)
        )
        alert.window.start.CopyFrom(_timestamp(alarm.window_start))
        alert.window.end.CopyFrom(_timestamp(alarm.window_end))
        alert.sample_images.extend(self.samples)
        if self.model is not None:
            alert.model.CopyFrom(self.model)
        recent = list(self.quality.values())[-self.settings.detectors.window :]
        skus = {o.sku for o in recent if o.sku}
        designs = {o.label_design for o in recent if o.label_design}
        if len(skus) == 1:
            alert.sku = skus.pop()
        if len(designs) == 1:
            alert.label_design = designs.pop()
        return Output(alert, alert.alert_id)

    def _maybe_retrain(self, event_id: str, now: float) -> list[Output]:
        episode = self.episode
        policy = self.settings.retrain
        if episode is None or episode.requested_at is not None:
            return []
        if episode.labelled < policy.min_labelled_images:
            return []
        if self.retrain_times and now - self.retrain_times[-1] < policy.cooldown_s:
            return []  # debounced: checked again at the next labelled image
        if self.requests_in_hour(now) >= policy.max_per_hour:
            return []
        return [self._retrain_request(episode, event_id, now)]

    def _retrain_request(self, episode: Episode, event_id: str, now: float) -> Output:
        request = RetrainRequest(
            request_id=derived_event_id(event_id, "retrain"),
            reason=episode.reason,
            reason_detail=episode.detail,
            requested_by="monitor",
            requested_at=_timestamp(now),
            min_labelled_images=self.settings.retrain.min_labelled_images,
            changeover_id=episode.changeover_id,
        )
        for alarm in self.alarms.values():
            if alarm.alert_id not in episode.alert_ids:
                continue
            evidence = request.evidence.add(
                alert_id=alarm.alert_id,
                detector=alarm.detector,
                statistic=alarm.statistic,
                threshold=alarm.threshold,
            )
            evidence.window.start.CopyFrom(_timestamp(alarm.window_start))
            evidence.window.end.CopyFrom(_timestamp(alarm.window_end))
            evidence.sample_images.extend(self.samples)
        request.scope.lines.append(self.line)
        request.scope.skus.extend(sorted(episode.skus | ({episode.sku} - {""})))
        request.scope.label_designs.extend(
            sorted(episode.label_designs | ({episode.label_design} - {""}))
        )
        if self.model is not None:
            request.parent_model.CopyFrom(self.model)
        episode.requested_at = now
        self.retrain_times.append(now)
        return Output(request, request.request_id)

    # --- bookkeeping -----------------------------------------------------------------------

    def _remember(self, inspection: InspectionEvent, rejected: bool) -> None:
        self.quality[inspection.inspection_id] = Observation(
            self.seq, rejected, inspection.sku, inspection.label_design
        )
        while len(self.quality) > self.settings.quality.window:
            self.quality.popitem(last=False)

    def _check_dimension(self, features: Sequence[float], expected: Array | None) -> None:
        if expected is not None and len(features) != len(expected):
            assert self.model is not None
            raise PermanentError(
                f"inspection on line {self.line} has a feature vector of {len(features)} "
                f"values; model {self.model.name} v{self.model.version} gives {len(expected)}"
            )

    def rates(self) -> dict[str, float]:
        """Feedback rates over the quality window (for metrics)."""
        return {d: self.last_statistics.get(d, 0.0) for d in (FALSE_REJECT_RATE, ESCAPE_RATE)}

    # --- persistence -----------------------------------------------------------------------

    def to_state(self) -> dict[str, Any]:
        """Everything needed to resume after a restart, JSON-ready."""
        return {
            "line": self.line,
            "mode": self.mode,
            "mode_generation": self.mode_generation,
            "mode_reason": self.mode_reason,
            "model": _b64(self.model),
            "reference": _encode_reference(self.reference),
            "recovering": self.recovering,
            "evidence": None if self.evidence is None else self.evidence.to_state(),
            "announced": {k: e.to_state() for k, e in self.announced.items()},
            "unfit": self.unfit,
            "seq": self.seq,
            "warm_up": _encode_arrays(self.warm_up),
            "window": None if self.window is None else self.window.to_state(),
            "cusum": self.cusum,
            "since_check": self.since_check,
            "alarms": [vars(a) for a in self.alarms.values()],
            "last_statistics": self.last_statistics,
            "quality": [[k, *o] for k, o in self.quality.items()],
            "episode": None
            if self.episode is None
            else {
                **vars(self.episode),
                "skus": sorted(self.episode.skus),
                "label_designs": sorted(self.episode.label_designs),
            },
            "samples": [_b64(s) for s in self.samples],
            "retrain_times": self.retrain_times,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any], settings: MonitorSection) -> LineMonitor:
        m = cls(state["line"], settings)
        m.mode = state["mode"]
        m.mode_generation = state["mode_generation"]
        m.mode_reason = state["mode_reason"]
        m.model = _unb64(ModelRef, state["model"])
        m.reference = _decode_reference(state["reference"])
        m.recovering = state["recovering"]
        if state.get("evidence") is not None:
            m.evidence = OpenEvidence.from_state(state["evidence"])
        m.announced = {
            k: OpenEvidence.from_state(e) for k, e in (state.get("announced") or {}).items()
        }
        m.unfit = state["unfit"]
        m.seq = state["seq"]
        m.warm_up = _decode_arrays(state["warm_up"])
        if m.reference is not None and state["window"] is not None:
            m.window = DriftWindow.from_state(
                state["window"], m.reference, settings.detectors.window
            )
        m.cusum = state["cusum"]
        m.since_check = state["since_check"]
        m.alarms = {a["detector"]: Alarm(**a) for a in state["alarms"]}
        m.last_statistics = dict(state["last_statistics"])
        for key, *values in state["quality"]:
            m.quality[key] = Observation(*values)
        if state["episode"] is not None:
            e = dict(state["episode"])
            e["skus"], e["label_designs"] = set(e["skus"]), set(e["label_designs"])
            m.episode = Episode(**e)
        m.samples.extend(s for s in (_unb64(ImageRef, v) for v in state["samples"]) if s)
        m.retrain_times = list(state["retrain_times"])
        return m


def calibration_plan(settings: MonitorSection) -> CalibrationPlan:
    det = settings.detectors
    return CalibrationPlan(
        ert=det.expected_run_time,
        window=det.window,
        check_every=det.check_every,
        streams=det.calibration_streams,
        stream_length=det.calibration_stream_length,
        seed=det.seed,
    )


def _observation(inspection: InspectionEvent) -> tuple[list[float], tuple[float, ...]]:
    """The feature vector and image statistics of an inspection, or PermanentError. Plain
    Python values: the window converts them in batches, at its checks."""
    features = list(inspection.feature_vector)
    if not features:
        raise PermanentError(f"inspection {inspection.inspection_id} has no feature vector")
    if not inspection.HasField("image_stats"):
        raise PermanentError(f"inspection {inspection.inspection_id} has no image statistics")
    s = inspection.image_stats
    stats = (s.brightness, s.contrast, s.sharpness, s.mean_r, s.mean_g, s.mean_b)
    # One sum is finite exactly when every term is (an infinity or NaN propagates).
    if not math.isfinite(sum(features) + sum(stats)):
        raise PermanentError(
            f"inspection {inspection.inspection_id} has a non-finite feature or image statistic"
        )
    return features, stats


def _seconds(ts: Any) -> float:
    return float(ts.seconds + ts.nanos / 1e9) if ts.seconds or ts.nanos else 0.0


def _b64(message: Message | None) -> str | None:
    return None if message is None else base64.b64encode(message.SerializeToString()).decode()


def _unb64(cls: Any, value: str | None) -> Any:
    if value is None:
        return None
    message = cls()
    message.ParseFromString(base64.b64decode(value))
    return message


def _encode_reference(reference: Reference | None) -> dict[str, Any] | None:
    if reference is None:
        return None
    state = reference.to_state()
    state["arrays"] = base64.b64encode(state["arrays"]).decode()
    return state


def _decode_reference(state: dict[str, Any] | None) -> Reference | None:
    if state is None:
        return None
    return Reference.from_state({**state, "arrays": base64.b64decode(state["arrays"])})


def _encode_arrays(rows: list[tuple[Array, Array, float, bool]]) -> list[Any]:
    return [[f.tolist(), s.tolist(), c, r] for f, s, c, r in rows]


def _decode_arrays(rows: list[Any]) -> list[tuple[Array, Array, float, bool]]:
    return [(np.array(f), np.array(s), float(c), bool(r)) for f, s, c, r in rows]
