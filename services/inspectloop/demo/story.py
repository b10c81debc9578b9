"""The plant story from SEED.txt, driven from outside the plant, and the figures it is judged by.

A :class:`Plant` is the services running somewhere: in this process on the embedded defaults
(``inspectloop demo``, :mod:`inspectloop.demo.run`) or as separate processes on real Kafka,
Triton, Ray and Prometheus (``inspectloop up``, :mod:`inspectloop.demo.platform`). The story
sees a plant only as its users do: it publishes on the bus, line PCs call the gateway, operators
answer the review queue, and what happened is read back from the bus (line modes, alerts,
models, rollouts, routing) and from the monitor's ``/metrics``.

The story: a model is trained for both lines and rolled out; the lines run; line 1's label is
redesigned without notice. Nobody touches anything after that: the monitor must notice and send
line 1 to human review, the operators' labels must lead to a retrain, the new version must pass
its gates, shadow, canary and promotion, and line 1 must return to ``auto``.
"""

from __future__ import annotations

import contextlib
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from inspectloop.core.bus import EventBus
from inspectloop.core.errors import ConfigError
from inspectloop.core.events import Event
from inspectloop.core.registry_client import RegistryClient
from inspectloop.core.topics import (
    DRIFT_ALERTS,
    INSPECTIONS,
    LINE_MODES,
    MODELS,
    RETRAIN_REQUESTS,
    ROLLOUTS,
    ROUTING,
)
from inspectloop.demo.report import write_report
from inspectloop.demo.terminal import Terminal, progress_bar
from inspectloop.demo.timeline import (
    GOALS,
    MODES,
    Headline,
    LineSummary,
    Mark,
    ModeCounts,
    Sample,
    Timeline,
    goals_met,
)
from inspectloop.devtools.foundation import FOUNDATION_WEIGHTS
from inspectloop.gateway.routing import RoutingTable
from inspectloop.gateway.settings import GatewaySection
from inspectloop.inspection.settings import TritonSettings
from inspectloop.inspection.triton import TritonScorer
from inspectloop.monitor.line import MODE_NAMES
from inspectloop.rollout.settings import AnalysisSettings, MetricsSourceSettings, RolloutSection
from inspectloop.simulator.dataset import DatasetSpec, write_dataset
from inspectloop.simulator.defects import GOOD, LABEL_CLASSES
from inspectloop.simulator.line import LineSimulator
from inspectloop.simulator.operators import OperatorSimulator
from inspectloop.simulator.render import encode_png, render_label
from inspectloop.simulator.scenario import Scenario, load_scenario
from inspectloop.simulator.traffic import GroundTruthStore, InspectClient
from inspectloop.trainer.gates import GateSettings
from inspectloop.trainer.settings import TrainerSection
from inspectloop.v1.common_pb2 import Scope
from inspectloop.v1.models_pb2 import ModelStage
from inspectloop.v1.monitor_pb2 import RETRAIN_REASON_MANUAL, RetrainRequest
from inspectloop.v1.rollout_pb2 import ROLLOUT_PHASE_PRODUCTION, RolloutPhase

MODEL = "label-inspector"
# The story's registry accounts, known to both plants' registries: the pipeline's services
# (role service), and the plant's quality department, who uploads the challenge kits.
TOKEN = "ilr_" + "demo" * 10
QUALITY_TOKEN = "ilr_" + "qual" * 10
SCENARIO = Path(__file__).parents[1] / "simulator" / "scenarios" / "plant-story.yaml"
INITIAL_REQUEST = "demo-initial-model"
WORK_DIR_MARKER = ".inspectloop-story"
ARTIFACT = "triton-python.tar.gz"  # the Triton repository entry this machine can serve


