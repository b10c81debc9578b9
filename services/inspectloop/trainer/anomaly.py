"""The second model family: an anomaly detector that needs only good images (PatchCore-style).

A classifier learns the defects it was shown; a new label design comes with few real defects.
This detector learns what *good* looks like instead: the patch features of the classifier's own
backbone (the outputs of stages 2 and 3, each smoothed over its 3 x 3 neighbourhood, the coarser
one brought to the finer grid, concatenated) of good images of every design the version serves
form a memory bank, thinned to ``memory_size`` patches by greedy coreset selection (each next
patch the one farthest from those kept, so rare good appearances are kept too). A patch of a new
image scores its distance to the nearest patch in the bank; the image scores its worst patch.
That is Roth et al., "Towards Total Recall in Industrial Anomaly Detection" (PatchCore, 2022),
on the project's own backbone instead of an ImageNet network (nothing is downloaded).

The threshold is calibrated on held-out good images that no training step saw: the image
scores are maxima over patches, so a Gumbel distribution is fitted to them (method of moments)
and the threshold is its quantile at ``1 - target_false_reject_rate``, never below the largest
calibration score times ``margin``. The served score is the distance over that threshold, so
``>= 1`` is anomalous whatever the model; the anomaly map (the patch scores on the grid) is an
output too, for the validation report and the review station.

:class:`PatchMemory` is a plain torch module inside the exported graph
(``packaging.ServingModule``): the distances are one matrix product, ONNX Runtime runs them
wherever the classifier runs (Triton, the edge), and the int8 build leaves them float.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn

from inspectloop.trainer.model import InspectionCNN, ModelSpec
from inspectloop.trainer.settings import AnomalySettings

log = logging.getLogger(__name__)

STAGES = (2, 3)  # the backbone stages whose outputs make the patch features (1/8, 1/16)
EULER_GAMMA = 0.5772156649015329


def stage_ends(spec: ModelSpec) -> tuple[int, ...]:
    """Indices in ``model.body`` of the last layer of each of :data:`STAGES`."""
    ends = np.cumsum(spec.depths) - 1
    return tuple(int(ends[s]) for s in STAGES)


def grid_size(spec: ModelSpec) -> int:
    """Side of the anomaly map: the resolution of the finest tapped stage."""
    return int(spec.input_size // 2 ** (STAGES[0] + 1))


def backbone_maps(model: InspectionCNN, x: Tensor) -> tuple[Tensor, Tensor, list[Tensor]]:
    """Logits, embedding and the tapped stage outputs, in one pass over the body."""
    taps = set(stage_ends(model.spec))
    maps: list[Tensor] = []
    h = x
    for index, layer in enumerate(model.body):
        h = layer(h)
        if index in taps:
            maps.append(h)
    pooled = model.avg_pool(h)
    if model.max_pool is not None:
        pooled = torch.cat([pooled, model.max_pool(h)], dim=1)
    embedding = model.embed(pooled)
    return model.head(embedding), embedding, maps


def patch_features(maps: Sequence[Tensor]) -> Tensor:
    """``N x C x g x g``: each map smoothed over 3 x 3, brought to the first map's grid."""
    side = maps[0].shape[-1]
    parts = []
    for raw in maps:
        smooth = F.avg_pool2d(raw, 3, 1, 1)
        if smooth.shape[-1] != side:
            smooth = F.interpolate(smooth, size=(side, side), mode="bilinear", align_corners=False)
        parts.append(smooth)
    return torch.cat(parts, dim=1)


