"""A version's open evidence: defect classes whose recall its acceptance could not bound high
enough (too few real examples), and what operators confirm on the line since.

The trainer announces them with the version (``ModelVersion.class_evidence``); while any class
stays open the monitor keeps the version's lines ``guarded``: every reject is reviewed (a
confirmed defect of a class is a detection), and a share of the passes (an escape found there is
a miss, weighted by one over that share). When every class's one-sided Clopper-Pearson lower
bound reaches ``required_recall_lower_bound``, the evidence is closed and the line may go
``auto``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from inspectloop.core.evidence import recall_lower_bound
from inspectloop.v1.models_pb2 import ModelVersion

CONFIDENCE = 0.95  # that of the trainer's bounds (trainer.acceptance.confidence)


@dataclass
class OpenEvidence:
    version: str
    required: float
    # class -> [examples, detected]: the acceptance's, then the line's confirmed units.
    counts: dict[str, list[float]] = field(default_factory=dict)

    @classmethod
    def of(cls, model: ModelVersion) -> OpenEvidence | None:
        """The version's evidence, or None when no class is open."""
        if not model.open_evidence_classes:
            return None
        return cls(
            version=model.version,
            required=model.required_recall_lower_bound,
            counts={e.class_name: [e.examples, e.detected] for e in model.class_evidence},
        )

    def bound(self, defect_class: str) -> float:
        examples, detected = self.counts.get(defect_class, [0.0, 0.0])
        return recall_lower_bound(detected, examples, CONFIDENCE)

    def open_classes(self) -> list[str]:
        return sorted(c for c in self.counts if self.bound(c) < self.required)

    def observe(self, defect_class: str, *, detected: bool, weight: float = 1.0) -> None:
        """A confirmed defect of ``defect_class``: rejected by the version (``detected``), or an
        escape (a miss counted ``weight`` times)."""
        if defect_class not in self.counts:
            return  # good, or a class the version was not asked to prove
        counts = self.counts[defect_class]
        counts[0] += 1.0 if detected else weight
        if detected:
            counts[1] += 1.0

    def describe(self) -> str:
        return ", ".join(
            f"{c} {self.counts[c][1]:.0f}/{self.counts[c][0]:.0f} (bound {self.bound(c):.2f})"
            for c in self.open_classes()
        )

    def to_state(self) -> dict[str, Any]:
        return {"version": self.version, "required": self.required, "counts": self.counts}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> OpenEvidence:
        return cls(state["version"], state["required"], dict(state["counts"]))
