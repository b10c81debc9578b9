"""What the demo records while it runs, and the goals its headline figures are judged by.

The orchestrator appends a :class:`Sample` per line every few seconds and a :class:`Mark` per
notable event; at the end it fills in the :class:`Headline`. The timeline is saved as JSON so a
report can be rendered again (or compared between runs) without rerunning the demo.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

MODES = ("auto", "guarded", "manual")
MARK_KINDS = (
    "redesign",
    "alert",
    "mode",
    "retrain_request",
    "model_version",
    "rollout",
    "routing",
)

# The story's goals, for the 2-core demo machine (issues 8 and 22).
GOAL_DETECTION_INSPECTIONS = 200
GOAL_ESCAPES_DURING_TRANSITION = 0
GOAL_SECONDS_TO_NEW_MODEL = 900.0
GOAL_FALSE_REJECT_RATE = 0.003
GOAL_ESCAPES_IN_AUTO = 0

# Goal name -> how it reads in the report. The names are the keys of Headline.goals.
GOALS: dict[str, str] = {
    "detection_within_200_inspections": "detection within 200 inspections of the redesign",
    "zero_escapes_during_transition": "zero escapes during the transition",
    "new_model_at_100_within_15_min": "new model at 100% within 15 minutes of the redesign",
    "false_reject_rate_after_recovery_max_0.3pct": "false reject rate after recovery <= 0.3%",
    "every_line_ends_in_auto": "every line ends the run in auto",
    "zero_escapes_in_auto": "no escapes on any line while it was in auto, over the whole run",
}

FORMAT_VERSION = 2


@dataclass
class ModeCounts:
    """A line's answered units while it was in one mode, over the whole run (ground truth)."""

    inspections: int = 0
    reviews: int = 0  # sent to a person
    false_rejects: int = 0  # good units the model rejected
    escapes: int = 0  # defective units passed with no person looking


@dataclass
class LineSummary:
    """One line over the whole run."""

    line: str
    final_mode: str  # the mode the line ended the run in
    by_mode: dict[str, ModeCounts] = field(default_factory=dict)  # auto/guarded/manual

    def total(self) -> ModeCounts:
        counts = ModeCounts()
        for c in self.by_mode.values():
            counts.inspections += c.inspections
            counts.reviews += c.reviews
            counts.false_rejects += c.false_rejects
            counts.escapes += c.escapes
        return counts


@dataclass
class Sample:
    """The state of one line at one moment; the counters are cumulative since traffic started."""

    t: float  # seconds since the traffic started
    line: str
    mode: str  # "auto" | "guarded" | "manual"
    stable_version: str  # version deciding for most traffic ("" before the first model)
    canary_version: str  # "" when none
    canary_weight: float  # 0..1 share of the line's traffic the canary decides
    drift_statistic: dict[str, float]  # detector name -> latest statistic (may be empty)
    drift_threshold: dict[str, float]  # detector name -> threshold (may be empty)
    inspections: int  # inspections answered on the line
    reviews: int  # inspections flagged for human review
    false_rejects: int  # model rejected, unit good (ground truth)
    escapes: int  # model passed without review, unit defective (ground truth)


@dataclass
class Mark:
    """A notable event, shown as an annotation and in the report's table."""

    t: float
    line: str  # "" when plant-wide
    kind: str  # one of MARK_KINDS
    text: str


@dataclass
class Headline:
    """The figures the demo is judged by (None: the run never got there)."""

    inspections_until_detection: int | None  # line inspections after the redesign until not auto
    seconds_to_new_model_at_100: float | None  # redesign -> new version stable at 100%
    escapes_during_transition: int | None  # escapes between the redesign and that promotion
    # Over the redesigned line's inspections once it is back in auto on the new model.
    false_reject_rate_after_recovery: float | None
    inspections_after_recovery: int
    human_reviews: int  # total human reviews during the run
    goals: dict[str, bool] = field(default_factory=dict)  # goal name (GOALS) -> met
    lines: list[LineSummary] = field(default_factory=list)  # every line, over the whole run
    completed: bool = False  # the story reached its end (recovery, then the watch after it)

    @property
    def all_goals_met(self) -> bool:
        return bool(self.goals) and all(self.goals.values())


