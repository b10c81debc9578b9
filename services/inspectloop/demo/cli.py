"""``inspectloop demo`` and ``inspectloop up``: the plant story end to end on this machine."""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from pathlib import Path
from typing import Annotated

import typer

WorkDir = Annotated[Path, typer.Option(help="Where every service keeps its state and the report.")]
Timeout = Annotated[float, typer.Option(help="Give up on the story after this long.")]
Verbose = Annotated[bool, typer.Option(help="Log at INFO, not only errors.")]


def _prepare(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.ERROR,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # SIGTERM unwinds like Ctrl-C does, so every component started is stopped on the way out.
    signal.signal(signal.SIGTERM, _exit)


def _fresh(work_dir: Path) -> None:
    from inspectloop.core.errors import ConfigError  # noqa: PLC0415
    from inspectloop.demo.story import fresh_work_dir  # noqa: PLC0415

    try:
        fresh_work_dir(work_dir)
    except ConfigError as exc:
        raise typer.BadParameter(str(exc), param_hint="--work-dir") from None


def _exit(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def demo(
    work_dir: WorkDir = Path(".inspectloop/demo"),
    timeout_s: Timeout = 1800.0,
    verbose: Verbose = False,
) -> None:
    """Run the plant story from SEED.txt on the embedded defaults: train, detect the redesign,
    retrain, roll out, recover; then write the report."""
    # Torch, Ray and the services load only when the demo runs, not with every CLI command.
    from inspectloop.demo.run import run_demo  # noqa: PLC0415
    from inspectloop.demo.story import DemoConfig  # noqa: PLC0415

    _prepare(verbose)
    _fresh(work_dir)
    run_demo(DemoConfig(work=work_dir, timeout_s=timeout_s), echo=typer.echo)


def up(
    work_dir: WorkDir = Path(".inspectloop/up"),
    story: Annotated[
        bool,
        typer.Option(
            help="Run the plant story against the services, write its report, then stop; "
            "without it the services run until Ctrl-C or SIGTERM."
        ),
    ] = False,
    timeout_s: Timeout = 1800.0,
    verbose: Verbose = False,
) -> None:
    """Run every service as its own process on real Kafka, Triton, Ray and Prometheus."""
    from inspectloop.demo.platform import process_platform  # noqa: PLC0415
    from inspectloop.demo.story import DemoConfig, run_story  # noqa: PLC0415

    _prepare(verbose)
    if story:  # the story starts from an empty plant; a plain `up` keeps what it had
        _fresh(work_dir)
    config = DemoConfig(work=work_dir, timeout_s=timeout_s)
    with process_platform(config, typer.echo) as (plant, addresses):
        for line in addresses.lines():
            typer.echo(line)
        if story:
            run_story(plant, config, typer.echo)
            return
        typer.echo("the services are up; Ctrl-C or SIGTERM stops them")
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()
