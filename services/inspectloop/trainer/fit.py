"""A plain torch training loop and the inspection metrics: no Ray, no serving, no files.

``fit(model, train, val, epochs, lr, seed)`` trains with AdamW and a one-cycle (or cosine)
learning-rate schedule, deterministically per seed: the data order and the augmentation of each
epoch come from generators seeded by ``(seed, epoch)``, so a run resumed at epoch k (``resume``)
sees the same batches as an uninterrupted one. Ray Train's loop (issue 4) wraps this function:
``on_epoch`` is where it reports and checkpoints, ``rank``/``world_size`` shard every epoch's
order between workers.

``evaluate(model, dataset)`` gives what the validation gates judge: accuracy, recall per class,
false reject rate (good units the model rejects, over good units), escape rate (defective units
the model passes, over defective units) and the confusion matrix (rows: true, columns:
predicted).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn

from inspectloop.core.taxonomy import GOOD_CLASS
from inspectloop.trainer.data import ImageSet, InspectionDataset

logger = logging.getLogger(__name__)

Schedule = Literal["onecycle", "cosine", "constant"]


# --- metrics -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Metrics:
    """Classification and inspection metrics of one evaluation."""

    classes: tuple[str, ...]
    count: int
    accuracy: float
    per_class_recall: dict[str, float]  # NaN where a class has no images
    per_class_precision: dict[str, float]  # NaN where a class is never predicted
    false_reject_rate: float  # good predicted as any defect / good; NaN without good images
    escape_rate: float  # defective predicted good / defective; NaN without defective images
    good_count: int
    defective_count: int
    false_rejects: int
    escapes: int
    confusion: list[list[int]]  # confusion[true][predicted]

    @property
    def errors(self) -> int:
        """Misclassified images (any wrong class, not only pass/reject mistakes)."""
        return self.count - sum(self.confusion[i][i] for i in range(len(self.classes)))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (NaN stays NaN: ``json.dumps`` writes it, strict parsers do not)."""
        data = asdict(self)
        data["classes"] = list(self.classes)
        data["errors"] = self.errors
        return data

    def format_confusion(self) -> str:
        """The confusion matrix as a fixed-width table."""
        short = [c[:8] for c in self.classes]
        lines = ["true \\ pred " + " ".join(f"{c:>8}" for c in short)]
        for name, row in zip(short, self.confusion, strict=True):
            lines.append(f"{name:>11} " + " ".join(f"{v:>8d}" for v in row))
        return "\n".join(lines)


def metrics_from_predictions(
    labels: Sequence[int] | npt.NDArray[np.integer[Any]] | Tensor,
    predictions: Sequence[int] | npt.NDArray[np.integer[Any]] | Tensor,
    classes: Sequence[str],
    good_class: str = GOOD_CLASS,
) -> Metrics:
    """Metrics of ``predictions`` against ``labels`` (class indices into ``classes``)."""
    y = np.asarray(labels, dtype=np.int64).reshape(-1)
    p = np.asarray(predictions, dtype=np.int64).reshape(-1)
    if y.shape != p.shape:
        raise ValueError(f"{len(y)} labels but {len(p)} predictions")
    k = len(classes)
    if len(y) and (min(y.min(), p.min()) < 0 or max(y.max(), p.max()) >= k):
        raise ValueError("labels and predictions must index classes")
    confusion = np.bincount(y * k + p, minlength=k * k).reshape(k, k)
    true_counts = confusion.sum(axis=1)
    predicted_counts = confusion.sum(axis=0)
    diag = np.diag(confusion)
    recall = {
        c: (float(diag[i] / true_counts[i]) if true_counts[i] else math.nan)
        for i, c in enumerate(classes)
    }
    precision = {
        c: (float(diag[i] / predicted_counts[i]) if predicted_counts[i] else math.nan)
        for i, c in enumerate(classes)
    }
    if good_class in classes:
        g = list(classes).index(good_class)
        good_count = int(true_counts[g])
        false_rejects = good_count - int(confusion[g, g])
        defective_count = int(true_counts.sum()) - good_count
        escapes = int(confusion[:, g].sum() - confusion[g, g])
    else:
        good_count = false_rejects = escapes = 0
        defective_count = int(true_counts.sum())
    return Metrics(
        classes=tuple(classes),
        count=len(y),
        accuracy=float(diag.sum() / len(y)) if len(y) else math.nan,
        per_class_recall=recall,
        per_class_precision=precision,
        false_reject_rate=false_rejects / good_count if good_count else math.nan,
        escape_rate=escapes / defective_count if defective_count else math.nan,
        good_count=good_count,
        defective_count=defective_count,
        false_rejects=false_rejects,
        escapes=escapes,
        confusion=confusion.tolist(),
    )


