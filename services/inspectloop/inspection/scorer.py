"""What scores an image: the :class:`Scorer` protocol, and what it answers.

Two implementations, in the style of the bus's backends: :class:`~inspectloop.inspection.
triton.TritonScorer` (the gateway: Triton's gRPC API, versions side by side) and
:class:`~inspectloop.inspection.onnx.OnnxScorer` (the edge agent: ONNX Runtime in process, no
network). The inspection pipeline only ever talks to this protocol.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True)
class ServedModel:
    """What a served model takes and gives."""

    input_size: int
    classes: tuple[str, ...]
    anomaly: bool = False  # whether it has the anomaly detector's outputs


@dataclass(frozen=True)
class Scores:
    """A model's answer on one image."""

    probabilities: npt.NDArray[np.float32]  # C, over ServedModel.classes
    features: npt.NDArray[np.float32]  # D, the embedding
    anomaly_score: float  # over the detector's threshold (>= 1 anomalous); 0 without one
    seconds: float  # the inference call's duration


class Scorer(Protocol):
    def ready(self, name: str, version: str) -> bool:
        """Whether ``name`` version ``version`` can score now."""
        ...

    def served(self, name: str, version: str) -> ServedModel:
        """Its input size and classes; raises BackendUnavailableError when unknown."""
        ...

    def score(self, name: str, version: str, images: npt.NDArray[np.uint8]) -> list[Scores]:
        """Scores of each image (uint8 ``N x H x W x 3`` at the input size); raises
        BackendUnavailableError when the model cannot answer."""
        ...
