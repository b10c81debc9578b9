"""Packaging a trained model for serving: ONNX, int8 ONNX for edge, Triton model repositories.

The ONNX contract every consumer relies on (inputs, outputs, metadata) is written down in
:mod:`inspectloop.core.onnx_contract`, with the torch-free helpers that run a packaged model. The
preprocessing (``spec.preprocess``: NHWC -> NCHW, ``(x / 255 - mean) / std``) is *inside* the
graph, so nobody outside the model has to repeat the normalisation constants, and a client cannot
get them wrong.

Exporter: ``torch.onnx.export(..., dynamo=False)`` (the TorchScript exporter) at opset 17. Chosen
because it writes opset 17 natively (the newer ``torch.export``-based exporter starts at opset 18
and its down-conversion to 17 fails on ``ReduceMean``), it folds batch norm into the convolutions,
it is about 20x faster on two cores (0.1 s against 2 s), and its bytes depend on nothing but the
weights (exporting twice gives the same SHA-256). Opset 17 runs on every ONNX Runtime since
1.13, so on the one inside NVIDIA's Triton 2.51 image. ``exporter="dynamo"`` is the way forward
for when torch drops the TorchScript exporter: opset 18, with the source paths and stack traces
it records in node metadata stripped so that its bytes are deterministic too.

The int8 model (:func:`quantize_int8`) keeps the same contract: static QDQ, per-channel int8
weights, int8 activations calibrated on validation images; the nodes producing the outputs stay
float.

Triton entries (``<repo>/<name>/config.pbtxt`` + ``<repo>/<name>/<version>/...``):

* ``onnxruntime`` backend (``platform: "onnxruntime_onnx"``): NVIDIA's Triton image in production.
* ``python`` backend: ``triton_python/model.py`` (copied in as ``model.py``), which runs the
  ``model.onnx`` beside it with onnxruntime and serves exactly the same inputs and outputs; it
  is what runs on the Triton 2.51 binary from the ``nvidia-pytriton`` wheel here (which ships
  only the Python backend).

Both configs come from :func:`triton_config` with the backend as a parameter, batch dimension
implicit (``max_batch_size`` > 0), dynamic batching, CPU instances, and
``version_policy: { all {} }`` so that a stable and a canary version of one model can be loaded
side by side.

Every file handed out is a :class:`PackagedArtifact` with its SHA-256. A repository directory is
hashed as a deterministic ``.tar.gz`` (sorted members, zero mtimes, uid/gid 0, fixed modes), so
packaging the same weights twice gives the same hashes.
"""

from __future__ import annotations

import enum
import gzip
import json
import logging
import shutil
import tarfile
import tempfile
import textwrap
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor, nn

from inspectloop.core.errors import ConfigError, PermanentError
from inspectloop.core.onnx_contract import (
    CLASSES_PARAMETER,
    CONTRACT_VERSION,
    INPUT_NAME,
    METADATA_PREFIX,
    ONNX_FILENAME,
    OUTPUT_ANOMALY_MAP,
    OUTPUT_ANOMALY_SCORE,
    OUTPUT_FEATURES,
    OUTPUT_LOGITS,
    OUTPUT_NAMES,
    OUTPUT_PROBABILITIES,
    as_image_batch,
    read_metadata,
    run_onnx,
    sha256_file,
)
from inspectloop.trainer.anomaly import PatchMemory, backbone_maps, grid_size
from inspectloop.trainer.model import InspectionCNN, ModelSpec

if TYPE_CHECKING:
    from inspectloop.v1 import models_pb2

logger = logging.getLogger(__name__)

DEFAULT_OPSET = 17
DYNAMO_OPSET = 18

Exporter = Literal["torchscript", "dynamo"]
TritonBackend = Literal["onnxruntime", "python"]


class ParityError(PermanentError):
    """The exported model does not compute what the torch model computes."""


