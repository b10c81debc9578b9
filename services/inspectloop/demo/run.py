"""``inspectloop demo``: the plant story from SEED.txt, end to end, on one machine.

Everything runs on the embedded defaults: the local event log (SQLite), a local Ray for
training, a local Triton process, the registry service (SQLite) in its own process, the file
system as blob store. The gateway's core, the monitor, the trainer, the rollout controller (its
metrics scraped by itself) and the simulated lines and operators run in this process, each on
its own consumer threads, talking only through the bus and the registry's HTTP API, as they do
when deployed apart (``python -m inspectloop.<service>...``).

The story: a model is trained for both lines and rolled out; the lines run; line 1's label is
redesigned without notice. Nobody touches anything after that: the monitor must notice and send
line 1 to human review, the operators' labels must lead to a retrain, the new version must pass
its gates, shadow, canary and promotion, and line 1 must return to ``auto``.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from inspectloop.core.blobstore import FilesystemBlobStore
from inspectloop.core.bus import EventBus, build_bus
from inspectloop.core.events import Event
from inspectloop.core.metrics import MetricsServer, serve_metrics
from inspectloop.core.registry_client import RegistryClient
from inspectloop.core.settings import BusSettings, LocalBusSettings
from inspectloop.core.topics import (
    ALL_TOPICS,
    CHANGEOVERS,
    DRIFT_ALERTS,
    FEEDBACK,
    INSPECTIONS,
    LINE_MODES,
    MODELS,
    RETRAIN_REQUESTS,
    ROLLOUTS,
)
from inspectloop.demo.report import write_report
from inspectloop.demo.timeline import Headline, Mark, Sample, Timeline, goals_met
from inspectloop.devtools.harness import TritonServer, default_cache_dir
from inspectloop.devtools.registry_process import RegistryUser, registry_process
from inspectloop.gateway.metrics import GatewayMetrics
from inspectloop.gateway.repository import RepositorySync
from inspectloop.gateway.service import InspectionGateway
from inspectloop.gateway.settings import GatewaySection, TritonSettings
from inspectloop.gateway.triton import TritonModels
from inspectloop.monitor.line import MODE_NAMES
from inspectloop.monitor.metrics import MonitorMetrics
from inspectloop.monitor.service import MonitorService, StateStore
from inspectloop.monitor.settings import MonitorSection
from inspectloop.rollout.analysis import Analyzer, Thresholds
from inspectloop.rollout.embedded import EmbeddedSource
from inspectloop.rollout.machine import Phase, Policy
from inspectloop.rollout.metrics import RolloutMetrics
from inspectloop.rollout.service import RolloutController, RolloutStore
from inspectloop.simulator.dataset import DatasetSpec, write_dataset
from inspectloop.simulator.line import LineSimulator
from inspectloop.simulator.operators import OperatorSimulator
from inspectloop.simulator.scenario import Scenario, load_scenario
from inspectloop.simulator.traffic import GroundTruthStore
from inspectloop.trainer.gates import GateSettings
from inspectloop.trainer.runner import LocalRayRunner
from inspectloop.trainer.service import TrainerService
from inspectloop.trainer.settings import TrainerSection
from inspectloop.trainer.snapshot import LabelStore
from inspectloop.v1.common_pb2 import Scope
from inspectloop.v1.inspect_service_pb2 import InspectRequest, InspectResponse
from inspectloop.v1.models_pb2 import ModelStage
from inspectloop.v1.monitor_pb2 import RETRAIN_REASON_MANUAL, RetrainRequest
from inspectloop.v1.rollout_pb2 import RolloutPhase

log = logging.getLogger(__name__)

MODEL = "label-inspector"
TOKEN = "ilr_" + "demo" * 10
SCENARIO = Path(__file__).parents[1] / "simulator" / "scenarios" / "plant-story.yaml"


@dataclass(frozen=True)
class DemoConfig:
    """The demo's scale: small enough for two CPU cores, honest about what that costs."""

    work: Path
    scenario: Path = SCENARIO
    reference_images: int = 3000
    # Renders of the scope's label design with synthesised defects, per training (and as many
    # at subtle severities).
    synthesised_images: int = 300
    epochs: int = 20
    fine_tune_epochs: int = 8
    width_multiplier: float = 0.5
    analysis_interval_s: float = 10.0
    sample_every_s: float = 5.0
    timeout_s: float = 1800.0
    # The gates at this scale (a half-width CNN, two minutes of training on two cores), far
    # below production's (99.7% accuracy, 95% recall per class), which need the full-scale
    # recipe of benchmarks/train.py (about ten minutes per training here).
    gates: GateSettings = field(
        default_factory=lambda: GateSettings(
            min_accuracy=0.85,
            min_recall_per_class=0.2,
            max_false_reject_rate=0.01,
            max_escape_rate=0.2,
            max_golden_regressions=4,
            latency_runs=20,
        )
    )


