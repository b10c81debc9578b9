"""One line's monitor on synthetic streams: modes, nuisance, retrain policy, persistence."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pytest

from inspectloop.core.errors import PermanentError
from inspectloop.monitor.evidence import OpenEvidence
from inspectloop.monitor.line import LineMonitor, Output
from inspectloop.monitor.settings import (
    DetectorSettings,
    MonitorSection,
    QualitySettings,
    RetrainPolicy,
)
from inspectloop.v1.common_pb2 import (
    DECISION_PASS,
    DECISION_REJECT,
    LINE_MODE_AUTO,
    LINE_MODE_GUARDED,
    LINE_MODE_MANUAL,
    MODEL_ROLE_CANARY,
    MODEL_ROLE_STABLE,
    ModelRole,
)
from inspectloop.v1.feedback_pb2 import (
    FEEDBACK_VERDICT_CONFIRMED_DEFECT,
    FEEDBACK_VERDICT_ESCAPE_REPORTED,
    FEEDBACK_VERDICT_FALSE_REJECT,
    FEEDBACK_VERDICT_GOOD_CONFIRMED,
    FeedbackVerdict,
    OperatorFeedback,
)
from inspectloop.v1.inspection_pb2 import InspectionEvent
from inspectloop.v1.models_pb2 import MODEL_STAGE_REJECTED, MODEL_STAGE_VALIDATED, ModelVersion
from inspectloop.v1.monitor_pb2 import (
    ALERT_SEVERITY_CRITICAL,
    RETRAIN_REASON_CHANGEOVER,
    RETRAIN_REASON_DRIFT,
    ChangeoverAnnounced,
    DriftAlert,
    LineModeChanged,
    RetrainRequest,
)

DIM = 16
SETTINGS = MonitorSection(
    detectors=DetectorSettings(
        reference_size=400,
        window=50,
        check_every=10,
        expected_run_time=1_000_000,
        calibration_streams=60,
        calibration_stream_length=1000,
    ),
    quality=QualitySettings(window=500),
    retrain=RetrainPolicy(min_labelled_images=40, cooldown_s=600),
)


@dataclass
class Appearance:
    """How the line's images look to the model."""

    shift: float = 0.0  # feature shift, in reference standard deviations, on 4 dimensions
    brightness: float = 0.55
    reject_rate: float = 0.05
    design: str = "A"


class Line:
    """A synthetic line: inspections of model v1 as the gateway would publish them."""

    def __init__(self, seed: int = 0, version: str = "1") -> None:
        self.rng = np.random.default_rng(seed)
        self.n = 0
        self.version = version
        self.monitor = LineMonitor("line-1", SETTINGS)
        self.outputs: list[Output] = []
        self.now = 1_000_000.0

    def inspection(self, look: Appearance, role: ModelRole = MODEL_ROLE_STABLE) -> InspectionEvent:
        self.n += 1
        features = self.rng.normal(size=DIM)
        features[:4] += look.shift
        rejected = self.rng.random() < look.reject_rate
        event = InspectionEvent(
            inspection_id=f"i-{self.n}",
            line="line-1",
            sku="4711",
            label_design=look.design,
            decision=DECISION_REJECT if rejected else DECISION_PASS,
            feature_vector=features.tolist(),
        )
        event.model.name, event.model.version, event.model.role = "m", self.version, role
        event.prediction.confidence = float(self.rng.beta(20, 1))
        stats = event.image_stats
        stats.brightness = look.brightness + self.rng.normal(0, 0.02)
        stats.contrast = 0.2 + self.rng.normal(0, 0.01)
        stats.sharpness = 0.01 + self.rng.normal(0, 0.001)
        stats.mean_r, stats.mean_g, stats.mean_b = (
            look.brightness + self.rng.normal(0, 0.02) for _ in range(3)
        )
        event.image.uri = f"blob://{self.n}"
        event.captured_at.FromSeconds(int(self.now))
        return event

    def run(self, n: int, look: Appearance, **kw: ModelRole) -> list[InspectionEvent]:
        events = []
        for _ in range(n):
            self.now += 1
            event = self.inspection(look, **kw)
            out, _ = self.monitor.on_inspection(event, f"e-{self.n}", self.now)
            self.outputs += out
            events.append(event)
        return events

    def review(self, events: list[InspectionEvent], verdict: FeedbackVerdict) -> None:
        for e in events:
            self.now += 0.1
            fb = OperatorFeedback(
                feedback_id=f"f-{e.inspection_id}",
                inspection_id=e.inspection_id,
                line=e.line,
                sku=e.sku,
                label_design=e.label_design,
                verdict=verdict,
            )
            self.outputs += self.monitor.on_feedback(fb, fb.feedback_id, self.now)

    def review_as(
        self, events: list[InspectionEvent], verdict: FeedbackVerdict, defect_class: str
    ) -> None:
        for e in events:
            self.now += 0.1
            fb = OperatorFeedback(
                feedback_id=f"f-{e.inspection_id}",
                inspection_id=e.inspection_id,
                line=e.line,
                verdict=verdict,
                defect_class=defect_class,
            )
            self.outputs += self.monitor.on_feedback(fb, fb.feedback_id, self.now)

    def of(self, kind: type) -> list:  # type: ignore[type-arg]
        return [o.message for o in self.outputs if isinstance(o.message, kind)]