@dataclass(frozen=True)
class DemoConfig:
    """The story's scale: small enough for two CPU cores, honest about what that costs."""

    work: Path
    scenario: Path = SCENARIO
    reference_images: int = 3000
    epochs: int = 20
    fine_tune_epochs: int = 8
    # The plant's current model of design A (demo/foundation/, see devtools/foundation.py):
    # every training of the story starts from it or from its own descendants.
    initial_weights: Path | None = FOUNDATION_WEIGHTS
    width_multiplier: float = 1.0
    # Units of every class in each label design's seeded-defect kit (the challenge set).
    challenge_per_class: int = 10
    analysis_interval_s: float = 10.0
    sample_every_s: float = 5.0
    # The lines keep running this long once line 1 is back in auto on the new model: the false
    # reject rate after recovery is measured on them.
    after_recovery_s: float = 60.0
    timeout_s: float = 1800.0
    # "first-model": stop once the first model serves every line (a smoke run of the whole
    # set-up: services, first training, rollout), "story": play the whole story.
    until: Literal["story", "first-model"] = "story"
    # Production's gates (trainer/gates.py: 99.7% accuracy, 99% recall per class, escapes and
    # false rejects each <= 0.3%, no golden regression, 10 ms), with one named exception, a known
    # defect (issue 24), not a setting: the first model, fine-tuned from the foundation,
    # escapes one ink smudge of the 305 defective held-out units of design A (0.33%, ink smudge
    # recall 37/38), so the escape gate allows 0.4% and ink smudges 97% recall. Nothing else is
    # lowered: a redesign's candidate that lets more through is rejected, and its line stays
    # under human review.
    gates: GateSettings = field(
        default_factory=lambda: GateSettings(
            max_escape_rate=0.004, recall_overrides={"ink_smudge": 0.97}
        )
    )


# --- the services' settings at the story's scale, the same for both plants --------------------


def seed_dataset(config: DemoConfig, scenario: Scenario, echo: Callable[[str], None]) -> Path:
    """The plant's labelled images of label design A (rendered once per work directory)."""
    reference = config.work / "datasets" / "design-A"
    if not (reference / "dataset.json").exists():
        echo(f"rendering the seed dataset ({config.reference_images} images of design A)")
        write_dataset(
            DatasetSpec(
                n=config.reference_images,
                seed=5,
                size=scenario.image_size,
                skus=tuple(sorted({spec.sku for spec in scenario.lines})),
                golden_per_class=4,
            ),
            reference,
            overwrite=True,
        )
    return reference


def upload_challenge_kits(
    config: DemoConfig, scenario: Scenario, registry_url: str, echo: Callable[[str], None]
) -> None:
    """The plant's quality department qualifies each label design it runs or will run (A, and
    the coming redesign): a seeded-defect kit of ``challenge_per_class`` units per class of the
    products the design carries, imaged on the line (the simulator stands in for the camera),
    uploaded to the registry."""
    products = design_products(scenario)
    registry = RegistryClient(registry_url, QUALITY_TOKEN)
    try:
        for index, (design, skus) in enumerate(sorted(products.items())):
            kit = config.work / "challenge-kits" / f"design-{design}"
            if not kit.is_dir():
                _render_kit(
                    kit,
                    design,
                    skus,
                    per_class=config.challenge_per_class,
                    size=scenario.image_size,
                    seed=7000 + index,
                )
            result = registry.upload_dataset(
                kit,
                name=f"challenge-{design.lower()}",
                kind="challenge",
                label_design=design,
                description=f"seeded-defect kit of design {design}, "
                f"{config.challenge_per_class} units per class",
            )
            echo(
                f"challenge kit of design {design}: {result.version.item_count} units, "
                f"dataset {result.version.name} v{result.version.version}"
            )
    finally:
        registry.close()


def design_products(scenario: Scenario) -> dict[str, list[str]]:
    """The SKUs each label design carries at some point of the scenario: a kit qualifies the
    products printed on the design, as a quality department qualifies each artwork it runs (a
    SKU that never carries the design is another appearance, one no line will show)."""
    state: dict[str, tuple[str, str]] = {
        spec.id: (spec.sku, spec.design) for spec in scenario.lines
    }
    products = {(sku, design) for sku, design in state.values()}
    for event in sorted(scenario.events, key=lambda e: e.at_s):
        sku, design = state.get(event.line, ("", ""))
        state[event.line] = (event.change.sku or sku, event.change.design or design)
        products.add(state[event.line])
    by_design: dict[str, set[str]] = {}
    for sku, design in products:
        if sku and design:
            by_design.setdefault(design, set()).add(sku)
    return {design: sorted(skus) for design, skus in by_design.items()}


