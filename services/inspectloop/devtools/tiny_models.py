"""Models with known answers, packaged for Triton: for the gateway's tests, load test and
benchmark.

Three versions of one model, built (not trained) so that their answers are known: version 1
and 2 pass every image with high confidence, version 3 rejects every image. Their heads are
biased toward one class; the rest of each network is a seeded random CNN of the production
architecture, so their feature vectors are real embeddings of the image and their cost is the
real model's at the same spec.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from inspectloop.trainer.model import InspectionCNN, ModelSpec, build_model
from inspectloop.trainer.packaging import export_onnx, quantize_int8, write_triton_python_entry

SPEC = ModelSpec(input_size=32, width_multiplier=0.25, embedding_dim=16)
NAME = "gateway_tiny"
PASSES = ("1", "2")
REJECTS = "3"


# The class each version's head favours: 0 is "good" (pass), 3 a defect (reject).
FAVOURED_CLASS = {1: 0, 2: 0, 3: 3}


def tiny_model(version: int, spec: ModelSpec = SPEC) -> InspectionCNN:
    """Version ``version`` (1-3) as a torch module in eval mode."""
    model = build_model(spec, seed=version)
    with torch.no_grad():
        model.head.bias.zero_()
        model.head.bias[FAVOURED_CLASS[version]] = 30.0
    return model.eval()


def write_edge_model(version: int, work: Path, spec: ModelSpec = SPEC) -> Path:
    """Version ``version`` as the int8 ONNX an edge agent runs."""
    work.mkdir(parents=True, exist_ok=True)
    onnx_path = export_onnx(tiny_model(version, spec), spec, work / f"tiny-{version}.onnx")
    calibration = np.random.default_rng(0).integers(
        0, 255, (16, spec.input_size, spec.input_size, 3), dtype=np.uint8
    )
    return quantize_int8(onnx_path, work / f"tiny-{version}.int8.onnx", calibration)


def write_models(
    repository: Path,
    work: Path,
    *,
    name: str = NAME,
    spec: ModelSpec = SPEC,
    max_queue_delay_us: int = 0,
    dynamic_batching: bool = True,
) -> None:
    """Versions 1-3 of ``name`` into a Triton repository (load them with ``load_model``)."""
    for version in FAVOURED_CLASS:
        onnx_path = export_onnx(tiny_model(version, spec), spec, work / f"{name}-{version}.onnx")
        write_triton_python_entry(
            repository,
            name,
            version,
            onnx_path,
            spec,
            max_batch_size=8,
            max_queue_delay_us=max_queue_delay_us,
            dynamic_batching=dynamic_batching,
        )


def png(seed: int, side: int = 48) -> bytes:
    """A camera-like PNG (random blocks) of ``side`` pixels."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 255, (side // 8, side // 8, 3), dtype=np.uint8)
    pixels = np.kron(blocks, np.ones((8, 8, 1), dtype=np.uint8))
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()
