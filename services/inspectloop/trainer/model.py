"""The inspection model: a small CNN that says *pass* or which defect class, built for CPU latency.

Architecture (``InspectionCNN``, width multiplier 1, 128 x 128 input)::

    stem     conv3x3/2  3 -> 24, BN, ReLU                      64 x 64
    stage 1  conv3x3/2 24 -> 32, BN, ReLU; conv3x3 32 -> 32    32 x 32
    stage 2  conv3x3/2 32 -> 64, BN, ReLU; conv3x3 64 -> 64    16 x 16
    stage 3  conv3x3/2 64 -> 96, BN, ReLU; conv3x3 96 -> 96     8 x 8
    stage 4  conv3x3/2 96 -> 128, BN, ReLU                      4 x 4
    global average and max pool -> linear 256 -> 48, ReLU  (the embedding)
    linear 48 -> classes                           (the logits)

Why this shape: the defects are small and local (a smudge of a few output pixels, a 3-character
longer lot number, a scratch through the code), so the stem keeps full resolution detail in 24
channels at 64 x 64 before the network gets deep; downsampling is by stride-2 convolutions only
(no pooling layers, nothing ONNX or the Triton backends lack); the second conv of a stage
sees the stage's full width at that resolution, and the last stage's 4 x 4 grid has a
receptive field covering the whole label, which the global classes (skewed label,
misregistration) need. Plain conv-BN-ReLU: batch norm folds into the convolutions at export.
The max pool next to the average: a smudge is a strong response in one cell of the 4 x 4 grid,
which an average over 16 cells dilutes.

The embedding is the model's small feature vector that the gateway publishes with every
inspection, for drift detection in the monitor (a label redesign moves it far; lighting drift
within the trained range barely does). It is the last hidden layer, so it carries what the
classifier uses.

Measured CPU latency (PyTorch 2.15 eager, float32, ``torch.set_num_threads(2)``, batch 1,
3 x 128 x 128, eval mode, no grad; median of 200 runs after warm-up, on a shared 2-core cloud
VM): **about 1.9 ms** per image for width 1.0 (0.25 M parameters, 72 M multiply-adds), 3.2 ms
median and 4.4 ms p99 when the machine is busy (measured by ``benchmarks/data_realism.py``);
width 1.5: about 3.3 ms; width 1.0 at 160 x 160 (the input that reaches 99.7% on the redesign at
full scale, see ``benchmarks/train.py``): about 3.5 ms. Reproduce with
``python -m inspectloop.trainer.model``.

Input normalisation (``Preprocess``): uint8 RGB ``H x W x 3`` images become float ``3 x H x W``
tensors ``(x / 255 - MEAN) / STD`` with the constants below (measured on design A training
images; they only need to be fixed and recorded, batch norm does the rest).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor, nn

from inspectloop.core.taxonomy import GOOD_CLASS, INSPECTION_CLASSES

DEFAULT_CLASSES: tuple[str, ...] = INSPECTION_CLASSES
"""``good`` first, then the defect classes (``core.taxonomy``)."""

MEAN: tuple[float, float, float] = (0.61, 0.60, 0.60)
"""Per-channel mean of ``x / 255`` (R, G, B)."""
STD: tuple[float, float, float] = (0.31, 0.31, 0.28)
"""Per-channel standard deviation of ``x / 255`` (R, G, B)."""

STAGE_CHANNELS: tuple[int, ...] = (24, 32, 64, 96, 128)
"""Channels of the five stages at width multiplier 1 (each halves the resolution)."""
STAGE_DEPTHS: tuple[int, ...] = (2, 2, 2, 2, 1)
"""Default convolutions per stage (the first of each has stride 2)."""


@dataclass(frozen=True)
class Preprocess:
    """How camera images become model input: ``(x / 255 - mean) / std`` per channel, NCHW."""

    mean: tuple[float, float, float] = MEAN
    std: tuple[float, float, float] = STD

    def __call__(self, images: Tensor | npt.NDArray[np.uint8]) -> Tensor:
        """uint8 images ``N x H x W x 3`` (or one ``H x W x 3``) -> float ``N x 3 x H x W``."""
        batch = torch.as_tensor(images)
        if batch.dtype != torch.uint8:
            raise TypeError(f"Preprocess takes uint8 images, got {batch.dtype}")
        if batch.ndim == 3:
            batch = batch.unsqueeze(0)
        if batch.ndim != 4 or batch.shape[-1] != 3:
            raise ValueError(f"expected N x H x W x 3 images, got shape {tuple(batch.shape)}")
        return self.normalise(batch.permute(0, 3, 1, 2))

    def normalise(self, batch: Tensor) -> Tensor:
        """uint8 (or 0..255 float) ``N x 3 x H x W`` -> normalised float32 ``N x 3 x H x W``."""
        mean = torch.tensor(self.mean, dtype=torch.float32).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32).view(1, 3, 1, 1)
        return (batch.to(torch.float32) / 255.0 - mean) / std

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready constants, recorded with a model version."""
        return {"scale": 1 / 255, "mean": list(self.mean), "std": list(self.std), "layout": "NCHW"}


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild an ``InspectionCNN`` (weights aside)."""

    classes: tuple[str, ...] = DEFAULT_CLASSES
    input_size: int = 128
    width_multiplier: float = 1.0
    embedding_dim: int = 48
    depths: tuple[int, ...] = STAGE_DEPTHS
    pooling: Literal["avg", "avgmax"] = "avgmax"
    dropout: float = 0.0
    preprocess: Preprocess = field(default_factory=Preprocess)

    def __post_init__(self) -> None:
        if len(self.classes) < 2 or len(set(self.classes)) != len(self.classes):
            raise ValueError(f"need >= 2 distinct classes, got {self.classes}")
        if self.input_size < 32 or self.input_size % 16:
            raise ValueError(f"input size must be a multiple of 16, >= 32, got {self.input_size}")
        if not 0.25 <= self.width_multiplier <= 4.0:
            raise ValueError(f"width multiplier in [0.25, 4], got {self.width_multiplier}")
        if not 4 <= self.embedding_dim <= 1024:
            raise ValueError(f"embedding dim in [4, 1024], got {self.embedding_dim}")
        if len(self.depths) != len(STAGE_CHANNELS) or min(self.depths) < 1:
            raise ValueError(
                f"depths: {len(STAGE_CHANNELS)} stages of >= 1 conv, got {self.depths}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout in [0, 1), got {self.dropout}")

    @property
    def num_classes(self) -> int:
        """Number of output logits."""
        return len(self.classes)

    @property
    def good_index(self) -> int:
        """Index of the pass class (``good``); -1 if the classes have none."""
        return self.classes.index(GOOD_CLASS) if GOOD_CLASS in self.classes else -1

    def channels(self) -> tuple[int, ...]:
        """Per-stage channel counts after the width multiplier (multiples of 8)."""
        return tuple(_scale(c, self.width_multiplier) for c in STAGE_CHANNELS)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description (lineage, model repository metadata)."""
        data = asdict(self)
        data["classes"] = list(self.classes)
        data["depths"] = list(self.depths)
        data["preprocess"] = self.preprocess.to_dict()
        data["architecture"] = "InspectionCNN/v1"
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelSpec:
        """Inverse of ``to_dict``."""
        pre = data.get("preprocess") or {}
        return cls(
            classes=tuple(data["classes"]),
            input_size=int(data["input_size"]),
            width_multiplier=float(data["width_multiplier"]),
            embedding_dim=int(data["embedding_dim"]),
            depths=tuple(int(d) for d in data.get("depths", STAGE_DEPTHS)),
            pooling=data.get("pooling", "avg"),  # specs written before the field: avg
            dropout=float(data.get("dropout", 0.0)),
            preprocess=Preprocess(
                mean=tuple(pre.get("mean", MEAN)),
                std=tuple(pre.get("std", STD)),
            ),
        )


