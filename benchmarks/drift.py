"""Drift detection on the simulator's scenarios: how soon, how often wrongly, at what cost.

A small model is trained on design A (``inspectloop.devtools.inspected_streams``); four
scenario files are rendered unit by unit on their changing line (the redesign, the lighting
drift, the camera blur, the new SKU) and inspected by that model. Every detector gets the same
warm-up of ``reference_size`` inspections of the line before the change, then the scenario's
stream from its start; it reports:

- detection delay: inspections after the scenario's change until its first alarm (the
  lighting and blur changes ramp in over 1,200 and 2,400 inspections);
- false alarms per 10^6 stable inspections: a stream of ``--stable-events`` inspections
  resampled from a pool of stable renders that no reference or calibration saw (the pool's
  images are rendered and inspected; the stream draws from them, as the issue allows);
- cost per inspection on one core (BLAS pinned to one thread), and inspections/s per core.

Ours is the monitor's ``LineMonitor`` as the service runs it, per detector, reading the
protobuf events (its cost includes decoding the fields, every detector and the policies).
Side by side, on the same whitened principal components the MMD sees (their projection is
not counted in their cost): river's Page-Hinkley and ADWIN, one per component, alarm when any
component drifts, with river's defaults and tuned (the most sensitive setting of a grid with
no false alarm on a separate stable stream of the same length); and a per-feature KS test
(window and reference as ours) with Bonferroni's correction at alpha = 0.05, and with its
threshold calibrated to our expected run time by the monitor's own bootstrap.

Goals (issue 6): the redesign detected within 100 inspections at <= 1 false alarm per 10^6
stable inspections; >= 20,000 inspections/s per core.

    python benchmarks/drift.py            # 10^6 stable inspections, about 15 min on 2 cores
    python benchmarks/drift.py --quick    # 10^5, for CI
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"  # cost per core: no BLAS threads (before NumPy loads)

import argparse  # noqa: E402
import functools  # noqa: E402
import math  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Protocol  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from river.drift import ADWIN, PageHinkley  # noqa: E402
from scipy.stats import kstwobign  # noqa: E402

import inspectloop.simulator  # noqa: E402
from inspectloop.devtools.inspected_streams import (  # noqa: E402
    inspect,
    render_scenario_line,
    train_design_a_model,
)
from inspectloop.monitor.calibration import calibrate_window_statistic  # noqa: E402
from inspectloop.monitor.detectors import (  # noqa: E402
    CONFIDENCE_KS,
    FEATURE_MMD,
    IMAGE_STATS,
    REJECT_RATE_CUSUM,
    Array,
    ks_distance,
)
from inspectloop.monitor.line import MODE_NAMES, LineMonitor, calibration_plan  # noqa: E402
from inspectloop.monitor.settings import MonitorSection  # noqa: E402
from inspectloop.simulator.scenario import load_scenario  # noqa: E402
from inspectloop.trainer.model import InspectionCNN  # noqa: E402
from inspectloop.v1.inspection_pb2 import InspectionEvent  # noqa: E402
from inspectloop.v1.monitor_pb2 import (  # noqa: E402
    ChangeoverAnnounced,
    DriftAlert,
    LineModeChanged,
)

SCENARIO_DIR = Path(inspectloop.simulator.__file__).parent / "scenarios"
GOAL_DELAY = 100
GOAL_FALSE_ALARMS = 1.0  # per 10^6 stable inspections
GOAL_PER_S = 20_000.0
WARM_UP_UNITS = 10_000_000  # unit indices of the warm-up and the stable pool: apart from the
STABLE_UNITS = 20_000_000  # scenario's own units, so that no image is seen twice


@dataclass(frozen=True)
class Case:
    scenario: str
    line: str
    after: int  # inspections rendered after the change


CASES = (
    Case("label-redesign", "line-1", 400),
    Case("lighting-drift", "line-1", 1600),  # ramps in over 1,200
    Case("camera-blur", "line-1", 2800),  # ramps in over 2,400
    Case("new-sku", "line-2", 400),
)


@dataclass
class Stream:
    """A line's warm-up and the inspections that follow it, with the change's position."""

    warm_up: list[InspectionEvent]
    events: list[InspectionEvent]
    onset: int  # index in ``events`` of the first inspection after the change
    changeover: ChangeoverAnnounced | None = None


def scenario_stream(model: InspectionCNN, case: Case, warm_up: int) -> Stream:
    scenario = load_scenario(SCENARIO_DIR / f"{case.scenario}.yaml")
    index = next(i for i, spec in enumerate(scenario.lines) if spec.id == case.line)
    rate = scenario.lines[index].rate_per_s
    change = next(e for e in scenario.events if e.line == case.line)
    onset = math.ceil(change.at_s * rate)
    before = [(WARM_UP_UNITS + j, 0.0) for j in range(warm_up)]
    units = [(i, i / rate) for i in range(onset + case.after)]
    design = scenario.lines[index].design
    changeover = None
    if change.announce:
        changeover = ChangeoverAnnounced(
            changeover_id=f"{case.scenario}-{case.line}",
            lines=[case.line],
            sku=change.change.sku or "",
            label_design=change.change.design or "",
            announced_by="plant",
        )
    return Stream(
        inspect(model, render_scenario_line(scenario, index, before), case.line, design),
        inspect(model, render_scenario_line(scenario, index, units), case.line, design),
        onset,
        changeover,
    )


def stable_pool(model: InspectionCNN, size: int) -> list[InspectionEvent]:
    """Stable inspections of the redesign scenario's line 1 before its change."""
    scenario = load_scenario(SCENARIO_DIR / "label-redesign.yaml")
    units = [(STABLE_UNITS + j, 0.0) for j in range(size)]
    return inspect(model, render_scenario_line(scenario, 0, units), "line-1", "A")


