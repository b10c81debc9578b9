"""Settings of the trainer service (``INSPECTLOOP_TRAINER__...``)."""

from __future__ import annotations

from pydantic import Field, SecretStr, model_validator

from inspectloop.core.settings import AbsolutePath, CommonSettings, Section
from inspectloop.trainer.gates import GateSettings
from inspectloop.trainer.synthesis import MIN_VISIBLE_FRACTION


class AnomalySettings(Section):
    """How the anomaly detector of every version is built (``INSPECTLOOP_TRAINER__ANOMALY__``)."""

    enabled: bool = Field(
        default=True,
        description="Build the anomaly detector; without it a unit passes on the classifier alone.",
    )
    memory_size: int = Field(
        default=3072, ge=16, description="Patches kept in the memory bank (coreset size)."
    )
    max_images_per_design: int = Field(
        default=300,
        ge=1,
        description="Good images per label design whose patches go into the memory bank.",
    )
    target_false_reject_rate: float = Field(
        default=0.001,
        gt=0,
        lt=0.5,
        description="Share of good units the calibrated threshold may flag (Gumbel tail).",
    )
    margin: float = Field(
        default=1.05,
        ge=1.0,
        description="The threshold is at least the largest calibration score times this.",
    )
    min_calibration_images: int = Field(
        default=10,
        ge=2,
        description="Fewest held-out good images of a design to calibrate on; below it the "
        "threshold is the largest score times margin squared.",
    )


class AcceptanceSettings(Section):
    """What a version is accepted on (``INSPECTLOOP_TRAINER__ACCEPTANCE__...``)."""

    held_out_fraction: float = Field(
        default=0.3,
        gt=0,
        lt=1,
        description="Share of the operator-labelled production images held out (by image hash) "
        "for acceptance; no training step sees them.",
    )
    calibration_fraction: float = Field(
        default=0.1,
        gt=0,
        lt=1,
        description="Share held out to calibrate the anomaly detector's threshold on (its good "
        "images); it is not part of the acceptance set either.",
    )
    required_recall_lower_bound: float = Field(
        default=0.7,
        ge=0,
        le=1,
        description="Lowest one-sided Clopper-Pearson lower bound of a defect class's recall "
        "on real examples before its lines may run in auto (0.7: the Knapp reject zone).",
    )
    confidence: float = Field(
        default=0.95, gt=0.5, lt=1, description="Confidence of that lower bound (one-sided)."
    )


class SynthesisSettings(Section):
    """How many images are made from the good units of each new label design in a request's
    scope (``INSPECTLOOP_TRAINER__SYNTHESIS__...``)."""

    defective: int = Field(
        default=2000, ge=0, description="Images with a synthesised defect, severities 0..1."
    )
    subtle: int = Field(
        default=1000,
        ge=0,
        description="More, at severities 0..subtle_severity: where the decision boundary is.",
    )
    subtle_severity: float = Field(
        default=0.35, gt=0, le=1, description="Highest severity of the subtle set."
    )
    pasted: int = Field(
        default=300,
        ge=0,
        description="Defect regions operators confirmed on any design, pasted onto good units.",
    )
    artwork_goods: int = Field(
        default=300,
        ge=0,
        description="Good units re-printed with the design's artwork, when the plant uploaded "
        "it (registry dataset of kind artwork).",
    )
    test_fraction: float = Field(
        default=0.1,
        ge=0,
        lt=1,
        description="Share held out as synthetic_test: evaluated and reported apart, never "
        "part of acceptance.",
    )
    min_visible_fraction: float = Field(
        default=MIN_VISIBLE_FRACTION,
        ge=0,
        lt=1,
        description="Smallest share of the image a synthesised defect must change by 40 grey "
        "levels or more (0.0015: 25 pixels at 128 px); fainter draws are made again at a higher "
        "severity: a defect the camera cannot show teaches the model to reject good units.",
    )


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
    labelled_repeats: int = Field(
        default=10,
        ge=1,
        description="Times each operator-labelled image is seen per fine-tuning epoch: the few "
        "hundred real images of a new design weigh against the thousands synthesised from them.",
    )
    distill_weight: float = Field(
        default=4.0,
        ge=0,
        description="Weight of the distillation from the parent model on the replayed "
        "reference images while fine-tuning (learning without forgetting): what keeps the "
        "old design's accuracy while the model learns a new one; 0 turns it off.",
    )
    synthesis: SynthesisSettings = Field(
        default_factory=SynthesisSettings,
        description="Defects synthesised in image space on good units of a new label design.",
    )
    anomaly: AnomalySettings = Field(
        default_factory=AnomalySettings,
        description="The anomaly detector every version carries beside its classifier.",
    )
    acceptance: AcceptanceSettings = Field(
        default_factory=AcceptanceSettings,
        description="What a version is accepted on: held-out real images, challenge sets.",
    )
    initial_weights: AbsolutePath | None = Field(
        default=None,
        description="Weights (a state_dict file of the configured architecture) the first "
        "training starts from: the model a plant already ran before inspectloop. None trains "
        "the first version from scratch.",
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