class InProcessClient:
    """The line PCs' inspect calls, straight into the gateway's core (no network hop)."""

    def __init__(self, gateway: InspectionGateway) -> None:
        self._gateway = gateway

    def inspect(self, request: InspectRequest, timeout_s: float) -> InspectResponse:
        return self._gateway.inspect(request)

    def close(self) -> None:
        pass


@dataclass
class Services:
    bus: EventBus
    registry: RegistryClient
    gateway: InspectionGateway
    monitor: MonitorService
    trainer: TrainerService
    rollout: RolloutController
    rollout_store: RolloutStore
    truth: GroundTruthStore
    operators: OperatorSimulator
    stop: threading.Event
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

    def start(self, recorder: Recorder) -> None:
        """Every service's consumer threads, and the operators' verdicts when due."""
        self.gateway.follow()
        self.consume(
            "monitor",
            [INSPECTIONS, FEEDBACK, CHANGEOVERS],
            self.monitor.handle,
            before_commit=self.monitor.persist,
        )
        self.consume("trainer-labels", [FEEDBACK], self.trainer.handle_feedback)
        self.consume("trainer", [RETRAIN_REQUESTS], self.trainer.handle_retrain)
        self.consume("operators", [INSPECTIONS], self.operators.handle)
        self.consume(
            "timeline",
            [LINE_MODES, DRIFT_ALERTS, RETRAIN_REQUESTS, MODELS, ROLLOUTS],
            recorder.on_event,
        )
        self.spawn("rollout", lambda: self.rollout.run(self.stop, 1.0))

        def publish_verdicts() -> None:
            while not self.stop.is_set():
                self.operators.publish_due()
                self.stop.wait(0.2)

        self.spawn("operators-publish", publish_verdicts)


class Recorder:
    """The timeline: marks from the bus, samples of every line every few seconds."""

    def __init__(self, scenario: Scenario, started: float, echo: Callable[[str], None]) -> None:
        self.scenario = scenario
        self.started = started
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
        self.redesign_announced = False
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
        if event.topic == LINE_MODES.name:
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
            reasons = "; ".join(m.rejection_reasons)[:200]
            self.mark(
                ",".join(m.scope.lines),
                "model_version",
                f"{m.name} v{m.version} {stage} ({metrics}) {reasons}",
            )
        elif event.topic == ROLLOUTS.name:
            phase = RolloutPhase.Name(m.phase).removeprefix("ROLLOUT_PHASE_").lower()
            self.mark(",".join(m.lines), "rollout", f"v{m.version} {phase}: {m.reason[:160]}")

    def sample(self, services: Services) -> None:
        t = self.now()
        for spec in self.scenario.lines:
            line = spec.id
            routing = services.gateway.routing.get(line)
            monitor = services.monitor.lines.get(line)
            counts = outcomes(services.truth, line)
            sample = Sample(
                t=t,
                line=line,
                mode=MODE_NAMES[monitor.mode] if monitor else "auto",
                stable_version=routing.stable.version,
                canary_version=routing.canary.version if routing.canary_weight_bps else "",
                canary_weight=routing.canary_weight_bps / 10_000 if routing.canary.name else 0.0,
                drift_statistic=dict(monitor.last_statistics) if monitor else {},
                drift_threshold=(
                    dict(monitor.reference.thresholds)
                    if monitor and monitor.reference is not None
                    else {}
                ),
                **counts,
            )
            with self._lock:
                self.timeline.samples.append(sample)


def outcomes(
    truth: GroundTruthStore, line: str, since: float = 0.0, until: float = float("inf")
) -> dict[str, int]:
    """What the line's answered units were, by the simulator's ground truth."""
    rows = truth.answered(line, since, until)
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


@contextlib.contextmanager
def running_services(
    config: DemoConfig,
    scenario: Scenario,
    echo: Callable[[str], None],
) -> Iterator[tuple[Services, Recorder]]:
    work = config.work
    work.mkdir(parents=True, exist_ok=True)
    reference = work / "datasets" / "design-A"
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
    users = [RegistryUser("pipeline", "service", TOKEN)]
    registry_settings = {"INSPECTLOOP_REGISTRY__REQUIRE_SIGNATURE_FOR": "[]"}
    with registry_process(work / "registry", users, settings=registry_settings) as registry_url:
        repository = work / "triton-models"
        repository.mkdir(exist_ok=True)
        triton = TritonServer(repository, default_cache_dir(), work / "triton")
        echo("starting Triton")
        triton.start()
        try:
            yield from _services(
                config,
                scenario,
                echo=echo,
                registry_url=registry_url,
                triton=triton,
                repository=repository,
                reference=reference,
            )
        finally:
            triton.stop()