@torch.inference_mode()
def predict(
    model: nn.Module, dataset: InspectionDataset | ImageSet, batch_size: int = 256
) -> tuple[Tensor, Tensor]:
    """Class probabilities ``N x classes`` and labels ``N`` of ``dataset`` (never augmented);
    the model is left in the train/eval mode it was in."""
    data = dataset if isinstance(dataset, InspectionDataset) else InspectionDataset(dataset)
    was_training = model.training
    model.eval()
    try:
        probs: list[Tensor] = []
        labels: list[Tensor] = []
        for start in range(0, len(data), batch_size):
            idx = torch.arange(start, min(start + batch_size, len(data)))
            x, y = data.batch(idx, augment=False)
            probs.append(F.softmax(model(x), dim=1))
            labels.append(y)
    finally:
        model.train(was_training)
    if not probs:
        return torch.zeros(0, len(data.classes)), torch.zeros(0, dtype=torch.int64)
    return torch.cat(probs), torch.cat(labels)


def evaluate(
    model: nn.Module,
    dataset: InspectionDataset | ImageSet,
    batch_size: int = 256,
    good_class: str = GOOD_CLASS,
) -> Metrics:
    """Metrics of ``model`` on ``dataset`` (argmax class, no augmentation)."""
    classes = dataset.classes
    probs, labels = predict(model, dataset, batch_size)
    return metrics_from_predictions(labels, probs.argmax(dim=1), classes, good_class)


# --- training ------------------------------------------------------------------------------


@dataclass
class EpochRecord:
    """What one epoch did."""

    epoch: int
    train_loss: float
    train_accuracy: float  # on the augmented batches, in train mode
    lr: float  # at the end of the epoch
    seconds: float
    val: dict[str, float] = field(default_factory=dict)  # accuracy, FRR, escape rate


@dataclass
class History:
    """The record of a ``fit`` run."""

    seed: int
    epochs: list[EpochRecord] = field(default_factory=list)
    seconds: float = 0.0
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def last(self) -> EpochRecord:
        """The last epoch's record."""
        return self.epochs[-1]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return asdict(self)


