"""Scenario files and the operators' verdict rules."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from inspectloop.core.errors import ConfigError
from inspectloop.simulator.operators import decide_verdict
from inspectloop.simulator.scenario import OperatorSpec, conditions_at, load_scenario
from inspectloop.simulator.traffic import UnitTruth
from inspectloop.v1.common_pb2 import DECISION_PASS, DECISION_REJECT, Decision
from inspectloop.v1.feedback_pb2 import (
    FEEDBACK_VERDICT_CONFIRMED_DEFECT,
    FEEDBACK_VERDICT_ESCAPE_REPORTED,
    FEEDBACK_VERDICT_FALSE_REJECT,
    FEEDBACK_VERDICT_GOOD_CONFIRMED,
)
from inspectloop.v1.inspection_pb2 import InspectionEvent

SCENARIOS = Path(__file__).resolve().parents[2] / "services/inspectloop/simulator/scenarios"
FIVE = {"label-redesign", "lighting-drift", "camera-blur", "new-sku", "serialization-change"}


def test_the_five_scenarios_and_the_demos_exist_and_validate() -> None:
    loaded = {load_scenario(p).name for p in SCENARIOS.glob("*.yaml")}
    assert loaded == FIVE | {"plant-story"}


def test_the_demos_redesign_comes_after_both_lines_took_their_reference() -> None:
    scenario = load_scenario(SCENARIOS / "plant-story.yaml")
    (redesign,) = scenario.events
    # The monitor takes 800 inspections of a newly stable model as each line's reference.
    assert all(line.rate_per_s * redesign.at_s > 800 for line in scenario.lines)
    assert conditions_at(scenario, "line-1", redesign.at_s).design == "B"
    assert conditions_at(scenario, "line-2", scenario.duration_s).design == "A"


def test_label_redesign_switches_design_at_its_time_on_its_line_only() -> None:
    scenario = load_scenario(SCENARIOS / "label-redesign.yaml")
    assert conditions_at(scenario, "line-1", 119.9).design == "A"
    assert conditions_at(scenario, "line-1", 120.0).design == "B"
    assert conditions_at(scenario, "line-2", 800.0).design == "A"


def test_lighting_drift_ramps_linearly_and_changes_nothing_else() -> None:
    scenario = load_scenario(SCENARIOS / "lighting-drift.yaml")
    start, middle, end = (conditions_at(scenario, "line-1", t) for t in (100, 270, 900))
    assert (start.lighting_level, start.color_temperature_k) == (1.0, 5500.0)
    assert middle.lighting_level == pytest.approx(0.875)
    assert middle.color_temperature_k == pytest.approx(4750.0)
    assert end.lighting_level == pytest.approx(0.75)
    assert end.color_temperature_k == pytest.approx(4000.0)
    assert (end.design, end.sku, end.serialization, end.blur_sigma) == (
        "A",
        "SKU-01",
        "gs1-dm",
        0.0,
    )


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("name: x\nduration_s: 10\nlines: []\n", "lines"),
        (
            "name: x\nduration_s: 10\nlines: [{id: l1, sku: SKU-01}]\n"
            "events: [{at_s: 5, line: l9, kind: label_redesign, change: {design: B}}]\n",
            "unknown line 'l9'",
        ),
        (
            "name: x\nduration_s: 10\nlines: [{id: l1, sku: SKU-01}]\n"
            "events: [{at_s: 5, line: l1, kind: label_redesign, change: {}}]\n",
            "must set change.design",
        ),
        ("name: x\nduration_s: 10\nlines: [{id: l1, sku: SKU-01, colour: red}]\n", "colour"),
        ("name: [unclosed\n", "cannot read scenario"),
    ],
)
def test_a_bad_scenario_names_its_problem(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=problem):
        load_scenario(path)


def truth(defect: str) -> UnitTruth:
    return UnitTruth("r1", "line-1", "SKU-01", "A", "gs1-dm", defect, 0.5, "0" * 64, 1.0)


def inspection(decision: Decision, review: bool = False) -> InspectionEvent:
    return InspectionEvent(inspection_id="i1", decision=decision, human_review_required=review)


PERFECT = OperatorSpec(error_rate=0.0, escape_report_rate=1.0)


@pytest.mark.parametrize(
    ("defect", "decision", "review", "verdict"),
    [
        ("ink_smudge", DECISION_REJECT, False, FEEDBACK_VERDICT_CONFIRMED_DEFECT),
        ("good", DECISION_REJECT, False, FEEDBACK_VERDICT_FALSE_REJECT),
        ("good", DECISION_PASS, True, FEEDBACK_VERDICT_GOOD_CONFIRMED),
        ("ink_smudge", DECISION_PASS, True, FEEDBACK_VERDICT_ESCAPE_REPORTED),
        ("ink_smudge", DECISION_PASS, False, FEEDBACK_VERDICT_ESCAPE_REPORTED),
    ],
)
def test_operators_judge_by_the_truth(
    defect: str, decision: Decision, review: bool, verdict: int
) -> None:
    outcome = decide_verdict(
        truth(defect), inspection(decision, review), PERFECT, np.random.default_rng(0)
    )
    assert outcome is not None and outcome[0] == verdict


def test_a_good_unit_passed_without_review_gets_no_feedback() -> None:
    assert (
        decide_verdict(truth("good"), inspection(DECISION_PASS), PERFECT, np.random.default_rng(0))
        is None
    )


def test_operator_error_rate_flips_that_share_of_verdicts() -> None:
    spec = OperatorSpec(error_rate=0.1)
    rng = np.random.default_rng(3)
    verdicts = [
        decide_verdict(truth("good"), inspection(DECISION_REJECT), spec, rng) for _ in range(5000)
    ]
    wrong = sum(1 for v in verdicts if v is not None and v[0] == FEEDBACK_VERDICT_CONFIRMED_DEFECT)
    assert 0.08 < wrong / 5000 < 0.12


def test_escapes_are_reported_at_the_configured_rate_and_delay() -> None:
    spec = OperatorSpec(escape_report_rate=0.3, escape_report_delay_s=42.0)
    rng = np.random.default_rng(5)
    outcomes = [
        decide_verdict(truth("torn_label"), inspection(DECISION_PASS), spec, rng)
        for _ in range(5000)
    ]
    reported = [o for o in outcomes if o is not None]
    assert 0.27 < len(reported) / 5000 < 0.33
    assert all(o == (FEEDBACK_VERDICT_ESCAPE_REPORTED, "torn_label", 42.0) for o in reported)