class ArtifactType(enum.StrEnum):
    """What a packaged file is (``proto_kind`` maps it onto ``ArtifactKind``)."""

    ONNX = "onnx"
    ONNX_INT8 = "onnx_int8"
    TRITON_ONNX = "triton_onnx"  # repository tarball for NVIDIA's ONNX Runtime backend
    TRITON_PYTHON = "triton_python"  # repository tarball for the Python backend

    @property
    def proto_kind(self) -> models_pb2.ArtifactKind:
        """The ``inspectloop.v1.ArtifactKind`` value."""
        from inspectloop.v1 import models_pb2  # noqa: PLC0415

        return {
            ArtifactType.ONNX: models_pb2.ARTIFACT_KIND_ONNX,
            ArtifactType.ONNX_INT8: models_pb2.ARTIFACT_KIND_ONNX_INT8,
            ArtifactType.TRITON_ONNX: models_pb2.ARTIFACT_KIND_TRITON_REPO,
            ArtifactType.TRITON_PYTHON: models_pb2.ARTIFACT_KIND_TRITON_REPO,
        }[self]


@dataclass(frozen=True)
class PackagedArtifact:
    """One file of a packaged version, with the hash consumers verify before use."""

    kind: ArtifactType
    path: Path
    sha256: str
    size_bytes: int

    @classmethod
    def of(cls, kind: ArtifactType, path: Path) -> PackagedArtifact:
        """Hash and measure ``path``."""
        return cls(kind, path, sha256_file(path), path.stat().st_size)

    def to_proto(self, uri: str) -> models_pb2.ModelArtifact:
        """The ``ModelArtifact`` message, once the file is stored at ``uri``."""
        from inspectloop.v1 import models_pb2  # noqa: PLC0415

        return models_pb2.ModelArtifact(
            kind=self.kind.proto_kind,
            uri=uri,
            sha256=self.sha256,
            size_bytes=self.size_bytes,
        )


@dataclass(frozen=True)
class Int8Delta:
    """fp32 against int8 on the same labelled images; ``delta`` = int8 - fp32 accuracy."""

    fp32_accuracy: float
    int8_accuracy: float
    delta: float
    agreement: float  # fraction of images where both predict the same class
    max_probability_diff: float
    count: int

    def to_dict(self) -> dict[str, float]:
        """JSON-ready."""
        return {
            "fp32_accuracy": self.fp32_accuracy,
            "int8_accuracy": self.int8_accuracy,
            "delta": self.delta,
            "agreement": self.agreement,
            "max_probability_diff": self.max_probability_diff,
            "count": float(self.count),
        }


@dataclass(frozen=True)
class PackageResult:
    """What ``package_model`` produced."""

    artifacts: list[PackagedArtifact]
    parity_diff: float
    int8: Int8Delta
    onnx_path: Path
    int8_path: Path
    triton_onnx_repo: Path  # directory holding <model_name>/...
    triton_python_repo: Path
    details: dict[str, Any] = field(default_factory=dict)

    def artifact(self, kind: ArtifactType) -> PackagedArtifact:
        """The artifact of ``kind``."""
        return next(a for a in self.artifacts if a.kind == kind)


# --- hashing -------------------------------------------------------------------------------


def deterministic_tarball(directory: Path, out_path: Path, arcname: str | None = None) -> Path:
    """``directory`` as a ``.tar.gz`` whose bytes depend only on the file names and contents:
    members sorted, mtime 0, uid/gid 0, no user names, modes 0755 (dirs) / 0644 (files)."""
    root = arcname if arcname is not None else directory.name
    paths = sorted(directory.rglob("*"), key=lambda p: p.relative_to(directory).as_posix())
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with (
        out_path.open("wb") as raw,
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=6) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for path in [directory, *paths]:
            if path.is_symlink():
                raise ConfigError(f"refusing to archive symlink {path}")
            rel = path.relative_to(directory).as_posix()
            name = root if rel == "." else f"{root}/{rel}"
            info = tarfile.TarInfo(name)
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            if path.is_dir():
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                tar.addfile(info)
            else:
                info.mode = 0o644
                info.size = path.stat().st_size
                with path.open("rb") as handle:
                    tar.addfile(info, handle)
    return out_path


