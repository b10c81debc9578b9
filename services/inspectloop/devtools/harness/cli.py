"""``inspectloop harness``: fetch, start, stop and list real components by hand or from ``.ci/run``.

``start`` runs a component detached (it outlives the command), waits until it is ready, records
it in ``<state-dir>/<name>.json`` and prints its main address on stdout, alone on one line, so
scripts can capture it (``BOOTSTRAP=$(inspectloop harness start kafka)``); everything else goes to
stderr. ``stop`` and ``status`` find components through those state files.
"""

from __future__ import annotations

import enum
import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer

from inspectloop.core.errors import InspectloopError
from inspectloop.core.readiness import is_port_open
from inspectloop.devtools.harness.kafka import KafkaBroker, fetch_kafka
from inspectloop.devtools.harness.postgres import PostgresServer
from inspectloop.devtools.harness.postgres import ensure_installed as ensure_postgres
from inspectloop.devtools.harness.process import (
    DEFAULT_STOP_GRACE_S,
    default_cache_dir,
    process_group_alive,
    terminate_process_group,
)
from inspectloop.devtools.harness.prometheus import PrometheusServer, ensure_installed
from inspectloop.devtools.harness.triton import TritonServer, prepare_backend_dir

logger = logging.getLogger(__name__)

harness_app = typer.Typer(
    help="Fetch, start and stop the real components (Kafka, Prometheus, Triton, PostgreSQL) on "
    "loopback.",
    no_args_is_help=True,
)


class Component(enum.StrEnum):
    kafka = "kafka"
    prometheus = "prometheus"
    triton = "triton"
    postgres = "postgres"


class FetchTarget(enum.StrEnum):
    kafka = "kafka"
    prometheus = "prometheus"
    triton = "triton"
    postgres = "postgres"
    all = "all"


@dataclass
class ComponentState:
    """What ``start`` records about a detached component, for ``stop`` and ``status``."""

    name: str
    pid: int
    address: str
    port: int
    command: str  # argv[0], to tell our process from an unrelated one that reused the pid
    log_path: str
    data_dir: str
    endpoints: dict[str, str] = field(default_factory=dict)
    started_at: float = 0.0


def _default_state_dir() -> Path:
    configured = os.environ.get("INSPECTLOOP_HARNESS_STATE_DIR")
    return Path(configured) if configured else default_cache_dir() / "harness-state"


def _state_path(state_dir: Path, name: str) -> Path:
    return state_dir / f"{name}.json"


def _read_state(state_dir: Path, name: str) -> ComponentState | None:
    try:
        return ComponentState(**json.loads(_state_path(state_dir, name).read_text()))
    except (FileNotFoundError, ValueError, TypeError):
        return None


def _is_alive(state: ComponentState) -> bool:
    if not process_group_alive(state.pid):
        return False
    try:
        cmdline = Path(f"/proc/{state.pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return bool(cmdline) and cmdline[0].decode(errors="replace") == state.command


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code=1)


StateDirOption = Annotated[
    Path | None,
    typer.Option(
        "--state-dir",
        help="Where state files and data live "
        "(default: $INSPECTLOOP_HARNESS_STATE_DIR or <cache>/harness-state).",
    ),
]


@harness_app.command()
def fetch(
    target: Annotated[FetchTarget, typer.Argument(help="What to fetch.")] = FetchTarget.all,
) -> None:
    """Fetch or install components once (cached), so later starts need no network."""
    cache_dir = default_cache_dir()
    try:
        if target in (FetchTarget.kafka, FetchTarget.all):
            typer.echo(f"kafka: jars in {fetch_kafka(cache_dir)}", err=True)
        if target in (FetchTarget.prometheus, FetchTarget.all):
            typer.echo(f"prometheus: {ensure_installed(cache_dir)}", err=True)
        if target in (FetchTarget.triton, FetchTarget.all):
            typer.echo(f"triton: backends in {prepare_backend_dir(cache_dir)}", err=True)
        if target in (FetchTarget.postgres, FetchTarget.all):
            typer.echo(f"postgres: binaries in {ensure_postgres(cache_dir)}", err=True)
    except InspectloopError as exc:
        raise _fail(str(exc)) from exc


