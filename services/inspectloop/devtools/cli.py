"""``inspectloop dev``: developer tools that keep the repository consistent."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from inspectloop.core.settings import absolute
from inspectloop.devtools import protogen

dev_app = typer.Typer(
    help="Developer tools: code generation and consistency checks.",
    no_args_is_help=True,
)


@dev_app.callback()
def _dev() -> None:
    """Developer tools: code generation and consistency checks."""


@dev_app.command("gen-proto")
def gen_proto(
    check: Annotated[
        bool,
        typer.Option(
            "--check",
            help="Only check that the committed code is up to date; exit 1 listing stale files.",
        ),
    ] = False,
) -> None:
    """Generate services/inspectloop/v1 from proto/inspectloop/v1/*.proto."""
    out_dir = protogen.DEFAULT_OUT_DIR
    try:
        if check:
            stale = protogen.stale_files(out_dir)
            if stale:
                typer.echo(
                    f"generated code in {out_dir} is stale; run `inspectloop dev gen-proto`:",
                    err=True,
                )
                for name in stale:
                    typer.echo(f"  {name}", err=True)
                raise typer.Exit(code=1)
            typer.echo(f"generated code in {out_dir} is up to date")
            return
        protogen.generate(out_dir)
    except protogen.ProtoGenerationError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=2) from exc
    typer.echo(f"generated {out_dir}")


@dev_app.command("train-foundation")
def train_foundation(
    out: Annotated[
        Path, typer.Option(help="Where the weights go (a JSON card is written beside them).")
    ],
    scale: Annotated[
        float, typer.Option(help="Multiply every dataset size (1: the committed model).")
    ] = 1.0,
) -> None:
    """Train the design A foundation model the demo's plant starts from (about 40 minutes on
    two cores at scale 1); see inspectloop.devtools.foundation."""
    import json  # noqa: PLC0415
    import logging  # noqa: PLC0415

    from inspectloop.devtools.foundation import FoundationRecipe  # noqa: PLC0415
    from inspectloop.devtools.foundation import train_foundation as train  # noqa: PLC0415

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    recipe = FoundationRecipe() if scale == 1.0 else FoundationRecipe().scaled(scale)
    card = train(recipe, absolute(out))
    typer.echo(json.dumps(card["held_out_test"], indent=2))