# --- export --------------------------------------------------------------------------------


class ServingModule(nn.Module):
    """The exported graph: uint8 ``N x H x W x 3`` -> (probabilities, features, logits,
    anomaly score, anomaly map). The classifier and the anomaly detector share one pass over
    the backbone; without a detector (``memory`` None) the anomaly outputs are zeros, so that
    every packaged model keeps one contract."""

    def __init__(
        self, model: InspectionCNN, spec: ModelSpec, memory: PatchMemory | None = None
    ) -> None:
        super().__init__()
        self.model = model
        self.spec = spec
        self.memory = memory
        self.grid = grid_size(spec)

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """Preprocess (exactly ``spec.preprocess``) and run the model."""
        x = self.spec.preprocess.normalise(images.permute(0, 3, 1, 2))
        logits, features, maps = backbone_maps(self.model, x)
        if self.memory is not None:
            score, amap = self.memory(maps)
        else:
            amap = torch.zeros_like(maps[0][:, 0, : self.grid, : self.grid])
            score = amap.flatten(1).sum(dim=1)
        return torch.softmax(logits, dim=1), features, logits, score, amap


def reference_outputs(
    model: InspectionCNN,
    spec: ModelSpec,
    images: npt.NDArray[np.uint8],
    memory: PatchMemory | None = None,
) -> dict[str, npt.NDArray[np.float32]]:
    """What the exported graph must compute, by the plain torch path (``spec.preprocess`` then
    the model in eval mode)."""
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            x = spec.preprocess(images)
            logits, features = model.forward_with_features(x)
            probabilities = torch.softmax(logits, dim=1)
            if memory is not None:
                score, amap = memory(backbone_maps(model, x)[2])
            else:
                g = grid_size(spec)
                amap = torch.zeros(len(images), g, g)
                score = torch.zeros(len(images))
    finally:
        model.train(was_training)
    return {
        OUTPUT_PROBABILITIES: probabilities.numpy(),
        OUTPUT_FEATURES: features.numpy(),
        OUTPUT_LOGITS: logits.numpy(),
        OUTPUT_ANOMALY_SCORE: score.numpy(),
        OUTPUT_ANOMALY_MAP: amap.numpy(),
    }


def export_onnx(
    model: InspectionCNN,
    spec: ModelSpec,
    path: Path,
    *,
    memory: PatchMemory | None = None,
    exporter: Exporter = "torchscript",
    opset: int | None = None,
) -> Path:
    """Write ``model`` as ONNX with the contract of this module's docstring; returns ``path``.

    The model is exported in eval mode (batch norm folded) and left in the mode it was in.
    """
    own = getattr(model, "spec", spec)
    if (own.classes, own.embedding_dim, own.preprocess) != (
        spec.classes,
        spec.embedding_dim,
        spec.preprocess,
    ):
        raise ConfigError("the model's classes, embedding or preprocessing differ from the spec's")
    path.parent.mkdir(parents=True, exist_ok=True)
    was_training = model.training
    wrapper = ServingModule(model, spec, memory).eval()  # puts the model in eval mode too
    size = spec.input_size
    example = torch.zeros(2, size, size, 3, dtype=torch.uint8)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            # The TorchScript exporter announces its deprecation; the tensors Preprocess builds
            # are meant to be traced as constants.
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.filterwarnings("ignore", message="torch.tensor results are registered as")
            if exporter == "torchscript":
                torch.onnx.export(
                    wrapper,
                    (example,),
                    str(path),
                    input_names=[INPUT_NAME],
                    output_names=list(OUTPUT_NAMES),
                    dynamic_axes={name: {0: "batch"} for name in (INPUT_NAME, *OUTPUT_NAMES)},
                    opset_version=opset or DEFAULT_OPSET,
                    do_constant_folding=True,
                    dynamo=False,
                )
            elif exporter == "dynamo":
                batch = torch.export.Dim("batch", min=1, max=4096)
                program = torch.onnx.export(
                    wrapper,
                    (example,),
                    input_names=[INPUT_NAME],
                    output_names=list(OUTPUT_NAMES),
                    dynamic_shapes=({0: batch},),
                    opset_version=opset or DYNAMO_OPSET,
                    dynamo=True,
                    external_data=False,
                    verbose=False,
                )
                if program is None:  # pragma: no cover - torch returns the program for dynamo
                    raise PermanentError("torch.onnx.export returned no ONNX program")
                program.save(str(path), external_data=False)
            else:
                raise ConfigError(f"unknown ONNX exporter {exporter!r}")
    finally:
        model.train(was_training)
    _finish_onnx(path, spec, exporter)
    logger.info("exported ONNX (%s exporter) to %s", exporter, path)
    return path


