"""Settings of the trainer service (``INSPECTLOOP_TRAINER__...``)."""

from __future__ import annotations

from pydantic import Field, SecretStr, model_validator

from inspectloop.core.settings import AbsolutePath, CommonSettings, Section
from inspectloop.trainer.gates import GateSettings


class TrainerSection(Section):
    model_name: str = Field(default="label-inspector", description="Registry name of the model.")
    ray_address: str | None = Field(
        default=None,
        description="Ray dashboard address (http://host:8265) to submit training jobs to; "
        "empty trains on a local Ray started in the trainer's process.",
    )
    ray_auth_token: SecretStr | None = Field(
        default=None, description="Token of a Ray cluster started with RAY_AUTH_MODE=token."
    )
    num_workers: int = Field(default=2, ge=1, description="Ray Train workers (DDP ranks).")
    cpus_per_worker: float = Field(default=1.0, gt=0, description="CPUs each worker reserves.")
    use_gpu: bool = Field(default=False, description="Train on GPUs (one per worker).")
    max_failures: int = Field(
        default=2, ge=0, description="Worker-group restarts (from the last checkpoint) per run."
    )
    epochs: int = Field(default=14, ge=1, description="Epochs of a training from scratch.")
    fine_tune_epochs: int = Field(
        default=8, ge=1, description="Epochs when fine-tuning from the parent model."
    )
    lr: float = Field(default=4e-3, gt=0, description="Peak learning rate (one-cycle).")
    batch_size: int = Field(
        default=32,
        ge=1,
        description="Batch size per worker; the default gives two workers the batch of 64 the "
        "training recipe was validated with.",
    )
    seed: int = Field(default=7, description="Seed of initialisation, data order, augmentation.")
    width_multiplier: float = Field(
        default=1.0,
        description="Model width (channels) factor. A change trains the next version from "
        "scratch: the parent's weights do not fit.",
    )
    image_size: int = Field(
        default=128,
        description="Input side in pixels. The reference and golden datasets must have this "
        "size (checked at start); operator-labelled images of another size are resized as the "
        "gateway resizes them. 128 suits the embedded defaults; 160 is what "
        "reaches 99.7% on a redesign's subtle defects at full scale (benchmarks/train.py), at "
        "about 1.6 times the latency.",
    )
    fine_tune: bool = Field(
        default=True, description="Start from the parent (production) model's weights."
    )
    reference_datasets: tuple[AbsolutePath, ...] = Field(
        default=(), description="Reference datasets (simulator layout) every snapshot includes."
    )
    synthesised_images: int = Field(
        default=2000,
        ge=0,
        description="Images rendered from the artwork of each label design in a request's "
        "scope, defects synthesised on most of them (severities 0..1); 0 turns synthesis off.",
    )
    synthesised_subtle_images: int = Field(
        default=4000,
        ge=0,
        description="More renders of each design with defects at subtle severities only "
        "(0..synthesis_subtle_severity): where the decision boundary is.",
    )
    synthesis_subtle_severity: float = Field(
        default=0.35, gt=0, le=1, description="Highest severity of the subtle renders."
    )
    reference_replay: int = Field(
        default=6000,
        ge=0,
        description="Most reference training images in a snapshot (a fixed sample by content "
        "hash), so that fine-tuning time does not grow with the reference; 0 keeps them all.",
    )
    new_appearance_repeats: int = Field(
        default=2,
        ge=1,
        description="Times each labelled or synthesised image (the new appearance) is seen per "
        "fine-tuning epoch, against once for each replayed reference image.",
    )
    synthesis_defect_fraction: float = Field(
        default=0.8, ge=0, le=1, description="Share of the synthesised images that are defective."
    )
    synthesis_serialization: str = Field(
        default="gs1-dm", description="Serialization format printed on the synthesised labels."
    )
    label_wait_s: float = Field(
        default=120,
        ge=0,
        description="How long a retrain request waits for the labelled images it requires "
        "(min_labelled_images) to reach the trainer before it is dead-lettered.",
    )
    golden_dataset: AbsolutePath | None = Field(
        default=None, description="Dataset whose 'golden' split must never regress."
    )
    registry_url: str = Field(
        default="http://127.0.0.1:8600", description="Base URL of the model registry."
    )
    registry_token: SecretStr | None = Field(
        default=None, description="API token of the trainer's service account in the registry."
    )
    work_dir: AbsolutePath | None = Field(
        default=None, description="Snapshots, runs and packages; defaults to <data_dir>/trainer."
    )
    gates: GateSettings = Field(
        default_factory=GateSettings, description="Validation gates a new version must pass."
    )


class TrainerSettings(CommonSettings):
    trainer: TrainerSection = Field(
        default_factory=TrainerSection, description="The trainer service."
    )

    @model_validator(mode="after")
    def _derive_work_dir(self) -> TrainerSettings:
        if self.trainer.work_dir is None:
            section = self.trainer.model_copy(update={"work_dir": self.data_dir / "trainer"})
            object.__setattr__(self, "trainer", section)
        return self