@dataclass
class TrainState:
    """What a checkpoint must hold to resume: ``state_dict()`` / ``fit(..., resume=...)``."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    epoch: int  # the number of epochs completed

    def state_dict(self) -> dict[str, Any]:
        """Model, optimizer and scheduler state plus the completed epoch count."""
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "epoch": self.epoch,
        }


def epoch_order(n: int, seed: int, epoch: int, rank: int = 0, world_size: int = 1) -> Tensor:
    """This worker's sample order for ``epoch``: a permutation seeded by ``(seed, epoch)``,
    padded by wrapping to a multiple of ``world_size`` and dealt out round-robin by rank."""
    generator = torch.Generator().manual_seed(_mix(seed, epoch, 0x0D0E))
    order = torch.randperm(n, generator=generator)
    if world_size > 1:
        total = math.ceil(n / world_size) * world_size
        order = torch.cat([order, order[: total - n]])[rank::world_size]
    return order


def _mix(seed: int, epoch: int, salt: int) -> int:
    return (seed * 1_000_003 + epoch * 7_919 + salt) % (2**63 - 1)


def fit(  # noqa: PLR0915, PLR0917 -- one loop, the signature the Ray loop is written against
    model: nn.Module,
    train: InspectionDataset,
    val: InspectionDataset | ImageSet | None,
    epochs: int,
    lr: float,
    seed: int,
    *,
    batch_size: int = 64,
    weight_decay: float = 5e-4,
    schedule: Schedule = "onecycle",
    warmup_fraction: float = 0.15,
    label_smoothing: float = 0.0,
    class_weights: Sequence[float] | None = None,
    grad_clip: float | None = 5.0,
    rank: int = 0,
    world_size: int = 1,
    resume: dict[str, Any] | None = None,
    on_epoch: Callable[[EpochRecord, TrainState], None] | None = None,
    on_step: Callable[[int, int, int, int], None] | None = None,
    evaluate_every: int = 1,
    channels_last: bool = True,
    teacher: nn.Module | None = None,
    distill: Tensor | None = None,
    distill_weight: float = 1.0,
    distill_temperature: float = 2.0,
) -> History:
    """Trains ``model`` in place on ``train``; evaluates on ``val`` every ``evaluate_every``
    epochs and after the last. Deterministic for a given ``seed`` (and thread count).

    ``resume`` is a ``TrainState.state_dict()``: training continues after its epoch.
    ``on_epoch(record, state)`` runs after each epoch (reporting, checkpointing);
    ``on_step(epoch, epochs, step, steps_per_epoch)`` after each optimiser step (progress).
    ``channels_last`` trains in NHWC memory layout (about 1.6x faster on CPU); the model is
    handed back in the default layout.

    ``teacher`` (the parent model) with ``distill`` (one bool per training image) keeps what
    the parent knew while fine-tuning: on the marked images (the replayed old appearance) the
    loss adds ``distill_weight`` times the KL divergence from the teacher's softened
    predictions (learning without forgetting, Li and Hoiem 2016). Without it, fine-tuning on
    thousands of hard synthetic images of a new design moved the old design's decision
    boundary: the fine-tuned model let 4 of 316 old-design defects through where its parent let
    1 through."""
    if epochs < 1 or lr <= 0 or batch_size < 1:
        raise ValueError("epochs, lr and batch_size must be positive")
    if len(train) == 0:
        raise ValueError("empty training set")
    if (teacher is None) != (distill is None) or (
        distill is not None and distill.shape != (len(train),)
    ):
        raise ValueError("teacher and distill (one flag per training image) go together")
    started = time.perf_counter()
    torch.manual_seed(seed)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    model.to(memory_format=layout)
    if teacher is not None:
        teacher.eval().to(memory_format=layout)
    steps_per_epoch = math.ceil(
        len(epoch_order(len(train), seed, 0, rank, world_size)) / batch_size
    )
    total_steps = epochs * steps_per_epoch
    decay, no_decay = _param_groups(model)
    optimizer = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=lr,
    )
    scheduler = _scheduler(optimizer, schedule, lr, total_steps, warmup_fraction)
    weights = torch.tensor(class_weights, dtype=torch.float32) if class_weights else None
    state = TrainState(model, optimizer, scheduler, 0)
    if resume is not None:
        model.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        scheduler.load_state_dict(resume["scheduler"])
        state.epoch = int(resume["epoch"])
    history = History(
        seed=seed,
        config={
            "epochs": epochs,
            "lr": lr,
            "batch_size": batch_size,
            "weight_decay": weight_decay,
            "schedule": schedule,
            "warmup_fraction": warmup_fraction,
            "label_smoothing": label_smoothing,
            "class_weights": list(class_weights) if class_weights else None,
            "augment": train.augment.to_dict() if train.augment else None,
            "train_size": len(train),
            "world_size": world_size,
        },
    )
    for epoch in range(state.epoch, epochs):
        t0 = time.perf_counter()
        model.train()
        torch.manual_seed(_mix(seed, epoch, 0xD20 + rank))  # dropout and the like, per epoch
        order = epoch_order(len(train), seed, epoch, rank, world_size)
        augment_gen = torch.Generator().manual_seed(_mix(seed, epoch, 0xA06 + rank))
        loss_sum, correct, seen = 0.0, 0, 0
        for start in range(0, len(order), batch_size):
            x, y = train.batch(order[start : start + batch_size], augment_gen)
            logits = model(x.contiguous(memory_format=layout))
            loss = F.cross_entropy(logits, y, weight=weights, label_smoothing=label_smoothing)
            if teacher is not None and distill is not None:
                loss = loss + distill_weight * _distillation(
                    teacher,
                    x,
                    logits,
                    distill[order[start : start + batch_size]],
                    temperature=distill_temperature,
                    layout=layout,
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            if grad_clip is not None:
                nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            optimizer.step()
            scheduler.step()
            loss_sum += float(loss.detach()) * len(y)
            correct += int((logits.detach().argmax(dim=1) == y).sum())
            seen += len(y)
            if on_step is not None:
                on_step(epoch + 1, epochs, start // batch_size + 1, steps_per_epoch)
        state.epoch = epoch + 1
        record = EpochRecord(
            epoch=epoch + 1,
            train_loss=loss_sum / seen,
            train_accuracy=correct / seen,
            lr=float(scheduler.get_last_lr()[0]),
            seconds=0.0,
        )
        if (
            val is not None
            and len(val)
            and ((epoch + 1) % evaluate_every == 0 or epoch + 1 == epochs)
        ):
            m = evaluate(model, val)
            record.val = {
                "accuracy": m.accuracy,
                "false_reject_rate": m.false_reject_rate,
                "escape_rate": m.escape_rate,
                "errors": float(m.errors),
            }
        record.seconds = time.perf_counter() - t0
        history.epochs.append(record)
        logger.info(
            "epoch %d/%d loss %.4f train acc %.4f val %s (%.1fs)",
            record.epoch,
            epochs,
            record.train_loss,
            record.train_accuracy,
            {k: round(v, 5) for k, v in record.val.items()},
            record.seconds,
        )
        if on_epoch is not None:
            on_epoch(record, state)
    model.eval()
    model.to(memory_format=torch.contiguous_format)
    history.seconds = time.perf_counter() - started
    return history


def _distillation(
    teacher: nn.Module,
    x: Tensor,
    logits: Tensor,
    marked: Tensor,
    *,
    temperature: float,
    layout: torch.memory_format,
) -> Tensor:
    """KL(teacher || student) of the softened predictions on the marked images of the batch,
    scaled by T squared (Hinton et al.) and averaged over the whole batch, so that its weight
    follows the share of old-appearance images; 0 when none is marked."""
    if not bool(marked.any()):
        return logits.new_zeros(())
    with torch.no_grad():
        target = F.log_softmax(
            teacher(x[marked].contiguous(memory_format=layout)) / temperature, dim=1
        )
    student = F.log_softmax(logits[marked] / temperature, dim=1)
    kl = F.kl_div(student, target, log_target=True, reduction="sum")
    return kl * temperature**2 / len(logits)


def _param_groups(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """Weights of convolutions and linear layers decay; biases and norm parameters do not."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for param in model.parameters():
        if not param.requires_grad:
            continue
        (decay if param.ndim > 1 else no_decay).append(param)
    return decay, no_decay


def _scheduler(
    optimizer: torch.optim.Optimizer,
    schedule: Schedule,
    lr: float,
    total_steps: int,
    warmup_fraction: float,
) -> torch.optim.lr_scheduler.LRScheduler:
    if schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer,
            max_lr=lr,
            total_steps=total_steps,
            pct_start=min(max(warmup_fraction, 0.01), 0.9),
            anneal_strategy="cos",
            div_factor=20.0,
            final_div_factor=200.0,
        )
    if schedule == "cosine":
        warmup = max(1, round(warmup_fraction * total_steps))

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            t = (step - warmup) / max(1, total_steps - warmup)
            return 0.005 + 0.995 * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))

        return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    if schedule == "constant":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    raise ValueError(f"unknown schedule {schedule!r}")