@pytest.fixture(scope="module")
def warmed() -> Iterator[dict]:  # type: ignore[type-arg]
    """A line past its warm-up (the reference is calibrated once for the module)."""
    line = Line()
    line.run(SETTINGS.detectors.reference_size, Appearance())
    yield line.monitor.to_state()


def resume(state: dict, seed: int) -> Line:  # type: ignore[type-arg]
    line = Line(seed)
    line.monitor = LineMonitor.from_state(json.loads(json.dumps(state)), SETTINGS)
    line.n = 10_000
    return line


def test_warm_up_builds_a_calibrated_reference(warmed: dict) -> None:  # type: ignore[type-arg]
    monitor = LineMonitor.from_state(warmed, SETTINGS)
    assert monitor.reference is not None
    assert monitor.reference.size == SETTINGS.detectors.reference_size
    assert set(monitor.reference.thresholds) == {
        "feature_mmd",
        "image_stats",
        "confidence_ks",
        "reject_rate_cusum",
    }
    assert all(t > 0 for t in monitor.reference.thresholds.values())
    assert monitor.mode == LINE_MODE_AUTO


def test_a_stable_line_raises_no_alarm(warmed: dict) -> None:  # type: ignore[type-arg]
    line = resume(warmed, seed=1)
    line.run(20_000, Appearance())
    assert line.of(DriftAlert) == []
    assert line.monitor.mode == LINE_MODE_AUTO


def test_a_redesign_goes_manual_fast_and_asks_for_a_model_once_labelled(
    warmed: dict,  # type: ignore[type-arg]
) -> None:
    line = resume(warmed, seed=2)
    line.run(200, Appearance())
    redesign = Appearance(shift=3.0, brightness=0.45, reject_rate=0.9, design="B")
    events = line.run(60, redesign)
    modes = line.of(LineModeChanged)
    assert modes and modes[-1].new_mode == LINE_MODE_MANUAL
    alerts = line.of(DriftAlert)
    assert {"feature_mmd", "reject_rate_cusum"} <= {a.detector for a in alerts}
    assert any(a.severity == ALERT_SEVERITY_CRITICAL and not a.nuisance for a in alerts)
    assert line.of(RetrainRequest) == []  # nothing labelled yet
    events += line.run(100, redesign)
    line.review(events[-60:], FEEDBACK_VERDICT_FALSE_REJECT)
    (request,) = line.of(RetrainRequest)
    assert request.reason == RETRAIN_REASON_DRIFT
    assert list(request.scope.lines) == ["line-1"]
    assert list(request.scope.label_designs) == ["B"]
    assert request.parent_model.version == "1"
    assert {e.detector for e in request.evidence} >= {"feature_mmd", "reject_rate_cusum"}
    assert all(e.sample_images for e in request.evidence)
    # debounced: more labels do not ask again
    more = line.run(100, redesign)
    line.review(more, FEEDBACK_VERDICT_FALSE_REJECT)
    assert len(line.of(RetrainRequest)) == 1


