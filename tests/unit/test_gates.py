"""Validation gates: each passes at its threshold and fails just past it, with a reason."""

from __future__ import annotations

import math

import pytest

from inspectloop.trainer.fit import Metrics, metrics_from_predictions
from inspectloop.trainer.gates import (
    GateResult,
    GateSettings,
    GoldenPredictions,
    LatencyStats,
    all_passed,
    evaluate_gates,
    rejection_reasons,
)

CLASSES = ("good", "ink_smudge", "torn_label")


def _metrics(
    *,
    good_ok: int = 1000,
    good_as_defect: int = 0,
    smudge_ok: int = 1000,
    smudge_as_good: int = 0,
    smudge_as_torn: int = 0,
    torn_ok: int = 1000,
) -> Metrics:
    labels: list[int] = []
    predictions: list[int] = []

    def add(true: int, predicted: int, count: int) -> None:
        labels.extend([true] * count)
        predictions.extend([predicted] * count)

    add(0, 0, good_ok)
    add(0, 1, good_as_defect)
    add(1, 1, smudge_ok)
    add(1, 0, smudge_as_good)
    add(1, 2, smudge_as_torn)
    add(2, 2, torn_ok)
    return metrics_from_predictions(labels, predictions, CLASSES)


def _golden(correct: dict[str, bool]) -> GoldenPredictions:
    ids = tuple(sorted(correct))
    return GoldenPredictions(ids, tuple(1 for _ in ids), tuple(1 if correct[i] else 0 for i in ids))


def _gates(
    metrics: Metrics | None = None,
    golden: GoldenPredictions | None = None,
    parent: GoldenPredictions | None = None,
    latency: LatencyStats | float | None = 2.0,
    settings: GateSettings | None = None,
) -> dict[str, GateResult]:
    results = evaluate_gates(
        metrics or _metrics(), golden, parent, latency, settings or GateSettings()
    )
    return {r.name: r for r in results}


def test_a_perfect_candidate_passes_every_gate_in_order() -> None:
    results = evaluate_gates(_metrics(), None, None, 2.0, GateSettings())

    assert [r.name for r in results] == [
        "accuracy",
        "recall/ink_smudge",
        "recall/torn_label",
        "false_reject_rate",
        "escape_rate",
        "golden_set",
        "latency_p95_ms",
    ]
    assert all_passed(results)
    assert rejection_reasons(results) == []


def test_defaults_are_the_issue_thresholds() -> None:
    settings = GateSettings()
    assert settings.min_accuracy == 0.997
    assert settings.min_recall_per_class == 0.99
    assert settings.max_false_reject_rate == 0.003
    assert settings.max_escape_rate == 0.003
    assert settings.max_golden_regressions == 0
    for name, field in GateSettings.model_fields.items():
        assert field.description, f"{name} lacks a description"


def test_accuracy_passes_at_its_threshold_and_fails_below() -> None:
    # 3000 images; 9 errors is exactly 99.7 %, 10 is below.
    at = _gates(_metrics(smudge_ok=991, smudge_as_torn=9))["accuracy"]
    below = _gates(_metrics(smudge_ok=990, smudge_as_torn=10))["accuracy"]

    assert at.passed and at.value == pytest.approx(0.997)
    assert not below.passed
    assert below.threshold == 0.997 and below.higher_is_better
    assert "below 99.700%" in below.detail


def test_recall_is_gated_per_defect_class_at_its_threshold() -> None:
    settings = GateSettings(min_accuracy=0.0)
    at = _gates(_metrics(smudge_ok=990, smudge_as_torn=10), settings=settings)
    below = _gates(_metrics(smudge_ok=989, smudge_as_torn=11), settings=settings)

    assert at["recall/ink_smudge"].passed
    assert not below["recall/ink_smudge"].passed
    assert "989/1000 images" in below["recall/ink_smudge"].detail
    assert below["recall/torn_label"].passed  # the other class is judged on its own
    assert "recall/good" not in below  # good's recall is the false reject rate's business


def test_recall_overrides_replace_the_default_for_one_class() -> None:
    settings = GateSettings(min_accuracy=0.0, recall_overrides={"ink_smudge": 0.999})
    gates = _gates(_metrics(smudge_ok=995, smudge_as_torn=5), settings=settings)

    assert not gates["recall/ink_smudge"].passed
    assert gates["recall/ink_smudge"].threshold == 0.999
    assert gates["recall/torn_label"].threshold == 0.99


def test_a_recall_override_for_an_unknown_class_is_a_failure() -> None:
    gates = _gates(settings=GateSettings(recall_overrides={"scratch": 0.9}))
    assert not gates["recall_overrides"].passed
    assert "scratch" in gates["recall_overrides"].detail


def test_a_defect_class_without_validation_images_fails_its_gate() -> None:
    gates = _gates(_metrics(torn_ok=0))

    assert not gates["recall/torn_label"].passed
    assert math.isnan(gates["recall/torn_label"].value)
    assert "no data" in gates["recall/torn_label"].detail


def test_false_reject_rate_passes_at_its_threshold_and_fails_above() -> None:
    settings = GateSettings(min_accuracy=0.0)
    at = _gates(_metrics(good_ok=997, good_as_defect=3), settings=settings)["false_reject_rate"]
    above = _gates(_metrics(good_ok=996, good_as_defect=4), settings=settings)["false_reject_rate"]

    assert at.passed and at.value == pytest.approx(0.003)
    assert not above.passed and not above.higher_is_better
    assert "4 of 1000 good" in above.detail
    assert "above" in above.detail


