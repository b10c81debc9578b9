"""A captioned contact sheet of what the simulator draws, for people to judge realism."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw

from inspectloop.simulator.conditions import ConditionsDistribution
from inspectloop.simulator.defects import DEFECT_CLASSES
from inspectloop.simulator.designs import DESIGNS
from inspectloop.simulator.fonts import load_font
from inspectloop.simulator.products import SERIALIZATIONS, default_catalogue
from inspectloop.simulator.render import LabelRenderer
from inspectloop.simulator.surfaces import SURFACE_DEFECTS, SURFACE_PRODUCTS, render_surface

Tile = tuple[str, npt.NDArray[np.uint8]]


def contact_tiles(size: int = 128, seed: int = 0) -> list[tuple[str, list[Tile]]]:
    """Sections of captioned tiles."""
    renderer = LabelRenderer()
    skus = default_catalogue()
    sections: list[tuple[str, list[Tile]]] = []

    def rng(k: int) -> np.random.Generator:
        return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(k,)))

    tiles: list[Tile] = []
    for serialization in SERIALIZATIONS:
        for design in DESIGNS:
            for i, sku in enumerate(skus):
                image, _ = renderer.render(sku, design, serialization, rng=rng(i), size=size)
                tiles.append((f"good {design} {serialization[4:]} {sku.sku_id}", image))
    sections.append(("good labels: design A (current), B (redesign); both serializations", tiles))

    for design in DESIGNS:
        tiles = []
        for k, defect in enumerate(DEFECT_CLASSES):
            for severity in (0.0, 1.0):
                sku = skus[k % len(skus)]
                serialization = SERIALIZATIONS[k % 2]
                image, _ = renderer.render(
                    sku,
                    design,
                    serialization,
                    rng=rng(100 + k),
                    defect=defect,
                    severity=severity,
                    size=size,
                )
                tiles.append((f"{defect} s={severity:g}", image))
        sections.append((f"defects on design {design}, severity 0 (subtle) and 1", tiles))

    tiles = []
    base = ConditionsDistribution()
    for drift in (-1.0, 0.0, 0.5, 1.0):
        image, _ = renderer.render(
            skus[0],
            "A",
            "gs1-dm",
            rng=rng(7),
            distribution=base.with_lighting_drift(drift),
            size=size,
        )
        tiles.append((f"lighting drift {drift:g}", image))
    for blur in (1.0, 2.0):
        image, _ = renderer.render(
            skus[0], "A", "gs1-dm", rng=rng(7), distribution=base.with_blur(blur), size=size
        )
        tiles.append((f"blur drift +{blur:g}px", image))
    sections.append(("line drift (label unchanged: good)", tiles))

    tiles = []
    for product in SURFACE_PRODUCTS:
        for finish in ("A", "B"):
            image, _ = render_surface(product, finish, rng=rng(11), size=size)
            tiles.append((f"{product.name} {finish} good", image))
        for k, surface_defect in enumerate(SURFACE_DEFECTS):
            image, _ = render_surface(
                product, "A", rng=rng(20 + k), defect=surface_defect, severity=0.0, size=size
            )
            tiles.append((f"{surface_defect} s=0", image))
    for k, surface_defect in enumerate(SURFACE_DEFECTS):
        image, _ = render_surface(
            SURFACE_PRODUCTS[0],
            "A",
            rng=rng(30 + k),
            defect=surface_defect,
            severity=1.0,
            size=size,
        )
        tiles.append((f"{surface_defect} s=1", image))
    sections.append(("surfaces: finishes A/B, defects", tiles))
    return sections


def write_contact_sheet(
    path: Path, *, size: int = 128, seed: int = 0, columns: int = 8, zoom: int = 2
) -> Path:
    """Renders ``contact_tiles`` into one PNG at ``path``."""
    sections = contact_tiles(size, seed)
    tile = size * zoom
    caption = 16
    header = 22
    font = load_font("DejaVuSans", 12)
    head_font = load_font("DejaVuSans-Bold", 14)
    height = 0
    for _, tiles in sections:
        rows = -(-len(tiles) // columns)
        height += header + rows * (tile + caption)
    sheet = Image.new("RGB", (columns * tile, height), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    y = 0
    for title, tiles in sections:
        draw.text((4, y + 3), title, font=head_font, fill=(0, 0, 0))
        y += header
        for i, (name, image) in enumerate(tiles):
            row, col = divmod(i, columns)
            x0, y0 = col * tile, y + row * (tile + caption)
            big = Image.fromarray(image).resize((tile, tile), Image.Resampling.NEAREST)
            sheet.paste(big, (x0, y0))
            draw.text((x0 + 3, y0 + tile + 1), name, font=font, fill=(0, 0, 0))
        y += -(-len(tiles) // columns) * (tile + caption)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return path