def _render_kit(
    directory: Path, design: str, skus: list[str], *, per_class: int, size: int, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    staging = directory.with_name(directory.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    for label in LABEL_CLASSES:
        (staging / label).mkdir(parents=True)
        for i in range(per_class):
            image, _ = render_label(
                skus[i % len(skus)],
                design,  # type: ignore[arg-type]
                "gs1-dm",
                rng=rng,
                defect=None if label == GOOD else label,  # type: ignore[arg-type]
                severity=float(rng.uniform(0.3, 1.0)),
                size=size,
            )
            (staging / label / f"{i:03d}.png").write_bytes(encode_png(image))
    staging.rename(directory)


def fresh_work_dir(work: Path) -> None:
    """Forget a previous run's plant (bus, registry, models, state) so the story starts from
    nothing; the rendered seed dataset is kept, as it depends only on the scenario. A directory
    that holds anything else is refused, never emptied."""
    marker = work / WORK_DIR_MARKER
    if work.is_dir() and any(work.iterdir()) and not marker.exists():
        raise ConfigError(
            f"{work} is not empty and was not made by the plant story: choose a new or empty "
            "--work-dir"
        )
    if work.is_dir():
        for entry in work.iterdir():
            if entry.name in ("datasets", WORK_DIR_MARKER):
                continue
            if entry.is_dir():
                shutil.rmtree(entry)
            else:
                entry.unlink()
    work.mkdir(parents=True, exist_ok=True)
    marker.touch()


def gateway_section(scenario: Scenario, triton_url: str, **more: Any) -> GatewaySection:
    return GatewaySection(
        model_name=MODEL,
        default_version="1",
        input_size=scenario.image_size,
        triton=TritonSettings(url=triton_url, timeout_s=10, readiness_ttl_s=1.0),
        **more,
    )


def trainer_section(
    config: DemoConfig, scenario: Scenario, registry_url: str, reference: Path, **more: Any
) -> TrainerSection:
    return TrainerSection(
        model_name=MODEL,
        num_workers=2,
        epochs=config.epochs,
        fine_tune_epochs=config.fine_tune_epochs,
        batch_size=32,
        image_size=scenario.image_size,
        width_multiplier=config.width_multiplier,
        reference_datasets=(reference,),
        golden_dataset=reference,
        reference_replay=config.reference_images,
        initial_weights=config.initial_weights,
        registry_url=registry_url,
        work_dir=config.work / "trainer",
        gates=config.gates,
        **more,
    )


def rollout_section(
    config: DemoConfig, registry_url: str, metrics_source: MetricsSourceSettings, **more: Any
) -> RolloutSection:
    interval = config.analysis_interval_s
    return RolloutSection(
        registry_url=registry_url,
        step_weights_bps=[2500, 5000],
        shadow_intervals=1,
        watch_intervals=2,
        failure_threshold=3,
        # Nobody signs during the story: its registry requires no signature either.
        require_signature_for=[],
        analysis=AnalysisSettings(
            interval_s=interval,
            window_s=interval * 6,
            quality_window_s=interval * 30,
            min_requests=30,
            min_labelled=20,
            # The stable version is the one that cannot read the new label: disagreeing with
            # it is the point of this retrain.
            max_disagreement_rate=None,
            max_false_reject_rate=0.02,
            max_escape_rate=0.05,
        ),
        metrics_source=metrics_source,
        **more,
    )


# --- the plant as the story sees it -----------------------------------------------------------


@dataclass
class Plant:
    """Running services, reached as their users reach them."""

    bus: EventBus  # the story's own client of the plant's bus
    inspect_client: InspectClient  # the line PCs' connection to the gateway
    triton_url: str  # Triton's gRPC address: is the routed version loaded?
    monitor_metrics_url: str  # the monitor's /metrics: drift statistics and thresholds
    trainer_metrics_url: str  # the trainer's /metrics: how far a training is


class Recorder:
    """The timeline: marks and the plant's state from the bus, samples every few seconds."""

    def __init__(self, scenario: Scenario, echo: Callable[[str], None]) -> None:
        self.scenario = scenario
        self.started = time.monotonic()
        self.echo = echo
        redesign = next((e for e in scenario.events if e.kind == "label_redesign"), None)
        self.timeline = Timeline(
            scenario=scenario.name,
            redesign_line=redesign.line if redesign else "",
            redesign_at=redesign.at_s if redesign else None,
            samples=[],
            marks=[],
            headline=None,
        )
        self.routing = RoutingTable(MODEL, "")
        self.modes: dict[str, str] = {}
        self.rollout_phases: dict[tuple[str, str], int] = {}  # (version, line) -> phase
        self.rejected: dict[str, str] = {}  # version -> its gates' rejection reasons
        self._lock = threading.Lock()

    def now(self) -> float:
        return time.monotonic() - self.started

    def restart_clock(self) -> None:
        """Times count from the lines' start (the scenario's clock); what came before (the first
        training and rollout) keeps negative times."""
        now = time.monotonic()
        with self._lock:
            for mark in self.timeline.marks:
                mark.t -= now - self.started
            self.started = now

    def mark(self, line: str, kind: str, text: str) -> None:
        t = self.now()
        with self._lock:
            self.timeline.marks.append(Mark(t=t, line=line, kind=kind, text=text))
        self.echo(f"[{_clock(t)}] {line or 'plant':7} {kind:15} {text}")

    def on_event(self, event: Event[Any]) -> None:
        m = event.message
        if event.topic == ROUTING.name:
            self.routing.apply(m)
        elif event.topic == LINE_MODES.name:
            self.modes[m.line] = MODE_NAMES[m.new_mode]
            self.mark(m.line, "mode", f"{MODE_NAMES[m.new_mode]}: {m.reason[:140]}")
        elif event.topic == DRIFT_ALERTS.name:
            kind = "nuisance" if m.nuisance else "alert"
            self.mark(m.line, "alert", f"{kind} {m.detector} {m.statistic:.3g} > {m.threshold:.3g}")
        elif event.topic == RETRAIN_REQUESTS.name:
            self.mark(
                ",".join(m.scope.lines),
                "retrain_request",
                f"{m.request_id[:8]}: designs {list(m.scope.label_designs)}, "
                f"{m.min_labelled_images} labelled images",
            )
        elif event.topic == MODELS.name:
            stage = ModelStage.Name(m.stage).removeprefix("MODEL_STAGE_").lower()
            metrics = ", ".join(f"{k} {v:.4f}" for k, v in sorted(m.metrics.items())[:4])
            reasons = "; ".join(m.rejection_reasons)
            if m.stage == ModelStage.MODEL_STAGE_REJECTED:
                self.rejected[m.version] = reasons
            self.mark(
                ",".join(m.scope.lines),
                "model_version",
                f"{m.name} v{m.version} {stage} ({metrics}) {reasons[:200]}",
            )
        elif event.topic == ROLLOUTS.name:
            for line in m.lines:
                self.rollout_phases[(m.version, line)] = m.phase
            phase = RolloutPhase.Name(m.phase).removeprefix("ROLLOUT_PHASE_").lower()
            self.mark(",".join(m.lines), "rollout", f"v{m.version} {phase}: {m.reason[:160]}")

    def mode(self, line: str) -> str:
        return self.modes.get(line, "auto")

    def sample(self, truth: GroundTruthStore, drift: DriftReadings) -> None:
        t = self.now()
        for spec in self.scenario.lines:
            line = spec.id
            routing = self.routing.get(line)
            statistics, thresholds = drift.get(line, ({}, {}))
            sample = Sample(
                t=t,
                line=line,
                mode=self.mode(line),
                stable_version=routing.stable.version,
                canary_version=routing.canary.version if routing.canary_weight_bps else "",
                canary_weight=routing.canary_weight_bps / 10_000 if routing.canary.name else 0.0,
                drift_statistic=statistics,
                drift_threshold=thresholds,
                **outcomes(truth, line),
            )
            with self._lock:
                self.timeline.samples.append(sample)

    def story_done(self, line: str, first: str) -> bool:
        """Line ``line`` runs a version other than ``first`` at 100%, its rollout is complete,
        and the line is back in auto."""
        routing = self.routing.get(line)
        promoted = any(
            phase == ROLLOUT_PHASE_PRODUCTION and version != first and rolled_line == line
            for (version, rolled_line), phase in self.rollout_phases.items()
        )
        return (
            promoted
            and routing.stable.version not in ("", first)
            and not routing.canary.name
            and self.mode(line) == "auto"
        )


TRAINING_GAUGES = (
    "inspectloop_trainer_retrains_running_requests",
    "inspectloop_trainer_training_progress_ratio",
    "inspectloop_trainer_training_eta_seconds",
    "inspectloop_trainer_training_epoch_epochs",
    "inspectloop_trainer_training_planned_epochs",
)


def read_metrics(url: str, names: tuple[str, ...]) -> dict[str, float]:
    """The values of unlabelled metrics ``names`` on a /metrics page ({} when unreachable)."""
    try:
        text = httpx.get(url, timeout=5).text
    except httpx.HTTPError:
        return {}
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name in names
    }


# line -> (detector -> statistic, detector -> threshold)
DriftReadings = dict[str, tuple[dict[str, float], dict[str, float]]]


def read_drift(monitor_metrics_url: str) -> DriftReadings:
    """Each line's latest drift statistics and thresholds, from the monitor's /metrics."""
    try:
        text = httpx.get(monitor_metrics_url, timeout=5).text
    except httpx.HTTPError:
        return {}  # a missed sample is a gap in the plot, not a failed story
    readings: DriftReadings = {}
    for family in text_string_to_metric_families(text):
        if family.name not in (
            "inspectloop_monitor_drift_statistic_score",
            "inspectloop_monitor_drift_threshold_score",
        ):
            continue
        index = 0 if family.name.endswith("statistic_score") else 1
        for sample in family.samples:
            line, detector = sample.labels["line"], sample.labels["detector"]
            readings.setdefault(line, ({}, {}))[index][detector] = sample.value
    return readings


def outcomes(
    truth: GroundTruthStore,
    line: str,
    since: float = 0.0,
    until: float = float("inf"),
    mode: str | None = None,
) -> dict[str, int]:
    """What the line's answered units were, by the simulator's ground truth (only those
    decided in ``mode``, when given)."""
    rows = [r for r in truth.answered(line, since, until) if mode is None or r.mode == mode]
    inspections = len(rows)
    reviews = sum(r.human_review for r in rows)
    false_rejects = sum(r.rejected and not r.defective for r in rows)
    escapes = sum(r.defective and not r.rejected and not r.human_review for r in rows)
    return {
        "inspections": inspections,
        "reviews": reviews,
        "false_rejects": false_rejects,
        "escapes": escapes,
    }


def _clock(t: float) -> str:
    sign, t = ("-", -t) if t < 0 else ("", t)
    return f"{sign}{int(t // 60):02d}:{t % 60:04.1f}"


# --- the story ----------------------------------------------------------------------------------


@dataclass
class ConsumerThreads:
    """Consumers and loops on threads of their own, stopped and closed together."""

    bus: EventBus
    stop: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)
    closers: list[Callable[[], None]] = field(default_factory=list)

    def spawn(self, name: str, target: Callable[[], None]) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self.threads.append(thread)

    def consume(
        self, group: str, topics: list[Any], handler: Callable[[Event[Any]], None], **kw: Any
    ) -> None:
        consumer = self.bus.consumer(group, topics, handler, **kw)
        self.closers.append(consumer.close)
        self.spawn(group, lambda: consumer.run(self.stop))

    def close(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=60)
        for close in self.closers:
            with contextlib.suppress(Exception):
                close()


