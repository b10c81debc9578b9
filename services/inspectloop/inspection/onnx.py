"""ONNX Runtime in process as a :class:`~inspectloop.inspection.scorer.Scorer` (the edge agent's:
a line PC scores without the network). Sessions are added and removed as verified models come
and go; a model's classes and input size come from its ONNX metadata (the packaged contract)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from inspectloop.core.errors import BackendUnavailableError
from inspectloop.core.onnx_contract import (
    OUTPUT_ANOMALY_SCORE,
    OUTPUT_FEATURES,
    OUTPUT_PROBABILITIES,
    ort_session,
    read_metadata,
    run_onnx,
)
from inspectloop.inspection.scorer import Scores, ServedModel


def served_model_of(onnx_path: Path, session: Any) -> ServedModel:
    """Input size, classes and outputs of a packaged model, from its metadata and graph."""
    metadata = read_metadata(onnx_path)
    outputs = {o.name for o in session.get_outputs()}
    return ServedModel(
        input_size=int(metadata["input_size"]),
        classes=tuple(json.loads(metadata["classes"])),
        anomaly=OUTPUT_ANOMALY_SCORE in outputs,
    )


class OnnxScorer:
    def __init__(self, threads: int = 1) -> None:
        self._threads = threads
        self._models: dict[tuple[str, str], tuple[Any, ServedModel]] = {}
        self._lock = threading.Lock()

    def add(self, name: str, version: str, onnx_path: Path) -> ServedModel:
        """Open ``onnx_path`` as ``name`` version ``version``; its served description."""
        session = ort_session(onnx_path, self._threads)
        served = served_model_of(onnx_path, session)
        with self._lock:
            self._models[(name, version)] = (session, served)
        return served

    def remove(self, name: str, version: str) -> None:
        with self._lock:
            self._models.pop((name, version), None)

    def _get(self, name: str, version: str) -> tuple[Any, ServedModel]:
        with self._lock:
            entry = self._models.get((name, version))
        if entry is None:
            raise BackendUnavailableError(f"model {name} v{version} is not loaded here")
        return entry

    def ready(self, name: str, version: str) -> bool:
        with self._lock:
            return (name, version) in self._models

    def served(self, name: str, version: str) -> ServedModel:
        return self._get(name, version)[1]

    def score(self, name: str, version: str, images: npt.NDArray[np.uint8]) -> list[Scores]:
        session = self._get(name, version)[0]
        started = time.perf_counter()
        outputs = run_onnx(session, images)
        seconds = time.perf_counter() - started
        anomaly = outputs.get(OUTPUT_ANOMALY_SCORE)
        return [
            Scores(
                outputs[OUTPUT_PROBABILITIES][i],
                outputs[OUTPUT_FEATURES][i],
                float(anomaly.reshape(-1)[i]) if anomaly is not None else 0.0,
                seconds,
            )
            for i in range(len(images))
        ]