def _finish_onnx(path: Path, spec: ModelSpec, exporter: Exporter) -> None:
    """Strip non-deterministic debug metadata, record the contract and check the model."""
    import onnx  # noqa: PLC0415

    proto = onnx.load(str(path))
    for node in proto.graph.node:
        del node.metadata_props[:]
        node.doc_string = ""
    for info in (*proto.graph.input, *proto.graph.output, *proto.graph.value_info):
        del info.metadata_props[:]
    del proto.graph.metadata_props[:]
    del proto.metadata_props[:]
    proto.doc_string = (
        "inspectloop inspection model: uint8 images N x H x W x 3 (RGB) -> "
        "probabilities, features, logits, anomaly_score, anomaly_map"
    )
    for key, value in _metadata(spec, exporter).items():
        entry = proto.metadata_props.add()
        entry.key = key
        entry.value = value
    onnx.checker.check_model(proto, full_check=True)
    onnx.save(proto, str(path))


def _metadata(spec: ModelSpec, exporter: str) -> dict[str, str]:
    return {
        f"{METADATA_PREFIX}contract": CONTRACT_VERSION,
        f"{METADATA_PREFIX}classes": json.dumps(list(spec.classes)),
        f"{METADATA_PREFIX}input_size": str(spec.input_size),
        f"{METADATA_PREFIX}spec": json.dumps(spec.to_dict(), sort_keys=True),
        f"{METADATA_PREFIX}exporter": exporter,
    }


ANOMALY_OUTPUTS = (OUTPUT_ANOMALY_SCORE, OUTPUT_ANOMALY_MAP)
ANOMALY_PARITY_ATOL = 1e-2


def check_parity(
    model: InspectionCNN,
    onnx_path: Path,
    sample_images: npt.NDArray[np.uint8],
    atol: float = 1e-4,
    *,
    spec: ModelSpec | None = None,
    memory: PatchMemory | None = None,
) -> float:
    """Largest absolute difference between torch and onnxruntime over every output on
    ``sample_images``; raises :class:`ParityError` (naming each output's difference) when it
    exceeds ``atol`` or the predicted classes differ."""
    images = as_image_batch(sample_images)
    expected = reference_outputs(model, spec or model.spec, images, memory)
    actual = run_onnx(onnx_path, images)
    diffs = {
        name: float(np.max(np.abs(actual[name] - expected[name])))
        for name in OUTPUT_NAMES
        if name in actual
    }
    missing = [name for name in OUTPUT_NAMES if name not in actual]
    if missing:
        raise ParityError(f"{onnx_path} lacks outputs {missing}")
    # The anomaly outputs are distances in units of the calibrated threshold, computed from
    # squared norms in float32: 1% of the threshold is far below anything the decision (at 1.0)
    # can notice, and above the cancellation error of the nearest-neighbour search.
    limits = {n: ANOMALY_PARITY_ATOL if n in ANOMALY_OUTPUTS else atol for n in diffs}
    worst = max(diffs.values())
    flipped = int(
        np.sum(
            actual[OUTPUT_PROBABILITIES].argmax(axis=1)
            != expected[OUTPUT_PROBABILITIES].argmax(axis=1)
        )
    )
    detail = ", ".join(f"{name} {diff:.3g}" for name, diff in diffs.items())
    over = [n for n, d in diffs.items() if not d <= limits[n]]  # NaN fails too
    if over:
        raise ParityError(
            f"ONNX parity check failed for {onnx_path}: {', '.join(over)} over their "
            f"tolerance (atol {atol:g}, anomaly outputs {ANOMALY_PARITY_ATOL:g}; {detail}; "
            f"{flipped} of {len(images)} predictions differ)"
        )
    logger.info("ONNX parity on %d images: max abs diff %.3g (%s)", len(images), worst, detail)
    return worst


