"""``inspectloop demo``: the plant story on the embedded defaults, in one process.

The local event log (SQLite), a local Ray for training, a local Triton process, the registry
service (SQLite) in its own process, the file system as blob store. The gateway's core, the
monitor, the trainer and the rollout controller (its metrics scraped by itself) run in this
process, each on its own consumer threads, talking only through the bus and the registry's HTTP
API, as they do when deployed apart (``inspectloop up``, :mod:`inspectloop.demo.platform`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry

from inspectloop.core.blobstore import FilesystemBlobStore
from inspectloop.core.bus import build_bus
from inspectloop.core.metrics import serve_metrics
from inspectloop.core.registry_client import RegistryClient
from inspectloop.core.settings import BusSettings, LocalBusSettings
from inspectloop.core.topics import ALL_TOPICS, FEEDBACK, RETRAIN_REQUESTS
from inspectloop.demo.story import (
    ARTIFACT,
    QUALITY_TOKEN,
    TOKEN,
    ConsumerThreads,
    DemoConfig,
    Plant,
    gateway_section,
    rollout_section,
    run_story,
    seed_dataset,
    trainer_section,
    upload_challenge_kits,
)
from inspectloop.demo.timeline import Timeline
from inspectloop.devtools.harness import TritonServer, default_cache_dir
from inspectloop.devtools.registry_process import RegistryUser, registry_process
from inspectloop.gateway.metrics import GatewayMetrics
from inspectloop.gateway.repository import RepositorySync
from inspectloop.gateway.service import InspectionGateway
from inspectloop.inspection.triton import TritonScorer
from inspectloop.monitor.metrics import MonitorMetrics
from inspectloop.monitor.service import CONSUMED as MONITOR_TOPICS
from inspectloop.monitor.service import MonitorService, StateStore
from inspectloop.monitor.settings import MonitorSection
from inspectloop.rollout.analysis import Analyzer
from inspectloop.rollout.embedded import EmbeddedSource
from inspectloop.rollout.metrics import RolloutMetrics
from inspectloop.rollout.service import RolloutController, RolloutStore
from inspectloop.rollout.settings import MetricsSourceSettings
from inspectloop.simulator.scenario import load_scenario
from inspectloop.trainer.metrics import TrainerMetrics
from inspectloop.trainer.runner import LocalRayRunner
from inspectloop.trainer.service import TrainerService
from inspectloop.trainer.snapshot import LabelStore
from inspectloop.v1.inspect_service_pb2 import InspectRequest, InspectResponse


class InProcessClient:
    """The line PCs' inspect calls, straight into the gateway's core (no network hop)."""

    def __init__(self, gateway: InspectionGateway) -> None:
        self._gateway = gateway

    def inspect(self, request: InspectRequest, timeout_s: float) -> InspectResponse:
        return self._gateway.inspect(request)

    def close(self) -> None:
        pass


@contextlib.contextmanager
def embedded_plant(config: DemoConfig, echo: Callable[[str], None]) -> Iterator[Plant]:
    """Every service on the embedded defaults, until the block ends."""
    scenario = load_scenario(config.scenario)
    work = config.work
    work.mkdir(parents=True, exist_ok=True)
    reference = seed_dataset(config, scenario, echo)
    users = [
        RegistryUser("pipeline", "service", TOKEN),
        RegistryUser("quality", "quality", QUALITY_TOKEN),
    ]
    registry_settings = {"INSPECTLOOP_REGISTRY__REQUIRE_SIGNATURE_FOR": "[]"}
    with contextlib.ExitStack() as stack:
        # Last out: the driver has been seen to die inside ray.shutdown(), and by then every
        # other component must be stopped already.
        stack.callback(_shutdown_ray)
        registry_url = stack.enter_context(
            registry_process(work / "registry", users, settings=registry_settings)
        )
        upload_challenge_kits(config, scenario, registry_url, echo)
        repository = work / "triton-models"
        repository.mkdir(exist_ok=True)
        triton = TritonServer(repository, default_cache_dir(), work / "triton")
        echo("starting Triton")
        triton.start()
        stack.callback(triton.stop)
        bus = build_bus(
            BusSettings(backend="local", local=LocalBusSettings(directory=work / "bus")),
            "demo",
            CollectorRegistry(),
        )
        stack.callback(bus.close)
        bus.ensure_topics(ALL_TOPICS)
        blobs = FilesystemBlobStore(work / "blobs", 64 * 1024 * 1024)

        gateway_registry, monitor_registry, trainer_registry = (
            CollectorRegistry(),
            CollectorRegistry(),
            CollectorRegistry(),
        )
        gateway_metrics = GatewayMetrics(gateway_registry)
        gateway_settings = gateway_section(scenario, triton.grpc_url)
        triton_models = TritonScorer(gateway_settings.triton)
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
                ARTIFACT,
            ),
        )
        stack.callback(gateway.close)
        monitor = MonitorService(
            MonitorSection(),
            bus=bus,
            store=StateStore(work / "monitor.sqlite"),
            metrics=MonitorMetrics(monitor_registry),
        )
        trainer = TrainerService(
            trainer_section(config, scenario, registry_url, reference),
            bus=bus,
            blob_store=blobs,
            registry=RegistryClient(registry_url, TOKEN),
            runner=LocalRayRunner(num_cpus=2),
            labels=LabelStore(work / "trainer" / "labels.sqlite3"),
            metrics=TrainerMetrics(trainer_registry),
        )
        servers = [
            serve_metrics(r, "127.0.0.1", 0)
            for r in (gateway_registry, monitor_registry, trainer_registry)
        ]
        for server in servers:
            stack.callback(server.close)
        # The rollout judges the gateway's and the monitor's figures; the story reads the
        # trainer's for its progress bar.
        *targets, trainer_metrics = [f"http://127.0.0.1:{s.port}/metrics" for s in servers]
        section = rollout_section(
            config,
            registry_url,
            MetricsSourceSettings(kind="embedded", scrape_targets=targets, scrape_interval_s=2.0),
        )
        source = EmbeddedSource(targets, interval_s=section.metrics_source.scrape_interval_s)
        source.start()
        stack.callback(source.close)
        rollout_store = RolloutStore(work / "rollout.sqlite")
        stack.callback(rollout_store.close)
        rollout = RolloutController(
            policy=section.policy(),
            analysis_interval_s=section.analysis.interval_s,
            bus=bus,
            registry=RegistryClient(registry_url, TOKEN),
            analyzer=Analyzer(source, section.analysis.thresholds()),
            store=rollout_store,
            metrics=RolloutMetrics(CollectorRegistry()),
        )

        threads = ConsumerThreads(bus)
        stack.callback(threads.close)
        gateway.follow()
        threads.consume(
            "monitor", list(MONITOR_TOPICS), monitor.handle, before_commit=monitor.persist
        )
        threads.consume("trainer-labels", [FEEDBACK], trainer.handle_feedback)
        threads.consume("trainer", [RETRAIN_REQUESTS], trainer.handle_retrain, long_running=True)
        threads.spawn("rollout", lambda: rollout.run(threads.stop, section.tick_s))
        yield Plant(
            bus=bus,
            inspect_client=InProcessClient(gateway),
            triton_url=triton.grpc_url,
            monitor_metrics_url=targets[1],
            trainer_metrics_url=trainer_metrics,
        )


def _shutdown_ray() -> None:
    import ray  # noqa: PLC0415 - started by the trainer's runner, if it trained at all

    ray.shutdown()


def run_demo(
    config: DemoConfig, echo: Callable[[str], None] = print, *, live: bool = False
) -> Timeline:
    """The story on the embedded plant; ``live`` draws progress bars in place (a terminal)."""
    with embedded_plant(config, echo) as plant:
        timeline, _ = run_story(plant, config, echo, live=live)
        echo("stopping the services")
    return timeline
