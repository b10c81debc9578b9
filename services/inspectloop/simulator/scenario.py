"""Scenarios: what happens on the simulated plant floor, and when, as a YAML file.

A scenario names the lines (SKU, label design, serialization, rate), the defect prevalence, how
the simulated operators behave, and a timeline of changes: a label redesign on line L at time t,
lighting drift, a camera slowly losing focus, a new SKU, a serialization format change. Numeric
changes may ramp over ``ramp_s`` seconds; a change may be announced to the plant system first
(a ``ChangeoverAnnounced`` event), as a well-run plant would.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from inspectloop.core.errors import ConfigError

ChangeKind = Literal[
    "label_redesign", "lighting_drift", "camera_blur", "new_sku", "serialization_change"
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LineSpec(_Strict):
    id: str = Field(description="Line id, e.g. line-1; the key of its events on the bus.")
    station: str = Field(default="station-1", description="Inspection station on the line.")
    camera: str = Field(default="camera-1", description="Camera at the station.")
    sku: str = Field(description="SKU packed at the start, from the simulator's catalogue.")
    design: Literal["A", "B"] = Field(default="A", description="Label design at the start.")
    serialization: Literal["gs1-dm", "gs1-linear"] = Field(
        default="gs1-dm", description="Serialization format at the start."
    )
    rate_per_s: float = Field(default=2.0, gt=0, description="Inspections per second.")


class Change(_Strict):
    """What a timeline event changes; only the fields given change."""

    sku: str | None = Field(default=None, description="New SKU.")
    design: Literal["A", "B"] | None = Field(default=None, description="New label design.")
    serialization: Literal["gs1-dm", "gs1-linear"] | None = Field(
        default=None, description="New serialization format."
    )
    lighting_level: float | None = Field(
        default=None, gt=0, description="Light level factor (1.0 = nominal)."
    )
    color_temperature_k: float | None = Field(
        default=None, gt=1000, description="Colour temperature of the light in kelvin."
    )
    blur_sigma: float | None = Field(
        default=None, ge=0, description="Camera defocus blur, Gaussian sigma in pixels."
    )


_REQUIRED_FIELDS: dict[str, str] = {
    "label_redesign": "design",
    "new_sku": "sku",
    "serialization_change": "serialization",
    "camera_blur": "blur_sigma",
}


class ScenarioEvent(_Strict):
    at_s: float = Field(ge=0, description="Seconds after the start of the run.")
    line: str = Field(description="Line the change happens on.")
    kind: ChangeKind = Field(description="What kind of change this is.")
    change: Change = Field(description="The new values.")
    ramp_s: float = Field(
        default=0.0, ge=0, description="Numeric values move linearly to the new ones over this."
    )
    announce: bool = Field(
        default=False, description="Publish a ChangeoverAnnounced event when it happens."
    )

    @model_validator(mode="after")
    def _change_fits_kind(self) -> ScenarioEvent:
        required = _REQUIRED_FIELDS.get(self.kind)
        if required is not None and getattr(self.change, required) is None:
            raise ValueError(f"a {self.kind} event must set change.{required}")
        if self.kind == "lighting_drift" and (
            self.change.lighting_level is None and self.change.color_temperature_k is None
        ):
            raise ValueError(
                "a lighting_drift event must set lighting_level or color_temperature_k"
            )
        return self


class OperatorSpec(_Strict):
    review_delay_s: float = Field(
        default=5.0, ge=0, description="Time from an image sent to review until the verdict."
    )
    error_rate: float = Field(
        default=0.002, ge=0, le=0.5, description="Share of reviews the operator gets wrong."
    )
    escape_report_rate: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description="Share of escaped defects found later downstream and reported.",
    )
    escape_report_delay_s: float = Field(
        default=60.0, ge=0, description="Time from an escape until it is reported."
    )
    operator_ids: tuple[str, ...] = Field(
        default=("op-ana", "op-ben", "op-chidi"), description="Operators on shift."
    )


class Scenario(_Strict):
    name: str = Field(description="Short name of the scenario.")
    description: str = Field(default="", description="What the scenario shows.")
    seed: int = Field(default=1, description="Seed of everything random in the run.")
    duration_s: float = Field(gt=0, description="Simulated length of the run.")
    image_size: int = Field(default=128, ge=64, le=1024, description="Image side in pixels.")
    defect_prevalence: float = Field(
        default=0.03, ge=0, le=1, description="Share of units that carry a defect."
    )
    lines: tuple[LineSpec, ...] = Field(min_length=1, description="The lines of the plant.")
    events: tuple[ScenarioEvent, ...] = Field(default=(), description="The timeline.")
    operators: OperatorSpec = Field(
        default_factory=OperatorSpec, description="How the operators behave."
    )

    @model_validator(mode="after")
    def _events_name_lines(self) -> Scenario:
        ids = [line.id for line in self.lines]
        if len(set(ids)) != len(ids):
            raise ValueError(f"line ids must be unique: {ids}")
        for event in self.events:
            if event.line not in ids:
                raise ValueError(f"event at {event.at_s}s names unknown line {event.line!r}")
            if event.at_s > self.duration_s:
                raise ValueError(f"event at {event.at_s}s is after the end ({self.duration_s}s)")
        return self


def load_scenario(path: Path) -> Scenario:
    """Read and validate a scenario file; a ConfigError names the file and every problem."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read scenario {path}: {exc}") from exc
    try:
        return Scenario.model_validate(raw)
    except ValidationError as exc:
        problems = "\n  ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}"
            for err in exc.errors()
        )
        raise ConfigError(f"invalid scenario {path}:\n  {problems}") from exc


class LineConditions(_Strict):
    """What a line looks like at one instant of the run."""

    sku: str
    design: Literal["A", "B"]
    serialization: Literal["gs1-dm", "gs1-linear"]
    lighting_level: float = 1.0
    color_temperature_k: float = 5500.0
    blur_sigma: float = 0.0


def conditions_at(scenario: Scenario, line_id: str, t: float) -> LineConditions:
    """The state of ``line_id`` at ``t`` seconds: every event so far applied, ramps interpolated."""
    line = next(spec for spec in scenario.lines if spec.id == line_id)
    state = LineConditions(sku=line.sku, design=line.design, serialization=line.serialization)
    for event in sorted(scenario.events, key=lambda e: e.at_s):
        if event.line != line_id or event.at_s > t:
            continue
        progress = 1.0 if event.ramp_s == 0 else min(1.0, (t - event.at_s) / event.ramp_s)
        update: dict[str, object] = {}
        for name, value in event.change.model_dump(exclude_none=True).items():
            if isinstance(value, float):
                start = float(getattr(state, name))
                update[name] = start + (value - start) * progress
            else:
                update[name] = value
        state = state.model_copy(update=update)
    return state
