"""Independent validation: real held-out images only, per design, with the evidence per class."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from inspectloop.core.evidence import recall_lower_bound
from inspectloop.trainer.acceptance import Acceptance, combined_predictions, evaluate_acceptance
from inspectloop.trainer.gates import GateResult, GateSettings
from inspectloop.trainer.settings import AcceptanceSettings

CLASSES = ("good", "ink_smudge", "torn_label")


def test_clopper_pearson_lower_bounds() -> None:
    # One-sided 95%: n of n detected gives 0.05 ** (1 / n).
    assert recall_lower_bound(10, 10) == pytest.approx(0.05**0.1, abs=1e-9)
    assert recall_lower_bound(59, 59) == pytest.approx(0.05 ** (1 / 59), abs=1e-9)
    assert recall_lower_bound(9, 10) == pytest.approx(0.6058, abs=1e-3)
    assert recall_lower_bound(0, 10) == 0.0
    assert recall_lower_bound(0, 0) == 0.0


def test_the_anomaly_detector_turns_a_pass_into_the_likeliest_defect() -> None:
    probabilities = np.array(
        [[0.9, 0.06, 0.04], [0.9, 0.03, 0.07], [0.2, 0.7, 0.1]], dtype=np.float32
    )
    scores = np.array([0.5, 1.2, 0.1], dtype=np.float32)
    assert combined_predictions(probabilities, scores, 0).tolist() == [0, 2, 1]


def _one_hot(labels: list[int], predicted: list[int]) -> npt.NDArray[np.float32]:
    out = np.full((len(labels), len(CLASSES)), 0.01, dtype=np.float32)
    out[np.arange(len(labels)), predicted] = 0.98
    return out


def test_only_real_held_out_images_count_each_design_on_its_own() -> None:
    # Design A: 300 good, 20 of each defect, all right. Design B: 300 good, 10 smudges (all
    # found) and 3 tears (found), held out; its synthetic images are all wrong, and ignored.
    labels: list[int] = []
    predicted: list[int] = []
    records: list[dict[str, str]] = []

    def add(n: int, label: int, guess: int, design: str, split: str) -> None:
        labels.extend([label] * n)
        predicted.extend([guess] * n)
        records.extend({"split": split, "label_design": design} for _ in range(n))

    add(300, 0, 0, "A", "test")
    add(20, 1, 1, "A", "test")
    add(20, 2, 2, "A", "test")
    add(300, 0, 0, "B", "test")
    add(10, 1, 1, "B", "challenge")
    add(3, 2, 2, "B", "challenge")
    add(200, 1, 0, "B", "synthetic_test")  # every synthetic defect escapes: reported apart
    add(500, 1, 0, "B", "train")  # never evaluated
    acceptance, gates = evaluate_acceptance(
        CLASSES,
        labels=np.array(labels),
        probabilities=_one_hot(labels, predicted),
        anomaly_scores=np.zeros(len(labels), np.float32),
        records=records,
        gates=GateSettings(),
        settings=AcceptanceSettings(),
        evidence_designs=("B",),
    )
    assert set(acceptance.by_design) == {"A", "B"}
    assert acceptance.by_design["B"].escape_rate == 0.0
    assert acceptance.sources["B"] == {"test": 300, "challenge": 13}
    assert acceptance.synthetic is not None and acceptance.synthetic.escape_rate == 1.0
    assert all(g.passed for g in gates), [g for g in gates if not g.passed]
    evidence = {e.class_name: e for e in acceptance.evidence}
    assert (evidence["ink_smudge"].examples, evidence["ink_smudge"].detected) == (10, 10)
    assert evidence["torn_label"].examples == 3  # design B's only
    # Three of three bound the recall at 0.37 only: the class stays open (the line guarded).
    assert acceptance.open_classes == ["torn_label"]


def test_an_escape_on_one_design_fails_its_gate_whatever_the_other_design_does() -> None:
    labels = [0] * 400 + [1] * 30 + [2] * 30 + [0] * 400 + [1] * 30 + [2] * 30
    predicted = [0] * 400 + [1] * 30 + [2] * 30 + [0] * 400 + [1] * 25 + [0] * 5 + [2] * 30
    records = [{"split": "test", "label_design": "A"}] * 460
    records += [{"split": "challenge", "label_design": "B"}] * 460
    acceptance, gates = evaluate_acceptance(
        CLASSES,
        labels=np.array(labels),
        probabilities=_one_hot(labels, predicted),
        anomaly_scores=np.zeros(len(labels), np.float32),
        records=records,
        gates=GateSettings(),
        settings=AcceptanceSettings(),
    )
    failed = {g.name for g in gates if not g.passed}
    assert "B/escape_rate" in failed and not any(n.startswith("A/") for n in failed)
    assert acceptance.by_design["B"].escape_rate == pytest.approx(5 / 60)  # of all defects


def test_no_real_held_out_images_is_a_failed_gate() -> None:
    _, gates = evaluate_acceptance(
        CLASSES,
        labels=np.array([1, 0]),
        probabilities=_one_hot([1, 0], [1, 0]),
        anomaly_scores=np.zeros(2, np.float32),
        records=[{"split": "synthetic_test", "label_design": "B"}] * 2,
        gates=GateSettings(),
        settings=AcceptanceSettings(),
    )
    assert [(g.name, g.passed) for g in gates] == [("acceptance_set", False)]


def test_a_defect_rejected_under_another_class_passes_the_gates_and_its_reason_is_reported() -> (
    None
):
    # 400 good passed; 40 smudges all rejected, but half of them named torn_label; 40 tears
    # rejected as tears. The decision is perfect; the reason is right for 460 of 480 units...
    labels = [0] * 400 + [1] * 40 + [2] * 40
    predicted = [0] * 400 + [1] * 20 + [2] * 20 + [2] * 40
    records = [{"split": "test", "label_design": "N"} for _ in labels]

    def judge(predicted: list[int]) -> tuple[Acceptance, list[GateResult]]:
        return evaluate_acceptance(
            CLASSES,
            labels=np.array(labels),
            probabilities=_one_hot(labels, predicted),
            anomaly_scores=np.zeros(len(labels), np.float32),
            records=records,
            gates=GateSettings(),
            settings=AcceptanceSettings(),
        )

    acceptance, gates = judge(predicted)
    assert all(g.passed for g in gates), [g for g in gates if not g.passed]
    assert acceptance.by_design["N"].accuracy == 1.0
    assert acceptance.by_design["N"].per_class_recall["ink_smudge"] == 1.0
    assert acceptance.reasons["N"].accuracy == pytest.approx(460 / 480)
    assert acceptance.reasons["N"].per_class_recall["ink_smudge"] == 0.5
    # ... whereas a smudge that passes is an escape, and fails the gates.
    _, gates = judge([0] * 401 + [1] * 19 + [2] * 20 + [2] * 40)
    failed = {g.name for g in gates if not g.passed}
    assert {"escape_rate", "recall/ink_smudge"} <= failed