# --- the detectors ----------------------------------------------------------------------


@dataclass
class Run:
    """Where a detector raised alarms in a stream (event indices), and its time per event."""

    alarms: dict[str, list[int]] = field(default_factory=dict)
    seconds_per_event: float = 0.0
    modes: list[tuple[int, str]] = field(default_factory=list)  # our monitor only
    nuisance: bool = False


class Monitor:
    """The service's per-line monitor, every detector at once."""

    name = "inspectloop"
    detectors = (FEATURE_MMD, IMAGE_STATS, CONFIDENCE_KS, REJECT_RATE_CUSUM)

    def __init__(self, settings: MonitorSection) -> None:
        self.settings = settings

    def warmed(self, warm_up: list[InspectionEvent]) -> LineMonitor:
        line = LineMonitor(warm_up[0].line, self.settings)
        for i, event in enumerate(warm_up):
            line.on_inspection(event, f"warm-up-{i}", 0.0)
        assert line.reference is not None, "the warm-up did not make a reference"
        return line

    def run(
        self,
        warm_up: list[InspectionEvent],
        events: Sequence[InspectionEvent],
        changeover: tuple[int, ChangeoverAnnounced] | None = None,
    ) -> Run:
        line = self.warmed(warm_up)
        run = Run({d: [] for d in self.detectors})
        ids = [f"event-{i}" for i in range(len(events))]
        started = time.perf_counter()
        for i, event in enumerate(events):
            outputs = []
            if changeover is not None and i == changeover[0]:
                outputs += line.on_changeover(changeover[1], f"changeover-{i}", 0.0)
            outputs += line.on_inspection(event, ids[i], 0.0)[0]
            for output in outputs:
                message = output.message
                if isinstance(message, DriftAlert):
                    run.alarms[message.detector].append(i)
                    run.nuisance |= message.nuisance
                elif isinstance(message, LineModeChanged):
                    run.modes.append((i, MODE_NAMES[message.new_mode]))
        run.seconds_per_event = (time.perf_counter() - started) / len(events)
        return run

    def whiten(self, warm_up: list[InspectionEvent]) -> tuple[Callable[[Array], Array], Array]:
        """The reference's projection, and the warm-up's rows it compares with (projected)."""
        reference = self.warmed(warm_up).reference
        assert reference is not None
        features = np.array([e.feature_vector for e in warm_up], dtype=np.float64)
        return reference.project, reference.project(features)


class PerComponent:
    """One river detector per whitened component; an alarm when any of them flags drift."""

    def __init__(self, name: str, make: Callable[[], PageHinkley | ADWIN]) -> None:
        self.name = name
        self.make = make

    def run(self, components: Array) -> Run:
        detectors = [self.make() for _ in range(components.shape[1])]
        alarms = []
        rows = components.tolist()
        started = time.perf_counter()
        for i, row in enumerate(rows):
            hit = False
            for detector, value in zip(detectors, row, strict=True):
                detector.update(value)
                hit |= detector.drift_detected
            if hit:
                alarms.append(i)
        return Run({"any component": alarms}, (time.perf_counter() - started) / len(rows))


