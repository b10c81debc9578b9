"""Judging a packaged candidate: its acceptance, golden set and latency, on the ONNX artifact
itself (what Triton and the edge will run), and what its report shows.

The acceptance (``acceptance``) is on the snapshot's real held-out images and challenge sets,
per label design; the golden set is compared item by item with the parent's own packaged
model under the same combined decision; latency is measured on the artifact. Every image the
candidate rejects among the acceptance images goes into the report with its anomaly map.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from inspectloop.core.onnx_contract import (
    OUTPUT_ANOMALY_MAP,
    OUTPUT_ANOMALY_SCORE,
    OUTPUT_PROBABILITIES,
    run_onnx,
)
from inspectloop.trainer.acceptance import (
    ACCEPTANCE_SPLITS,
    SYNTHETIC_SPLIT,
    Acceptance,
    combined_predictions,
    evaluate_acceptance,
)
from inspectloop.trainer.data import ImageSet, load_split
from inspectloop.trainer.fit import Metrics
from inspectloop.trainer.gates import (
    GateResult,
    GoldenPredictions,
    LatencyStats,
    golden_gate,
    latency_gate,
    measure_latency,
)
from inspectloop.trainer.model import ModelSpec
from inspectloop.trainer.report import FlaggedImage
from inspectloop.trainer.settings import TrainerSection

MAX_FLAGGED_IN_REPORT = 120


def _splits(directory: Path, names: tuple[str, ...], spec: ModelSpec) -> ImageSet | None:
    parts = [
        load_split(directory, name, spec.classes, cache=False)
        for name in names
        if (directory / name).is_dir()
    ]
    parts = [p for p in parts if len(p)]
    return ImageSet.concat(parts) if parts else None


def golden_predictions(onnx_path: Path, images: ImageSet, spec: ModelSpec) -> GoldenPredictions:
    """A packaged model's answers on the golden set, under the production decision."""
    out = run_onnx(onnx_path, images.images)
    # A parent packaged before the anomaly family has no anomaly output: it never flags.
    anomaly = out.get(OUTPUT_ANOMALY_SCORE, np.zeros(len(images), np.float32)).reshape(-1)
    predictions = combined_predictions(out[OUTPUT_PROBABILITIES], anomaly, spec.good_index)
    ids = [
        str(r.get("sha256") or Path(str(r.get("path", i))).stem)
        for i, r in enumerate(images.records)
    ]
    return GoldenPredictions(
        tuple(ids),
        tuple(int(v) for v in images.labels),
        tuple(int(v) for v in predictions),
    )


@dataclass
class Validation:
    acceptance: Acceptance
    gates: list[GateResult]
    latency: LatencyStats
    flagged: list[FlaggedImage] = field(default_factory=list)
    flagged_total: int = 0

    @property
    def worst(self) -> Metrics | None:
        """The design with the lowest accuracy (the headline of the version)."""
        designs = self.acceptance.by_design.values()
        return min(designs, key=lambda m: (m.accuracy, -m.escape_rate)) if designs else None

    def version_metrics(self) -> dict[str, float]:
        """The figures registered with the version (finite ones): the worst design's, then
        each design's."""
        values: dict[str, float] = {}
        worst = self.worst
        if worst is not None:
            values.update(
                accuracy=worst.accuracy,
                false_reject_rate=max(
                    m.false_reject_rate for m in self.acceptance.by_design.values()
                ),
                escape_rate=max(m.escape_rate for m in self.acceptance.by_design.values()),
            )
        for design, m in self.acceptance.by_design.items():
            values[f"{design}/accuracy"] = m.accuracy
            values[f"{design}/escape_rate"] = m.escape_rate
            values[f"{design}/false_reject_rate"] = m.false_reject_rate
        if self.acceptance.synthetic is not None:
            values["synthetic/escape_rate"] = self.acceptance.synthetic.escape_rate
        values["latency_p95_ms"] = self.latency.p95_ms
        return {k: float(v) for k, v in values.items() if math.isfinite(v)}


def validate(
    onnx_path: Path,
    snapshot: Path,
    spec: ModelSpec,
    settings: TrainerSection,
    *,
    golden: ImageSet | None,
    parent_onnx: Path | None,
    evidence_designs: tuple[str, ...],
) -> Validation:
    """Every gate of the candidate packaged at ``onnx_path``."""
    data = _splits(snapshot, (*ACCEPTANCE_SPLITS, SYNTHETIC_SPLIT), spec)
    if data is None:
        data = ImageSet(
            np.zeros((0, spec.input_size, spec.input_size, 3), np.uint8),
            np.zeros(0, np.int64),
            spec.classes,
        )
    empty_scores = np.zeros((0, spec.num_classes), np.float32)
    out = run_onnx(onnx_path, data.images) if len(data) else {}
    probabilities: npt.NDArray[np.float32] = out.get(OUTPUT_PROBABILITIES, empty_scores)
    anomaly = out.get(OUTPUT_ANOMALY_SCORE, np.zeros(0, np.float32)).reshape(-1)
    acceptance, gates = evaluate_acceptance(
        spec.classes,
        labels=data.labels,
        probabilities=probabilities,
        anomaly_scores=anomaly,
        records=data.records,
        gates=settings.gates,
        settings=settings.acceptance,
        evidence_designs=evidence_designs,
    )
    candidate_golden = parent_golden = None
    if golden is not None:
        candidate_golden = golden_predictions(onnx_path, golden, spec)
        if parent_onnx is not None:
            parent_golden = golden_predictions(parent_onnx, golden, spec)
    gates.append(golden_gate(candidate_golden, parent_golden, settings.gates))
    latency = measure_latency(
        onnx_path,
        runs=settings.gates.latency_runs,
        repeats=settings.gates.latency_repeats,
        threads=settings.gates.latency_threads,
    )
    gates.append(latency_gate(latency, settings.gates))
    validation = Validation(acceptance, gates, latency)
    if len(data):
        predictions = combined_predictions(probabilities, anomaly, spec.good_index)
        amaps = out[OUTPUT_ANOMALY_MAP]
        real = [
            i
            for i, r in enumerate(data.records)
            if r.get("split") in ACCEPTANCE_SPLITS and predictions[i] != spec.good_index
        ]
        validation.flagged_total = len(real)
        validation.flagged = [
            FlaggedImage(
                image=data.images[i],
                anomaly_map=amaps[i],
                true_class=spec.classes[int(data.labels[i])],
                predicted_class=spec.classes[int(predictions[i])],
                anomaly_score=float(anomaly[i]),
                source=f"{data.records[i].get('split')}: {data.records[i].get('source', '')}",
            )
            for i in real[:MAX_FLAGGED_IN_REPORT]
        ]
    return validation
