"""Retraining after a label redesign: time to >= 99.7%, and what Ray Train costs (issue 4).

The redesign scenario's data, built the way the trainer service builds it:

- the reference datasets of design A (what the first model was trained on, subtle defects
  included), of which the snapshot replays a fixed sample (the trainer's ``reference_replay``);
- a few hundred production images of design B that operators labelled (mostly good), stored in
  the blob store and the trainer's label store as operator feedback would put them there;
- defects synthesised in image space on the labelled good units of design B
  (``inspectloop.trainer.synthesis``), at every severity and at subtle ones;
- all three assembled into a content-addressed snapshot (``build_snapshot``); the fine-tuning
  sees the labelled and synthesised design B images twice per epoch (the trainer's
  ``new_appearance_repeats``), with a batch of 32 per worker (the trainer's defaults).

The parent model (design A only) is trained first with the plain loop; it is not part of the
timed retraining. Then the same fine-tuning runs twice on the snapshot, with the same epochs,
seed and CPUs:

1. on Ray Train (``run_training``: TorchTrainer, 2 DDP workers with 1 CPU each, a checkpoint
   every epoch), as the trainer service runs it;
2. with the plain torch loop (``fit``) in this process, on 2 threads.

Both models are judged on held-out design B and design A test images. Printed: time to retrain
(to >= 99.7% on both designs, or how far it got), Ray's start-up (``ray.init`` and the worker
group) separately, and Ray Train's overhead: its training loop time (from the workers' first
step to the last epoch's report, checkpoints included) against the plain loop's.

    python benchmarks/train.py                # full scale, 160 px (70 min with the parent)
    python benchmarks/train.py --scale 0.1    # a quick look (CI); accuracy goals not expected
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from inspectloop.core.blobstore import FilesystemBlobStore
from inspectloop.simulator.dataset import DatasetSpec, write_dataset
from inspectloop.trainer.data import Augment, ImageSet, InspectionDataset, load_split
from inspectloop.trainer.fit import Metrics, evaluate, fit
from inspectloop.trainer.model import ModelSpec, build_model
from inspectloop.trainer.ray_loop import TrainingConfig, run_training
from inspectloop.trainer.snapshot import (
    LabelledImage,
    LabelStore,
    build_snapshot,
    from_reference,
    repeat_new_appearance,
)
from inspectloop.trainer.synthesis import SynthesisPlan, write_synthetic_dataset

GOAL_ACCURACY = 0.997


@dataclass(frozen=True)
class TrainBenchConfig:
    """Dataset sizes and seeds: design A's are those of ``data_realism.py`` (same specs, same
    seeds), so that its saved design A model can be the parent here (``--parent``)."""

    seed: int = 0
    # Seed of the fine-tuning only (data order, augmentation), None for ``seed``: another one
    # repeats the retraining on the same data from the same parent, to see its run-to-run spread.
    train_seed: int | None = None
    # Image side, rendered at that size (the camera's, and the trainer's image_size): at 128 px
    # (the embedded defaults) the retraining stops near 99.65% on design B, whose remaining
    # errors are subtle smudges over the 2D code; at 160 px it reaches 99.7% (README).
    size: int = 160
    width: float = 1.0  # the model's width multiplier (the trainer's width_multiplier)
    a_reference: int = 10000  # design A seed dataset (train/val 0.88/0.12)
    a_defect_fraction: float = 0.6
    a_subtle: int = 10000  # more design A defects at severities 0..0.35 (train)
    a_hard: int = 6000  # subtle ink smudges (severity 0..0.25) and good units (train)
    a_test: int = 2000
    b_labelled: int = 300  # operator-labelled production images of design B
    b_labelled_defect_fraction: float = 0.1
    b_synthesised: int = 2000  # synthesised on the labelled good units of B, severities 0..1
    b_synthesised_subtle: int = 4000  # the same at subtle severities (0..0.35)
    reference_replay: int = 6000  # design A training images in the snapshot
    b_test: int = 2000
    parent_epochs: int = 12
    parent_lr: float = 4e-3
    epochs: int = 8  # fine-tuning, as the trainer's fine_tune_epochs
    lr: float = 2e-3
    parent_batch_size: int = 64
    batch_size: int = 32  # per worker on Ray (the trainer's default); the plain loop: x workers
    new_appearance_repeats: int = 2  # as the trainer's default
    workers: int = 2

    @property
    def fine_tune_seed(self) -> int:
        return self.seed if self.train_seed is None else self.train_seed

    def spec(self) -> ModelSpec:
        """The model every run here trains."""
        return ModelSpec(input_size=self.size, width_multiplier=self.width)

    def scaled(self, factor: float) -> TrainBenchConfig:
        def n(value: int) -> int:
            return max(60, round(value * factor))

        return replace(
            self,
            a_reference=n(self.a_reference),
            a_subtle=n(self.a_subtle),
            a_hard=n(self.a_hard),
            a_test=n(self.a_test),
            b_labelled=n(self.b_labelled),
            b_synthesised=n(self.b_synthesised),
            b_synthesised_subtle=n(self.b_synthesised_subtle),
            reference_replay=n(self.reference_replay),
            b_test=n(self.b_test),
        )


def reference_specs(config: TrainBenchConfig) -> dict[str, DatasetSpec]:
    """The design A datasets (as ``data_realism.py`` generates them for its design A model)."""
    s = config.seed
    common: dict[str, Any] = {
        "product": "label",
        "design": "A",
        "size": config.size,
        "serialization": "gs1-dm",
        "golden_per_class": 0,
    }
    train = (("train", 1.0),)
    return {
        "a": DatasetSpec(
            **common,
            n=config.a_reference,
            seed=s + 1,
            defect_fraction=config.a_defect_fraction,
            splits=(("train", 0.88), ("val", 0.12)),
        ),
        "a-subtle": DatasetSpec(
            **common,
            n=config.a_subtle,
            seed=s + 8,
            defect_fraction=config.a_defect_fraction,
            severity=(0.0, 0.35),
            splits=train,
        ),
        "a-hard": DatasetSpec(
            **common,
            n=config.a_hard,
            seed=s + 10,
            defect_fraction=0.5,
            defects=("ink_smudge",),
            severity=(0.0, 0.25),
            splits=train,
        ),
        "a-test": DatasetSpec(**common, n=config.a_test, seed=s + 2, splits=(("test", 1.0),)),
    }


def build_redesign_snapshot(
    config: TrainBenchConfig, root: Path
) -> tuple[Path, list[Path], ImageSet]:
    """The snapshot a retraining after the redesign trains on, the design A reference
    datasets, and a design B test set."""
    s = config.seed
    references = []
    for name, spec in reference_specs(config).items():
        references.append(root / f"reference-{name}")
        write_dataset(spec, references[-1], workers=2)
    production = root / "production-B"
    write_dataset(
        DatasetSpec(
            design="B",
            n=config.b_labelled,
            seed=s + 3,
            size=config.size,
            defect_fraction=config.b_labelled_defect_fraction,
            splits=(("all", 1.0),),
            golden_per_class=0,
        ),
        production,
        workers=2,
    )
    blobs = FilesystemBlobStore(root / "blobs", 16 * 1024 * 1024)
    labels = LabelStore(root / "labels.sqlite3")
    for line in (production / "manifest.jsonl").open():
        record = json.loads(line)
        blobs.put((production / record["path"]).read_bytes(), "image/png")
        labels.add(
            LabelledImage(
                sha256=record["sha256"],
                label=record["label"],
                line="line-1",
                sku=record["sku"],
                label_design="B",
                source="operator:benchmark",
            ),
            labelled_at=time.time(),
        )
    # Defects synthesised in image space on the labelled good units of design B, as the
    # trainer does for a design its reference does not hold.
    goods = [
        np.asarray(Image.open(production / r["path"]).convert("RGB"))
        for r in map(json.loads, (production / "manifest.jsonl").open())
        if r["label"] == "good"
    ]
    synthetic = [
        write_synthetic_dataset(
            root / "synthetic",
            SynthesisPlan(
                design="B",
                defective=config.b_synthesised,
                subtle=config.b_synthesised_subtle,
                test_fraction=0.0,
                seed=s + 4,
            ),
            goods,
        )
    ]
    snapshot = build_snapshot(
        root / "snapshots",
        reference_datasets=references,
        labelled=labels.select(lines=["line-1"]),
        synthetic_datasets=synthetic,
        reference_train_limit=config.reference_replay,
        blob_store=blobs,
        classes=config.spec().classes,
        image_size=config.size,
    )
    labels.close()
    b_test = root / "test-B"
    write_dataset(
        DatasetSpec(
            design="B",
            n=config.b_test,
            seed=s + 5,
            size=config.size,
            splits=(("test", 1.0),),
            golden_per_class=0,
        ),
        b_test,
        workers=2,
    )
    return snapshot.directory, references, load_split(b_test, "test")


def train_parent(config: TrainBenchConfig, references: list[Path], out: Path) -> Path:
    """The design A model the retraining fine-tunes: trained with the plain loop on every
    training image of the reference datasets (not only the snapshot's replay sample), or
    loaded from ``out`` when it exists."""
    if out.exists():
        return out
    spec = config.spec()
    train = ImageSet.concat([load_split(d, "train") for d in references if (d / "train").exists()])
    val = ImageSet.concat([load_split(d, "val") for d in references if (d / "val").exists()])
    model = build_model(spec, seed=config.seed)
    fit(
        model,
        InspectionDataset(train, spec.preprocess, Augment()),
        val,
        config.parent_epochs,
        config.parent_lr,
        config.seed,
        batch_size=config.parent_batch_size,
        evaluate_every=max(1, config.parent_epochs // 4),
    )
    torch.save(model.state_dict(), out)
    return out


@dataclass
class RunTimes:
    startup_s: float  # ray.init plus the worker group, until the workers' first step
    loop_s: float  # first step to the last epoch's report
    teardown_s: float  # last report to the trained weights on disk
    b: Metrics
    a: Metrics


@dataclass(frozen=True)
class TestSets:
    a: ImageSet  # design A test images of the snapshot
    b: ImageSet  # held-out design B images


def retrain_on_ray(
    config: TrainBenchConfig, snapshot: Path, parent: Path, work: Path, tests: TestSets
) -> RunTimes:
    import ray  # noqa: PLC0415 - started only here

    t0 = time.time()
    ray.init(num_cpus=config.workers, include_dashboard=False, log_to_driver=False)
    init_s = time.time() - t0
    progress = work / "progress"
    training = TrainingConfig(
        dataset_dir=str(snapshot),
        spec=config.spec().to_dict(),
        epochs=config.epochs,
        lr=config.lr,
        batch_size=config.batch_size,
        seed=config.fine_tune_seed,
        num_workers=config.workers,
        cpus_per_worker=1.0,
        storage_path=str(work / "runs"),
        run_name="bench-retrain",
        parent_weights=str(parent),
        progress_dir=str(progress),
        new_appearance_repeats=config.new_appearance_repeats,
    )
    started = time.time()
    try:
        result = run_training(training)
    finally:
        finished = time.time()
        ray.shutdown()
    # The workers stamp their pid file when their loop starts and an epoch file at every report.
    loop_start = max((progress / f"worker-{r}.pid").stat().st_mtime for r in range(config.workers))
    last_report = max(
        (progress / f"worker-{r}.epoch").stat().st_mtime for r in range(config.workers)
    )
    model = build_model(config.spec())
    model.load_state_dict(torch.load(result.weights_path, weights_only=True))
    return RunTimes(
        startup_s=init_s + (loop_start - started),
        loop_s=last_report - loop_start,
        teardown_s=finished - last_report,
        b=evaluate(model, tests.b),
        a=evaluate(model, tests.a),
    )


def retrain_plain(
    config: TrainBenchConfig, snapshot: Path, parent: Path, tests: TestSets
) -> RunTimes:
    spec = config.spec()
    train = InspectionDataset(
        repeat_new_appearance(load_split(snapshot, "train"), config.new_appearance_repeats),
        spec.preprocess,
        Augment(),
        config.fine_tune_seed,
    )
    val = load_split(snapshot, "val")
    model = build_model(spec)
    model.load_state_dict(torch.load(parent, weights_only=True))
    started = time.time()
    # One process sees the whole batch that the Ray workers see together.
    fit(
        model,
        train,
        val,
        config.epochs,
        config.lr,
        config.fine_tune_seed,
        batch_size=config.batch_size * config.workers,
    )
    loop_s = time.time() - started
    return RunTimes(0.0, loop_s, 0.0, evaluate(model, tests.b), evaluate(model, tests.a))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies dataset sizes")
    parser.add_argument("--epochs", type=int, help="fine-tuning epochs (default 8)")
    parser.add_argument("--parent-epochs", type=int, help="parent epochs (default 12)")
    parser.add_argument("--width", type=float, help="model width multiplier (default 1.0)")
    parser.add_argument("--size", type=int, help="image side in pixels (default 160)")
    parser.add_argument(
        "--train-seed", type=int, help="seed of the fine-tuning only (default: the data's)"
    )
    parser.add_argument("--keep", type=Path, help="work here and keep it")
    parser.add_argument(
        "--parent",
        type=Path,
        help="design A model: loaded if the file exists (e.g. data_realism.py --parent at "
        "the same scale and seed), else trained and saved there",
    )
    args = parser.parse_args()
    config = TrainBenchConfig().scaled(args.scale)
    if args.epochs:
        config = replace(config, epochs=args.epochs)
    if args.parent_epochs:
        config = replace(config, parent_epochs=args.parent_epochs)
    if args.width:
        config = replace(config, width=args.width)
    if args.size:
        config = replace(config, size=args.size)
    if args.train_seed is not None:
        config = replace(config, train_seed=args.train_seed)
    torch.set_num_threads(config.workers)
    with tempfile.TemporaryDirectory(prefix="inspectloop-train-bench-") as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        t0 = time.time()
        snapshot, references, b_test = build_redesign_snapshot(config, work)
        tests = TestSets(
            a=load_split(snapshot, "test").where(from_reference),
            b=b_test,
        )
        data_s = time.time() - t0
        parent_path = args.parent or work / "parent.pt"
        loaded = parent_path.exists()
        t0 = time.time()
        parent = train_parent(config, references, parent_path)
        parent_s = None if loaded else time.time() - t0
        ray_run = retrain_on_ray(config, snapshot, parent, work, tests)
        plain = retrain_plain(config, snapshot, parent, tests)
        counts = {split: len(load_split(snapshot, split)) for split in ("train", "val", "test")}
    print(report(config, counts, data_s, parent_s, ray_run, plain))


def report(  # noqa: PLR0917 - the figures of one run
    config: TrainBenchConfig,
    counts: dict[str, int],
    data_s: float,
    parent_s: float | None,  # None: loaded, not trained
    ray_run: RunTimes,
    plain: RunTimes,
) -> str:
    def verdict(run: RunTimes) -> str:
        ok = min(run.a.accuracy, run.b.accuracy) >= GOAL_ACCURACY
        return "reached" if ok else "NOT reached"

    total = ray_run.startup_s + ray_run.loop_s + ray_run.teardown_s
    parent = (
        "parent loaded (not timed)"
        if parent_s is None
        else f"parent trained in {parent_s:.0f} s ({config.parent_epochs} epochs, not timed below)"
    )
    lines = [
        f"retraining after the redesign — {config.size}px, width {config.width}, "
        f"{config.workers} CPUs, "
        f"{config.epochs} fine-tuning epochs from the design A parent, "
        f"seed {config.seed} (fine-tuning {config.fine_tune_seed})",
        f"snapshot: {counts['train']} train / {counts['val']} val / {counts['test']} test images "
        f"(design A reference replay {config.reference_replay} of "
        f"{config.a_reference + config.a_subtle + config.a_hard}, operator-labelled B "
        f"{config.b_labelled}, synthesised B {config.b_synthesised} + "
        f"{config.b_synthesised_subtle} subtle); data built in {data_s:.0f} s, {parent}",
        "",
        f"{'run':<28} {'start-up':>9} {'training':>9} {'teardown':>9} "
        f"{'acc B':>8} {'FRR B':>7} {'esc B':>6} {'acc A':>8}  99.7% on A and B",
    ]
    for name, run in (("Ray Train (2 DDP workers)", ray_run), ("plain torch loop", plain)):
        lines.append(
            f"{name:<28} {run.startup_s:>8.1f}s {run.loop_s:>8.1f}s {run.teardown_s:>8.1f}s "
            f"{run.b.accuracy:>8.2%} {run.b.false_reject_rate:>7.2%} {run.b.escapes:>6} "
            f"{run.a.accuracy:>8.2%}  {verdict(run)}"
        )
    overhead = ray_run.loop_s / plain.loop_s - 1
    lines += [
        "",
        f"time to retrain on Ray (start-up included): {total:.0f} s "
        f"({verdict(ray_run)} >= {GOAL_ACCURACY:.1%} on both designs)",
        f"Ray start-up (ray.init + worker group, reported apart): {ray_run.startup_s:.1f} s",
        f"Ray Train overhead on training time: {overhead:+.1%} "
        f"(ratio {ray_run.loop_s / plain.loop_s:.3f}; goal <= +10%)",
        f"with teardown (final checkpoint, shutdown): "
        f"{(ray_run.loop_s + ray_run.teardown_s) / plain.loop_s - 1:+.1%}",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