class PatchMemory(nn.Module):
    """Scores patch features against the memory bank: ``(score N, map N x g x g)``, both in
    units of the calibrated threshold."""

    def __init__(self, memory: Tensor, threshold: float) -> None:
        super().__init__()
        if memory.ndim != 2 or not len(memory):
            raise ValueError(f"memory must be K x C with K >= 1, got {tuple(memory.shape)}")
        if not threshold > 0:
            raise ValueError(f"threshold must be positive, got {threshold}")
        self.memory: Tensor
        self.memory_norms: Tensor
        self.threshold: Tensor
        self.register_buffer("memory", memory.float().contiguous())
        self.register_buffer("memory_norms", (memory.float() ** 2).sum(dim=1))
        self.register_buffer("threshold", torch.tensor(float(threshold)))

    def distances(self, features: Tensor) -> Tensor:
        """Distance of each patch to its nearest memory patch: ``N x g x g``."""
        n, c, h, w = features.shape
        patches = features.permute(0, 2, 3, 1).reshape(n, h * w, c)
        squared = (
            (patches**2).sum(dim=2, keepdim=True)
            - 2.0 * patches @ self.memory.T
            + self.memory_norms
        )
        nearest = squared.min(dim=2).values.clamp_min(0.0).sqrt()
        return nearest.reshape(n, h, w)

    def forward(self, maps: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
        amap = self.distances(patch_features(maps)) / self.threshold
        return amap.flatten(1).max(dim=1).values, amap


@torch.inference_mode()
def extract_patches(
    model: InspectionCNN, images: npt.NDArray[np.uint8], batch_size: int = 64
) -> Tensor:
    """Patch features of ``images`` (uint8 ``N x H x W x 3``): ``N x C x g x g``."""
    was_training = model.training
    model.eval()
    try:
        out = []
        for start in range(0, len(images), batch_size):
            x = model.spec.preprocess(images[start : start + batch_size])
            out.append(patch_features(backbone_maps(model, x)[2]))
    finally:
        model.train(was_training)
    return torch.cat(out) if out else torch.zeros(0)


def greedy_coreset(patches: Tensor, size: int, seed: int = 0) -> Tensor:
    """``size`` rows of ``patches`` (``M x C``) chosen farthest-first (on a random projection
    to at most 128 dimensions, as PatchCore does, for speed)."""
    if len(patches) <= size:
        return patches
    generator = torch.Generator().manual_seed(seed)
    dims = min(128, patches.shape[1])
    projection = torch.randn(patches.shape[1], dims, generator=generator) / math.sqrt(dims)
    z = patches @ projection
    # Squared distances as |z|^2 - 2 z.c + |c|^2: one matrix-vector product per pick, where
    # cdist against a single row is some 30 times slower on CPU (same farthest-first order).
    squared = (z * z).sum(dim=1)
    chosen = [int(torch.randint(len(z), (1,), generator=generator))]
    nearest = squared - 2 * torch.mv(z, z[chosen[0]]) + squared[chosen[0]]
    for _ in range(size - 1):
        index = int(nearest.argmax())
        chosen.append(index)
        torch.minimum(nearest, squared - 2 * torch.mv(z, z[index]) + squared[index], out=nearest)
    return patches[chosen]


def gumbel_quantile(scores: npt.NDArray[np.float64], probability: float) -> float:
    """The ``probability`` quantile of a Gumbel (maximum) distribution fitted to ``scores`` by
    the method of moments."""
    beta = max(float(np.std(scores, ddof=1)) * math.sqrt(6) / math.pi, 1e-9)
    mu = float(np.mean(scores)) - EULER_GAMMA * beta
    return mu - beta * math.log(-math.log(probability))


@dataclass(frozen=True)
class Calibration:
    """How a design's threshold was set."""

    design: str
    images: int
    max_score: float
    threshold: float
    method: str


def calibrate(
    scores: npt.NDArray[np.float64], settings: AnomalySettings, design: str = ""
) -> Calibration:
    """The threshold for one design from the raw scores of its held-out good images."""
    scores = np.asarray(scores, dtype=np.float64)
    if not len(scores):
        raise ValueError(f"no calibration images for design {design!r}")
    top = float(scores.max())
    if len(scores) < settings.min_calibration_images:
        return Calibration(
            design, len(scores), top, top * settings.margin**2, "largest score x margin^2"
        )
    tail = gumbel_quantile(scores, 1.0 - settings.target_false_reject_rate)
    threshold = max(tail, top * settings.margin)
    method = "Gumbel tail" if tail >= top * settings.margin else "largest score x margin"
    return Calibration(design, len(scores), top, threshold, method)


@dataclass(frozen=True)
class FittedDetector:
    memory: PatchMemory
    calibrations: list[Calibration]


def fit_detector(
    model: InspectionCNN,
    good_by_design: dict[str, npt.NDArray[np.uint8]],
    calibration_by_design: dict[str, npt.NDArray[np.uint8]],
    settings: AnomalySettings,
    seed: int = 0,
) -> FittedDetector:
    """The memory bank of good patches of every design (an even share of the coreset each), and
    one threshold: the largest of the designs' calibrated thresholds."""
    if not good_by_design:
        raise ValueError("no good images to build the anomaly detector from")
    share = max(16, settings.memory_size // len(good_by_design))
    banks = []
    for design, all_images in sorted(good_by_design.items()):
        rng = np.random.default_rng(seed)
        images = all_images
        if len(images) > settings.max_images_per_design:
            images = images[rng.choice(len(images), settings.max_images_per_design, False)]
        patches = extract_patches(model, images)
        flat = patches.permute(0, 2, 3, 1).reshape(-1, patches.shape[1])
        banks.append(greedy_coreset(flat, share, seed))
        log.info(
            "anomaly memory: %d patches of design %r from %d images", share, design, len(images)
        )
    raw = PatchMemory(torch.cat(banks), 1.0)
    calibrations = []
    for design, images in sorted(calibration_by_design.items()):
        if not len(images):
            continue
        scores = raw.distances(extract_patches(model, images)).flatten(1).max(dim=1).values
        calibrations.append(calibrate(scores.double().numpy(), settings, design))
    if not calibrations:
        raise ValueError("no held-out good images to calibrate the anomaly threshold on")
    threshold = max(c.threshold for c in calibrations)
    return FittedDetector(PatchMemory(raw.memory, threshold), calibrations)


@torch.inference_mode()
def anomaly_scores(
    model: InspectionCNN, memory: PatchMemory, images: npt.NDArray[np.uint8]
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """Scores ``N`` and maps ``N x g x g`` of ``images`` (in units of the threshold)."""
    patches = extract_patches(model, images)
    if not len(patches):
        return np.zeros(0, np.float32), np.zeros((0, 0, 0), np.float32)
    amap = memory.distances(patches) / memory.threshold
    return amap.flatten(1).max(dim=1).values.numpy(), amap.numpy()