# --- int8 ----------------------------------------------------------------------------------


class _CalibrationReader:
    """Feeds calibration batches to onnxruntime's quantizer."""

    def __init__(self, images: npt.NDArray[np.uint8], batch_size: int) -> None:
        self._batches: Iterator[npt.NDArray[np.uint8]] = (
            images[i : i + batch_size] for i in range(0, len(images), batch_size)
        )

    def get_next(self) -> dict[str, npt.NDArray[np.uint8]] | None:
        batch = next(self._batches, None)
        return None if batch is None else {INPUT_NAME: batch}


def quantize_int8(
    onnx_path: Path,
    out_path: Path,
    calibration_images: npt.NDArray[np.uint8],
    *,
    per_channel: bool = True,
    batch_size: int = 32,
) -> Path:
    """Static QDQ int8 quantization for the edge: per-channel int8 weights, int8 activations
    calibrated (min/max) on ``calibration_images`` (a few hundred validation images). The
    convolutions and fully connected layers run in int8; the softmax stays float so that the
    probabilities keep their resolution near the decision thresholds. The input and output
    contract is unchanged."""
    from onnxruntime.quantization import (  # type: ignore[import-untyped, unused-ignore]  # noqa: PLC0415
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import (  # type: ignore[import-untyped, unused-ignore]  # noqa: PLC0415
        quant_pre_process,
    )

    images = as_image_batch(calibration_images)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="inspectloop-quant-") as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(onnx_path), str(prepared), skip_symbolic_shape=True)
        # The nodes that produce the outputs stay float: the embedding and the logits keep
        # their resolution (drift statistics, confidence thresholds); they are tiny layers.
        exclude = _output_nodes(prepared)
        quantize_static(
            str(prepared),
            str(out_path),
            _CalibrationReader(images, batch_size),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=["Conv", "Gemm", "Relu", "GlobalAveragePool", "Flatten"],
            nodes_to_exclude=exclude,
            per_channel=per_channel,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
            extra_options={"ActivationSymmetric": False, "WeightSymmetric": True},
        )
    _finish_int8(onnx_path, out_path, {"quantization": "int8-qdq-per-channel-minmax"})
    logger.info(
        "int8 model %s: %d bytes (fp32 %d), calibrated on %d images",
        out_path,
        out_path.stat().st_size,
        onnx_path.stat().st_size,
        len(images),
    )
    return out_path


def _output_nodes(onnx_path: Path) -> list[str]:
    import onnx  # noqa: PLC0415

    proto = onnx.load(str(onnx_path))
    outputs = {o.name for o in proto.graph.output}
    return [n.name for n in proto.graph.node if outputs & set(n.output)]


