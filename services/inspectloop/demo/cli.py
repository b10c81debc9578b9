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
    from inspectloop.demo.report import write_report  # noqa: PLC0415
    from inspectloop.demo.run import DemoConfig, run_demo  # noqa: PLC0415

    logging.basicConfig(
        level=logging.INFO if verbose else logging.ERROR,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    timeline = run_demo(DemoConfig(work=work_dir, timeout_s=timeout_s), echo=typer.echo)
    timeline.to_json(work_dir / "timeline.json")
    report = write_report(timeline, work_dir / "report")
    h = timeline.headline
    if h is not None:
        typer.echo("")
        typer.echo("headline figures (goals of the plant story):")
        typer.echo(f"  inspections until detection:   {h.inspections_until_detection}")
        seconds = h.seconds_to_new_model_at_100
        typer.echo(
            "  redesign to new model at 100%: "
            + (f"{seconds:.0f} s" if seconds is not None else "not reached")
        )
        typer.echo(f"  escapes during the transition: {h.escapes_during_transition}")
        frr = h.false_reject_rate_after_recovery
        typer.echo(
            "  false reject rate after:       "
            + (f"{frr:.2%} of {h.inspections_after_recovery}" if frr is not None else "n/a")
        )
        typer.echo(f"  human reviews:                 {h.human_reviews}")
        for goal, met in h.goals.items():
            typer.echo(f"  goal {goal}: {'met' if met else 'NOT met'}")
    typer.echo(f"report: {report}")
