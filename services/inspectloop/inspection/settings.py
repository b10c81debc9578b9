"""Settings of the inspection pipeline, shared by every front end that inspects (the gateway, the
edge agent): image limits, the decision rules' thresholds, and how Triton is reached."""

from __future__ import annotations

from pydantic import Field

from inspectloop.core.settings import Section


class ImageLimits(Section):
    max_bytes: int = Field(
        default=8 * 1024 * 1024, gt=0, description="Largest encoded image accepted, in bytes."
    )
    min_side: int = Field(default=32, ge=1, description="Smallest width or height, in pixels.")
    max_side: int = Field(default=4096, ge=1, description="Largest width or height, in pixels.")
    max_aspect_ratio: float = Field(
        default=4.0,
        ge=1,
        description="Largest ratio of the longer side to the shorter; a label image is close to "
        "square, a strip is a camera or cropping fault.",
    )


class DecisionSettings(Section):
    review_threshold: float = Field(
        default=0.9,
        gt=0,
        le=1,
        description="In guarded mode, a pass with a confidence below this goes to human review.",
    )
    low_confidence_threshold: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description="In every mode, a decision with a confidence below this goes to human "
        "review (0 disables it).",
    )
    guarded_pass_sample: float = Field(
        default=0.1,
        ge=0,
        le=1,
        description="In guarded mode, the share of confident passes sampled for human review "
        "(by request id), so that escapes are measured while the line is watched.",
    )


class TritonSettings(Section):
    url: str = Field(default="127.0.0.1:8001", description="Triton's gRPC address (host:port).")
    timeout_s: float = Field(default=5.0, gt=0, description="Deadline of one inference call.")
    readiness_ttl_s: float = Field(
        default=2.0,
        ge=0,
        description="How long a model version's readiness answer is trusted before asking "
        "Triton again.",
    )