def _finish_int8(source: Path, target: Path, extra: dict[str, str]) -> None:
    """Carry the fp32 model's metadata over, drop the operator-set imports no node uses (the
    quantizer's optimiser declares every onnxruntime domain) and check the model."""
    import onnx  # noqa: PLC0415

    metadata = {METADATA_PREFIX + k: v for k, v in read_metadata(source).items()}
    metadata.update({METADATA_PREFIX + k: v for k, v in extra.items()})
    proto = onnx.load(str(target))
    del proto.metadata_props[:]
    for key, value in sorted(metadata.items()):
        entry = proto.metadata_props.add()
        entry.key = key
        entry.value = value
    used = {node.domain for node in proto.graph.node} | {""}
    kept = [o for o in proto.opset_import if o.domain in used or o.domain == "ai.onnx"]
    del proto.opset_import[:]
    proto.opset_import.extend(kept)
    onnx.checker.check_model(proto, full_check=True)
    onnx.save(proto, str(target))


def accuracy_delta(
    fp32_path: Path,
    int8_path: Path,
    images: npt.NDArray[np.uint8],
    labels: Sequence[int] | npt.NDArray[np.integer[Any]],
) -> Int8Delta:
    """Accuracy of the fp32 and the int8 model on the same labelled images."""
    batch = as_image_batch(images)
    y = np.asarray(labels, dtype=np.int64).reshape(-1)
    if len(y) != len(batch):
        raise ValueError(f"{len(batch)} images but {len(y)} labels")
    fp32 = run_onnx(fp32_path, batch)[OUTPUT_PROBABILITIES]
    int8 = run_onnx(int8_path, batch)[OUTPUT_PROBABILITIES]
    fp32_pred, int8_pred = fp32.argmax(axis=1), int8.argmax(axis=1)
    fp32_acc = float(np.mean(fp32_pred == y))
    int8_acc = float(np.mean(int8_pred == y))
    return Int8Delta(
        fp32_accuracy=fp32_acc,
        int8_accuracy=int8_acc,
        delta=int8_acc - fp32_acc,
        agreement=float(np.mean(fp32_pred == int8_pred)),
        max_probability_diff=float(np.max(np.abs(fp32 - int8))),
        count=len(y),
    )


# --- Triton --------------------------------------------------------------------------------


def _check_triton_names(model_name: str, version: int) -> None:
    if not model_name or not all(c.isalnum() or c in "-_." for c in model_name):
        raise ConfigError(f"Triton model name {model_name!r}: use letters, digits, '-', '_', '.'")
    if model_name.startswith("."):
        raise ConfigError(f"Triton model name {model_name!r} must not start with '.'")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ConfigError(f"Triton model versions are positive integers, got {version!r}")