class _Story:
    """The simulated plant floor around a plant: lines, operators, and the recorder."""

    def __init__(self, plant: Plant, scenario: Scenario, work: Path, terminal: Terminal):
        self.plant = plant
        self.scenario = scenario
        self.terminal = terminal
        self.truth = GroundTruthStore(work / "truth.sqlite")
        self.operators = OperatorSimulator(plant.bus, self.truth, scenario.operators, scenario.seed)
        self.recorder = Recorder(scenario, terminal.echo)
        self.threads = ConsumerThreads(plant.bus)
        self.stop = self.threads.stop

    def start(self) -> None:
        self.threads.consume("story-operators", [INSPECTIONS], self.operators.handle)
        self.threads.consume(
            "story-timeline",
            [ROUTING, LINE_MODES, DRIFT_ALERTS, RETRAIN_REQUESTS, MODELS, ROLLOUTS],
            self.recorder.on_event,
        )

        def publish_verdicts() -> None:
            while not self.stop.is_set():
                self.operators.publish_due()
                self.stop.wait(0.2)

        self.threads.spawn("operators-publish", publish_verdicts)
        self.threads.spawn("training-progress", self._show_training)

    def _show_training(self) -> None:
        """A progress bar for every training, from the trainer's /metrics."""
        shown = False
        while not self.stop.wait(1.0):
            values = read_metrics(self.plant.trainer_metrics_url, TRAINING_GAUGES)
            if values.get("inspectloop_trainer_retrains_running_requests", 0) < 1:
                if shown:
                    self.terminal.done()
                    shown = False
                continue
            fraction = values.get("inspectloop_trainer_training_progress_ratio", 0.0)
            epoch = int(values.get("inspectloop_trainer_training_epoch_epochs", 0))
            epochs = int(values.get("inspectloop_trainer_training_planned_epochs", 0))
            eta = values.get("inspectloop_trainer_training_eta_seconds")
            detail = f"epoch {epoch}/{epochs}" if epochs else "preparing the training data"
            self.terminal.progress(
                progress_bar("training", fraction, detail, eta if epochs else None), fraction
            )
            shown = True

    def close(self) -> None:
        self.threads.close()
        self.truth.close()


