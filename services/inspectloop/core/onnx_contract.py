"""The packaged model's ONNX contract, and running a packaged model, without torch.

Every consumer of a packaged model relies on this contract (Triton, the gateway, the edge
agent's onnxruntime); :mod:`inspectloop.trainer.packaging` writes models that keep it::

    input   images         uint8    N x H x W x 3   RGB camera pixels, H = W = the input size
    output  probabilities  float32  N x C           softmax over the classes, in that order
    output  features       float32  N x D           the embedding, >= 0
    output  logits         float32  N x C           pre-softmax scores
    output  anomaly_score  float32  N               the anomaly detector's score over its
                                                    calibrated threshold (>= 1: anomalous)
    output  anomaly_map    float32  N x G x G       the patch scores it is the maximum of

``N`` is a dynamic batch axis; the preprocessing is inside the graph. The class names, the model
spec and the contract version are stored in the ONNX file's metadata (``inspectloop.*`` keys).

It lives in ``core`` rather than beside the exporter so that what only runs a model (the edge
agent on a line PC, the gateway's replicas) loads neither torch nor the trainer.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    import onnxruntime as ort  # type: ignore[import-untyped, unused-ignore]

CONTRACT_VERSION = "2"  # 2: the anomaly detector's outputs
INPUT_NAME = "images"
OUTPUT_PROBABILITIES = "probabilities"
OUTPUT_FEATURES = "features"
OUTPUT_LOGITS = "logits"
OUTPUT_ANOMALY_SCORE = "anomaly_score"
OUTPUT_ANOMALY_MAP = "anomaly_map"
OUTPUT_NAMES: tuple[str, ...] = (
    OUTPUT_PROBABILITIES,
    OUTPUT_FEATURES,
    OUTPUT_LOGITS,
    OUTPUT_ANOMALY_SCORE,
    OUTPUT_ANOMALY_MAP,
)
#: The ``config.pbtxt`` parameter listing the classes in output order (comma-separated), so
#: that a client of Triton (the gateway) learns them from the served model's config.
CLASSES_PARAMETER = "inspectloop_classes"
ONNX_FILENAME = "model.onnx"
METADATA_PREFIX = "inspectloop."


def sha256_file(path: Path) -> str:
    """Lowercase hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_metadata(onnx_path: Path) -> dict[str, str]:
    """The ``inspectloop.*`` metadata of an exported file (keys without the prefix)."""
    import onnx  # noqa: PLC0415

    proto = onnx.load(str(onnx_path), load_external_data=False)
    return {
        p.key[len(METADATA_PREFIX) :]: p.value
        for p in proto.metadata_props
        if p.key.startswith(METADATA_PREFIX)
    }


def ort_session(onnx_path: Path, threads: int = 1) -> ort.InferenceSession:
    """A CPU onnxruntime session with ``threads`` intra-op threads, sequential execution."""
    import onnxruntime as ort  # type: ignore[import-untyped, unused-ignore]  # noqa: PLC0415

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    return ort.InferenceSession(
        str(onnx_path), sess_options=options, providers=["CPUExecutionProvider"]
    )


def run_onnx(
    session: ort.InferenceSession | Path,
    images: npt.NDArray[np.uint8],
    batch_size: int = 64,
) -> dict[str, npt.NDArray[np.float32]]:
    """Every output of the ONNX model on ``images`` (uint8 ``N x H x W x 3``), batched."""
    sess = ort_session(session) if isinstance(session, Path) else session
    images = as_image_batch(images)
    names = [o.name for o in sess.get_outputs()]
    parts: dict[str, list[npt.NDArray[np.float32]]] = {n: [] for n in names}
    for start in range(0, len(images), batch_size):
        outputs = sess.run(names, {INPUT_NAME: images[start : start + batch_size]})
        for name, value in zip(names, outputs, strict=True):
            parts[name].append(np.asarray(value, dtype=np.float32))
    return {n: np.concatenate(v) for n, v in parts.items()}


def as_image_batch(images: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """``images`` as the contract's contiguous uint8 ``N x H x W x 3`` batch (one image -> N=1)."""
    batch = np.asarray(images)
    if batch.ndim == 3:
        batch = batch[None]
    if batch.dtype != np.uint8 or batch.ndim != 4 or batch.shape[-1] != 3 or not len(batch):
        raise ValueError(
            f"expected uint8 images N x H x W x 3 (N >= 1), got {batch.dtype} {batch.shape}"
        )
    return np.ascontiguousarray(batch)
