"""The demo's headline figures, from the simulator's ground truth and the timeline's marks."""

from __future__ import annotations

from pathlib import Path

import pytest

from inspectloop.core.errors import ConfigError
from inspectloop.demo.story import design_products, fresh_work_dir, headline, line_summary, outcomes
from inspectloop.demo.timeline import Mark, Sample, Timeline
from inspectloop.simulator.scenario import Change, LineSpec, Scenario, ScenarioEvent
from inspectloop.simulator.traffic import GroundTruthStore, UnitTruth
from inspectloop.v1.common_pb2 import (
    DECISION_PASS,
    DECISION_REJECT,
    LINE_MODE_AUTO,
    LINE_MODE_MANUAL,
    ModelRef,
)
from inspectloop.v1.inspect_service_pb2 import InspectResponse


@pytest.fixture
def truth(tmp_path: Path) -> GroundTruthStore:
    store = GroundTruthStore(tmp_path / "truth.sqlite")
    # (sent at, defect, decision, reviewed) on line-1: redesign at 100, manual at 110,
    # the new model at 100% from 300.
    units = [
        (50, "good", DECISION_PASS, False),
        (60, "scratch", DECISION_REJECT, False),
        (101, "good", DECISION_REJECT, False),  # a false reject after the redesign
        (105, "scratch", DECISION_PASS, False),  # an escape before detection
        (108, "good", DECISION_PASS, False),
        (120, "scratch", DECISION_PASS, True),  # reviewed: caught by the operator
        (310, "good", DECISION_PASS, False),
        (320, "good", DECISION_REJECT, False),
        (330, "good", DECISION_PASS, False),
        (340, "good", DECISION_PASS, False),
    ]
    for i, (t, defect, decision, reviewed) in enumerate(units):
        request_id = f"r{i}"
        store.record(
            UnitTruth(
                request_id, "line-1", "SKU-01", "B", "gs1-dm", defect, 0.5, "0" * 64, float(t)
            )
        )
        store.record_response(
            request_id,
            InspectResponse(
                decision=decision,
                human_review_required=reviewed,
                inspection_id=f"i{i}",
                model=ModelRef(name="m", version="1"),
            ),
        )
    store.record(
        UnitTruth("unanswered", "line-1", "SKU-01", "B", "gs1-dm", "good", 0.0, "0" * 64, 200.0)
    )
    return store


def test_outcomes_count_by_the_ground_truth(truth: GroundTruthStore) -> None:
    assert outcomes(truth, "line-1") == {
        "inspections": 10,
        "reviews": 1,
        "false_rejects": 2,
        "escapes": 1,
    }
    assert outcomes(truth, "line-1", 100, 110)["inspections"] == 3
    assert outcomes(truth, "line-2")["inspections"] == 0


def test_headline_from_marks_and_truth(truth: GroundTruthStore) -> None:
    timeline = Timeline(
        scenario="s",
        redesign_line="line-1",
        redesign_at=100.0,
        samples=[Sample(0, "line-1", "auto", "1", "", 0, {}, {}, 0, 0, 0, 0)],
        marks=[
            Mark(30, "line-1", "mode", "guarded: new model watched"),  # before the redesign
            Mark(110, "line-1", "mode", "manual: feature_mmd and reject rate"),
            Mark(250, "line-1", "rollout", "v2 canary: canary step 1/2"),
            Mark(300, "line-1", "rollout", "v2 production_watch: promoted"),
            Mark(315, "line-1", "mode", "auto: the new model's reference is taken"),
        ],
    )
    h = headline(timeline, truth)
    assert h.inspections_until_detection == 3  # units sent at 101, 105, 108
    assert h.seconds_to_new_model_at_100 == 200
    assert h.escapes_during_transition == 1
    assert h.inspections_after_recovery == 3  # back in auto from 315
    assert h.false_reject_rate_after_recovery == pytest.approx(1 / 3)
    assert h.human_reviews == 1
    assert h.goals["detection_within_200_inspections"]
    assert not h.goals["zero_escapes_during_transition"]


def test_no_promotion_leaves_the_recovery_figures_unknown(truth: GroundTruthStore) -> None:
    timeline = Timeline(
        scenario="s", redesign_line="line-1", redesign_at=100.0, samples=[], marks=[]
    )
    h = headline(timeline, truth)
    assert h.inspections_until_detection is None
    assert h.seconds_to_new_model_at_100 is None
    assert h.false_reject_rate_after_recovery is None
    assert not any(h.goals.values())