def triton_config(
    model_name: str,
    spec: ModelSpec,
    backend: TritonBackend,
    *,
    max_batch_size: int = 32,
    instances: int = 1,
    threads: int = 1,
    max_queue_delay_us: int = 500,
    dynamic_batching: bool = True,
) -> str:
    """``config.pbtxt`` (protobuf text format of Triton's ``ModelConfig``) for ``backend``.
    Without ``dynamic_batching`` every request runs alone (the batching benchmark's baseline).

    Dims exclude the batch dimension (``max_batch_size`` > 0). ``intra_op_thread_count`` is the
    ONNX Runtime backend's parameter; the Python backend's ``model.py`` reads the same key."""
    _check_triton_names(model_name, 1)
    if max_batch_size < 1 or instances < 1 or threads < 1 or max_queue_delay_us < 0:
        raise ConfigError("max_batch_size, instances and threads must be >= 1")
    if backend == "onnxruntime":
        engine = 'platform: "onnxruntime_onnx"\ndefault_model_filename: "model.onnx"'
    elif backend == "python":
        engine = 'backend: "python"'
    else:
        raise ConfigError(f"unknown Triton backend {backend!r}")
    size = spec.input_size
    c, d, g = spec.num_classes, spec.embedding_dim, grid_size(spec)
    return (
        textwrap.dedent(
            f"""\
        # inspectloop model-repository entry (contract v{CONTRACT_VERSION}): uint8 RGB images
        # in, softmax probabilities over the classes, embedding, logits and the anomaly
        # detector's score and map out.
        # Classes, in output order: {json.dumps(list(spec.classes))}
        name: "{model_name}"
        {{engine}}
        max_batch_size: {max_batch_size}
        version_policy: {{ all {{ }} }}
        input [
          {{
            name: "{INPUT_NAME}"
            data_type: TYPE_UINT8
            format: FORMAT_NHWC
            dims: [ {size}, {size}, 3 ]
          }}
        ]
        output [
          {{
            name: "{OUTPUT_PROBABILITIES}"
            data_type: TYPE_FP32
            dims: [ {c} ]
          }},
          {{
            name: "{OUTPUT_FEATURES}"
            data_type: TYPE_FP32
            dims: [ {d} ]
          }},
          {{
            name: "{OUTPUT_LOGITS}"
            data_type: TYPE_FP32
            dims: [ {c} ]
          }},
          {{
            name: "{OUTPUT_ANOMALY_SCORE}"
            data_type: TYPE_FP32
            dims: [ 1 ]
            reshape: {{ shape: [ ] }}
          }},
          {{
            name: "{OUTPUT_ANOMALY_MAP}"
            data_type: TYPE_FP32
            dims: [ {g}, {g} ]
          }}
        ]
        {{batching}}
        instance_group [
          {{
            kind: KIND_CPU
            count: {instances}
          }}
        ]
        parameters {{
          key: "intra_op_thread_count"
          value: {{ string_value: "{threads}" }}
        }}
        parameters {{
          key: "inter_op_thread_count"
          value: {{ string_value: "1" }}
        }}
        parameters {{
          key: "{CLASSES_PARAMETER}"
          value: {{ string_value: "{{classes}}" }}
        }}
        """
        )
        .replace("{engine}", engine)
        .replace("{classes}", ",".join(spec.classes))
        .replace(
            "{batching}",
            f"dynamic_batching {{ max_queue_delay_microseconds: {max_queue_delay_us} }}"
            if dynamic_batching
            else "# no dynamic batching: every request runs alone",
        )
    )


# The Triton Python backend's model: a real module, linted and type-checked with the package,
# copied beside model.onnx in every python-backend entry (it runs inside Triton's stub).
TRITON_PYTHON_MODEL = Path(__file__).with_name("triton_python") / "model.py"


def _write_triton_entry(
    repo: Path,
    model_name: str,
    version: int,
    onnx_path: Path,
    spec: ModelSpec,
    *,
    backend: TritonBackend,
    **config: Any,
) -> Path:
    _check_triton_names(model_name, version)
    model_dir = repo / model_name
    version_dir = model_dir / str(version)
    if version_dir.exists():
        shutil.rmtree(version_dir)
    version_dir.mkdir(parents=True)
    shutil.copyfile(onnx_path, version_dir / ONNX_FILENAME)
    if backend == "python":
        shutil.copyfile(TRITON_PYTHON_MODEL, version_dir / "model.py")
    text = triton_config(model_name, spec, backend, **config)
    (model_dir / "config.pbtxt").write_text(text, encoding="utf-8")
    return model_dir


def write_triton_onnx_entry(
    repo: Path,
    model_name: str,
    version: int,
    onnx_path: Path,
    spec: ModelSpec,
    **config: Any,
) -> Path:
    """``<repo>/<model_name>/config.pbtxt`` for NVIDIA's ONNX Runtime backend and
    ``<version>/model.onnx``; returns the model directory. ``config`` goes to
    :func:`triton_config` (max_batch_size, instances, threads, max_queue_delay_us)."""
    return _write_triton_entry(
        repo, model_name, version, onnx_path, spec, backend="onnxruntime", **config
    )


