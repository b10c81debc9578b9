"""``inspectloop edge ...``: run the edge agent, show its local state."""

from __future__ import annotations

import json

import typer

edge_app = typer.Typer(help="The edge agent on a line PC.", no_args_is_help=True)


@edge_app.command("run")
def run() -> None:
    """Run the edge agent (settings from INSPECTLOOP_* variables) until SIGTERM."""
    from inspectloop.edge.agent import main  # noqa: PLC0415 - heavy imports only when used

    main()


@edge_app.command("status")
def status() -> None:
    """Print the models on disk (current, previous) and the outbox depth, without the network."""
    from inspectloop.core.settings import load_settings  # noqa: PLC0415
    from inspectloop.edge.models import ModelStore, installed_dict  # noqa: PLC0415
    from inspectloop.edge.outbox import Outbox  # noqa: PLC0415
    from inspectloop.edge.settings import EdgeSettings  # noqa: PLC0415

    settings = load_settings(EdgeSettings, service="edge")
    assert settings.edge.store_dir is not None and settings.edge.outbox_path is not None
    store = ModelStore(settings.edge.store_dir, None, kind=settings.edge.artifact_kind)
    with Outbox(settings.edge.outbox_path) as outbox:
        oldest = outbox.oldest_time()
        typer.echo(
            json.dumps(
                {
                    "node_id": settings.edge.node_id,
                    "line": settings.edge.line,
                    "current": installed_dict(store.current()),
                    "previous": installed_dict(store.previous()),
                    "outbox_depth": outbox.depth(),
                    "oldest_outbox_at": oldest.isoformat() if oldest else None,
                },
                indent=2,
            )
        )