def _services(
    config: DemoConfig,
    scenario: Scenario,
    *,
    echo: Callable[[str], None],
    registry_url: str,
    triton: TritonServer,
    repository: Path,
    reference: Path,
) -> Iterator[tuple[Services, Recorder]]:
    work = config.work
    bus = build_bus(
        BusSettings(backend="local", local=LocalBusSettings(directory=work / "bus")),
        "demo",
        CollectorRegistry(),
    )
    bus.ensure_topics(ALL_TOPICS)
    blobs = FilesystemBlobStore(work / "blobs", 64 * 1024 * 1024)
    registry = RegistryClient(registry_url, TOKEN)
    gateway_registry, monitor_registry = CollectorRegistry(), CollectorRegistry()
    gateway_metrics = GatewayMetrics(gateway_registry)
    gateway_settings = GatewaySection(
        model_name=MODEL,
        default_version="1",
        input_size=scenario.image_size,
        triton=TritonSettings(url=triton.grpc_url, timeout_s=10, readiness_ttl_s=1.0),
    )
    triton_models = TritonModels(gateway_settings.triton)
    gateway = InspectionGateway(
        gateway_settings,
        bus=bus,
        blobs=blobs,
        triton=triton_models,
        metrics=gateway_metrics,
        sync=RepositorySync(
            repository,
            RegistryClient(registry_url, TOKEN),
            triton_models,
            gateway_metrics,
            "triton-python.tar.gz",
        ),
    )
    monitor = MonitorService(
        MonitorSection(),
        bus=bus,
        store=StateStore(work / "monitor.sqlite"),
        metrics=MonitorMetrics(monitor_registry),
    )
    trainer = _trainer(
        config, scenario, bus=bus, blobs=blobs, registry_url=registry_url, reference=reference
    )
    servers: list[MetricsServer] = [
        serve_metrics(r, "127.0.0.1", 0) for r in (gateway_registry, monitor_registry)
    ]
    source = EmbeddedSource(
        [f"http://127.0.0.1:{s.port}/metrics" for s in servers], interval_s=2.0
    ).start()
    interval = config.analysis_interval_s
    rollout_store = RolloutStore(work / "rollout.sqlite")
    rollout = RolloutController(
        policy=Policy(
            step_weights_bps=(2500, 5000),
            shadow_intervals=1,
            watch_intervals=2,
            failure_threshold=3,
        ),
        analysis_interval_s=interval,
        bus=bus,
        registry=RegistryClient(registry_url, TOKEN),
        analyzer=Analyzer(
            source,
            Thresholds(
                window_s=interval * 6,
                quality_window_s=interval * 30,
                min_requests=30,
                min_labelled=20,
                # The stable version is the one that cannot read the new label: disagreeing
                # with it is the point of this retrain.
                max_disagreement_rate=None,
                max_false_reject_rate=0.02,
                max_escape_rate=0.05,
            ),
        ),
        store=rollout_store,
        metrics=RolloutMetrics(CollectorRegistry()),
    )
    truth = GroundTruthStore(work / "truth.sqlite")
    operators = OperatorSimulator(bus, truth, scenario.operators, scenario.seed)
    stop = threading.Event()
    services = Services(
        bus, registry, gateway, monitor, trainer, rollout, rollout_store, truth, operators, stop
    )
    recorder = Recorder(scenario, time.monotonic(), echo)
    try:
        services.start(recorder)
        yield services, recorder
    finally:
        stop.set()
        for thread in services.threads:
            thread.join(timeout=60)
        for close in services.closers:
            with contextlib.suppress(Exception):
                close()
        gateway.close()
        source.close()
        for server in servers:
            server.close()
        rollout_store.close()
        truth.close()
        registry.close()
        bus.close()
        import ray  # noqa: PLC0415 - started by the trainer's runner, if it trained at all

        ray.shutdown()


def _trainer(
    config: DemoConfig,
    scenario: Scenario,
    *,
    bus: EventBus,
    blobs: FilesystemBlobStore,
    registry_url: str,
    reference: Path,
) -> TrainerService:
    return TrainerService(
        TrainerSection(
            model_name=MODEL,
            num_workers=2,
            epochs=config.epochs,
            fine_tune_epochs=config.fine_tune_epochs,
            batch_size=32,
            image_size=scenario.image_size,
            width_multiplier=config.width_multiplier,
            reference_datasets=(reference,),
            golden_dataset=reference,
            synthesised_images=config.synthesised_images,
            synthesised_subtle_images=config.synthesised_images,
            synthesis_subtle_severity=0.5,
            reference_replay=config.reference_images,
            registry_url=registry_url,
            work_dir=config.work / "trainer",
            gates=config.gates,
        ),
        bus=bus,
        blob_store=blobs,
        registry=RegistryClient(registry_url, TOKEN),
        runner=LocalRayRunner(num_cpus=2),
        labels=LabelStore(config.work / "trainer" / "labels.sqlite3"),
    )