class PerFeatureKs:
    """Two-sample KS on each component, window and reference as ours; an alarm when the
    largest distance passes ``threshold`` (for equal sample sizes, the smallest p-value)."""

    def __init__(self, name: str, reference: Array, threshold: float, window: int, every: int):
        self.name = name
        self.reference = np.sort(reference, axis=0)
        self.threshold = threshold
        self.window = window
        self.every = every

    def statistic(self, window: Array) -> float:
        return max(ks_distance(self.reference[:, c], window[:, c]) for c in range(window.shape[1]))

    def run(self, components: Array) -> Run:
        alarms = []
        started = time.perf_counter()
        for end in range(self.window, len(components) + 1, self.every):
            if self.statistic(components[end - self.window : end]) > self.threshold:
                alarms.append(end - 1)
        return Run(
            {"max over components": alarms}, (time.perf_counter() - started) / len(components)
        )


def bonferroni_threshold(alpha: float, components: int, n: int, m: int) -> float:
    """The KS distance whose asymptotic two-sample p-value is ``alpha / components``."""
    return float(kstwobign.isf(alpha / components) / math.sqrt(n * m / (n + m)))


def tuned(
    name: str,
    grid: Sequence[float],
    make: Callable[[float], PageHinkley | ADWIN],
    tuning: Array,
) -> tuple[PerComponent, float]:
    """The most sensitive setting of ``grid`` with no alarm on the ``tuning`` stream."""
    for value in grid:
        candidate = PerComponent(name, functools.partial(make, value))
        if not candidate.run(tuning).alarms["any component"]:
            return candidate, value
    raise RuntimeError(f"{name}: every setting of {list(grid)} raised false alarms")


# --- the table ----------------------------------------------------------------------------


def first_after(alarms: list[int], onset: int) -> int | None:
    after = [i for i in alarms if i >= onset]
    return after[0] - onset + 1 if after else None


def delay_cell(alarms: list[int], stream: Stream) -> str:
    delay = first_after(alarms, stream.onset)
    early = sum(1 for i in alarms if i < stream.onset)
    cell = f"{delay}" if delay is not None else f"> {len(stream.events) - stream.onset}"
    return cell + (f" ({early} before)" if early else "")


def print_table(rows: list[list[str]], header: list[str]) -> None:
    widths = [max(len(r[c]) for r in [header, *rows]) for c in range(len(header))]
    line = lambda r: "| " + " | ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) + " |"  # noqa: E731
    print(line(header))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print(line(r))


class Baseline(Protocol):
    name: str

    def run(self, components: Array) -> Run: ...


def baselines(settings: MonitorSection, compared: Array, tuning: Array) -> list[Baseline]:
    """The detectors ours is compared with, set up on the same warm-up (``compared``: its
    rows projected) and, where tuned, on the ``tuning`` stream (projected)."""
    det = settings.detectors
    ph_tuned, ph_threshold = tuned(
        "Page-Hinkley",
        [50.0, 100.0, 200.0, 400.0, 800.0, 1600.0],
        lambda v: PageHinkley(threshold=v),
        tuning,
    )
    ph_tuned.name = f"Page-Hinkley (tuned: threshold {ph_threshold:g})"
    adwin_tuned, adwin_delta = tuned(
        "ADWIN", [0.002, 1e-4, 1e-6, 1e-8, 1e-10, 1e-12], lambda v: ADWIN(delta=v), tuning
    )
    adwin_tuned.name = f"ADWIN (tuned: delta {adwin_delta:g})"
    # The KS tests compare with the warm-up half the MMD compares with; the calibrated one
    # resamples the other half, exactly as the monitor calibrates its own statistics.
    compare, calibrate = compared[0::2], compared[1::2]
    ks_bonferroni = PerFeatureKs(
        "per-feature KS (Bonferroni, alpha 0.05)",
        compare,
        bonferroni_threshold(0.05, compare.shape[1], det.window, len(compare)),
        det.window,
        det.check_every,
    )
    ks_calibrated = PerFeatureKs(
        "per-feature KS (calibrated)", compare, math.inf, det.window, det.check_every
    )
    ks_calibrated.threshold = calibrate_window_statistic(
        lambda rows: ks_calibrated.statistic(calibrate[rows]),
        len(calibrate),
        calibration_plan(settings),
    )
    return [
        PerComponent("Page-Hinkley (river defaults)", PageHinkley),
        ph_tuned,
        PerComponent("ADWIN (river defaults)", ADWIN),
        adwin_tuned,
        ks_bonferroni,
        ks_calibrated,
    ]


def any_alarm(run: Run) -> list[int]:
    return sorted(i for alarms in run.alarms.values() for i in alarms)


def cost_cells(seconds_per_event: float) -> list[str]:
    return [f"{seconds_per_event * 1e6:.1f}", f"{1 / seconds_per_event:,.0f}"]