def test_promoted_but_still_guarded_is_not_yet_recovered(truth: GroundTruthStore) -> None:
    timeline = Timeline(
        scenario="s",
        redesign_line="line-1",
        redesign_at=100.0,
        samples=[],
        marks=[
            Mark(110, "line-1", "mode", "manual: feature_mmd"),
            Mark(300, "line-1", "rollout", "v2 production_watch: promoted"),
            Mark(301, "line-1", "mode", "guarded: v2 became stable; its reference is taken"),
        ],
    )
    h = headline(timeline, truth)
    assert h.seconds_to_new_model_at_100 == 200
    assert h.false_reject_rate_after_recovery is None
    assert h.inspections_after_recovery == 0


def test_the_whole_run_of_a_line_is_counted_by_the_mode_it_was_decided_in(
    tmp_path: Path,
) -> None:
    store = GroundTruthStore(tmp_path / "t.sqlite")
    # (defect, decision, reviewed, mode)
    units = [
        ("good", DECISION_PASS, False, LINE_MODE_AUTO),
        ("scratch", DECISION_PASS, False, LINE_MODE_AUTO),  # an escape in auto
        ("good", DECISION_REJECT, False, LINE_MODE_AUTO),  # a false reject in auto
        ("scratch", DECISION_PASS, True, LINE_MODE_MANUAL),  # caught by a person
        ("good", DECISION_REJECT, True, LINE_MODE_MANUAL),
    ]
    for i, (defect, decision, reviewed, mode) in enumerate(units):
        store.record(UnitTruth(f"r{i}", "line-2", "S", "A", "gs1-dm", defect, 0.5, "0" * 64, i))
        store.record_response(
            f"r{i}",
            InspectResponse(decision=decision, human_review_required=reviewed, line_mode=mode),
        )
    summary = line_summary(store, "line-2", "manual")
    assert summary.final_mode == "manual"
    auto, manual = summary.by_mode["auto"], summary.by_mode["manual"]
    assert (auto.inspections, auto.reviews, auto.false_rejects, auto.escapes) == (3, 0, 1, 1)
    assert (manual.inspections, manual.reviews, manual.false_rejects, manual.escapes) == (
        2,
        2,
        1,
        0,
    )
    assert summary.by_mode["guarded"].inspections == 0
    assert summary.total().inspections == 5


def test_a_fresh_work_dir_keeps_only_the_seed_dataset(tmp_path: Path) -> None:
    work = tmp_path / "demo"
    fresh_work_dir(work)  # new: created and marked
    (work / "datasets" / "design-A").mkdir(parents=True)
    (work / "datasets" / "design-A" / "dataset.json").write_text("{}")
    (work / "bus").mkdir()
    (work / "timeline.json").write_text("{}")
    fresh_work_dir(work)
    assert sorted(p.name for p in work.iterdir()) == [".inspectloop-story", "datasets"]
    assert (work / "datasets" / "design-A" / "dataset.json").exists()


def test_a_directory_the_story_did_not_make_is_refused_not_emptied(tmp_path: Path) -> None:
    (tmp_path / "thesis.tex").write_text("years of work")
    with pytest.raises(ConfigError, match="not made by the plant story"):
        fresh_work_dir(tmp_path)
    assert (tmp_path / "thesis.tex").read_text() == "years of work"


def test_a_challenge_kit_covers_the_products_its_design_carries() -> None:
    scenario = Scenario(
        name="kits",
        duration_s=100,
        lines=(
            LineSpec(id="line-1", sku="SKU-01"),
            LineSpec(id="line-2", sku="SKU-02"),
            LineSpec(id="line-3", sku="SKU-03", design="B"),
        ),
        events=(
            # line-1 moves to B, then to another product on B; line-2 stays on A.
            ScenarioEvent(at_s=10, line="line-1", kind="label_redesign", change=Change(design="B")),
            ScenarioEvent(at_s=20, line="line-1", kind="new_sku", change=Change(sku="SKU-04")),
        ),
    )
    assert design_products(scenario) == {
        "A": ["SKU-01", "SKU-02"],
        "B": ["SKU-01", "SKU-03", "SKU-04"],
    }