def run_story(
    plant: Plant, config: DemoConfig, echo: Callable[[str], None] = print, *, live: bool = False
) -> tuple[Timeline, Path]:
    """Train the first model, run the lines, redesign line 1's label, and wait for the plant to
    recover on its own; returns the timeline (with its headline figures) and the report's path.
    The timeline and report are written before the plant stops."""
    scenario = load_scenario(config.scenario)
    terminal = Terminal(echo, live=live)
    story = _Story(plant, scenario, config.work, terminal)
    try:
        story.start()
        return _run(story, config, terminal.echo)
    finally:
        story.close()


def _train_first_model(story: _Story, lines: list[str], deadline: float) -> str:
    """Ask for the first model of every line and wait until Triton serves it; its version."""
    plant, recorder, scenario = story.plant, story.recorder, story.scenario
    plant.bus.publish(
        RETRAIN_REQUESTS,
        RetrainRequest(
            request_id=INITIAL_REQUEST,
            reason=RETRAIN_REASON_MANUAL,
            requested_by="demo",
            scope=Scope(
                lines=lines,
                skus=sorted({spec.sku for spec in scenario.lines}),
                label_designs=["A"],
            ),
        ),
        event_id=INITIAL_REQUEST,
    )
    triton = TritonScorer(TritonSettings(url=plant.triton_url))

    def first_model_served() -> bool:
        rejected = [m for m in recorder.timeline.marks if " rejected " in m.text]
        if rejected:
            raise RuntimeError(f"the first model failed its gates: {rejected[0].text}")
        routes = [recorder.routing.get(line) for line in lines]
        return all(
            r.generation > 0 and triton.ready(r.stable.name, r.stable.version) for r in routes
        )

    try:
        wait(first_model_served, deadline, "the first model to be rolled out")
    finally:
        triton.close()
    return recorder.routing.get(lines[0]).stable.version


