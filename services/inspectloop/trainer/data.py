"""Simulator datasets as tensors: load from disk, keep decoded in memory, augment for training.

A dataset on disk has the simulator's layout ``<root>/<split>/<class>/<sha256>.png`` (the same as
torchvision's ``ImageFolder``) and a manifest beside the splits. ``load_split`` walks the class
folders (sorted, so the order never depends on the filesystem), decodes the PNGs with Pillow into
one ``N x H x W x 3`` uint8 array and joins each image's manifest record (labels, generation
parameters) when the manifest is there. Decoded splits are cached in memory per path: the
datasets are small (a 128 x 128 image is 48 KiB decoded, so 5,000 images take 240 MiB).

``InspectionDataset`` is the torch ``Dataset`` over an ``ImageSet``: it normalises with the
model's ``Preprocess`` and, for training, applies ``Augment`` — only what the camera and the line
really vary: exposure and colour temperature (per-channel gain), a small shift of the label in
the image, a little blur and sensor noise. No flips and no rotations: the label layout is not
symmetric (a mirrored label is a different label), and a rotated label is the ``skewed_label``
defect. ``batch(indices, generator)`` builds a whole augmented batch at once in torch, which is
what the training loop uses (per-item ``__getitem__`` is there for ``DataLoader`` users).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F  # noqa: N812
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from inspectloop.trainer.model import DEFAULT_CLASSES, Preprocess

IMAGE_SUFFIX = ".png"
MANIFEST_NAMES = ("manifest.jsonl", "manifest.json")


@dataclass
class ImageSet:
    """Decoded images with labels: ``images`` ``N x H x W x 3`` uint8, ``labels`` ``N`` int64
    indices into ``classes``, and one metadata record per image (manifest entry, or at least
    the file path)."""

    images: npt.NDArray[np.uint8]
    labels: npt.NDArray[np.int64]
    classes: tuple[str, ...]
    records: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.images.ndim != 4 or self.images.shape[-1] != 3 or self.images.dtype != np.uint8:
            raise ValueError(f"images must be N x H x W x 3 uint8, got {self.images.shape}")
        if len(self.labels) != len(self.images):
            raise ValueError("one label per image")
        if len(self.labels) and (self.labels.min() < 0 or self.labels.max() >= len(self.classes)):
            raise ValueError("labels must index classes")
        if not self.records:
            self.records = [{} for _ in range(len(self.images))]
        if len(self.records) != len(self.images):
            raise ValueError("one record per image")

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, indices: Sequence[int] | npt.NDArray[np.integer[Any]]) -> ImageSet:
        """The images at ``indices``, in that order."""
        idx = np.asarray(indices, dtype=np.int64)
        return ImageSet(
            self.images[idx],
            self.labels[idx],
            self.classes,
            [self.records[int(i)] for i in idx],
        )

    def where(self, predicate: Any) -> ImageSet:
        """The images whose record satisfies ``predicate(record)``."""
        return self.subset([i for i, r in enumerate(self.records) if predicate(r)])

    def class_counts(self) -> dict[str, int]:
        """Images per class (every class listed, zeros included)."""
        counts = np.bincount(self.labels, minlength=len(self.classes))
        return {name: int(counts[i]) for i, name in enumerate(self.classes)}

    def label_names(self) -> list[str]:
        """The class name of each image."""
        return [self.classes[int(i)] for i in self.labels]

    @staticmethod
    def concat(parts: Iterable[ImageSet]) -> ImageSet:
        """One set from several with the same classes and image size."""
        items = list(parts)
        if not items:
            raise ValueError("nothing to concatenate")
        classes = items[0].classes
        if any(p.classes != classes for p in items):
            raise ValueError("all parts must have the same classes")
        return ImageSet(
            np.concatenate([p.images for p in items]),
            np.concatenate([p.labels for p in items]),
            classes,
            [r for p in items for r in p.records],
        )

    @staticmethod
    def from_arrays(
        images: Sequence[npt.NDArray[np.uint8]] | npt.NDArray[np.uint8],
        label_names: Sequence[str],
        classes: Sequence[str] = DEFAULT_CLASSES,
        records: Sequence[dict[str, Any]] | None = None,
    ) -> ImageSet:
        """A set from in-memory images and class names (e.g. straight from the renderer)."""
        index = {name: i for i, name in enumerate(classes)}
        unknown = sorted(set(label_names) - set(index))
        if unknown:
            raise ValueError(f"labels {unknown} are not among the classes {tuple(classes)}")
        stacked = np.stack(list(images)) if len(images) else np.zeros((0, 1, 1, 3), np.uint8)
        return ImageSet(
            stacked.astype(np.uint8, copy=False),
            np.array([index[n] for n in label_names], dtype=np.int64),
            tuple(classes),
            [dict(r) for r in records] if records is not None else [],
        )


# --- loading ------------------------------------------------------------------------------

_CACHE: dict[tuple[str, str, tuple[str, ...]], ImageSet] = {}
_CACHE_LOCK = threading.Lock()


def clear_cache() -> None:
    """Forgets every decoded split."""
    with _CACHE_LOCK:
        _CACHE.clear()


def decode_png(path: Path) -> npt.NDArray[np.uint8]:
    """An image file as ``H x W x 3`` uint8 RGB."""
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), dtype=np.uint8)


def read_manifest(root: Path) -> dict[str, dict[str, Any]]:
    """The manifest's records by relative path (``split/class/name.png``), or ``{}`` if the
    dataset has none. Accepts JSON lines (one record per line) or a JSON document whose records
    are a list (top level, or under ``images``/``records``/``items``)."""
    for name in MANIFEST_NAMES:
        path = root / name
        if path.is_file():
            return _index_records(_parse_manifest(path))
    return {}


def _parse_manifest(path: Path) -> list[dict[str, Any]]:
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    data = json.loads(text)
    if isinstance(data, list):
        return [r for r in data if isinstance(r, dict)]
    if isinstance(data, dict):
        for key in ("images", "records", "items", "entries"):
            if isinstance(data.get(key), list):
                return [r for r in data[key] if isinstance(r, dict)]
    raise ValueError(f"{path}: no list of image records found")


def _index_records(records: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    index: dict[str, dict[str, Any]] = {}
    for record in records:
        for key in ("path", "file", "relpath", "filename"):
            value = record.get(key)
            if isinstance(value, str):
                index[Path(value).as_posix()] = record
                break
    return index


def load_split(
    root: str | Path,
    split: str,
    classes: Sequence[str] = DEFAULT_CLASSES,
    *,
    cache: bool = True,
) -> ImageSet:
    """Split ``split`` of the dataset at ``root``: every ``<root>/<split>/<class>/*.png``.

    ``classes`` fixes the label indices (default: ``good`` then the label defect classes); a
    class folder on disk that is not among them is an error, a class without a folder simply
    has no images. Cached per (root, split, classes) unless ``cache`` is false.
    """
    base = Path(root).resolve()
    key = (str(base), split, tuple(classes))
    if cache:
        with _CACHE_LOCK:
            hit = _CACHE.get(key)
        if hit is not None:
            return hit
    split_dir = base / split
    if not split_dir.is_dir():
        raise FileNotFoundError(f"no split {split!r} under {base}")
    on_disk = sorted(p.name for p in split_dir.iterdir() if p.is_dir())
    unknown = sorted(set(on_disk) - set(classes))
    if unknown:
        raise ValueError(f"{split_dir}: class folders {unknown} are not among {tuple(classes)}")
    manifest = read_manifest(base)
    images: list[npt.NDArray[np.uint8]] = []
    labels: list[int] = []
    records: list[dict[str, Any]] = []
    for label, name in enumerate(classes):
        folder = split_dir / name
        if not folder.is_dir():
            continue
        for path in sorted(folder.glob(f"*{IMAGE_SUFFIX}")):
            rel = path.relative_to(base).as_posix()
            images.append(decode_png(path))
            labels.append(label)
            record = dict(manifest.get(rel, {}))
            record.setdefault("path", rel)
            records.append(record)
    if images and len({im.shape for im in images}) != 1:
        raise ValueError(f"{split_dir}: images differ in size")
    result = ImageSet(
        np.stack(images) if images else np.zeros((0, 1, 1, 3), dtype=np.uint8),
        np.asarray(labels, dtype=np.int64),
        tuple(classes),
        records,
    )
    if cache:
        with _CACHE_LOCK:
            _CACHE[key] = result
    return result


def list_splits(root: str | Path) -> list[str]:
    """The split folders of the dataset at ``root`` (those holding class folders)."""
    base = Path(root)
    return sorted(
        p.name for p in base.iterdir() if p.is_dir() and any(c.is_dir() for c in p.iterdir())
    )


def load_dataset(
    root: str | Path, classes: Sequence[str] = DEFAULT_CLASSES, *, cache: bool = True
) -> dict[str, ImageSet]:
    """Every split of the dataset at ``root``, by name."""
    return {s: load_split(root, s, classes, cache=cache) for s in list_splits(root)}


# --- augmentation and the torch dataset ----------------------------------------------------


REFERENCE_TEMPERATURE_K = 5500.0
"""The white balance the augmentation's colour gains are relative to."""


@dataclass(frozen=True)
class Augment:
    """Training augmentation: what the camera and the line vary between images of one label.

    - exposure: one gain for all channels, uniform in ``exposure`` (lamps age, shutters and
      line speed vary);
    - colour temperature of the light: per-channel gains of a black body at a temperature drawn
      uniformly in mired between ``temperature_k``, relative to the 5500 K white balance;
    - pose: a whole-pixel shift of up to ``shift`` pixels each way (edges replicated);
    - focus: with probability ``blur_p``, a 3 x 3 binomial blur;
    - sensor noise: Gaussian with sigma uniform in ``[0, noise]`` grey levels.

    No flips, no rotations: the label is not symmetric, and a rotated label is a defect.
    """

    exposure: tuple[float, float] = (0.62, 1.2)
    temperature_k: tuple[float, float] = (3200.0, 7500.0)
    shift: int = 2
    blur_p: float = 0.2
    noise: float = 3.0

    def __call__(self, batch: Tensor, generator: torch.Generator) -> Tensor:
        """Augments a float ``N x 3 x H x W`` batch in 0..255 (returns a new tensor)."""
        n = batch.shape[0]
        if n == 0:
            return batch

        def uniform(*shape: int, low: float = 0.0, high: float = 1.0) -> Tensor:
            return torch.rand(*shape, generator=generator) * (high - low) + low

        gain = uniform(n, 1, low=self.exposure[0], high=self.exposure[1])
        mired = uniform(n, low=1e6 / self.temperature_k[1], high=1e6 / self.temperature_k[0])
        colour = blackbody_rgb(1e6 / mired) / blackbody_rgb(torch.tensor([REFERENCE_TEMPERATURE_K]))
        out = batch * (gain * colour).view(n, 3, 1, 1)
        if self.shift > 0:
            offsets = torch.randint(-self.shift, self.shift + 1, (n, 2), generator=generator)
            out = _shift(out, offsets)
        if self.blur_p > 0:
            blurred = _binomial_blur(out)
            pick = (uniform(n) < self.blur_p).view(n, 1, 1, 1)
            out = torch.where(pick, blurred, out)
        if self.noise > 0:
            sigma = uniform(n, 1, 1, 1, high=self.noise)
            out = out + torch.randn(out.shape, generator=generator) * sigma
        return out.clamp_(0.0, 255.0)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready parameters (recorded with the training config)."""
        return {
            "exposure": list(self.exposure),
            "temperature_k": list(self.temperature_k),
            "shift": self.shift,
            "blur_p": self.blur_p,
            "noise": self.noise,
        }


def blackbody_rgb(kelvin: Tensor) -> Tensor:
    """Approximate sRGB colour (0..1, ``N x 3``) of black bodies at ``kelvin`` (``N``), by
    Tanner Helland's fit (1000..40000 K)."""
    t = kelvin.clamp(1000.0, 40000.0) / 100.0
    warm = t <= 66
    red = torch.where(
        warm, torch.full_like(t, 255.0), 329.698727446 * (t - 60).clamp(min=1) ** -0.1332047592
    )
    green = torch.where(
        warm,
        99.4708025861 * torch.log(t) - 161.1195681661,
        288.1221695283 * (t - 60).clamp(min=1) ** -0.0755148492,
    )
    blue = torch.where(
        t >= 66,
        torch.full_like(t, 255.0),
        torch.where(
            t <= 19,
            torch.zeros_like(t),
            138.5177312231 * torch.log((t - 10).clamp(min=1)) - 305.0447927307,
        ),
    )
    return torch.stack([red, green, blue], dim=1).clamp(0.0, 255.0) / 255.0


def _shift(batch: Tensor, offsets: Tensor) -> Tensor:
    """Shifts each image by whole pixels ``(dx, dy)``, replicating the edges."""
    pad = int(offsets.abs().max())
    if pad == 0:
        return batch
    _, _, h, w = batch.shape
    padded = F.pad(batch, (pad, pad, pad, pad), mode="replicate")
    out = torch.empty_like(batch)
    for i, (dx, dy) in enumerate(offsets.tolist()):
        out[i] = padded[i, :, pad - dy : pad - dy + h, pad - dx : pad - dx + w]
    return out


def _binomial_blur(batch: Tensor) -> Tensor:
    taps = torch.tensor([1.0, 2.0, 1.0])
    kernel = (taps[:, None] * taps[None, :]) / 16.0
    weight = kernel.expand(3, 1, 3, 3).contiguous()
    return F.conv2d(F.pad(batch, (1, 1, 1, 1), mode="replicate"), weight, groups=3)


class InspectionDataset(Dataset[tuple[Tensor, int]]):
    """A torch dataset over an ``ImageSet``: ``(normalised 3 x H x W float, label)`` items.

    With ``augment`` set, items are augmented with a generator seeded from ``seed`` (per item
    for ``__getitem__``; ``batch`` takes the caller's generator, so a training loop controls the
    whole random stream)."""

    def __init__(
        self,
        images: ImageSet,
        preprocess: Preprocess | None = None,
        augment: Augment | None = None,
        seed: int = 0,
    ) -> None:
        self.images = images
        self.preprocess = preprocess or Preprocess()
        self.augment = augment
        self.seed = seed
        self._pixels = torch.from_numpy(np.ascontiguousarray(images.images)).permute(0, 3, 1, 2)
        self._labels = torch.from_numpy(images.labels)

    @property
    def classes(self) -> tuple[str, ...]:
        """Class names, by label index."""
        return self.images.classes

    @property
    def labels(self) -> Tensor:
        """All labels, ``N`` int64."""
        return self._labels

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        x, y = self.batch(torch.tensor([index]), generator)
        return x[0], int(y[0])

    def batch(
        self, indices: Tensor, generator: torch.Generator | None = None, *, augment: bool = True
    ) -> tuple[Tensor, Tensor]:
        """Normalised inputs ``B x 3 x H x W`` and labels ``B`` for ``indices``; augmented when
        the dataset has an ``Augment`` and ``augment`` is true."""
        pixels = self._pixels[indices]
        if self.augment is not None and augment:
            gen = generator if generator is not None else torch.Generator().manual_seed(self.seed)
            pixels = self.augment(pixels.to(torch.float32), gen)
        return self.preprocess.normalise(pixels), self._labels[indices]

    def with_augment(self, augment: Augment | None, seed: int | None = None) -> InspectionDataset:
        """The same images with another augmentation (no copy of the pixels)."""
        clone = InspectionDataset.__new__(InspectionDataset)
        clone.images = self.images
        clone.preprocess = self.preprocess
        clone.augment = augment
        clone.seed = self.seed if seed is None else seed
        clone._pixels = self._pixels
        clone._labels = self._labels
        return clone


def image_statistics(images: ImageSet | npt.NDArray[np.uint8]) -> dict[str, float]:
    """Mean brightness (luma, 0..255), mean R, G, B, and the red-over-blue ratio of a set."""
    pixels = images.images if isinstance(images, ImageSet) else images
    if len(pixels) == 0:
        raise ValueError("no images")
    means = pixels.reshape(-1, 3).mean(axis=0, dtype=np.float64)
    r, g, b = (float(v) for v in means)
    return {
        "luma": 0.299 * r + 0.587 * g + 0.114 * b,
        "r": r,
        "g": g,
        "b": b,
        "r_over_b": r / max(b, 1e-9),
    }


def records_by(images: ImageSet, key: str) -> Mapping[Any, list[int]]:
    """Indices of ``images`` grouped by ``record[key]`` (e.g. ``design``, ``sku``)."""
    groups: dict[Any, list[int]] = {}
    for i, record in enumerate(images.records):
        groups.setdefault(record.get(key), []).append(i)
    return groups