def goals_met(h: Headline) -> dict[str, bool]:
    """Each goal of issue 8 -> whether the headline meets it; a missing figure never does."""
    frr = h.false_reject_rate_after_recovery
    secs = h.seconds_to_new_model_at_100
    return {
        "detection_within_200_inspections": h.inspections_until_detection is not None
        and h.inspections_until_detection <= GOAL_DETECTION_INSPECTIONS,
        "zero_escapes_during_transition": h.escapes_during_transition is not None
        and h.escapes_during_transition <= GOAL_ESCAPES_DURING_TRANSITION,
        # NaN compares false, so a NaN figure is not met either.
        "new_model_at_100_within_15_min": secs is not None
        and not math.isnan(secs)
        and secs <= GOAL_SECONDS_TO_NEW_MODEL,
        "false_reject_rate_after_recovery_max_0.3pct": frr is not None
        and not math.isnan(frr)
        and frr <= GOAL_FALSE_REJECT_RATE,
        "every_line_ends_in_auto": bool(h.lines)
        and all(line.final_mode == "auto" for line in h.lines),
        "zero_escapes_in_auto": bool(h.lines)
        and all(
            line.by_mode.get("auto", ModeCounts()).escapes <= GOAL_ESCAPES_IN_AUTO
            for line in h.lines
        ),
    }


@dataclass
class Timeline:
    """Everything the report needs: samples per line, marks, and the headline at the end."""

    scenario: str
    redesign_line: str = ""
    redesign_at: float | None = None
    samples: list[Sample] = field(default_factory=list)
    marks: list[Mark] = field(default_factory=list)
    headline: Headline | None = None

    def lines(self) -> list[str]:
        """Line names in order of first appearance (samples first, then line marks)."""
        seen: dict[str, None] = {}
        for s in self.samples:
            seen.setdefault(s.line, None)
        for m in self.marks:
            if m.line:
                seen.setdefault(m.line, None)
        return list(seen)

    def samples_for(self, line: str) -> list[Sample]:
        """The line's samples ordered by time (the recorder may interleave lines)."""
        return sorted((s for s in self.samples if s.line == line), key=lambda s: s.t)

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT_VERSION, **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Timeline:
        fmt = data.get("format", FORMAT_VERSION)
        if fmt not in (1, FORMAT_VERSION):  # 1: before the whole-run line summaries
            raise ValueError(f"timeline format {fmt!r} is not supported (want {FORMAT_VERSION})")
        h = data.get("headline")
        return cls(
            scenario=str(data["scenario"]),
            redesign_line=str(data.get("redesign_line", "")),
            redesign_at=_opt_float(data.get("redesign_at")),
            samples=[_sample(s) for s in data.get("samples", [])],
            marks=[
                Mark(t=float(m["t"]), line=str(m["line"]), kind=str(m["kind"]), text=str(m["text"]))
                for m in data.get("marks", [])
            ],
            headline=None if h is None else _headline(h),
        )

    def to_json(self, path: Path) -> None:
        """Write atomically, so a reader never sees half a timeline."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=1) + "\n", encoding="utf-8")
        os.replace(tmp, path)

    @classmethod
    def from_json(cls, path: Path) -> Timeline:
        return cls.from_dict(json.loads(path.read_text(encoding="utf-8")))


def _opt_float(v: Any) -> float | None:
    return None if v is None else float(v)


def _opt_int(v: Any) -> int | None:
    return None if v is None else int(v)


def _floats(d: Any) -> dict[str, float]:
    return {str(k): float(v) for k, v in (d or {}).items()}


def _sample(s: dict[str, Any]) -> Sample:
    return Sample(
        t=float(s["t"]),
        line=str(s["line"]),
        mode=str(s["mode"]),
        stable_version=str(s.get("stable_version", "")),
        canary_version=str(s.get("canary_version", "")),
        canary_weight=float(s.get("canary_weight", 0.0)),
        drift_statistic=_floats(s.get("drift_statistic")),
        drift_threshold=_floats(s.get("drift_threshold")),
        inspections=int(s.get("inspections", 0)),
        reviews=int(s.get("reviews", 0)),
        false_rejects=int(s.get("false_rejects", 0)),
        escapes=int(s.get("escapes", 0)),
    )


def _headline(h: dict[str, Any]) -> Headline:
    return Headline(
        inspections_until_detection=_opt_int(h.get("inspections_until_detection")),
        seconds_to_new_model_at_100=_opt_float(h.get("seconds_to_new_model_at_100")),
        escapes_during_transition=_opt_int(h.get("escapes_during_transition")),
        false_reject_rate_after_recovery=_opt_float(h.get("false_reject_rate_after_recovery")),
        inspections_after_recovery=int(h.get("inspections_after_recovery", 0)),
        human_reviews=int(h.get("human_reviews", 0)),
        goals={str(k): bool(v) for k, v in (h.get("goals") or {}).items()},
        lines=[
            LineSummary(
                line=str(s["line"]),
                final_mode=str(s["final_mode"]),
                by_mode={
                    str(mode): ModeCounts(**{k: int(v) for k, v in counts.items()})
                    for mode, counts in (s.get("by_mode") or {}).items()
                },
            )
            for s in h.get("lines", [])
        ],
        completed=bool(h.get("completed", False)),
    )
