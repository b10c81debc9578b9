"""Reference datasets on disk: class folders, a manifest with content hashes, splits, golden set.

Layout (ImageFolder-compatible under each split)::

    <out>/<split>/<class>/<sha256>.png
    <out>/manifest.jsonl    one JSON object per image, in plan order
    <out>/dataset.json      generator version, spec, counts per split and class, catalogue

Every image is a pure function of ``(seed, stream, index)`` and the spec: its generator is
``np.random.default_rng(SeedSequence(seed, spawn_key=(stream, index)))``, so a dataset is
byte-identical whether it is made by one process or many. The plan (which index gets which
split, class, SKU and severity) comes from its own stream of the same seed, with exact counts:
each split gets its share of ``n``, ``defect_fraction`` of it spread evenly over the defect
classes.

The golden split is small, balanced (``golden_per_class`` of every class, good included),
covers subtle severities (half of each class's defects at severity <= 0.25) and comes from a
fixed seed (``GOLDEN_SEED``), so that every dataset of a product, design and serialization
carries the same golden images whatever its own seed. It uses nominal line variation
(no drift).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from functools import cache
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from inspectloop.simulator.conditions import ConditionsDistribution
from inspectloop.simulator.defects import DEFECT_CLASSES, GOOD
from inspectloop.simulator.designs import DESIGNS
from inspectloop.simulator.fonts import font_source
from inspectloop.simulator.products import (
    DEFAULT_CATALOGUE_SEED,
    SERIALIZATIONS,
    Serialization,
    build_catalogue,
)
from inspectloop.simulator.render import GENERATOR_VERSION, default_renderer, encode_png
from inspectloop.simulator.surfaces import (
    SURFACE_DEFECTS,
    SURFACE_PRODUCTS,
    find_surface,
    render_surface,
)

Product = Literal["label", "surface"]
PRODUCTS: tuple[Product, ...] = ("label", "surface")
GOLDEN_SEED = 20240917
GOLDEN_SPLIT = "golden"
DEFAULT_SPLITS: tuple[tuple[str, float], ...] = (("train", 0.7), ("val", 0.15), ("test", 0.15))
MAIN_STREAM, GOLDEN_STREAM, PLAN_STREAM = 0, 1, 2


def defect_classes(product: Product) -> tuple[str, ...]:
    """The defect classes of ``product``."""
    return DEFECT_CLASSES if product == "label" else SURFACE_DEFECTS


def product_skus(product: Product, catalogue_seed: int = DEFAULT_CATALOGUE_SEED) -> tuple[str, ...]:
    """The SKU ids (label) or product ids (surface) of ``product``."""
    if product == "label":
        return tuple(s.sku_id for s in _catalogue(catalogue_seed))
    return tuple(p.product_id for p in SURFACE_PRODUCTS)


@cache
def _catalogue(seed: int) -> tuple[Any, ...]:
    return build_catalogue(seed)


@dataclass(frozen=True)
class DatasetSpec:
    """What to generate. Empty ``skus`` or ``defects`` mean all of the product's."""

    product: Product = "label"
    n: int = 1000
    seed: int = 0
    size: int = 128
    design: str = "A"
    serialization: Serialization = "gs1-dm"
    skus: tuple[str, ...] = ()
    defects: tuple[str, ...] = ()
    defect_fraction: float = 0.5
    splits: tuple[tuple[str, float], ...] = DEFAULT_SPLITS
    severity: tuple[float, float] = (0.0, 1.0)
    lighting_drift: float = 0.0
    blur_drift: float = 0.0
    golden_per_class: int = 4
    catalogue_seed: int = DEFAULT_CATALOGUE_SEED

    def validate(self) -> DatasetSpec:
        """This spec with defaults filled in, or ValueError."""
        if self.product not in PRODUCTS:
            raise ValueError(f"product is one of {PRODUCTS}")
        if self.design not in DESIGNS:
            raise ValueError(f"design is one of {DESIGNS}")
        if self.serialization not in SERIALIZATIONS:
            raise ValueError(f"serialization is one of {SERIALIZATIONS}")
        if self.n < 0 or self.golden_per_class < 0:
            raise ValueError("n and golden_per_class must be >= 0")
        if not 0.0 <= self.defect_fraction <= 1.0:
            raise ValueError("defect_fraction is in [0, 1]")
        low, high = self.severity
        if not 0.0 <= low <= high <= 1.0:
            raise ValueError("severity range must lie in [0, 1]")
        if (
            not self.splits
            or any(f < 0 for _, f in self.splits)
            or sum(f for _, f in self.splits) <= 0
        ):
            raise ValueError("splits need positive fractions")
        names = [name for name, _ in self.splits]
        if len(set(names)) != len(names) or GOLDEN_SPLIT in names:
            raise ValueError(f"split names must be unique and not {GOLDEN_SPLIT!r}")
        known_skus = product_skus(self.product, self.catalogue_seed)
        skus = self.skus or known_skus
        unknown = set(skus) - set(known_skus)
        if unknown:
            raise ValueError(f"unknown SKUs {sorted(unknown)}; known: {known_skus}")
        known_defects = defect_classes(self.product)
        defects = self.defects or known_defects
        if set(defects) - set(known_defects):
            raise ValueError(f"unknown defects {sorted(set(defects) - set(known_defects))}")
        if self.size < 32:
            raise ValueError("size must be >= 32")
        self.distribution()  # validates drifts
        return replace(self, skus=tuple(skus), defects=tuple(defects))

    def distribution(self) -> ConditionsDistribution:
        """The line's conditions, with this spec's drifts applied."""
        return _distribution(self.lighting_drift, self.blur_drift)


