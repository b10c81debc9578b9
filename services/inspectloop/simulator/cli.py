"""``inspectloop simulate``: reference datasets and a look at what the simulator draws."""

from __future__ import annotations

import json
import threading
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from inspectloop.core.errors import InspectloopError
from inspectloop.simulator.dataset import DatasetSpec, write_dataset
from inspectloop.simulator.products import default_catalogue
from inspectloop.simulator.sheet import write_contact_sheet
from inspectloop.simulator.surfaces import SURFACE_PRODUCTS

simulate_app = typer.Typer(
    help="Factory simulator: synthetic label and surface images, datasets.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


class ProductOption(StrEnum):
    """Product families."""

    label = "label"
    surface = "surface"


class DesignOption(StrEnum):
    """Label design (A current, B redesign) or surface finish."""

    A = "A"
    B = "B"


class SerializationOption(StrEnum):
    """Serialization formats of the label code."""

    dm = "gs1-dm"
    linear = "gs1-linear"


def _parse_splits(text: str) -> tuple[tuple[str, float], ...]:
    splits = []
    for part in text.split(","):
        name, sep, value = part.partition("=")
        if not sep:
            raise typer.BadParameter(f"expected NAME=FRACTION, got {part!r}")
        try:
            splits.append((name.strip(), float(value)))
        except ValueError as exc:
            raise typer.BadParameter(f"not a number: {value!r}") from exc
    return tuple(splits)


@simulate_app.command()
def dataset(
    *,
    out: Annotated[Path, typer.Option(help="Output directory.")],
    product: Annotated[ProductOption, typer.Option(help="Product family.")] = ProductOption.label,
    design: Annotated[
        DesignOption, typer.Option(help="Label design (A current, B redesign) or surface finish.")
    ] = DesignOption.A,
    serialization: Annotated[
        SerializationOption, typer.Option(help="Serialization format (labels only).")
    ] = SerializationOption.dm,
    n: Annotated[
        int, typer.Option(help="Images in train/val/test together (golden apart).")
    ] = 1000,
    seed: Annotated[int, typer.Option(help="Dataset seed: same seed, same bytes.")] = 0,
    size: Annotated[int, typer.Option(help="Image side in pixels.")] = 128,
    sku: Annotated[
        list[str] | None, typer.Option(help="SKU or surface product id (repeat); default all.")
    ] = None,
    defect: Annotated[
        list[str] | None, typer.Option(help="Defect class to include (repeat); default all.")
    ] = None,
    defect_fraction: Annotated[
        float, typer.Option(help="Share of defective images in each split.")
    ] = 0.5,
    splits: Annotated[
        str, typer.Option(help="Splits as NAME=FRACTION,... (golden is added apart).")
    ] = "train=0.7,val=0.15,test=0.15",
    severity_min: Annotated[float, typer.Option(help="Lowest defect severity.")] = 0.0,
    severity_max: Annotated[float, typer.Option(help="Highest defect severity.")] = 1.0,
    lighting_drift: Annotated[
        float, typer.Option(help="Lighting drift in [-1, 1]: >0 dimmer and warmer.")
    ] = 0.0,
    blur_drift: Annotated[float, typer.Option(help="Extra camera blur, output pixels.")] = 0.0,
    golden_per_class: Annotated[int, typer.Option(help="Golden images per class.")] = 4,
    workers: Annotated[int, typer.Option(help="Worker processes (same bytes for any).")] = 1,
    overwrite: Annotated[bool, typer.Option(help="Replace a dataset already in OUT.")] = False,
) -> None:
    """Generate a dataset: OUT/<split>/<class>/<sha256>.png, manifest.jsonl, dataset.json."""
    spec = DatasetSpec(
        product=product.value,
        n=n,
        seed=seed,
        size=size,
        design=design.value,
        serialization=serialization.value,
        skus=tuple(sku or ()),
        defects=tuple(defect or ()),
        defect_fraction=defect_fraction,
        splits=_parse_splits(splits),
        severity=(severity_min, severity_max),
        lighting_drift=lighting_drift,
        blur_drift=blur_drift,
        golden_per_class=golden_per_class,
    )
    try:
        spec = spec.validate()
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    try:
        summary = write_dataset(spec, out, workers=workers, overwrite=overwrite)
    except FileExistsError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(code=1) from exc
    typer.echo(
        json.dumps({"out": str(out), "total": summary["total"], "counts": summary["counts"]})
    )


@simulate_app.command()
def catalogue() -> None:
    """Print the SKUs and surface products as JSON."""
    typer.echo(
        json.dumps(
            {
                "label": [s.to_dict() for s in default_catalogue()],
                "surface": [p.to_dict() for p in SURFACE_PRODUCTS],
            },
            indent=2,
        )
    )


@simulate_app.command("contact-sheet")
def contact_sheet(
    *,
    out: Annotated[Path, typer.Option(help="PNG file to write.")],
    size: Annotated[int, typer.Option(help="Tile side in pixels.")] = 128,
    seed: Annotated[int, typer.Option(help="Seed.")] = 0,
) -> None:
    """Write a contact sheet: good A/B, every defect subtle and gross, drifts, surfaces."""
    write_contact_sheet(out, size=size, seed=seed)
    typer.echo(str(out))


BUNDLED_SCENARIOS = Path(__file__).parent / "scenarios"


def _scenario_path(name_or_path: str) -> Path:
    path = Path(name_or_path)
    if path.exists():
        return path
    bundled = BUNDLED_SCENARIOS / f"{name_or_path}.yaml"
    if bundled.exists():
        return bundled
    names = ", ".join(sorted(p.stem for p in BUNDLED_SCENARIOS.glob("*.yaml")))
    raise typer.BadParameter(f"no scenario file {name_or_path!r}; bundled scenarios: {names}")


@simulate_app.command()
def line(
    *,
    scenario: Annotated[
        str, typer.Option(help="Scenario YAML file, or the name of a bundled scenario.")
    ],
    target: Annotated[
        str | None,
        typer.Option(help="host:port of the gateway's gRPC Inspect API; omit for a dry run."),
    ] = None,
    time_scale: Annotated[
        float, typer.Option(help="Simulated seconds per wall second; 0 = as fast as possible.")
    ] = 1.0,
    max_units: Annotated[int | None, typer.Option(help="Stop after this many units.")] = None,
    truth: Annotated[
        Path, typer.Option(help="SQLite file for the ground truth of every unit.")
    ] = Path(".inspectloop/simulator/truth.sqlite3"),
    operators: Annotated[
        bool,
        typer.Option(help="Run the simulated operators (reads inspections, publishes feedback)."),
    ] = True,
) -> None:
    """Drive the plant: lines send images to the inspect API as the scenario says; simulated
    operators review what the system sends them. Bus settings come from INSPECTLOOP_ variables."""
    # Imported here: the dataset commands need neither gRPC nor the bus.
    from prometheus_client import CollectorRegistry  # noqa: PLC0415

    from inspectloop.core.bus import build_bus  # noqa: PLC0415
    from inspectloop.core.settings import CommonSettings, load_settings  # noqa: PLC0415
    from inspectloop.core.topics import CHANGEOVERS, FEEDBACK, INSPECTIONS  # noqa: PLC0415
    from inspectloop.simulator.line import LineSimulator  # noqa: PLC0415
    from inspectloop.simulator.operators import OperatorSimulator  # noqa: PLC0415
    from inspectloop.simulator.scenario import load_scenario  # noqa: PLC0415
    from inspectloop.simulator.traffic import GroundTruthStore, GrpcInspectClient  # noqa: PLC0415

    try:
        spec = load_scenario(_scenario_path(scenario))
        settings = load_settings(CommonSettings, service="simulator")
    except InspectloopError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=2) from exc
    store = GroundTruthStore(truth)
    client = GrpcInspectClient(target) if target else None
    bus = build_bus(settings.bus, "simulator", CollectorRegistry()) if target else None
    stop = threading.Event()
    operator_thread = None
    if bus is not None:
        bus.ensure_topics([INSPECTIONS, FEEDBACK, CHANGEOVERS])
        if operators:
            simulated = OperatorSimulator(
                bus, store, spec.operators, spec.seed, time_scale=time_scale or 1e9
            )
            consumer = bus.consumer("simulated-operators", [INSPECTIONS], simulated.handle)

            def review() -> None:
                with consumer:
                    while not stop.is_set() or simulated.pending:
                        consumer.poll_once(0.2)
                        simulated.publish_due()

            operator_thread = threading.Thread(target=review, name="operators", daemon=True)
            operator_thread.start()
    try:
        report = LineSimulator(spec, client, store, bus=bus, time_scale=time_scale).run(
            max_units=max_units
        )
    except KeyboardInterrupt:
        raise typer.Exit(code=130) from None
    finally:
        stop.set()
        if operator_thread is not None:
            operator_thread.join()
        if client is not None:
            client.close()
        if bus is not None:
            bus.close()
        store.close()
    typer.echo(
        json.dumps(
            {
                "scenario": spec.name,
                "sent": report.sent,
                "failed": report.failed,
                "defective": report.defects,
                "announced": report.announced,
                "by_line": dict(report.by_line),
                "errors": dict(report.errors),
                "dry_run": client is None,
            }
        )
    )