def test_escape_rate_passes_at_its_threshold_and_fails_above() -> None:
    # 2000 defective images: 6 escapes is 0.3 %, 7 is over.
    settings = GateSettings(min_accuracy=0.0, min_recall_per_class=0.0)
    at = _gates(_metrics(smudge_ok=994, smudge_as_good=6), settings=settings)["escape_rate"]
    above = _gates(_metrics(smudge_ok=993, smudge_as_good=7), settings=settings)["escape_rate"]

    assert at.passed and at.value == pytest.approx(0.003)
    assert not above.passed
    assert "7 of 2000 defective" in above.detail


def test_rates_without_data_fail() -> None:
    no_good = _gates(_metrics(good_ok=0))["false_reject_rate"]
    assert not no_good.passed and "no data" in no_good.detail


def test_latency_passes_at_the_budget_and_fails_over_it() -> None:
    settings = GateSettings(max_latency_ms=5.0)
    stats = LatencyStats(p50_ms=3.0, p95_ms=5.0, mean_ms=3.2, runs=200, threads=1, batch=1)
    at = _gates(latency=stats, settings=settings)["latency_p95_ms"]
    over = _gates(latency=5.01, settings=settings)["latency_p95_ms"]
    missing = _gates(latency=None, settings=settings)["latency_p95_ms"]

    assert at.passed and at.value == 5.0
    assert "1 thread(s)" in at.detail
    assert not over.passed and "over 5 ms" in over.detail
    assert not missing.passed and "not measured" in missing.detail


def test_golden_regression_of_one_item_fails_the_gate() -> None:
    parent = _golden({"a": True, "b": True, "c": False})
    candidate = _golden({"a": True, "b": False, "c": True})  # fixed c, broke b

    gate = _gates(golden=candidate, parent=parent)["golden_set"]

    assert not gate.passed
    assert gate.value == 1 and gate.threshold == 0
    assert "now wrong: b" in gate.detail
    # Same golden accuracy as the parent, still a regression: item by item.
    assert candidate.accuracy == parent.accuracy


def test_golden_improvement_without_regression_passes() -> None:
    parent = _golden({"a": True, "b": False})
    candidate = _golden({"a": True, "b": True, "new": False})  # new items cannot regress

    gate = _gates(golden=candidate, parent=parent)["golden_set"]

    assert gate.passed and gate.value == 0


def test_golden_items_the_candidate_was_not_evaluated_on_count_as_regressions() -> None:
    parent = _golden({"a": True, "b": True})
    candidate = _golden({"a": True})

    gate = _gates(golden=candidate, parent=parent)["golden_set"]

    assert not gate.passed and "not evaluated: b" in gate.detail


def test_golden_regressions_allowed_by_setting() -> None:
    parent = _golden({"a": True, "b": True})
    candidate = _golden({"a": True, "b": False})
    settings = GateSettings(max_golden_regressions=1)

    assert _gates(golden=candidate, parent=parent, settings=settings)["golden_set"].passed


def test_golden_gate_without_parent_or_golden_set() -> None:
    first = _gates(golden=_golden({"a": True}), parent=None)["golden_set"]
    assert first.passed and "no parent" in first.detail

    absent = _gates(golden=None)["golden_set"]
    assert absent.passed and "no golden set" in absent.detail

    required = _gates(golden=None, settings=GateSettings(require_golden_set=True))["golden_set"]
    assert not required.passed


def test_golden_predictions_from_probabilities() -> None:
    golden = GoldenPredictions.from_probabilities(["x", "y"], [0, 1], [[0.9, 0.1], [0.8, 0.2]])
    assert golden.predictions == (0, 0)
    assert golden.correct_ids == frozenset({"x"})
    assert golden.accuracy == 0.5
    with pytest.raises(ValueError, match="unique"):
        GoldenPredictions(("a", "a"), (0, 0), (0, 0))


def test_rejection_reasons_and_proto() -> None:
    results = evaluate_gates(
        _metrics(good_ok=990, good_as_defect=10), None, None, 50.0, GateSettings()
    )
    reasons = rejection_reasons(results)

    assert not all_passed(results)
    assert [r.split(":")[0] for r in reasons] == ["accuracy", "false_reject_rate", "latency_p95_ms"]
    message = next(r for r in results if r.name == "false_reject_rate").to_proto()
    assert message.gate == "false_reject_rate"
    assert not message.passed and not message.higher_is_better
    assert message.threshold == pytest.approx(0.003)


def test_gate_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from inspectloop.core.settings import load_settings  # noqa: PLC0415
    from inspectloop.trainer.settings import TrainerSettings  # noqa: PLC0415

    monkeypatch.setenv("INSPECTLOOP_TRAINER__GATES__MAX_LATENCY_MS", "7.5")
    monkeypatch.setenv("INSPECTLOOP_TRAINER__GATES__RECALL_OVERRIDES", '{"torn_label": 0.995}')

    settings = load_settings(TrainerSettings)

    assert settings.trainer.gates.max_latency_ms == 7.5
    assert settings.trainer.gates.recall_threshold("torn_label") == 0.995