@cache
def _distribution(lighting: float, blur: float) -> ConditionsDistribution:
    return ConditionsDistribution().with_lighting_drift(lighting).with_blur(blur)


@dataclass(frozen=True)
class ItemSpec:
    """One image to render: everything it depends on."""

    index: int
    split: str
    label: str
    sku: str
    severity: float
    seed: int
    stream: int
    spec: DatasetSpec = field(repr=False)

    @property
    def defect(self) -> str | None:
        """The defect class, or None for a good item."""
        return None if self.label == GOOD else self.label

    def rng(self) -> np.random.Generator:
        """This item's generator."""
        return np.random.default_rng(
            np.random.SeedSequence(self.seed, spawn_key=(self.stream, self.index))
        )


def _shares(n: int, fractions: Sequence[float]) -> list[int]:
    """Split ``n`` into integer shares proportional to ``fractions`` (largest remainder)."""
    total = sum(fractions)
    raw = [n * f / total for f in fractions]
    counts = [int(r) for r in raw]
    order = sorted(range(len(raw)), key=lambda i: (counts[i] - raw[i], i))
    for i in order[: n - sum(counts)]:
        counts[i] += 1
    return counts


def plan(spec: DatasetSpec) -> list[ItemSpec]:
    """Every item of the dataset, golden set last, in a deterministic order."""
    spec = spec.validate()
    rng = np.random.default_rng(np.random.SeedSequence(spec.seed, spawn_key=(PLAN_STREAM,)))
    items: list[ItemSpec] = []
    index = 0
    low, high = spec.severity
    for (split, _), count in zip(
        spec.splits, _shares(spec.n, [f for _, f in spec.splits]), strict=True
    ):
        n_defect = round(count * spec.defect_fraction)
        per_class = _shares(n_defect, [1.0] * len(spec.defects))
        order = rng.permutation(len(spec.defects))
        labels = [GOOD] * (count - n_defect)
        for rank, k in enumerate(order):
            labels += [spec.defects[int(k)]] * per_class[rank]
        labels = [labels[int(i)] for i in rng.permutation(len(labels))]
        sku_offset = int(rng.integers(0, len(spec.skus)))
        severities = rng.uniform(low, high, size=len(labels))
        for j, label in enumerate(labels):
            items.append(
                ItemSpec(
                    index=index,
                    split=split,
                    label=label,
                    sku=spec.skus[(j + sku_offset) % len(spec.skus)],
                    severity=0.0 if label == GOOD else round(float(severities[j]), 4),
                    seed=spec.seed,
                    stream=MAIN_STREAM,
                    spec=spec,
                )
            )
            index += 1
    items.extend(golden_plan(spec))
    return items


def golden_plan(spec: DatasetSpec) -> list[ItemSpec]:
    """The golden items: fixed seed, every class ``golden_per_class`` times, subtle first."""
    spec = spec.validate()
    k = spec.golden_per_class
    golden_spec = replace(spec, lighting_drift=0.0, blur_drift=0.0)
    severities = [round(0.05 + 0.9 * (i / max(k - 1, 1)) ** 2, 4) for i in range(k)]
    items = []
    index = 0
    for label in (GOOD, *defect_classes(spec.product)):
        for i in range(k):
            items.append(
                ItemSpec(
                    index=index,
                    split=GOLDEN_SPLIT,
                    label=label,
                    sku=spec.skus[index % len(spec.skus)],
                    severity=0.0 if label == GOOD else severities[i],
                    seed=GOLDEN_SEED,
                    stream=GOLDEN_STREAM,
                    spec=golden_spec,
                )
            )
            index += 1
    return items