def run_demo(config: DemoConfig, echo: Callable[[str], None] = print) -> Timeline:
    scenario = load_scenario(config.scenario)
    with running_services(config, scenario, echo) as (services, recorder):
        lines = [spec.id for spec in scenario.lines]
        echo(f"training the first model for {', '.join(lines)} on Ray Train (2 workers)")
        services.bus.publish(
            RETRAIN_REQUESTS,
            RetrainRequest(
                request_id="demo-initial-model",
                reason=RETRAIN_REASON_MANUAL,
                requested_by="demo",
                scope=Scope(
                    lines=lines,
                    skus=sorted({spec.sku for spec in scenario.lines}),
                    label_designs=["A"],
                ),
            ),
            event_id="demo-initial-model",
        )
        deadline = time.monotonic() + config.timeout_s

        def first_model_served() -> bool:
            rejected = [m for m in recorder.timeline.marks if " rejected " in m.text]
            if rejected:
                raise RuntimeError(f"the first model failed its gates: {rejected[0].text}")
            routes = [services.gateway.routing.get(line) for line in lines]
            return all(
                r.generation > 0 and services.gateway.triton.ready(r.stable.name, r.stable.version)
                for r in routes
            )

        wait(first_model_served, deadline, "the first model to be rolled out")
        first = services.gateway.routing.get(lines[0]).stable.version
        echo(f"v{first} serves {', '.join(lines)}; the lines start")
        recorder.restart_clock()
        simulator = LineSimulator(
            scenario,
            InProcessClient(services.gateway),
            services.truth,
            bus=services.bus,
            time_scale=1.0,
        )
        traffic_stop = threading.Event()
        services.spawn("lines", lambda: _run_lines(simulator, traffic_stop, recorder))
        line = recorder.timeline.redesign_line
        try:
            while time.monotonic() < deadline:
                recorder.sample(services)
                status = _status_line(services, recorder, lines)
                echo(status)
                if _story_done(services, recorder, line, first):
                    echo("line 1 is back in auto on the new model: the story is complete")
                    break
                services.stop.wait(config.sample_every_s)
            else:
                echo(f"stopped after {config.timeout_s:.0f} s without completing the story")
        finally:
            traffic_stop.set()
        recorder.sample(services)
        timeline = recorder.timeline
        timeline.headline = headline(timeline, services.truth)
        # Written before the services stop: the results must not depend on a clean teardown.
        timeline.to_json(config.work / "timeline.json")
        report = write_report(timeline, config.work / "report")
        print_headline(timeline, report, echo)
        echo("stopping the services")
    return timeline


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
        for goal, met in h.goals.items():
            echo(f"  goal {goal}: {'met' if met else 'NOT met'}")
    echo(f"report: {report}")


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


def _story_done(services: Services, recorder: Recorder, line: str, first: str) -> bool:
    if not line:
        return False
    routing = services.gateway.routing.get(line)
    monitor = services.monitor.lines.get(line)
    promoted = any(
        s.phase is Phase.PRODUCTION and line in s.lines and s.version != first
        for s in services.rollout_store.all()
    )
    return (
        promoted
        and routing.stable.version != first
        and not routing.canary.name
        and monitor is not None
        and MODE_NAMES[monitor.mode] == "auto"
    )


def _status_line(services: Services, recorder: Recorder, lines: list[str]) -> str:
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
        time.sleep(0.5)


def headline(timeline: Timeline, truth: GroundTruthStore) -> Headline:
    """The figures the story is judged by, from the simulator's ground truth."""
    line = timeline.redesign_line
    redesign = timeline.redesign_at
    detected = next(
        (
            m.t
            for m in timeline.marks
            if m.kind == "mode"
            and m.line == line
            and not m.text.startswith("auto")
            and redesign is not None
            and m.t >= redesign
        ),
        None,
    )
    promoted = next(
        (
            m.t
            for m in timeline.marks
            if m.kind == "rollout"
            and line in m.line.split(",")
            and " production_watch:" in m.text
            and redesign is not None
            and m.t >= redesign
        ),
        None,
    )
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
    after = outcomes(truth, line, promoted) if promoted is not None else None
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
    )
    result.goals = goals_met(result)
    return result
