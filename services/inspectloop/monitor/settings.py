"""Settings of the monitor service (``INSPECTLOOP_MONITOR__...``)."""

from __future__ import annotations

from pydantic import Field, model_validator

from inspectloop.core.settings import AbsolutePath, CommonSettings, Section


class DetectorSettings(Section):
    reference_size: int = Field(
        default=800,
        ge=100,
        description="Inspections of a newly stable model that make the line's reference "
        "(half compared with, half resampled to calibrate thresholds).",
    )
    window: int = Field(default=100, ge=20, description="Inspections per drift window.")
    check_every: int = Field(
        default=20, ge=1, description="Inspections between two evaluations of the windows."
    )
    feature_components: int = Field(
        default=10, ge=1, description="Principal components of the feature vectors in the MMD."
    )
    expected_run_time: float = Field(
        default=10_000_000,
        gt=1000,
        description="Inspections between false alarms of one detector on a stable line (ERT); "
        "every threshold is calibrated to it.",
    )
    calibration_streams: int = Field(
        default=100, ge=20, description="Stable streams simulated to calibrate a threshold."
    )
    calibration_stream_length: int = Field(
        default=2000, ge=200, description="Inspections per simulated calibration stream."
    )
    reject_rate_shift: float = Field(
        default=0.1,
        gt=0,
        lt=1,
        description="The reject-rate CUSUM is tuned to a rise from the reference rate p0 to "
        "max(2 p0, p0 + this).",
    )
    clear_checks: int = Field(
        default=10,
        ge=1,
        description="Consecutive checks below its threshold after which a detector's alarm clears.",
    )
    seed: int = Field(default=0, description="Seed of the calibration's resampling.")

    @model_validator(mode="after")
    def _check_sizes(self) -> DetectorSettings:
        if self.window * 2 > self.reference_size:
            raise ValueError(
                f"detectors.window ({self.window}) must be at most half of "
                f"detectors.reference_size ({self.reference_size})"
            )
        if self.calibration_stream_length <= self.window:
            raise ValueError("detectors.calibration_stream_length must exceed detectors.window")
        return self


class QualitySettings(Section):
    window: int = Field(
        default=2000, ge=100, description="Latest inspections the feedback rates are over."
    )
    confidence: float = Field(
        default=0.99, gt=0.5, lt=1, description="Confidence level of the rates' intervals."
    )
    max_false_reject_rate: float = Field(
        default=0.01,
        gt=0,
        lt=1,
        description="False rejects per inspection the model is validated for; alarm when the "
        "interval's lower bound exceeds it.",
    )
    max_escape_rate: float = Field(
        default=0.002,
        gt=0,
        lt=1,
        description="Reported escapes per passed unit tolerated; alarm when the interval's "
        "lower bound exceeds it.",
    )
    max_reference_reject_rate: float = Field(
        default=0.5,
        gt=0,
        le=1,
        description="A warm-up rejecting more than this is not a reference but a wrong model: "
        "the line goes to manual.",
    )


class RetrainPolicy(Section):
    min_labelled_images: int = Field(
        default=200,
        ge=1,
        description="Operator-labelled images of the new appearance needed before retraining.",
    )
    cooldown_s: float = Field(
        default=1800, ge=0, description="Seconds between two retrain requests for one line."
    )
    max_per_hour: int = Field(
        default=6, ge=1, description="Retrain requests per hour, all lines together."
    )
    sample_images: int = Field(
        default=4, ge=0, le=32, description="Image references attached to alerts and evidence."
    )


class EvidenceSettings(Section):
    escape_weight: float = Field(
        default=10.0,
        ge=1,
        description="Misses one reported escape counts for in a class's evidence: one over the "
        "share of passes a guarded line reviews (gateway decision.guarded_pass_sample, 0.1), "
        "as the escapes found are that share of those that happened.",
    )


class MonitorSection(Section):
    detectors: DetectorSettings = Field(
        default_factory=DetectorSettings, description="Drift detectors and their calibration."
    )
    quality: QualitySettings = Field(
        default_factory=QualitySettings, description="Quality from operator feedback."
    )
    retrain: RetrainPolicy = Field(
        default_factory=RetrainPolicy, description="When to ask for a new model."
    )
    evidence: EvidenceSettings = Field(
        default_factory=EvidenceSettings,
        description="How production feedback closes a version's open evidence classes.",
    )
    state_path: AbsolutePath | None = Field(
        default=None, description="SQLite file of the monitor's state; <data_dir>/monitor/..."
    )


class MonitorSettings(CommonSettings):
    monitor: MonitorSection = Field(
        default_factory=MonitorSection, description="The monitor service."
    )

    @model_validator(mode="after")
    def _derive_state_path(self) -> MonitorSettings:
        if self.monitor.state_path is None:
            path = self.data_dir / "monitor" / "state.sqlite3"
            section = self.monitor.model_copy(update={"state_path": path})
            object.__setattr__(self, "monitor", section)
        return self