def _run(story: _Story, config: DemoConfig, echo: Callable[[str], None]) -> tuple[Timeline, Path]:
    plant, recorder, scenario = story.plant, story.recorder, story.scenario
    lines = [spec.id for spec in scenario.lines]
    echo(f"training the first model for {', '.join(lines)} on Ray Train (2 workers)")
    deadline = time.monotonic() + config.timeout_s
    first = _train_first_model(story, lines, deadline)
    if config.until == "first-model":
        echo(f"v{first} serves {', '.join(lines)}: stopping here (--until first-model)")
        timeline = recorder.timeline
        timeline.to_json(config.work / "timeline.json")
        return timeline, write_report(timeline, config.work / "report")
    echo(f"v{first} serves {', '.join(lines)}; the lines start")
    recorder.restart_clock()
    simulator = LineSimulator(
        scenario, plant.inspect_client, story.truth, bus=plant.bus, time_scale=1.0
    )
    traffic_stop = threading.Event()
    story.threads.spawn("lines", lambda: _run_lines(simulator, traffic_stop, recorder))
    line = recorder.timeline.redesign_line
    recovered_at: float | None = None
    completed = False
    try:
        while time.monotonic() < deadline:
            recorder.sample(story.truth, read_drift(plant.monitor_metrics_url))
            echo(_status_line(recorder, lines))
            rejected = {v: why for v, why in recorder.rejected.items() if v != first}
            if recovered_at is None and rejected:
                # The monitor asks for one retrain per episode: nothing will replace a rejected
                # candidate, and the line stays under human review. Waiting for the deadline
                # would only add reviews to the same outcome.
                version, why = next(iter(rejected.items()))
                echo(
                    f"v{version} was rejected by its gates ({why}); {line} stays in "
                    f"{recorder.mode(line)} under human review: the story ends here"
                )
                break
            if recovered_at is None and line and recorder.story_done(line, first):
                echo(
                    f"{line} is back in auto on the new model; the lines run "
                    f"{config.after_recovery_s:.0f} s more"
                )
                recovered_at = time.monotonic()
            if recovered_at is not None and time.monotonic() - recovered_at >= (
                config.after_recovery_s
            ):
                echo("the story is complete")
                completed = True
                break
            story.stop.wait(config.sample_every_s)
        else:
            echo(f"stopped after {config.timeout_s:.0f} s without completing the story")
    finally:
        traffic_stop.set()
    recorder.sample(story.truth, read_drift(plant.monitor_metrics_url))
    timeline = recorder.timeline
    final_modes = {spec_line: recorder.mode(spec_line) for spec_line in lines}
    timeline.headline = headline(timeline, story.truth, final_modes, completed=completed)
    timeline.to_json(config.work / "timeline.json")
    report = write_report(timeline, config.work / "report")
    print_headline(timeline, report, echo)
    return timeline, report


