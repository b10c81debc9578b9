"""``inspectloop demo`` and ``inspectloop up``: the plant story end to end on this machine."""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
import threading
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from inspectloop.core.settings import absolute

if TYPE_CHECKING:
    from inspectloop.demo.timeline import Timeline

WorkDir = Annotated[
    Path,
    typer.Option(
        help="Where every service keeps its state and the report (relative to the current "
        "directory).",
        # Made absolute here, once: the services and the components they start (Triton runs
        # in a directory of its own) must all see the same directory.
        callback=absolute,
    ),
]
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


class Until(StrEnum):
    story = "story"
    first_model = "first-model"


UntilOption = Annotated[
    Until,
    typer.Option(
        help="How far to go: the whole story, or only until the first model serves every line "
        "(a check of the whole set-up in a few minutes)."
    ),
]


def _exit_status(timeline: Timeline, until: Until) -> None:
    """Exit 0 when the run went as far as asked and met every goal, 1 otherwise (the headline
    printed says which figure or line missed)."""
    if until is Until.first_model:
        return  # reaching the first model is the whole of what was asked (it raises otherwise)
    h = timeline.headline
    if h is None or not (h.completed and h.all_goals_met):
        raise typer.Exit(code=1)


def demo(
    work_dir: WorkDir = Path(".inspectloop/demo"),
    until: UntilOption = Until.story,
    timeout_s: Timeout = 1800.0,
    verbose: Verbose = False,
) -> None:
    """Run the plant story from SEED.txt on the embedded defaults: train, detect the redesign,
    retrain, roll out, recover; then write the report. Exits 0 only when the story completed
    and met every goal."""
    # Torch, Ray and the services load only when the demo runs, not with every CLI command.
    from inspectloop.demo.run import run_demo  # noqa: PLC0415
    from inspectloop.demo.story import DemoConfig  # noqa: PLC0415

    _prepare(verbose)
    _fresh(work_dir)
    timeline = run_demo(
        DemoConfig(work=work_dir, timeout_s=timeout_s, until=until.value),
        echo=typer.echo,
        live=sys.stdout.isatty(),
    )
    _exit_status(timeline, until)


def up(
    work_dir: WorkDir = Path(".inspectloop/up"),
    story: Annotated[
        bool,
        typer.Option(
            help="Run the plant story against the services, write its report, then stop; "
            "without it the services run until Ctrl-C or SIGTERM."
        ),
    ] = False,
    until: UntilOption = Until.story,
    timeout_s: Timeout = 1800.0,
    verbose: Verbose = False,
) -> None:
    """Run every service as its own process on real Kafka, Triton, Ray and Prometheus. With
    --story, exits 0 only when the story completed and met every goal."""
    from inspectloop.demo.platform import process_platform  # noqa: PLC0415
    from inspectloop.demo.story import DemoConfig, run_story  # noqa: PLC0415

    _prepare(verbose)
    if story:  # the story starts from an empty plant; a plain `up` keeps what it had
        _fresh(work_dir)
    config = DemoConfig(work=work_dir, timeout_s=timeout_s, until=until.value)
    with process_platform(config, typer.echo) as (plant, addresses):
        for line in addresses.lines():
            typer.echo(line)
        if story:
            timeline, _ = run_story(plant, config, typer.echo, live=sys.stdout.isatty())
        else:
            typer.echo("the services are up; Ctrl-C or SIGTERM stops them")
            with contextlib.suppress(KeyboardInterrupt):
                threading.Event().wait()
            return
    _exit_status(timeline, until)
