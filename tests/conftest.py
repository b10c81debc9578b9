"""Shared fixtures: real components started by the harness, once per test session.

Nothing is skipped when a component is missing: the harness fetches or installs it (cached in
``$INSPECTLOOP_CACHE_DIR`` or ``~/.cache/inspectloop``). Each session gets its own data directory,
so runs never share broker logs or TSDBs, and every component's log file lies under it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from inspectloop.core.blobstore import FilesystemBlobStore
from inspectloop.core.bus import EventBus, build_bus
from inspectloop.core.registry_client import RegistryClient
from inspectloop.core.settings import BusSettings, LocalBusSettings
from inspectloop.core.topics import INSPECTIONS, LINE_MODES, ROUTING
from inspectloop.devtools.harness import (
    KafkaBroker,
    PostgresServer,
    PrometheusServer,
    TritonServer,
    default_cache_dir,
)
from inspectloop.trainer.metrics import TrainerMetrics
from inspectloop.trainer.runner import LocalRayRunner
from inspectloop.trainer.service import TrainerService
from inspectloop.trainer.settings import TrainerSection
from inspectloop.trainer.snapshot import LabelStore

# --- harness: real components ------------------------------------------------------------------


@pytest.fixture(scope="session")
def harness_cache_dir() -> Path:
    """Where fetched components are cached across sessions."""
    return default_cache_dir()


@pytest.fixture(scope="session")
def components_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This session's data directory for component state (broker logs, TSDB, model repository)."""
    return tmp_path_factory.mktemp("components")


@pytest.fixture(scope="session")
def kafka_broker(harness_cache_dir: Path, components_dir: Path) -> Iterator[KafkaBroker]:
    """One KRaft broker for the session. Tests may ``kill()`` and ``start()`` it; the data dir and
    ports survive, so a test that crashes it must restart it before returning."""
    broker = KafkaBroker(harness_cache_dir, components_dir / "kafka")
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture(scope="session")
def prometheus_server(components_dir: Path) -> Iterator[PrometheusServer]:
    """One Prometheus for the session, scraping nothing until a test calls
    ``set_scrape_targets([...])`` (applied at once through a config reload)."""
    server = PrometheusServer(components_dir / "prometheus", scrape_interval="1s")
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def triton_model_repository(components_dir: Path) -> Path:
    """The session Triton's model repository; tests write models here, then ``load_model``."""
    repository = components_dir / "triton-models"
    repository.mkdir()
    return repository


@pytest.fixture(scope="session")
def triton_server(
    harness_cache_dir: Path, components_dir: Path, triton_model_repository: Path
) -> Iterator[TritonServer]:
    """One Triton (explicit model control, CPU) for the session over ``triton_model_repository``."""
    server = TritonServer(triton_model_repository, harness_cache_dir, components_dir / "triton")
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def served_models(
    triton_server: TritonServer,
    triton_model_repository: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> str:
    """The gateway's tiny test models (``inspectloop.devtools.tiny_models``) loaded on the
    session's Triton; returns Triton's gRPC address."""
    from inspectloop.devtools.tiny_models import NAME, write_models  # noqa: PLC0415

    write_models(triton_model_repository, tmp_path_factory.mktemp("gateway-models"))
    triton_server.load_model(NAME)
    return triton_server.grpc_url


@pytest.fixture(scope="session")
def postgres_server(components_dir: Path) -> Iterator[PostgresServer]:
    """One PostgreSQL (Debian's package) for the session; ``create_database(name)`` returns a
    SQLAlchemy URL. Its cluster is deleted at the end of the session."""
    server = PostgresServer(components_dir / "postgres")
    server.start()
    yield server
    server.destroy()


# --- bus fixtures --------------------------------------------------------------------------------


@pytest.fixture
def bus(tmp_path: Path) -> Iterator[EventBus]:
    """A local bus with the topics the gateway reads and writes (modules may define their own)."""
    settings = BusSettings(backend="local", local=LocalBusSettings(directory=tmp_path / "bus"))
    bus = build_bus(settings, "test", CollectorRegistry())
    bus.ensure_topics([INSPECTIONS, ROUTING, LINE_MODES])
    yield bus
    bus.close()


# --- Ray -----------------------------------------------------------------------------------------


@pytest.fixture
def local_ray() -> Iterator[LocalRayRunner]:
    """A trainer runner on a local Ray of 2 CPUs, shut down after the test."""
    # Shut down before the next test starts its own Ray head: a driver whose local raylet dies
    # (as when another head's teardown takes stray Ray processes with it) exits the whole
    # pytest process with status 1, mid-run and without a report.
    import ray  # noqa: PLC0415 - Ray starts only for the tests that use it

    runner = LocalRayRunner(num_cpus=2)
    yield runner
    ray.shutdown()


@dataclass
class LocalTrainer:
    """A trainer service on a test's local bus and local Ray, with its metrics."""

    service: TrainerService
    bus: EventBus
    metrics: CollectorRegistry


TrainerFactory = Callable[[TrainerSection, RegistryClient], LocalTrainer]


@pytest.fixture
def make_trainer(bus: EventBus, local_ray: LocalRayRunner, tmp_path: Path) -> TrainerFactory:
    """Builds a trainer service from the test's settings and registry client, on the test's
    local bus (``bus``) and local Ray, its blobs and labels under ``tmp_path``."""

    def make(settings: TrainerSection, registry: RegistryClient) -> LocalTrainer:
        metrics = CollectorRegistry()
        service = TrainerService(
            settings,
            bus=bus,
            blob_store=FilesystemBlobStore(tmp_path / "blobs", 64 * 1024 * 1024),
            registry=registry,
            runner=local_ray,
            labels=LabelStore(tmp_path / "labels.sqlite3"),
            metrics=TrainerMetrics(metrics),
        )
        return LocalTrainer(service, bus, metrics)

    return make