def _scale(channels: int, multiplier: float) -> int:
    return max(8, round(channels * multiplier / 8) * 8)


def conv_bn_relu(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    """3 x 3 convolution (no bias), batch norm, ReLU."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel_size=3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class InspectionCNN(nn.Module):
    """Small CNN classifier: ``forward`` gives logits over ``spec.classes``, ``features`` the
    embedding. Input: float ``N x 3 x H x W`` normalised by ``spec.preprocess``."""

    def __init__(self, spec: ModelSpec | None = None) -> None:
        super().__init__()
        self.spec = spec or ModelSpec()
        layers: list[nn.Module] = []
        c_in = 3
        for c_out, depth in zip(self.spec.channels(), self.spec.depths, strict=True):
            layers.append(conv_bn_relu(c_in, c_out, stride=2))
            layers.extend(conv_bn_relu(c_out, c_out) for _ in range(depth - 1))
            c_in = c_out
        self.body = nn.Sequential(*layers)
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.max_pool = nn.AdaptiveMaxPool2d(1) if self.spec.pooling == "avgmax" else None
        pooled = c_in * (2 if self.max_pool is not None else 1)
        self.embed = nn.Sequential(
            nn.Flatten(), nn.Linear(pooled, self.spec.embedding_dim), nn.ReLU(inplace=True)
        )
        self.dropout = nn.Dropout(self.spec.dropout)
        self.head = nn.Linear(self.spec.embedding_dim, self.spec.num_classes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """He initialisation for convolutions, unit batch norm, small linear layers."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                bound = 1 / math.sqrt(module.in_features)
                nn.init.uniform_(module.weight, -bound, bound)
                nn.init.zeros_(module.bias)

    def features(self, x: Tensor) -> Tensor:
        """The embedding, ``N x embedding_dim`` (non-negative)."""
        maps = self.body(x)
        pooled = self.avg_pool(maps)
        if self.max_pool is not None:
            pooled = torch.cat([pooled, self.max_pool(maps)], dim=1)
        return self.embed(pooled)  # type: ignore[no-any-return]

    def forward_with_features(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Logits ``N x classes`` and embedding ``N x embedding_dim`` in one pass."""
        embedding = self.features(x)
        return self.head(self.dropout(embedding)), embedding

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``N x classes``."""
        return self.forward_with_features(x)[0]


def build_model(spec: ModelSpec | None = None, seed: int | None = None) -> InspectionCNN:
    """A freshly initialised model; with ``seed`` its weights depend on nothing else (the
    global torch RNG is left as it was)."""
    if seed is None:
        return InspectionCNN(spec)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return InspectionCNN(spec)


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def count_macs(spec: ModelSpec) -> int:
    """Multiply-accumulates of one forward pass at ``spec.input_size`` (convs and linears)."""
    side = spec.input_size
    macs = 0
    c_in = 3
    for c_out, depth in zip(spec.channels(), spec.depths, strict=True):
        side //= 2
        macs += side * side * 9 * c_in * c_out + (depth - 1) * side * side * 9 * c_out * c_out
        c_in = c_out
    pooled = c_in * (2 if spec.pooling == "avgmax" else 1)
    return macs + pooled * spec.embedding_dim + spec.embedding_dim * spec.num_classes


def measure_latency(
    model: nn.Module,
    input_size: int = 128,
    *,
    batch: int = 1,
    runs: int = 200,
    warmup: int = 20,
    threads: int | None = 2,
) -> dict[str, float]:
    """CPU latency of ``model`` in milliseconds: median, p90, p99 and mean of ``runs`` calls."""
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        model.eval()
        x = torch.randn(batch, 3, input_size, input_size)
        times: list[float] = []
        with torch.inference_mode():
            for _ in range(warmup):
                model(x)
            for _ in range(runs):
                start = time.perf_counter()
                model(x)
                times.append((time.perf_counter() - start) * 1000)
    finally:
        torch.set_num_threads(previous)
    return _summary(times)


def _summary(times: Sequence[float]) -> dict[str, float]:
    ordered = sorted(times)

    def quantile(q: float) -> float:
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]

    return {
        "median_ms": quantile(0.5),
        "p90_ms": quantile(0.9),
        "p99_ms": quantile(0.99),
        "mean_ms": sum(ordered) / len(ordered),
    }


def main() -> None:
    """Prints parameters, multiply-adds and CPU latency for a few widths and input sizes."""
    for width, size in ((0.5, 128), (1.0, 128), (1.0, 160), (1.5, 128), (2.0, 128)):
        spec = ModelSpec(input_size=size, width_multiplier=width)
        model = build_model(spec, seed=0)
        lat = measure_latency(model, spec.input_size)
        print(
            f"width {width:4.2f}: {count_parameters(model) / 1e6:5.2f} M params, "
            f"{count_macs(spec) / 1e6:6.1f} M MACs, batch 1 {spec.input_size}px on 2 threads: "
            f"median {lat['median_ms']:.2f} ms, p90 {lat['p90_ms']:.2f} ms"
        )


if __name__ == "__main__":
    main()