def print_decisions(runs: dict[str, Run], streams: dict[str, Stream]) -> None:
    print("What the monitor did with the line (its first mode change after the change):")
    for case in CASES:
        run, stream = runs[case.scenario], streams[case.scenario]
        changes = [(i - stream.onset + 1, mode) for i, mode in run.modes if i >= stream.onset]
        early = [mode for i, mode in run.modes if i < stream.onset]
        verdict = f"{changes[0][1]} after {changes[0][0]}" if changes else "stayed auto"
        print(
            f"  {case.scenario:15s} {verdict}"
            + ("; alerts flagged as nuisance" if run.nuisance else "")
            + (f"; mode changes before the change: {early}" if early else "")
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stable-events", type=int, default=1_000_000)
    parser.add_argument("--pool", type=int, default=4000, help="stable renders to draw from")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="10^5 stable events, pool 2000")
    args = parser.parse_args()
    if args.quick:
        args.stable_events, args.pool = 100_000, 2000
    torch.set_num_threads(2)  # training and inspecting the streams: not what is measured
    settings = MonitorSection()
    det = settings.detectors

    began = time.perf_counter()
    model = train_design_a_model(args.seed, skus=("SKU-01", "SKU-02"))
    streams = {c.scenario: scenario_stream(model, c, det.reference_size) for c in CASES}
    pool = stable_pool(model, args.pool)
    torch.set_num_threads(1)
    print(f"model and streams: {time.perf_counter() - began:.0f} s")

    rng = np.random.default_rng(args.seed + 1)
    stable = [pool[i] for i in rng.integers(0, len(pool), args.stable_events)]
    ours = Monitor(settings)
    redesign_warm_up = streams["label-redesign"].warm_up
    project, compared = ours.whiten(redesign_warm_up)

    def components(events: Sequence[InspectionEvent]) -> Array:
        return project(np.array([e.feature_vector for e in events], dtype=np.float64))

    pool_components = components(pool)
    tuning = pool_components[rng.integers(0, len(pool), args.stable_events)]
    per_million = 1e6 / args.stable_events

    stable_run = ours.run(redesign_warm_up, stable)
    runs = {}
    for case in CASES:
        stream = streams[case.scenario]
        changeover = (stream.onset, stream.changeover) if stream.changeover else None
        runs[case.scenario] = ours.run(stream.warm_up, stream.events, changeover)
    rows = [
        [
            f"ours: {detector}",
            *(delay_cell(runs[c.scenario].alarms[detector], streams[c.scenario]) for c in CASES),
            f"{len(stable_run.alarms[detector]) * per_million:.2g}",
            "",
            "",
        ]
        for detector in Monitor.detectors
    ]
    rows.append(
        [
            "ours: any detector (the monitor)",
            *(delay_cell(any_alarm(runs[c.scenario]), streams[c.scenario]) for c in CASES),
            f"{len(any_alarm(stable_run)) * per_million:.2g}",
            *cost_cells(stable_run.seconds_per_event),
        ]
    )
    costs = []
    stable_components = components(stable)
    for baseline in baselines(settings, compared, tuning):
        stable_baseline = baseline.run(stable_components)
        cells = [
            delay_cell(
                any_alarm(baseline.run(components(streams[c.scenario].events))), streams[c.scenario]
            )
            for c in CASES
        ]
        costs.append(stable_baseline.seconds_per_event)
        rows.append(
            [
                baseline.name,
                *cells,
                f"{len(any_alarm(stable_baseline)) * per_million:.2g}",
                *cost_cells(stable_baseline.seconds_per_event),
            ]
        )

    print()
    print(
        f"Detection delay (inspections after the change; 'N before': alarms before it), false "
        f"alarms per 10^6 on {args.stable_events:,} stable inspections, cost on one core:"
    )
    header = ["detector", *(c.scenario for c in CASES), "false alarms / 10^6", "us / event"]
    print_table(rows, [*header, "events/s/core"])
    print()
    print_decisions(runs, streams)
    print()
    redesign = first_after(any_alarm(runs["label-redesign"]), streams["label-redesign"].onset)
    ours_cost = stable_run.seconds_per_event
    print(
        f"goals: redesign detected after {redesign} inspections (goal <= {GOAL_DELAY}); "
        f"{len(any_alarm(stable_run)) * per_million:.2g} false alarms per 10^6 "
        f"(goal <= {GOAL_FALSE_ALARMS:g}); {1 / ours_cost:,.0f} inspections/s per core "
        f"(goal >= {GOAL_PER_S:,.0f}); cost ratio ours / fastest baseline: "
        f"{ours_cost / min(costs):.2f}"
    )
    print(f"took {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
