"""Training on Ray Train: ``TorchTrainer`` workers around the plain ``fit`` loop.

Each worker loads the dataset snapshot (a directory every worker can read: local disk on one
machine, shared storage in a cluster), wraps the model for DDP with ``prepare_model``, trains its
shard of each epoch and reports after every epoch; rank 0 attaches a checkpoint (model,
optimizer, scheduler, epoch). When a worker dies, Ray restarts the group (``FailureConfig``) and
every worker resumes from the latest checkpoint, so at most one epoch is lost.

This module runs inside Ray workers: it imports Ray lazily and reads only its ``config``.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from inspectloop.trainer.data import Augment, InspectionDataset, load_split
from inspectloop.trainer.fit import EpochRecord, TrainState, fit
from inspectloop.trainer.model import InspectionCNN, ModelSpec, build_model
from inspectloop.trainer.snapshot import from_reference, repeat_new_appearance

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "train_state.pt"
PROGRESS_FILE = "progress.json"  # rank 0's epoch and step, for the trainer's progress bar


@dataclass(frozen=True)
class Progress:
    """How far a training run is: written by rank 0 into ``progress_dir``, read by the trainer."""

    epoch: int  # the epoch being trained, from 1
    epochs: int
    step: int  # the step within that epoch, from 1
    steps_per_epoch: int
    seconds: float  # since this worker started training

    @property
    def fraction(self) -> float:
        total = self.epochs * self.steps_per_epoch
        return min(1.0, ((self.epoch - 1) * self.steps_per_epoch + self.step) / total)

    @property
    def eta_s(self) -> float:
        """Seconds left at the pace so far."""
        done = self.fraction
        return self.seconds * (1 - done) / done if done > 0 else float("inf")

    @classmethod
    def read(cls, directory: Path) -> Progress | None:
        """The last progress written to ``directory``, None before the first step."""
        try:
            return cls(**json.loads((directory / PROGRESS_FILE).read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError):
            return None  # not written yet, or caught mid-replace on a filesystem without rename

    def write(self, directory: Path) -> None:
        tmp = directory / f".{PROGRESS_FILE}.{os.getpid()}"
        tmp.write_text(json.dumps(self.__dict__), encoding="utf-8")
        os.replace(tmp, directory / PROGRESS_FILE)


@dataclass(frozen=True)
class TrainingConfig:
    """Everything a training run needs; JSON-serialisable so that it can cross to Ray workers
    and to a job submitted to a remote cluster."""

    dataset_dir: str
    spec: dict[str, Any]
    epochs: int
    lr: float
    batch_size: int
    seed: int
    num_workers: int = 2
    cpus_per_worker: float = 1.0
    use_gpu: bool = False
    max_failures: int = 2
    storage_path: str = ""
    run_name: str = "inspectloop-train"
    parent_weights: str | None = None  # a state_dict file to fine-tune from
    new_appearance_repeats: int = 1  # see snapshot.repeat_new_appearance
    labelled_repeats: int = 0  # the operator-labelled images' own repeats (the same)
    distill_weight: float = 0.0  # distillation from parent_weights on reference images (fit)
    progress_dir: str | None = None  # workers write pid and progress files here (observability)

    def to_json(self) -> str:
        return json.dumps(self.__dict__, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> TrainingConfig:
        return cls(**json.loads(text))


@dataclass(frozen=True)
class TrainingResult:
    weights_path: Path  # the trained state_dict (plain module, no DDP prefix)
    metrics: dict[str, Any]  # the last report
    checkpoint_dir: Path
    resumed: bool  # whether the run recovered from a worker failure


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


def train_loop_per_worker(raw_config: dict[str, Any]) -> None:
    """The function every Ray Train worker runs."""
    import ray.train  # noqa: PLC0415 - only inside Ray workers
    import ray.train.torch  # noqa: PLC0415

    config = TrainingConfig(**raw_config)
    context = ray.train.get_context()
    rank, world_size = context.get_world_rank(), context.get_world_size()
    torch.set_num_threads(max(1, int(config.cpus_per_worker)))
    spec = ModelSpec.from_dict(config.spec)
    model: torch.nn.Module = build_model(spec, seed=config.seed)
    if config.parent_weights:
        model.load_state_dict(torch.load(config.parent_weights, weights_only=True))

    resume = None
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            resume = torch.load(Path(directory) / CHECKPOINT_FILE, weights_only=True)
        log.info("worker %d resumes after epoch %d", rank, resume["epoch"])
    resumed_from = int(resume["epoch"]) if resume else 0

    # DDP over gloo on CPU; with one worker prepare_model leaves the module as it is. The
    # layout fit() trains in is set first, so that DDP's gradient buckets match it.
    model = model.to(memory_format=torch.channels_last)
    model = ray.train.torch.prepare_model(model, move_to_device=config.use_gpu)
    images = repeat_new_appearance(
        load_split(config.dataset_dir, "train", spec.classes),
        config.new_appearance_repeats,
        config.labelled_repeats,
    )
    train = InspectionDataset(images, spec.preprocess, Augment(), config.seed)
    teacher, distill = None, None
    if config.parent_weights and config.distill_weight > 0:
        teacher = build_model(spec)
        teacher.load_state_dict(torch.load(config.parent_weights, weights_only=True))
        distill = torch.tensor([from_reference(r) for r in images.records])
    val = InspectionDataset(load_split(config.dataset_dir, "val", spec.classes), spec.preprocess)
    progress = Path(config.progress_dir) if config.progress_dir else None
    if progress is not None:
        progress.mkdir(parents=True, exist_ok=True)
        (progress / f"worker-{rank}.pid").write_text(str(os.getpid()))

    started = time.monotonic()
    last_written = [0.0]

    def on_step(epoch: int, epochs: int, step: int, steps: int) -> None:
        now = time.monotonic()
        if progress is None or rank != 0 or (now - last_written[0] < 1.0 and step < steps):
            return
        last_written[0] = now
        Progress(epoch, epochs, step, steps, now - started).write(progress)

    def on_epoch(record: EpochRecord, state: TrainState) -> None:
        metrics = {
            "epoch": record.epoch,
            "train_loss": record.train_loss,
            "train_accuracy": record.train_accuracy,
            "resumed_from_epoch": resumed_from,
            **{f"val_{k}": v for k, v in record.val.items()},
        }
        with tempfile.TemporaryDirectory() as directory:
            ckpt = None
            if rank == 0:
                torch.save(state.state_dict(), Path(directory) / CHECKPOINT_FILE)
                ckpt = ray.train.Checkpoint.from_directory(directory)
            ray.train.report(metrics, checkpoint=ckpt)
        if progress is not None:
            (progress / f"worker-{rank}.epoch").write_text(str(record.epoch))

    fit(
        model,
        train,
        val,
        config.epochs,
        config.lr,
        config.seed,
        batch_size=config.batch_size,
        rank=rank,
        world_size=world_size,
        resume=resume,
        on_epoch=on_epoch,
        on_step=on_step,
        teacher=teacher,
        distill=distill,
        distill_weight=config.distill_weight or 1.0,
    )


def run_training(config: TrainingConfig) -> TrainingResult:
    """Train with Ray Train on the Ray this process is connected to (``ray.init`` first)."""
    import ray.train  # noqa: PLC0415 - Ray is heavy; importers of this module may not need it
    from ray.train.torch import TorchConfig, TorchTrainer  # noqa: PLC0415

    storage = config.storage_path or str(Path(config.dataset_dir).parent / "ray-results")
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=json.loads(config.to_json()),
        torch_config=TorchConfig(backend="gloo"),
        scaling_config=ray.train.ScalingConfig(
            num_workers=config.num_workers,
            use_gpu=config.use_gpu,
            resources_per_worker={"CPU": config.cpus_per_worker},
        ),
        run_config=ray.train.RunConfig(
            name=config.run_name,
            storage_path=storage,
            failure_config=ray.train.FailureConfig(max_failures=config.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
        ),
    )
    result = trainer.fit()
    if result.error is not None:
        raise result.error
    if result.checkpoint is None:
        raise RuntimeError("training finished without a checkpoint")
    out_dir = Path(storage) / config.run_name
    out_dir.mkdir(parents=True, exist_ok=True)
    with result.checkpoint.as_directory() as directory:
        state = torch.load(Path(directory) / CHECKPOINT_FILE, weights_only=True)
    model: InspectionCNN = build_model(ModelSpec.from_dict(config.spec))
    # Strip DDP's "module." prefix: the weights are those of the plain module.
    weights = {k.removeprefix("module."): v for k, v in state["model"].items()}
    model.load_state_dict(weights)
    weights_path = out_dir / "weights.pt"
    torch.save(model.state_dict(), weights_path)
    return TrainingResult(
        weights_path=weights_path,
        metrics=dict(result.metrics or {}),
        checkpoint_dir=Path(result.checkpoint.path),
        resumed=bool((result.metrics or {}).get("resumed_from_epoch", 0)),
    )
