"""Independent validation: what a version is accepted on, criteria fixed in advance.

A frozen model is accepted (GMP's word for it) on images no training step saw, judged by the
combined decision it will make in production (a unit passes only if the classifier says
``good`` and the anomaly detector does not flag it):

- ``test``: real held-out images: the reference datasets' test split and the operator-labelled
  production images that the snapshot holds out by image hash;
- ``challenge``: the plant's seeded-defect kits, uploaded labelled through the registry
  (``inspectloop datasets upload --challenge``);
- the golden set, which must not regress against the parent (``gates``).

Each label design present is judged on its own, with the production gates of
:mod:`inspectloop.trainer.gates` (a design the version does well on cannot hide one it fails).
Synthetic images (``synthetic_test``) are evaluated and reported apart and never count.

The gates judge the inspection's decision, pass or reject, as a qualification does (USP <1790>
asks, per defect type, how often a defective unit is rejected): a defective unit rejected under
another defect class than its own was rightly rejected, so it counts as correct for accuracy and
toward its own class's recall. Which class the model named (the reason code operators see) is
reported beside it (``reasons``), never hidden, but it does not let a defect through: a reason
learnt from synthesised defects cannot be exact for a design whose real defects are still few.

Where a defect class has few real examples, a perfect score proves little: the one-sided 95%
Clopper-Pearson lower bound of its recall says how little. A class whose bound is under
``required_recall_lower_bound`` is an *open* class: the version may still be accepted, but the
monitor keeps its lines ``guarded`` (every reject and a share of the passes reviewed) until
operator-confirmed production units of the class close the bound. The default 0.7 is the
reject zone of the Knapp method that USP <1790> builds visual inspection qualification on
(defects a qualified inspection must reject with a probability of at least 0.7); ten of ten
detected gives 0.74.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from inspectloop.core.evidence import recall_lower_bound
from inspectloop.trainer.fit import Metrics, metrics_from_predictions
from inspectloop.trainer.gates import GateResult, GateSettings, evaluate_gates
from inspectloop.trainer.settings import AcceptanceSettings

ACCEPTANCE_SPLITS = ("test", "challenge")
SYNTHETIC_SPLIT = "synthetic_test"


def combined_predictions(
    probabilities: npt.NDArray[np.float32],
    anomaly_scores: npt.NDArray[np.float32],
    good_index: int,
) -> npt.NDArray[np.int64]:
    """The class each unit gets under the production decision: the classifier's, except that
    a unit the anomaly detector flags is never ``good`` (it takes the classifier's likeliest
    defect class)."""
    predictions = probabilities.argmax(axis=1).astype(np.int64)
    flagged = (anomaly_scores >= 1.0) & (predictions == good_index)
    if flagged.any():
        defects = probabilities.copy()
        defects[:, good_index] = -1.0
        predictions[flagged] = defects[flagged].argmax(axis=1)
    return np.asarray(predictions, dtype=np.int64)


def decision_classes(
    labels: npt.NDArray[np.int64], predictions: npt.NDArray[np.int64], good_index: int
) -> npt.NDArray[np.int64]:
    """``predictions`` judged by their decision: a defective unit rejected under any defect
    class takes its own class (rightly rejected); passes and false rejects are unchanged."""
    rightly_rejected = (labels != good_index) & (predictions != good_index)
    return np.where(rightly_rejected, labels, predictions).astype(np.int64)


@dataclass(frozen=True)
class ClassEvidence:
    class_name: str
    examples: int
    detected: int
    lower_bound: float


@dataclass
class Acceptance:
    """The acceptance of one candidate."""

    by_design: dict[str, Metrics]  # real images only, judged by the decision (gated)
    sources: dict[str, dict[str, int]]  # design -> split -> images
    gates: list[GateResult]
    evidence: list[ClassEvidence]
    required_lower_bound: float
    synthetic: Metrics | None = None  # reported apart, never gated
    classifier_only: dict[str, Metrics] = field(default_factory=dict)  # for the report
    reasons: dict[str, Metrics] = field(default_factory=dict)  # the defect class named, reported

    @property
    def open_classes(self) -> list[str]:
        return [e.class_name for e in self.evidence if e.lower_bound < self.required_lower_bound]


def evaluate_acceptance(
    classes: Sequence[str],
    *,
    labels: npt.NDArray[np.int64],
    probabilities: npt.NDArray[np.float32],
    anomaly_scores: npt.NDArray[np.float32],
    records: Sequence[Mapping[str, Any]],
    gates: GateSettings,
    settings: AcceptanceSettings,
    evidence_designs: Sequence[str] = (),
    good_class: str = "good",
) -> tuple[Acceptance, list[GateResult]]:
    """Metrics and gates per label design on the real acceptance images among ``records``
    (split ``test`` or ``challenge``), the synthetic ones apart, and the class evidence over the
    designs in ``evidence_designs`` (all when empty). Returns the acceptance and the per-design
    gates (the golden and latency gates are the caller's)."""
    good = list(classes).index(good_class)
    predictions = combined_predictions(probabilities, anomaly_scores, good)
    decided = decision_classes(labels, predictions, good)
    splits = np.array([str(r.get("split", "")) for r in records])
    designs = np.array([str(r.get("label_design", "")) for r in records])
    real = np.isin(splits, ACCEPTANCE_SPLITS)
    by_design: dict[str, Metrics] = {}
    classifier_only: dict[str, Metrics] = {}
    reasons: dict[str, Metrics] = {}
    sources: dict[str, dict[str, int]] = {}
    results: list[GateResult] = []
    present = sorted({d for d in designs[real]})
    for design in present:
        mask = real & (designs == design)
        metrics = metrics_from_predictions(labels[mask], decided[mask], classes, good_class)
        by_design[design] = metrics
        reasons[design] = metrics_from_predictions(
            labels[mask], predictions[mask], classes, good_class
        )
        classifier_only[design] = metrics_from_predictions(
            labels[mask],
            decision_classes(labels[mask], probabilities[mask].argmax(axis=1), good),
            classes,
            good_class,
        )
        sources[design] = {s: int((mask & (splits == s)).sum()) for s in ACCEPTANCE_SPLITS}
        for gate in evaluate_gates(metrics, None, None, 0.0, gates, good_class=good_class):
            if gate.name in ("golden_set", "latency_p95_ms"):
                continue  # judged once, by the caller
            name = f"{design or 'unknown design'}/{gate.name}" if len(present) > 1 else gate.name
            results.append(
                GateResult(
                    name,
                    gate.passed,
                    gate.value,
                    gate.threshold,
                    f"design {design}: {gate.detail}",
                    gate.higher_is_better,
                )
            )
    if not present:
        results.append(
            GateResult("acceptance_set", False, math.nan, math.nan, "no real held-out images")
        )
    synthetic_mask = splits == SYNTHETIC_SPLIT
    synthetic = (
        metrics_from_predictions(
            labels[synthetic_mask], decided[synthetic_mask], classes, good_class
        )
        if synthetic_mask.any()
        else None
    )
    evidence_mask = real & (np.isin(designs, evidence_designs) if evidence_designs else True)
    evidence = []
    for index, name in enumerate(classes):
        if index == good:
            continue
        of_class = evidence_mask & (labels == index)
        examples = int(of_class.sum())
        detected = int((predictions[of_class] != good).sum())
        evidence.append(
            ClassEvidence(
                name,
                examples,
                detected,
                recall_lower_bound(detected, examples, settings.confidence),
            )
        )
    acceptance = Acceptance(
        by_design=by_design,
        sources=sources,
        gates=results,
        evidence=evidence,
        required_lower_bound=settings.required_recall_lower_bound,
        synthetic=synthetic,
        classifier_only=classifier_only,
        reasons=reasons,
    )
    return acceptance, results
