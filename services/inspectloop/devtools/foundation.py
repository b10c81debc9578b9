"""The foundation model: the design A inspection CNN a plant already runs before the story starts.

A plant that adopts inspectloop is not starting from nothing: it has years of labelled images of
its current label and the model trained on them. This module produces that model once, from
the simulator's design A images (its stand-in for the plant's archive), with the full-scale
recipe of ``benchmarks/data_realism.py`` (every defect class, a set of subtle defects and the
class the model learns last, subtle ink smudges); the weights are committed beside the demo
(``demo/foundation/``) with a card saying how they were made, so that the demo and the tests
start from the same model without an hour of training each run. The trainer only sees a
weights file (``trainer.initial_weights``): it never learns where the weights came from.

It never sees design B (the demo's redesign) nor any design the tests and benchmarks adapt to,
and its seeds are none of those the demo, tests and benchmarks render their images with, so
every quality figure measured later counts on images no training step saw.

    inspectloop dev train-foundation --out services/inspectloop/demo/foundation/design-A-128.pt
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from inspectloop.core.onnx_contract import sha256_file
from inspectloop.simulator.dataset import DatasetSpec, write_dataset
from inspectloop.trainer.data import Augment, ImageSet, InspectionDataset, load_split
from inspectloop.trainer.fit import evaluate, fit
from inspectloop.trainer.model import ModelSpec, build_model

log = logging.getLogger(__name__)

FOUNDATION_DIR = Path(__file__).parents[1] / "demo" / "foundation"
FOUNDATION_WEIGHTS = FOUNDATION_DIR / "design-A-128.pt"


@dataclass(frozen=True)
class FoundationRecipe:
    """What the foundation model is trained on (design A only) and how."""

    size: int = 128
    width: float = 1.0
    seed: int = 1001  # no other use of the simulator starts from this seed or the next ten
    base: int = 10000  # every class, severities 0..1, 88% train / 12% validation
    base_linear: int = 3000  # the same with the linear barcode layout
    subtle: int = 10000  # severities 0..subtle_severity
    subtle_severity: float = 0.35
    hard: int = 6000  # the class learnt last: subtle ink smudges, half of them good units
    hard_severity: float = 0.25
    defect_fraction: float = 0.6
    test: int = 2000
    epochs: int = 12
    lr: float = 4e-3
    batch_size: int = 64
    workers: int = 2
    threads: int = 2

    def scaled(self, factor: float) -> FoundationRecipe:
        """The same recipe with ``factor`` times the images (a quick check of the code path)."""

        def n(value: int) -> int:
            return max(60, round(value * factor))

        return FoundationRecipe(
            **{
                **asdict(self),
                **{k: n(getattr(self, k)) for k in ("base", "base_linear", "subtle", "hard")},
                "test": n(self.test),
            }
        )


def _generate(root: Path, name: str, recipe: FoundationRecipe, **spec: Any) -> dict[str, ImageSet]:
    out = root / name
    summary = write_dataset(
        DatasetSpec(product="label", size=recipe.size, design="A", golden_per_class=0, **spec),
        out,
        workers=recipe.workers,
    )
    return {s: load_split(out, s) for s, n in summary["counts"].items() if n}


def train_foundation(recipe: FoundationRecipe, out: Path) -> dict[str, Any]:
    """Trains the foundation model, writes its weights to ``out`` and its card beside them;
    returns the card."""
    torch.set_num_threads(recipe.threads)
    started = time.perf_counter()
    s = recipe.seed
    train_only = (("train", 1.0),)
    with tempfile.TemporaryDirectory(prefix="foundation-") as tmp:
        root = Path(tmp)
        base = _generate(
            root,
            "base",
            recipe,
            n=recipe.base,
            seed=s,
            defect_fraction=recipe.defect_fraction,
            splits=(("train", 0.88), ("val", 0.12)),
        )
        parts = [base["train"]]
        for name, extra in (
            ("linear", {"n": recipe.base_linear, "serialization": "gs1-linear"}),
            ("subtle", {"n": recipe.subtle, "severity": (0.0, recipe.subtle_severity)}),
            (
                "hard",
                {
                    "n": recipe.hard,
                    "defects": ("ink_smudge",),
                    "severity": (0.0, recipe.hard_severity),
                    "defect_fraction": 0.5,
                },
            ),
        ):
            spec = {"seed": s + len(parts), "defect_fraction": recipe.defect_fraction, **extra}
            parts.append(_generate(root, name, recipe, splits=train_only, **spec)["train"])
        test = _generate(root, "test", recipe, n=recipe.test, seed=s + 9, splits=(("test", 1.0),))[
            "test"
        ]
        generated = time.perf_counter() - started
        model_spec = ModelSpec(input_size=recipe.size, width_multiplier=recipe.width)
        model = build_model(model_spec, seed=recipe.seed)
        train = ImageSet.concat(parts)
        history = fit(
            model,
            InspectionDataset(train, model_spec.preprocess, Augment()),
            base["val"],
            epochs=recipe.epochs,
            lr=recipe.lr,
            seed=recipe.seed,
            batch_size=recipe.batch_size,
            evaluate_every=max(1, recipe.epochs // 4),
        )
        metrics = evaluate(model, test)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out)
    card = {
        "what": "design A inspection CNN: the model the plant runs before the story starts",
        "recipe": asdict(recipe),
        "model_spec": model_spec.to_dict(),
        "train_images": len(train),
        "held_out_test": {
            "images": metrics.count,
            "accuracy": metrics.accuracy,
            "false_reject_rate": metrics.false_reject_rate,
            "escape_rate": metrics.escape_rate,
            "per_class_recall": metrics.per_class_recall,
        },
        "seconds": {"generate": generated, "train": history.seconds},
        "torch": torch.__version__,
        "sha256": sha256_file(out),
    }
    out.with_suffix(".json").write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    log.info("foundation model %s: %s", out, card["held_out_test"])
    return card
