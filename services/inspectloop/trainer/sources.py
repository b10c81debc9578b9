"""What a retraining's snapshot is made of, gathered from where the plant keeps it.

- the reference datasets (the plant's labelled archive, in the simulator layout on disk);
- operator-labelled production images (the label store, bytes from the blob store);
- challenge sets and artwork uploaded to the registry (``inspectloop datasets upload``);
- for every label design in the request's scope that the reference does not hold (a new
  design), defects synthesised in image space on the good production images of that design
  (``synthesis``): only those of the snapshot's train split, so that no held-out image
  leaks into training through a synthetic copy of it.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image

from inspectloop.core.blobstore import BlobStore
from inspectloop.core.errors import InspectloopError
from inspectloop.core.registry_client import RegistryClient
from inspectloop.core.taxonomy import GOOD_CLASS
from inspectloop.trainer.data import load_split
from inspectloop.trainer.settings import TrainerSection
from inspectloop.trainer.snapshot import (
    MANIFEST,
    ChallengeSet,
    LabelledImage,
    _as_model_input,
    dataset_design,
    hash_split,
)
from inspectloop.trainer.synthesis import DesignStatistics, SynthesisPlan, write_synthetic_dataset

log = logging.getLogger(__name__)

Image8 = npt.NDArray[np.uint8]
# Confirmed defects pasted onto a new design: at most this many of each source design.
MAX_CONFIRMED = 200


def labelled_splits(settings: TrainerSection) -> tuple[tuple[str, float], ...]:
    """How operator-labelled images are split by hash: train, val (calibration), test
    (acceptance)."""
    a = settings.acceptance
    return (
        ("train", 1.0 - a.calibration_fraction - a.held_out_fraction),
        ("val", a.calibration_fraction),
        ("test", a.held_out_fraction),
    )


def _decode(data: bytes, size: int) -> Image8:
    png, _ = _as_model_input(data, size)
    with Image.open(io.BytesIO(png)) as image:
        return np.asarray(image.convert("RGB"), dtype=np.uint8)


@dataclass
class Sources:
    settings: TrainerSection
    registry: RegistryClient
    blobs: BlobStore
    work: Path

    def reference_designs(self) -> set[str]:
        return {d for d in map(dataset_design, self.settings.reference_datasets) if d}

    def _train_images(
        self, labelled: Sequence[LabelledImage], *, design: str | None, good: bool
    ) -> list[tuple[Image8, str]]:
        """Decoded labelled images of the train split (a design, good or defective)."""
        splits = labelled_splits(self.settings)
        out = []
        for image in labelled:
            if design is not None and image.label_design != design:
                continue
            if (image.label == GOOD_CLASS) != good or hash_split(image.sha256, splits) != "train":
                continue
            try:
                data = self.blobs.get(image.sha256)
                out.append((_decode(data, self.settings.image_size), image.label))
            except (InspectloopError, OSError) as exc:
                log.warning("labelled image %s left out of synthesis: %s", image.sha256, exc)
        return out

    def _reference_images(self, *, good: bool, limit: int) -> dict[str, list[tuple[Image8, str]]]:
        """Reference training images by design, good or defective (at most ``limit`` each)."""
        out: dict[str, list[tuple[Image8, str]]] = {}
        for dataset in self.settings.reference_datasets:
            if not (dataset / "train").is_dir():
                continue
            images = load_split(dataset, "train", cache=False)
            names = images.label_names()
            chosen = [i for i, n in enumerate(names) if (n == GOOD_CLASS) == good][:limit]
            out.setdefault(dataset_design(dataset), []).extend(
                (images.images[i], names[i]) for i in chosen
            )
        return out

    def confirmed_defects(
        self, labelled: Sequence[LabelledImage]
    ) -> list[tuple[Image8, str, DesignStatistics]]:
        """Real defects of any design (the reference's and operators' confirmed ones, train
        split only), each with the statistics of its own design's good units."""
        goods = {
            d: [i for i, _ in v] for d, v in self._reference_images(good=True, limit=300).items()
        }
        defects = {d: v for d, v in self._reference_images(good=False, limit=MAX_CONFIRMED).items()}
        for design in {i.label_design for i in labelled if i.label_design}:
            goods.setdefault(design, []).extend(
                i for i, _ in self._train_images(labelled, design=design, good=True)[:300]
            )
            defects.setdefault(design, []).extend(
                self._train_images(labelled, design=design, good=False)[:MAX_CONFIRMED]
            )
        out: list[tuple[Image8, str, DesignStatistics]] = []
        for design, items in defects.items():
            if goods.get(design) and items:
                stats = DesignStatistics.fit(np.stack(goods[design]))
                out.extend((image, label, stats) for image, label in items)
        return out

    def synthetic_datasets(
        self, designs: Sequence[str], labelled: Sequence[LabelledImage]
    ) -> list[Path]:
        """A synthetic dataset for each new design with good labelled images to work from."""
        plan = self.settings.synthesis
        if not designs or plan.defective + plan.subtle + plan.pasted == 0:
            return []
        confirmed = self.confirmed_defects(labelled) if plan.pasted else []
        out = []
        for design in designs:
            goods = [i for i, _ in self._train_images(labelled, design=design, good=True)]
            if not goods:
                log.warning("no good labelled images of design %r: nothing to synthesise", design)
                continue
            out.append(
                write_synthetic_dataset(
                    self.work / "synthetic",
                    SynthesisPlan(
                        design=design,
                        defective=plan.defective,
                        subtle=plan.subtle,
                        subtle_severity=plan.subtle_severity,
                        pasted=plan.pasted,
                        artwork_goods=plan.artwork_goods,
                        test_fraction=plan.test_fraction,
                        min_visible_fraction=plan.min_visible_fraction,
                        seed=self.settings.seed,
                    ),
                    goods,
                    confirmed=confirmed,
                    artwork=self.artwork(design),
                )
            )
        return out

    # --- the registry's datasets ---------------------------------------------------------------

    def challenge_sets(self, designs: Sequence[str]) -> list[ChallengeSet]:
        """The newest version of every challenge set of ``designs``, downloaded."""
        out = []
        for design in sorted(set(designs)):
            for summary in self.registry.datasets(kind="challenge", label_design=design):
                version = self.registry.dataset_version(summary.name, "latest")
                directory = self.work / "challenge" / f"{summary.name}-v{version.version}"
                if not directory.is_dir():
                    self.registry.download_dataset(summary.name, version.version, directory)
                out.append(ChallengeSet(summary.name, version.version, design, directory))
        return out

    def artwork(self, design: str) -> Image8 | None:
        """The newest artwork uploaded for ``design``, or None."""
        found = self.registry.datasets(kind="artwork", label_design=design)
        if not found:
            return None
        name = sorted(s.name for s in found)[-1]
        version = self.registry.dataset_version(name, "latest")
        directory = self.work / "artwork" / f"{name}-v{version.version}"
        if not directory.is_dir():
            self.registry.download_dataset(name, version.version, directory)
        files = sorted(p for p in directory.rglob("*") if p.is_file())
        if not files:
            return None
        with Image.open(files[0]) as image:
            return np.asarray(image.convert("RGB"), dtype=np.uint8)


def manifest_records(dataset: Path) -> list[dict[str, object]]:
    return [
        json.loads(line)
        for line in (dataset / MANIFEST).read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]