def test_lighting_drift_is_a_nuisance(warmed: dict) -> None:  # type: ignore[type-arg]
    line = resume(warmed, seed=3)
    dim = Appearance(shift=0.3, brightness=0.42)  # darker; the model barely notices
    line.run(3000, dim)
    alerts = line.of(DriftAlert)
    assert any(a.detector == "image_stats" for a in alerts)
    assert all(a.nuisance for a in alerts)
    assert "brightness" in alerts[0].nuisance_explanation
    assert line.of(LineModeChanged) == []
    assert line.of(RetrainRequest) == []


def test_operator_confirmed_false_rejects_go_manual(warmed: dict) -> None:  # type: ignore[type-arg]
    line = resume(warmed, seed=4)
    events = line.run(400, Appearance())
    rejects = [e for e in events if e.decision == DECISION_REJECT]
    line.review(rejects[: len(rejects) // 2], FEEDBACK_VERDICT_CONFIRMED_DEFECT)
    assert line.monitor.mode == LINE_MODE_AUTO  # confirmed defects are no evidence
    line.review(rejects[len(rejects) // 2 :], FEEDBACK_VERDICT_FALSE_REJECT)
    assert line.monitor.mode == LINE_MODE_MANUAL
    assert any(a.detector == "false_reject_rate" for a in line.of(DriftAlert))


def test_canary_inspections_do_not_feed_the_stable_reference(
    warmed: dict,  # type: ignore[type-arg]
) -> None:
    line = resume(warmed, seed=5)
    line.version = "2"
    line.run(500, Appearance(shift=4.0, reject_rate=0.5), role=MODEL_ROLE_CANARY)
    assert line.of(DriftAlert) == []
    assert line.monitor.model is not None and line.monitor.model.version == "1"


def test_a_new_stable_model_is_guarded_until_its_reference_is_taken(
    warmed: dict,  # type: ignore[type-arg]
) -> None:
    line = resume(warmed, seed=6)
    line.version = "2"
    line.run(10, Appearance(shift=2.0))
    assert line.monitor.mode == LINE_MODE_GUARDED
    line.run(SETTINGS.detectors.reference_size, Appearance(shift=2.0))
    assert line.monitor.mode == LINE_MODE_AUTO
    assert [m.new_mode for m in line.of(LineModeChanged)] == [LINE_MODE_GUARDED, LINE_MODE_AUTO]
    assert [m.generation for m in line.of(LineModeChanged)] == [1, 2]


def test_a_new_model_whose_escape_alarm_clears_goes_back_to_guarded_and_says_why(
    warmed: dict,  # type: ignore[type-arg]
) -> None:
    line = resume(warmed, seed=8)
    line.version = "2"
    passes = line.run(20, Appearance(reject_rate=0.0))
    line.review(passes[:1], FEEDBACK_VERDICT_ESCAPE_REPORTED)  # 1 of 20 passes: alarm
    assert line.monitor.mode == LINE_MODE_MANUAL
    more = line.run(300, Appearance(reject_rate=0.0))  # still short of the new reference
    line.review(more[-1:], FEEDBACK_VERDICT_GOOD_CONFIRMED)  # 1 of 320: the alarm clears
    assert line.monitor.mode == LINE_MODE_GUARDED
    changes = line.of(LineModeChanged)
    assert [m.new_mode for m in changes] == [LINE_MODE_GUARDED, LINE_MODE_MANUAL, LINE_MODE_GUARDED]
    assert "reference is taken" in changes[-1].reason, changes[-1].reason


def test_redelivered_inspections_and_verdicts_change_no_statistic(
    warmed: dict,  # type: ignore[type-arg]
) -> None:
    line = resume(warmed, seed=9)
    events = line.run(120, Appearance(shift=1.0, reject_rate=0.2))
    rejects = [e for e in events if e.decision == DECISION_REJECT]
    line.review(rejects[:10], FEEDBACK_VERDICT_FALSE_REJECT)
    before = json.dumps(line.monitor.to_state(), sort_keys=True)
    outputs = len(line.outputs)
    for event in events:  # the same events again, as a retry or a redelivery brings them
        out, used = line.monitor.on_inspection(event, f"again-{event.inspection_id}", line.now)
        assert out == [] and not used
    line.review(rejects[:10], FEEDBACK_VERDICT_FALSE_REJECT)
    assert json.dumps(line.monitor.to_state(), sort_keys=True) == before
    assert len(line.outputs) == outputs


def test_a_changeover_guards_the_line_and_retrains_on_its_labels(
    warmed: dict,  # type: ignore[type-arg]
) -> None:
    line = resume(warmed, seed=7)
    announce = ChangeoverAnnounced(
        changeover_id="c-1", lines=["line-1"], sku="4711", label_design="B", announced_by="mes"
    )
    line.outputs += line.monitor.on_changeover(announce, "c-1", line.now)
    assert line.monitor.mode == LINE_MODE_GUARDED
    events = line.run(80, Appearance(design="B"))
    line.review(events[:45], FEEDBACK_VERDICT_CONFIRMED_DEFECT)
    (request,) = line.of(RetrainRequest)
    assert request.reason == RETRAIN_REASON_CHANGEOVER
    assert request.changeover_id == "c-1"
    assert list(request.scope.label_designs) == ["B"]


def test_state_survives_a_restart_exactly(warmed: dict) -> None:  # type: ignore[type-arg]
    """Running straight through and stopping, persisting and resuming halfway give the same
    events: nothing is lost and no alarm is raised by the restart."""
    straight = resume(warmed, seed=8)
    straight.run(300, Appearance())
    straight.run(300, Appearance(shift=3.0, reject_rate=0.9))

    split = resume(warmed, seed=8)
    split.run(300, Appearance())
    saved = json.loads(json.dumps(split.monitor.to_state()))
    split.monitor = LineMonitor.from_state(saved, SETTINGS)
    split.run(300, Appearance(shift=3.0, reject_rate=0.9))
    assert [o.event_id for o in split.outputs] == [o.event_id for o in straight.outputs]
    assert [o.message for o in split.outputs] == [o.message for o in straight.outputs]


def test_malformed_inspections_are_permanent_errors(warmed: dict) -> None:  # type: ignore[type-arg]
    line = resume(warmed, seed=9)
    event = line.inspection(Appearance())
    del event.feature_vector[:]
    with pytest.raises(PermanentError, match="no feature vector"):
        line.monitor.on_inspection(event, "x", line.now)
    event = line.inspection(Appearance())
    event.feature_vector.append(1.0)
    with pytest.raises(PermanentError, match=f"{DIM + 1} values"):
        line.monitor.on_inspection(event, "y", line.now)
    event = line.inspection(Appearance())
    event.feature_vector[0] = float("nan")
    with pytest.raises(PermanentError, match="non-finite"):
        line.monitor.on_inspection(event, "z", line.now)


def test_a_model_that_rejects_its_warm_up_is_not_a_reference() -> None:
    """A model that rejects most of a line's units (started after a redesign) keeps the line
    in manual, whatever the detectors say later, and its warm-up counts toward the retrain."""
    line = Line(seed=10)
    events = line.run(SETTINGS.detectors.reference_size, Appearance(reject_rate=0.9))
    assert line.monitor.mode == LINE_MODE_MANUAL
    assert "does not fit this line" in line.of(LineModeChanged)[0].reason
    line.run(300, Appearance(reject_rate=0.99))
    assert line.monitor.mode == LINE_MODE_MANUAL
    line.review(events[-60:], FEEDBACK_VERDICT_FALSE_REJECT)
    (request,) = line.of(RetrainRequest)
    assert request.reason == RETRAIN_REASON_DRIFT


def test_retrain_requests_are_rate_limited_across_lines(
    warmed: dict,  # type: ignore[type-arg]
) -> None:
    line = resume(warmed, seed=11)
    line.monitor.requests_in_hour = lambda now: SETTINGS.retrain.max_per_hour  # budget spent
    line.run(100, Appearance())
    events = line.run(160, Appearance(shift=3.0, reject_rate=0.9, design="B"))
    line.review(events[-80:], FEEDBACK_VERDICT_FALSE_REJECT)
    assert line.monitor.mode == LINE_MODE_MANUAL
    assert line.of(RetrainRequest) == []
    line.monitor.requests_in_hour = lambda now: 0  # an hour later
    line.review(
        line.run(1, Appearance(shift=3.0, reject_rate=0.9, design="B")),
        FEEDBACK_VERDICT_FALSE_REJECT,
    )
    assert len(line.of(RetrainRequest)) == 1


def _announced(version: str, open_classes: dict[str, tuple[int, int]]) -> ModelVersion:
    model = ModelVersion(
        name="m",
        version=version,
        stage=MODEL_STAGE_VALIDATED,
        required_recall_lower_bound=0.7,
        open_evidence_classes=sorted(open_classes),
    )
    model.scope.lines.append("line-1")
    for name, (examples, detected) in {"ink_smudge": (20, 20), **open_classes}.items():
        model.class_evidence.add(class_name=name, examples=examples, detected=detected)
    return model


def test_a_version_with_open_evidence_runs_guarded_until_confirmed_units_close_it(
    warmed: dict,  # type: ignore[type-arg]
) -> None:
    line = resume(warmed, seed=11)
    # Version 2 was accepted with 3 of 3 torn labels found: a bound of 0.37, under 0.7.
    line.outputs += line.monitor.on_model_version(
        _announced("2", {"torn_label": (3, 3)}), "mv-2", line.now
    )
    assert line.monitor.mode == LINE_MODE_AUTO  # not the line's model yet
    line.version = "2"
    line.run(SETTINGS.detectors.reference_size + 10, Appearance())
    assert line.monitor.mode == LINE_MODE_GUARDED  # its reference is taken, the bound is open
    assert line.monitor.evidence is not None
    assert line.monitor.evidence.open_classes() == ["torn_label"]
    assert "torn_label 3/3" in line.monitor.evidence.describe()
    # Feedback counts on inspections still in the quality window (this version's, recent).
    rejects = [e for e in line.run(400, Appearance()) if e.decision == DECISION_REJECT]
    assert len(rejects) >= 9 and line.monitor.alarms == {}
    # Confirmed tears: 12 of 12 bound the recall at 0.78 (3 + 9 of 3 + 9 at 0.78 too, but
    # 3 + 5 of 8 only at 0.69).
    line.review_as(rejects[:5], FEEDBACK_VERDICT_CONFIRMED_DEFECT, "torn_label")
    assert line.monitor.mode == LINE_MODE_GUARDED
    line.review_as(rejects[5:9], FEEDBACK_VERDICT_CONFIRMED_DEFECT, "torn_label")
    assert line.monitor.mode == LINE_MODE_AUTO
    assert "closed the version's evidence bound" in line.of(LineModeChanged)[-1].reason
    # The state survives a restart with the counts.
    again = LineMonitor.from_state(json.loads(json.dumps(line.monitor.to_state())), SETTINGS)
    assert again.evidence is not None and not again.evidence.open_classes()


def test_an_escape_counts_as_the_misses_a_guarded_sample_stands_for() -> None:
    evidence = OpenEvidence.of(_announced("2", {"torn_label": (3, 3)}))
    assert evidence is not None and evidence.open_classes() == ["torn_label"]
    evidence.observe("torn_label", detected=False, weight=10)
    evidence.observe("good", detected=True)  # not a class to prove: ignored
    for _ in range(39):
        evidence.observe("torn_label", detected=True)
    assert evidence.counts["torn_label"] == [52, 42]  # 42 of 52: bound 0.696
    assert evidence.open_classes() == ["torn_label"]
    evidence.observe("torn_label", detected=True)  # 43 of 53: 0.701
    assert evidence.open_classes() == []


def test_a_version_without_open_evidence_changes_nothing(
    warmed: dict,  # type: ignore[type-arg]
) -> None:
    line = resume(warmed, seed=12)
    assert line.monitor.on_model_version(_announced("2", {}), "mv-2", line.now) == []
    rejected = _announced("3", {"torn_label": (1, 1)})
    rejected.stage = MODEL_STAGE_REJECTED
    assert line.monitor.on_model_version(rejected, "mv-3", line.now) == []
    assert line.monitor.announced == {}
