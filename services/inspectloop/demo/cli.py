"""``inspectloop demo``: the plant story end to end on this machine."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer


def demo(
    work_dir: Annotated[
        Path, typer.Option(help="Where every service keeps its state and the report.")
    ] = Path(".inspectloop/demo"),
    timeout_s: Annotated[
        float, typer.Option(help="Give up on the story after this long.")
    ] = 1800.0,
    verbose: Annotated[
        bool, typer.Option(help="Log every service at INFO, not only errors.")
    ] = False,
) -> None:
    """Run the plant story from SEED.txt on the embedded defaults: train, detect the redesign,
    retrain, roll out, recover; then write the report."""
    # Torch, Ray and the services load only when the demo runs, not with every CLI command.
    from inspectloop.demo.run import DemoConfig, run_demo  # noqa: PLC0415

    logging.basicConfig(
        level=logging.INFO if verbose else logging.ERROR,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    run_demo(DemoConfig(work=work_dir, timeout_s=timeout_s), echo=typer.echo)
