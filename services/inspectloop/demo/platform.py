"""``inspectloop up``: the services as separate processes on real Kafka, Triton, Ray and
Prometheus, cluster-like on one machine.

What starts, in order, each waited on until ready:

- Kafka (one KRaft broker), Triton (explicit model control, an empty repository that the
  gateway fills from the registry), a Ray head (``ray start --head``, token auth), Prometheus;
- the registry (SQLite), the gateway (Ray Serve on the Ray head: HTTP and gRPC), the monitor,
  the trainer (training jobs submitted to the Ray head through the job submission API) and the
  rollout controller (canary analysis by PromQL against Prometheus), each ``python -m`` its own
  module, configured only through ``INSPECTLOOP_*`` variables, as the Helm chart configures them.

Every process logs under ``<work>/logs``. The services share the story's scale
(:class:`DemoConfig`) with ``inspectloop demo``, so the two runs compare.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from inspectloop.core.bus import build_bus
from inspectloop.core.settings import (
    BusSettings,
    KafkaSettings,
    MetricsSettings,
    settings_env,
)
from inspectloop.core.topics import ALL_TOPICS
from inspectloop.demo.story import (
    ARTIFACT,
    QUALITY_TOKEN,
    TOKEN,
    DemoConfig,
    Plant,
    gateway_section,
    rollout_section,
    seed_dataset,
    trainer_section,
    upload_challenge_kits,
)
from inspectloop.devtools.harness import (
    KafkaBroker,
    ManagedProcess,
    PrometheusServer,
    TritonServer,
    default_cache_dir,
    pick_free_ports,
)
from inspectloop.devtools.harness.ray_head import RayHead
from inspectloop.devtools.registry_process import RegistryUser, registry_process
from inspectloop.gateway.settings import ModelSyncSettings
from inspectloop.rollout.settings import MetricsSourceSettings
from inspectloop.simulator.scenario import load_scenario
from inspectloop.simulator.traffic import GrpcInspectClient

READY_TIMEOUT_S = 240.0


@dataclass(frozen=True)
class Addresses:
    """Where a user reaches the running platform."""

    kafka: str
    registry: str
    gateway_http: str
    gateway_grpc: str
    triton_grpc: str
    prometheus: str
    ray_dashboard: str
    monitor_metrics: str
    trainer_metrics: str
    rollout_metrics: str
    logs: Path

    def lines(self) -> list[str]:
        return [
            f"kafka:           {self.kafka}",
            f"registry:        {self.registry} (API docs at /docs)",
            f"gateway:         {self.gateway_http} (HTTP, docs at /docs), {self.gateway_grpc} "
            "(gRPC Inspect)",
            f"triton:          {self.triton_grpc} (gRPC)",
            f"prometheus:      {self.prometheus}",
            f"ray dashboard:   {self.ray_dashboard}",
            f"monitor metrics: {self.monitor_metrics}",
            f"trainer metrics: {self.trainer_metrics}",
            f"rollout metrics: {self.rollout_metrics}",
            f"logs:            {self.logs}",
        ]


def _service(
    name: str, module: str, logs: Path, env: Mapping[str, str], ready: Callable[[], bool]
) -> ManagedProcess:
    process = ManagedProcess(
        name, [sys.executable, "-m", module], logs / f"{name}.log", env=env, stop_grace=30
    )
    process.start()
    process.wait_ready(ready, READY_TIMEOUT_S)
    return process


def _answers(url: str) -> bool:
    return httpx.get(url, timeout=2).status_code == 200


def _components(
    stack: contextlib.ExitStack, work: Path, scrape_targets: list[str], echo: Callable[[str], None]
) -> tuple[KafkaBroker, TritonServer, RayHead, PrometheusServer]:
    """Kafka, Triton, a Ray head and Prometheus (scraping ``scrape_targets``), each ready."""
    cache = default_cache_dir()
    echo("starting Kafka")
    kafka = KafkaBroker(cache, work / "kafka")
    kafka.start()
    stack.callback(kafka.stop)
    echo("starting Triton")
    repository = work / "triton-models"
    repository.mkdir(exist_ok=True)
    triton = TritonServer(repository, cache, work / "triton")
    triton.start()
    stack.callback(triton.stop)
    echo("starting a Ray head")
    # Logical CPUs, not cores: the gateway's replica holds one while training's two workers
    # run beside it.
    ray_head = RayHead(work / "ray", num_cpus=4)
    ray_head.start()
    stack.callback(ray_head.stop)
    echo("starting Prometheus")
    prometheus = PrometheusServer(
        work / "prometheus", scrape_targets=scrape_targets, scrape_interval="2s"
    )
    prometheus.start()
    stack.callback(prometheus.stop)
    return kafka, triton, ray_head, prometheus


@contextlib.contextmanager
def process_platform(
    config: DemoConfig, echo: Callable[[str], None]
) -> Iterator[tuple[Plant, Addresses]]:
    """Start everything, yield the plant and its addresses, stop everything in reverse."""
    # Absolute: training jobs run in the Ray head's working directory, not this one.
    config = dataclasses.replace(config, work=config.work.resolve())
    scenario = load_scenario(config.scenario)
    work = config.work
    logs = work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    reference = seed_dataset(config, scenario, echo)
    http_port, grpc_port, monitor_port, trainer_port, rollout_port = pick_free_ports(5)
    with contextlib.ExitStack() as stack:
        kafka, triton, ray_head, prometheus = _components(
            stack,
            work,
            [f"127.0.0.1:{port}" for port in (http_port, monitor_port, trainer_port, rollout_port)],
            echo,
        )
        repository = triton.model_repository
        users = [
            RegistryUser("pipeline", "service", TOKEN),
            RegistryUser("quality", "quality", QUALITY_TOKEN),
        ]
        echo("starting the registry")
        registry_url = stack.enter_context(
            registry_process(
                work / "registry",
                users,
                settings={"INSPECTLOOP_REGISTRY__REQUIRE_SIGNATURE_FOR": "[]"},
            )
        )
        upload_challenge_kits(config, scenario, registry_url, echo)
        bus = BusSettings(
            backend="kafka", kafka=KafkaSettings(bootstrap_servers=kafka.bootstrap_servers)
        )
        story_bus = build_bus(bus, "story", CollectorRegistry())
        stack.callback(story_bus.close)
        # Every topic before any consumer joins: a group that joins before its topics exist is
        # assigned nothing until its next metadata refresh.
        story_bus.ensure_topics(ALL_TOPICS)

        def env(service: str, metrics_port: int = 0) -> dict[str, str]:
            base = {k: v for k, v in os.environ.items() if not k.startswith("INSPECTLOOP_")}
            return {
                **base,
                "INSPECTLOOP_SERVICE": service,
                "INSPECTLOOP_DATA_DIR": str(work / service),
                "INSPECTLOOP_BLOB_STORE__ROOT": str(work / "blobs"),
                **settings_env("bus", bus),
                **settings_env("metrics", MetricsSettings(port=metrics_port)),
            }

        gateway = gateway_section(
            scenario,
            triton.grpc_url,
            http_port=http_port,
            grpc_port=grpc_port,
            models=ModelSyncSettings(
                repository=repository,
                registry_url=registry_url,
                registry_token=SecretStr(TOKEN),
                artifact_filename=ARTIFACT,
            ),
        )
        ray_env = {
            "RAY_ADDRESS": f"127.0.0.1:{ray_head.gcs_port}",
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN": ray_head.auth_token,
        }
        gateway_url = f"http://127.0.0.1:{http_port}"
        processes: list[ManagedProcess] = []
        stack.callback(lambda: [p.stop() for p in reversed(processes)])
        echo("starting the gateway (Ray Serve)")
        processes.append(
            _service(
                "gateway",
                "inspectloop.gateway.app",
                logs,
                {**env("gateway"), **settings_env("gateway", gateway), **ray_env},
                lambda: _answers(f"{gateway_url}/healthz"),
            )
        )
        echo("starting the monitor")
        processes.append(
            _service(
                "monitor",
                "inspectloop.monitor.service",
                logs,
                env("monitor", monitor_port),
                lambda: _answers(f"http://127.0.0.1:{monitor_port}/metrics"),
            )
        )
        trainer = trainer_section(
            config,
            scenario,
            registry_url,
            reference,
            registry_token=TOKEN,
            ray_address=ray_head.dashboard_url,
            ray_auth_token=ray_head.auth_token,
        )
        echo("starting the trainer")
        processes.append(
            _service(
                "trainer",
                "inspectloop.trainer.service",
                logs,
                {**env("trainer", trainer_port), **settings_env("trainer", trainer)},
                lambda: _answers(f"http://127.0.0.1:{trainer_port}/metrics"),
            )
        )
        rollout = rollout_section(
            config,
            registry_url,
            MetricsSourceSettings(kind="prometheus", prometheus_url=prometheus.url),
            registry_token=TOKEN,
        )
        echo("starting the rollout controller")
        processes.append(
            _service(
                "rollout",
                "inspectloop.rollout.service",
                logs,
                {**env("rollout", rollout_port), **settings_env("rollout", rollout)},
                lambda: _answers(f"http://127.0.0.1:{rollout_port}/metrics"),
            )
        )
        client = GrpcInspectClient(f"127.0.0.1:{grpc_port}")
        stack.callback(client.close)
        addresses = Addresses(
            kafka=kafka.bootstrap_servers,
            registry=registry_url,
            gateway_http=gateway_url,
            gateway_grpc=f"127.0.0.1:{grpc_port}",
            triton_grpc=triton.grpc_url,
            prometheus=prometheus.url,
            ray_dashboard=ray_head.dashboard_url,
            monitor_metrics=f"http://127.0.0.1:{monitor_port}/metrics",
            trainer_metrics=f"http://127.0.0.1:{trainer_port}/metrics",
            rollout_metrics=f"http://127.0.0.1:{rollout_port}/metrics",
            logs=logs,
        )
        (work / "addresses.json").write_text(
            json.dumps({k: str(v) for k, v in addresses.__dict__.items()}, indent=2) + "\n",
            encoding="utf-8",
        )
        plant = Plant(
            bus=story_bus,
            inspect_client=client,
            triton_url=triton.grpc_url,
            monitor_metrics_url=addresses.monitor_metrics,
            trainer_metrics_url=addresses.trainer_metrics,
        )
        yield plant, addresses
        echo("stopping the services")