def print_headline(timeline: Timeline, report: Path, echo: Callable[[str], None]) -> None:
    h = timeline.headline
    if h is not None:
        seconds = h.seconds_to_new_model_at_100
        frr = h.false_reject_rate_after_recovery
        echo("")
        echo("headline figures:")
        echo(f"  inspections until detection:   {h.inspections_until_detection}")
        echo(
            "  redesign to new model at 100%: "
            + (f"{seconds:.0f} s" if seconds is not None else "not reached")
        )
        echo(f"  escapes during the transition: {h.escapes_during_transition}")
        echo(
            "  false reject rate after:       "
            + (f"{frr:.2%} of {h.inspections_after_recovery}" if frr is not None else "n/a")
        )
        echo(f"  human reviews:                 {h.human_reviews}")
        echo("")
        echo("the whole run, per line and mode (escapes: defective units passed unreviewed):")
        echo(
            f"  {'line':8} {'mode':8} {'inspections':>11} {'reviews':>8} {'false rej.':>10} "
            f"{'escapes':>8}"
        )
        for summary in h.lines:
            for mode in MODES:
                c = summary.by_mode.get(mode, ModeCounts())
                echo(
                    f"  {summary.line:8} {mode:8} {c.inspections:>11} {c.reviews:>8} "
                    f"{c.false_rejects:>10} {c.escapes:>8}"
                )
            echo(f"  {summary.line:8} ends the run in {summary.final_mode}")
        echo("")
        for goal, met in h.goals.items():
            echo(f"  goal: {GOALS.get(goal, goal)}: {'met' if met else 'NOT MET'}")
        for summary in h.lines:
            auto_escapes = summary.by_mode.get("auto", ModeCounts()).escapes
            if auto_escapes:
                echo(f"  {summary.line}: {auto_escapes} defective units passed in auto unreviewed")
            if summary.final_mode != "auto":
                echo(f"  {summary.line} ends the run in {summary.final_mode}, not auto")
                last = last_mode_change(timeline, summary.line)
                if last is not None:
                    echo(f"    since {last.t:.0f} s: {last.text}")
        if not h.completed:
            echo("  the story did NOT complete")
        verdict = (
            "completed, every goal met"
            if h.completed and h.all_goals_met
            else ("completed, NOT every goal met" if h.completed else "NOT completed")
        )
        echo(f"the story: {verdict}")
    echo(f"report: {report}")