@harness_app.command()
def start(
    name: Annotated[Component, typer.Argument(help="Component to start.")],
    *,
    port: Annotated[
        int | None,
        typer.Option(
            help="Main port: Kafka client port, Prometheus web port, Triton HTTP port, "
            "PostgreSQL port."
        ),
    ] = None,
    state_dir: StateDirOption = None,
    scrape_target: Annotated[
        list[str] | None,
        typer.Option(help="Prometheus only: host:port to scrape (repeatable)."),
    ] = None,
    model_repository: Annotated[
        Path | None,
        typer.Option(help="Triton only: model repository (default: <state-dir>/triton/models)."),
    ] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for readiness.")] = 60.0,
) -> None:
    """Start a component detached, wait until it is ready, print its address."""
    state_dir = state_dir or _default_state_dir()
    previous = _read_state(state_dir, name.value)
    if previous is not None and _is_alive(previous):
        typer.echo(f"{name.value} already running (pid {previous.pid})", err=True)
        typer.echo(previous.address)
        return
    cache_dir = default_cache_dir()
    data_dir = state_dir / name.value
    component: KafkaBroker | PrometheusServer | TritonServer | PostgresServer
    endpoints: dict[str, str]
    try:
        if name is Component.kafka:
            # The data dir is kept between runs; KafkaBroker reuses its recorded ports.
            component = KafkaBroker(cache_dir, data_dir, port=port)
            address = component.bootstrap_servers
            main_port = component.port
            endpoints = {"bootstrap_servers": address}
        elif name is Component.prometheus:
            component = PrometheusServer(data_dir, scrape_targets=scrape_target or [], port=port)
            address = component.url
            main_port = component.port
            endpoints = {"url": address}
        elif name is Component.postgres:
            # The data dir is kept between runs; prints a SQLAlchemy URL with the password.
            component = PostgresServer(data_dir, port=port)
            address = component.url()
            main_port = component.port
            endpoints = {"url": address}
        else:
            repository = model_repository or data_dir / "models"
            repository.mkdir(parents=True, exist_ok=True)
            component = TritonServer(repository, cache_dir, data_dir, http_port=port)
            address = component.grpc_url
            main_port = component.http_port
            endpoints = {
                "grpc": component.grpc_url,
                "http": component.http_url,
                "metrics": component.metrics_url,
                "model_repository": str(repository),
            }
        component.start(timeout=timeout)
    except InspectloopError as exc:
        raise _fail(str(exc)) from exc
    component.detach()
    process = component.process
    assert process is not None and process.pid is not None  # start() succeeded
    state = ComponentState(
        name=name.value,
        pid=process.pid,
        address=address,
        port=main_port,
        command=process.argv[0],
        log_path=str(component.log_path),
        data_dir=str(data_dir),
        endpoints=endpoints,
        started_at=time.time(),
    )
    state_dir.mkdir(parents=True, exist_ok=True)
    _state_path(state_dir, name.value).write_text(json.dumps(asdict(state), indent=2) + "\n")
    details = ", ".join(f"{key}={value}" for key, value in endpoints.items())
    typer.echo(f"{name.value} ready (pid {state.pid}): {details}; log {state.log_path}", err=True)
    typer.echo(address)


@harness_app.command()
def stop(
    name: Annotated[Component, typer.Argument(help="Component to stop.")],
    state_dir: StateDirOption = None,
    grace: Annotated[
        float, typer.Option(help="Seconds between SIGTERM and SIGKILL.")
    ] = DEFAULT_STOP_GRACE_S,
) -> None:
    """Stop a component started by `harness start` (SIGTERM, then SIGKILL after --grace)."""
    state_dir = state_dir or _default_state_dir()
    state = _read_state(state_dir, name.value)
    if state is None:
        typer.echo(f"{name.value}: not started from this state dir ({state_dir})", err=True)
        return
    if _is_alive(state):
        terminate_process_group(state.pid, grace)
        typer.echo(f"{name.value} stopped (pid {state.pid})", err=True)
    else:
        typer.echo(f"{name.value} was not running (pid {state.pid})", err=True)
    _state_path(state_dir, name.value).unlink(missing_ok=True)


@harness_app.command()
def status(
    state_dir: StateDirOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List components started by `harness start`: pid, whether up, address, log."""
    state_dir = state_dir or _default_state_dir()
    rows: list[dict[str, Any]] = []
    for component in Component:
        state = _read_state(state_dir, component.value)
        if state is None:
            rows.append({"name": component.value, "status": "stopped"})
            continue
        alive = _is_alive(state)
        listening = alive and is_port_open(state.port)
        rows.append(
            {
                **asdict(state),
                "status": "up" if listening else ("starting?" if alive else "dead"),
            }
        )
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        if row["status"] == "stopped":
            typer.echo(f"{row['name']:<11} stopped")
        else:
            typer.echo(
                f"{row['name']:<11} {row['status']:<9} pid {row['pid']:<7} "
                f"{row['address']:<28} log {row['log_path']}"
            )