def write_triton_python_entry(
    repo: Path,
    model_name: str,
    version: int,
    onnx_path: Path,
    spec: ModelSpec,
    **config: Any,
) -> Path:
    """``<repo>/<model_name>/config.pbtxt`` for the Python backend, ``<version>/model.py``
    (onnxruntime over the file beside it) and ``<version>/model.onnx``; returns the model
    directory. Same inputs and outputs as :func:`write_triton_onnx_entry`."""
    return _write_triton_entry(
        repo, model_name, version, onnx_path, spec, backend="python", **config
    )


# --- everything ----------------------------------------------------------------------------


def package_model(
    model: InspectionCNN,
    spec: ModelSpec,
    out_dir: Path,
    *,
    model_name: str,
    triton_version: int,
    parity_images: npt.NDArray[np.uint8],
    calibration_images: npt.NDArray[np.uint8],
    eval_images: npt.NDArray[np.uint8],
    eval_labels: Sequence[int] | npt.NDArray[np.integer[Any]],
    parity_atol: float = 1e-4,
    exporter: Exporter = "torchscript",
    memory: PatchMemory | None = None,
    **triton: int,
) -> PackageResult:
    """Export, check parity, quantize, and write both Triton entries under ``out_dir``::

        model.onnx, model.int8.onnx
        triton-onnx/<model_name>/...    triton-onnx.tar.gz
        triton-python/<model_name>/...  triton-python.tar.gz

    Raises :class:`ParityError` when the export does not match torch within ``parity_atol``.
    """
    _check_triton_names(model_name, triton_version)
    out_dir.mkdir(parents=True, exist_ok=True)
    onnx_path = export_onnx(model, spec, out_dir / "model.onnx", memory=memory, exporter=exporter)
    parity = check_parity(model, onnx_path, parity_images, parity_atol, spec=spec, memory=memory)
    int8_path = quantize_int8(onnx_path, out_dir / "model.int8.onnx", calibration_images)
    delta = accuracy_delta(onnx_path, int8_path, eval_images, eval_labels)
    repos: dict[ArtifactType, Path] = {}
    entries: tuple[tuple[ArtifactType, TritonBackend, str], ...] = (
        (ArtifactType.TRITON_ONNX, "onnxruntime", "triton-onnx"),
        (ArtifactType.TRITON_PYTHON, "python", "triton-python"),
    )
    for kind, backend, folder in entries:
        repo = out_dir / folder
        if repo.exists():
            shutil.rmtree(repo)
        _write_triton_entry(
            repo, model_name, triton_version, onnx_path, spec, backend=backend, **triton
        )
        repos[kind] = repo
    artifacts = [
        PackagedArtifact.of(ArtifactType.ONNX, onnx_path),
        PackagedArtifact.of(ArtifactType.ONNX_INT8, int8_path),
        *(
            PackagedArtifact.of(
                kind,
                deterministic_tarball(
                    repo / model_name, out_dir / f"{repo.name}.tar.gz", arcname=model_name
                ),
            )
            for kind, repo in repos.items()
        ),
    ]
    for artifact in artifacts:
        logger.info(
            "artifact %s %s sha256=%s (%d bytes)",
            artifact.kind,
            artifact.path,
            artifact.sha256,
            artifact.size_bytes,
        )
    return PackageResult(
        artifacts=artifacts,
        parity_diff=parity,
        int8=delta,
        onnx_path=onnx_path,
        int8_path=int8_path,
        triton_onnx_repo=repos[ArtifactType.TRITON_ONNX],
        triton_python_repo=repos[ArtifactType.TRITON_PYTHON],
        details={"exporter": exporter, "opset": _opset(onnx_path)},
    )


def _opset(onnx_path: Path) -> int:
    import onnx  # noqa: PLC0415

    proto = onnx.load(str(onnx_path), load_external_data=False)
    return next(int(o.version) for o in proto.opset_import if o.domain in ("", "ai.onnx"))
