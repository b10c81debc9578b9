"""The ``inspectloop`` command: one entry point, a sub-command group per area.

The groups of the platform's services are imported when they are used: an install of the edge
agent alone (``pip install inspectloop``, without the ``[all]`` extras) runs ``inspectloop
edge ...``, and a group whose packages that install lacks says which install it needs. It also
keeps ``inspectloop registry serve`` from loading the developer tools.
"""

from __future__ import annotations

import functools
import importlib
from typing import Any

import typer
from typer.core import TyperCommand, TyperGroup

from inspectloop import __version__
from inspectloop.demo.cli import demo, up
from inspectloop.edge.cli import edge_app

PLATFORM_INSTALL = "pip install 'inspectloop[all]'"
DEV_INSTALL = "pip install -e '.[all,dev]' in a checkout"
COMPLETION_OPTIONS = {"install_completion", "show_completion"}

# name -> (module, its typer.Typer, one-line help shown when it cannot be imported, the install
# that has what it needs)
LAZY_GROUPS: dict[str, tuple[str, str, str, str]] = {
    "harness": (
        "inspectloop.devtools.harness.cli",
        "harness_app",
        "Fetch, start and stop the real components (Kafka, Prometheus, Triton, PostgreSQL).",
        PLATFORM_INSTALL,
    ),
    "dev": (
        "inspectloop.devtools.cli",
        "dev_app",
        "Developer tools: code generation and consistency checks.",
        DEV_INSTALL,
    ),
    "simulate": (
        "inspectloop.simulator.cli",
        "simulate_app",
        "Factory simulator: synthetic label and surface images, datasets.",
        PLATFORM_INSTALL,
    ),
    "registry": (
        "inspectloop.registry.cli",
        "registry_app",
        "Model registry: HTTP API, audit log verification, users.",
        PLATFORM_INSTALL,
    ),
    "datasets": (
        "inspectloop.registry.cli",
        "datasets_app",
        "Datasets in the registry: challenge sets and label artwork (upload, list, show).",
        PLATFORM_INSTALL,
    ),
}


# Commands are typed Any: typer builds on its own copy of click in recent versions and on click
# itself in older ones, so neither click's nor typer's private classes are named here.
@functools.cache
def _load_group(name: str) -> Any:
    module, attribute, help_text, install = LAZY_GROUPS[name]
    try:
        sub_app = getattr(importlib.import_module(module), attribute)
    except ModuleNotFoundError as exc:
        missing = exc.name or str(exc)
        return _unavailable(name, help_text, missing, install)
    command = typer.main.get_command(sub_app)
    command.name = name
    # Shell completion is installed from the top-level command only.
    command.params = [p for p in command.params if p.name not in COMPLETION_OPTIONS]
    return command


def _unavailable(name: str, help_text: str, missing: str, install: str) -> TyperCommand:
    def fail(**_: Any) -> None:
        typer.echo(
            f"error: `inspectloop {name}` needs the package {missing!r}, which this install "
            f"lacks: {install}",
            err=True,
        )
        raise typer.Exit(code=2)

    return TyperCommand(
        name,
        help=f"{help_text} Not in this install: {install}",
        short_help=f"(not installed) {help_text}",
        callback=fail,
        context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
        add_help_option=False,
    )


class _LazyGroups(TyperGroup):
    def list_commands(self, ctx: Any) -> list[str]:
        return sorted({*super().list_commands(ctx), *LAZY_GROUPS})

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name in LAZY_GROUPS:
            return _load_group(cmd_name)
        return super().get_command(ctx, cmd_name)


app = typer.Typer(
    name="inspectloop",
    cls=_LazyGroups,
    help="Keeps factory vision-inspection models accurate.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(edge_app, name="edge")
app.command()(demo)
app.command()(up)


@app.command()
def version() -> None:
    """Print the installed version."""
    typer.echo(__version__)


if __name__ == "__main__":
    app()