def render_item(item: ItemSpec) -> tuple[npt.NDArray[np.uint8], dict[str, Any]]:
    """The image and metadata of ``item``."""
    spec = item.spec
    if spec.product == "label":
        sku = next(s for s in _catalogue(spec.catalogue_seed) if s.sku_id == item.sku)
        return default_renderer().render(
            sku,
            spec.design,  # type: ignore[arg-type]
            spec.serialization,
            rng=item.rng(),
            defect=item.defect,  # type: ignore[arg-type]
            severity=item.severity,
            distribution=spec.distribution(),
            size=spec.size,
        )
    return render_surface(
        find_surface(item.sku),
        spec.design,  # type: ignore[arg-type]
        rng=item.rng(),
        defect=item.defect,  # type: ignore[arg-type]
        severity=item.severity,
        distribution=spec.distribution(),
        size=spec.size,
    )


def build_item(item: ItemSpec) -> tuple[bytes, dict[str, Any]]:
    """PNG bytes and the manifest entry of ``item`` (picklable: runs in worker processes)."""
    image, metadata = render_item(item)
    png = encode_png(image)
    digest = hashlib.sha256(png).hexdigest()
    entry = {
        "path": f"{item.split}/{item.label}/{digest}.png",
        "split": item.split,
        "label": item.label,
        "index": item.index,
        "seed": item.seed,
        "stream": item.stream,
        "sha256": digest,
        **metadata,
    }
    return png, entry


def iter_items(
    items: Sequence[ItemSpec], workers: int = 1
) -> Iterator[tuple[bytes, dict[str, Any]]]:
    """``build_item`` over ``items`` in order, on ``workers`` processes."""
    if workers <= 1:
        for item in items:
            yield build_item(item)
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:
        yield from pool.map(build_item, items, chunksize=32)


def write_dataset(
    spec: DatasetSpec, out: Path, *, workers: int = 1, overwrite: bool = False
) -> dict[str, Any]:
    """Generates the dataset into ``out``; returns the ``dataset.json`` summary."""
    spec = spec.validate()
    out = Path(out)
    manifest_path = out / "manifest.jsonl"
    split_names = [name for name, _ in spec.splits] + [GOLDEN_SPLIT]
    if manifest_path.exists() or any((out / name).exists() for name in split_names):
        if not overwrite:
            raise FileExistsError(f"{out} already holds a dataset; pass overwrite=True")
        for name in split_names:
            if (out / name).is_dir():
                shutil.rmtree(out / name)
    out.mkdir(parents=True, exist_ok=True)
    items = plan(spec)
    counts: dict[str, Counter[str]] = {name: Counter() for name in split_names}
    tmp = manifest_path.with_suffix(".jsonl.tmp")
    with tmp.open("w", encoding="utf-8") as manifest:
        for png, entry in iter_items(items, workers):
            path = out / entry["path"]
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(png)
            manifest.write(json.dumps(entry, sort_keys=True) + "\n")
            counts[entry["split"]][entry["label"]] += 1
    tmp.replace(manifest_path)
    summary = {
        "generator": "inspectloop.simulator",
        "generator_version": GENERATOR_VERSION,
        "seed": spec.seed,
        "golden_seed": GOLDEN_SEED,
        "spec": asdict(spec),
        "classes": [GOOD, *defect_classes(spec.product)],
        "counts": {name: dict(sorted(c.items())) for name, c in counts.items()},
        "total": len(items),
        "conditions": spec.distribution().to_dict(),
        "catalogue": (
            [s.to_dict() for s in _catalogue(spec.catalogue_seed)]
            if spec.product == "label"
            else [p.to_dict() for p in SURFACE_PRODUCTS]
        ),
        "fonts": font_source() if spec.product == "label" else None,
        "png": "8-bit RGB, Sub filter, deflate Huffman-only, no metadata",
        "layout": "<split>/<class>/<sha256>.png",
    }
    (out / "dataset.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return summary


def read_manifest(out: Path) -> list[dict[str, Any]]:
    """The manifest entries of the dataset in ``out``."""
    lines = (Path(out) / "manifest.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def verify_dataset(out: Path) -> list[str]:
    """Problems found: missing files, hash mismatches, stray files. Empty when sound."""
    out = Path(out)
    problems = []
    listed = set()
    for entry in read_manifest(out):
        path = out / entry["path"]
        listed.add(path)
        if not path.is_file():
            problems.append(f"missing {entry['path']}")
        elif hashlib.sha256(path.read_bytes()).hexdigest() != entry["sha256"]:
            problems.append(f"hash mismatch {entry['path']}")
    for path in out.glob("*/*/*.png"):
        if path not in listed:
            problems.append(f"not in manifest {path.relative_to(out)}")
    return problems
