"""The ``inspectloop`` command: one entry point, a sub-command group per area."""

from __future__ import annotations

import typer

from inspectloop import __version__
from inspectloop.demo.cli import demo, up
from inspectloop.devtools.cli import dev_app
from inspectloop.devtools.harness.cli import harness_app
from inspectloop.edge.cli import edge_app
from inspectloop.registry.cli import registry_app
from inspectloop.simulator.cli import simulate_app

app = typer.Typer(
    name="inspectloop",
    help="Keeps factory vision-inspection models accurate.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(harness_app, name="harness")
app.add_typer(dev_app, name="dev")
app.add_typer(simulate_app, name="simulate")
app.add_typer(registry_app, name="registry")
app.add_typer(edge_app, name="edge")
app.command()(demo)
app.command()(up)


@app.command()
def version() -> None:
    """Print the installed version."""
    typer.echo(__version__)


if __name__ == "__main__":
    app()