def last_mode_change(timeline: Timeline, line: str) -> Mark | None:
    """The line's last mode change (its mode and the monitor's reason), if it had any."""
    changes = [m for m in timeline.marks if m.kind == "mode" and m.line == line]
    return changes[-1] if changes else None


def _run_lines(simulator: LineSimulator, stop: threading.Event, recorder: Recorder) -> None:
    redesign = recorder.timeline.redesign_at
    if redesign is not None:
        timer = threading.Timer(
            redesign,
            lambda: recorder.mark(
                recorder.timeline.redesign_line, "redesign", "the label is redesigned (unannounced)"
            ),
        )
        timer.daemon = True
        timer.start()
    simulator.run(stop)


def _status_line(recorder: Recorder, lines: list[str]) -> str:
    parts = []
    for line in lines:
        sample = next(s for s in reversed(recorder.timeline.samples) if s.line == line)
        canary = (
            f" canary v{sample.canary_version} {sample.canary_weight:.0%}"
            if sample.canary_version
            else ""
        )
        parts.append(
            f"{line} {sample.mode:7} v{sample.stable_version}{canary} "
            f"{sample.inspections} insp {sample.reviews} rev {sample.escapes} esc"
        )
    return f"[{_clock(recorder.now())}] " + " | ".join(parts)


def wait(condition: Callable[[], bool], deadline: float, what: str) -> None:
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.5)  # polling the plant's state, against a deadline


def _first_mark(
    timeline: Timeline, kind: str, line: str, since: float | None, matches: Callable[[str], bool]
) -> float | None:
    """When the first ``kind`` mark of ``line`` at or after ``since`` whose text ``matches``
    came; None when ``since`` is None (the story never got there) or no mark does."""
    if since is None:
        return None
    return next(
        (
            m.t
            for m in timeline.marks
            if m.kind == kind and line in m.line.split(",") and m.t >= since and matches(m.text)
        ),
        None,
    )


def line_summary(truth: GroundTruthStore, line: str, final_mode: str) -> LineSummary:
    """The line's whole run by mode, from the simulator's ground truth."""
    by_mode = {mode: ModeCounts(**outcomes(truth, line, mode=mode)) for mode in MODES}
    return LineSummary(line=line, final_mode=final_mode, by_mode=by_mode)


def headline(
    timeline: Timeline,
    truth: GroundTruthStore,
    final_modes: dict[str, str] | None = None,
    *,
    completed: bool = False,
) -> Headline:
    """The figures the story is judged by, from the simulator's ground truth; ``final_modes``
    (line -> the mode it ended in) gives the whole-run summary of every line."""
    line = timeline.redesign_line
    redesign = timeline.redesign_at
    detected = _first_mark(
        timeline, "mode", line, redesign, lambda text: not text.startswith("auto")
    )
    promoted = _first_mark(
        timeline, "rollout", line, redesign, lambda text: " production_watch:" in text
    )
    # Recovered: the line is back in auto with the new model deciding all of its traffic.
    recovered = _first_mark(timeline, "mode", line, promoted, lambda text: text.startswith("auto"))
    until_detection = (
        outcomes(truth, line, redesign, detected)["inspections"]
        if redesign is not None and detected is not None
        else None
    )
    escapes = (
        outcomes(truth, line, redesign, promoted)["escapes"]
        if redesign is not None and promoted is not None
        else None
    )
    after = outcomes(truth, line, recovered) if recovered is not None else None
    frr = (
        after["false_rejects"] / after["inspections"]
        if after is not None and after["inspections"]
        else None
    )
    reviews = sum(
        outcomes(truth, spec_line)["reviews"] for spec_line in {s.line for s in timeline.samples}
    )
    result = Headline(
        inspections_until_detection=until_detection,
        seconds_to_new_model_at_100=(
            promoted - redesign if promoted is not None and redesign is not None else None
        ),
        escapes_during_transition=escapes,
        false_reject_rate_after_recovery=frr,
        inspections_after_recovery=after["inspections"] if after else 0,
        human_reviews=reviews,
        goals={},
        lines=[line_summary(truth, name, mode) for name, mode in (final_modes or {}).items()],
        completed=completed,
    )
    result.goals = goals_met(result)
    return result
