"""A second product family: surface inspection on real photographed textures.

The textures are the photographs bundled inside scikit-image's wheel (``skimage.data.brick``,
``gravel`` and ``grass``: nothing is downloaded; ``moon`` is left out because its craters look
like defects). Each product is one material: a texture with a tint, a contrast and a grain
scale. Design ``A`` is the current finish; ``B`` is a new variant of the product (another tint,
contrast and scale), as when a supplier changes.

Each image is a random crop (position, scale, rotation by quarter turns, mirror) seen through
the same camera model as the labels. Defects, with a severity in [0, 1]:

- ``scratch``: a long thin bright line with a dark shadow (exposed material);
- ``dent``: a round depression, lit from the top left (dark rim on the lit side, highlight on
  the other);
- ``stain``: an irregular, soft, coloured blot (oil, rust, water mark);
- ``pit``: small round dark holes with a bright lower rim.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw, ImageFilter
from skimage import data as skdata  # the photographs ship inside the wheel

from inspectloop.simulator.conditions import (
    Conditions,
    ConditionsDistribution,
    apply_camera,
    camera_matrix,
    map_point,
)
from inspectloop.simulator.defects import check_severity

SurfaceDefect = Literal["scratch", "dent", "stain", "pit"]
SURFACE_DEFECTS: tuple[SurfaceDefect, ...] = ("scratch", "dent", "stain", "pit")
SURFACE_CLASSES: tuple[str, ...] = ("good", *SURFACE_DEFECTS)
SCENE_MARGIN = 1.12
DEFAULT_DISTRIBUTION = ConditionsDistribution()

Image8 = npt.NDArray[np.uint8]
Finish = Literal["A", "B"]


@dataclass(frozen=True)
class SurfaceProduct:
    """One material: which bundled texture, and how each finish tints and scales it."""

    product_id: str
    name: str
    texture: Literal["brick", "gravel", "grass"]
    tint: dict[str, tuple[float, float, float]]  # per finish, RGB gain
    contrast: dict[str, float]  # per finish
    scale: dict[str, tuple[float, float]]  # per finish: crop side as a fraction of the texture

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description."""
        return {"product_id": self.product_id, "name": self.name, "texture": self.texture}


SURFACE_PRODUCTS: tuple[SurfaceProduct, ...] = (
    SurfaceProduct(
        product_id="SURF-01",
        name="ceramic tile",
        texture="brick",
        tint={"A": (1.08, 0.92, 0.82), "B": (0.86, 0.94, 1.08)},
        contrast={"A": 1.0, "B": 0.75},
        scale={"A": (0.45, 0.65), "B": (0.3, 0.42)},
    ),
    SurfaceProduct(
        product_id="SURF-02",
        name="cast composite",
        texture="gravel",
        tint={"A": (0.98, 0.98, 1.0), "B": (1.06, 1.0, 0.86)},
        contrast={"A": 0.7, "B": 0.5},
        scale={"A": (0.45, 0.65), "B": (0.6, 0.8)},
    ),
    SurfaceProduct(
        product_id="SURF-03",
        name="fibre mat",
        texture="grass",
        tint={"A": (0.92, 1.02, 0.9), "B": (1.04, 1.0, 0.96)},
        contrast={"A": 0.75, "B": 0.55},
        scale={"A": (0.45, 0.65), "B": (0.35, 0.5)},
    ),
)


def find_surface(product_id: str) -> SurfaceProduct:
    """The surface product with ``product_id``."""
    for product in SURFACE_PRODUCTS:
        if product.product_id == product_id:
            return product
    raise KeyError(f"no surface product {product_id!r}")


@cache
def _texture(name: str) -> npt.NDArray[np.float32]:
    loader = {"brick": skdata.brick, "gravel": skdata.gravel, "grass": skdata.grass}[name]
    return np.asarray(loader(), dtype=np.float32)  # type: ignore[no-untyped-call]


_materials: dict[tuple[object, ...], Image.Image] = {}


def _material(product: SurfaceProduct, finish: str) -> Image.Image:
    """The tinted, contrast-adjusted texture of ``product`` in ``finish`` (RGB), cached."""
    key = (product.texture, product.tint[finish], product.contrast[finish])
    cached = _materials.get(key)
    if cached is None:
        grey = _texture(product.texture)
        mean = float(grey.mean())
        grey = 150.0 + (grey - mean) * product.contrast[finish]
        rgb = grey[:, :, None] * np.asarray(product.tint[finish], dtype=np.float32)
        cached = _materials[key] = Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8))
    return cached


def _supersample(size: int) -> int:
    return 2 if size < 192 else 1


def render_surface(
    product: SurfaceProduct,
    finish: Finish,
    *,
    rng: np.random.Generator,
    defect: SurfaceDefect | None = None,
    severity: float = 0.5,
    conditions: Conditions | None = None,
    distribution: ConditionsDistribution | None = None,
    size: int = 128,
) -> tuple[Image8, dict[str, Any]]:
    """One surface image (``size`` x ``size`` x 3, uint8) and its metadata.

    As for labels, ``rng`` is split into crop, conditions and defect streams, so that the same
    seed with and without a defect shows the same patch under the same conditions.
    """
    if finish not in ("A", "B"):
        raise ValueError(f"unknown finish {finish!r}; choose A or B")
    if defect is not None and defect not in SURFACE_DEFECTS:
        raise ValueError(f"unknown surface defect {defect!r}; choose from {SURFACE_DEFECTS}")
    severity = check_severity(severity)
    crop_rng, cond_rng, defect_rng = rng.spawn(3)
    if conditions is None:
        conditions = (distribution or DEFAULT_DISTRIBUTION).sample(cond_rng)

    ss = _supersample(size)
    view = size * ss
    side = ss * round(size * SCENE_MARGIN)
    material = _material(product, finish)
    u = crop_rng.random(4)
    low, high = product.scale[finish]
    crop = (low + (high - low) * float(u[0])) * material.width * SCENE_MARGIN
    crop = min(crop, material.width - 1.0)
    x0 = float(u[1]) * (material.width - crop)
    y0 = float(u[2]) * (material.height - crop)
    scene = material.resize(
        (side, side), Image.Resampling.BILINEAR, box=(x0, y0, x0 + crop, y0 + crop)
    )
    turn = int(u[3] * 8)
    if turn % 4:
        scene = scene.transpose(
            (
                Image.Transpose.ROTATE_90,
                Image.Transpose.ROTATE_180,
                Image.Transpose.ROTATE_270,
            )[turn % 4 - 1]
        )
    if turn >= 4:
        scene = scene.transpose(Image.Transpose.FLIP_LEFT_RIGHT)

    params: dict[str, Any] = {}
    box: tuple[float, float, float, float] | None = None
    if defect is not None:
        # defects land inside the view, away from its edges
        margin = (side - view) / 2 + 0.12 * view
        centre = (
            float(defect_rng.uniform(margin, side - margin)),
            float(defect_rng.uniform(margin, side - margin)),
        )
        draw = {"scratch": _scratch, "dent": _dent, "stain": _stain, "pit": _pits}[defect]
        scene, box, params = draw(scene, centre, view, severity, defect_rng)

    image = apply_camera(scene, conditions, size, float(ss), cond_rng)
    bbox = None
    if box is not None:
        matrix = camera_matrix(conditions, size, (side // ss, side // ss), 1.0)
        xs, ys = [], []
        for x, y in ((box[0], box[1]), (box[2], box[1]), (box[0], box[3]), (box[2], box[3])):
            px, py = map_point(matrix, x / ss, y / ss)
            xs.append(px)
            ys.append(py)
        bbox = [
            max(0, math.floor(min(xs))),
            max(0, math.floor(min(ys))),
            min(size, math.ceil(max(xs))),
            min(size, math.ceil(max(ys))),
        ]
    metadata: dict[str, Any] = {
        "product": "surface",
        "label": defect or "good",
        "defect": defect,
        "severity": round(severity, 4) if defect else 0.0,
        "defect_params": params,
        "defect_bbox": bbox,
        "sku": product.product_id,
        "sku_info": product.to_dict(),
        "design": finish,
        "serialization": None,
        "crop": {"side_px": round(crop, 2), "x": round(x0, 2), "y": round(y0, 2), "turn": turn},
        "conditions": conditions.to_dict(),
        "size": size,
    }
    return image, metadata


Box4 = tuple[float, float, float, float]
Drawn = tuple[Image.Image, Box4, dict[str, Any]]


def _lerp(low: float, high: float, t: float) -> float:
    return low + (high - low) * t


def _scratch(
    scene: Image.Image,
    centre: tuple[float, float],
    view: int,
    severity: float,
    rng: np.random.Generator,
) -> Drawn:
    length = _lerp(0.35, 0.8, severity) * view
    width = max(3, round(_lerp(0.012, 0.022, severity) * view))
    angle = float(rng.uniform(0, math.pi))
    bend = float(rng.uniform(-0.25, 0.25))
    points = []
    for t in np.linspace(-0.5, 0.5, 9):
        a = angle + bend * float(t)
        points.append(
            (
                centre[0] + length * float(t) * math.cos(a),
                centre[1] + length * float(t) * math.sin(a) + bend * 0.1 * length * float(t) ** 2,
            )
        )
    mask = Image.new("L", scene.size, 0)
    draw = ImageDraw.Draw(mask)
    draw.line(points, fill=255, width=width, joint="curve")
    shadow = Image.new("L", scene.size, 0)
    ImageDraw.Draw(shadow).line(
        [(x + width * 0.8, y + width * 0.8) for x, y in points], fill=255, width=width
    )
    strength = _lerp(0.75, 0.95, severity)
    scene.paste((30, 30, 32), mask=shadow.point(lambda v: round(v * strength * 0.6)))
    scene.paste((248, 248, 244), mask=mask.point(lambda v: round(v * strength)))
    xs = [p[0] for p in points]
    ys = [p[1] for p in points]
    return scene, (min(xs), min(ys), max(xs), max(ys)), {"length_px": round(length, 1)}


def _dent(
    scene: Image.Image,
    centre: tuple[float, float],
    view: int,
    severity: float,
    rng: np.random.Generator,
) -> Drawn:
    radius = _lerp(0.09, 0.17, severity) * view * float(rng.uniform(0.9, 1.1))
    depth = _lerp(0.6, 0.9, severity)
    r = math.ceil(radius * 1.3)
    cx, cy = round(centre[0]), round(centre[1])
    x0, y0 = max(cx - r, 0), max(cy - r, 0)
    x1, y1 = min(cx + r, scene.width), min(cy + r, scene.height)
    pixels = np.asarray(scene.crop((x0, y0, x1, y1)), dtype=np.float32)
    ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    dx, dy = (xs - centre[0]) / radius, (ys - centre[1]) / radius
    rho2 = dx**2 + dy**2
    inside = rho2 < 1.0
    # the slope of a spherical depression, lit from the top left: the far wall catches light
    light = (dx + dy) / math.sqrt(2)
    shade = np.where(inside, 1.0 + depth * light * np.sqrt(np.clip(rho2, 0, 1)), 1.0)
    rim = np.exp(-(((np.sqrt(rho2) - 1.0) / 0.08) ** 2))
    shade = shade - 0.35 * depth * rim
    pixels *= shade[:, :, None].astype(np.float32)
    patch = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    scene.paste(patch, (x0, y0))
    return (
        scene,
        (centre[0] - radius, centre[1] - radius, centre[0] + radius, centre[1] + radius),
        {"radius_px": round(radius, 1)},
    )


_STAIN_COLOURS = ((120, 70, 30), (60, 50, 40), (150, 120, 40), (90, 40, 60))


def _stain(
    scene: Image.Image,
    centre: tuple[float, float],
    view: int,
    severity: float,
    rng: np.random.Generator,
) -> Drawn:
    radius = _lerp(0.09, 0.2, severity) * view
    opacity = _lerp(0.55, 0.85, severity)
    colour = _STAIN_COLOURS[int(rng.integers(0, len(_STAIN_COLOURS)))]
    mask = Image.new("L", scene.size, 0)
    draw = ImageDraw.Draw(mask)
    for _ in range(int(rng.integers(3, 7))):
        ox, oy = rng.normal(0, radius * 0.35, size=2)
        rr = radius * float(rng.uniform(0.35, 0.7))
        draw.ellipse(
            (centre[0] + ox - rr, centre[1] + oy - rr, centre[0] + ox + rr, centre[1] + oy + rr),
            fill=255,
        )
    mask = mask.filter(ImageFilter.GaussianBlur(radius * 0.15))
    # multiply blend: the stain darkens and tints what is under it
    tinted = Image.fromarray(
        (np.asarray(scene, dtype=np.float32) * (np.asarray(colour, np.float32) / 160.0))
        .clip(0, 255)
        .astype(np.uint8)
    )
    scene.paste(tinted, mask=mask.point(lambda v: round(v * opacity)))
    box = mask.getbbox() or (0, 0, scene.width, scene.height)
    return scene, (float(box[0]), float(box[1]), float(box[2]), float(box[3])), {"colour": colour}


def _pits(
    scene: Image.Image,
    centre: tuple[float, float],
    view: int,
    severity: float,
    rng: np.random.Generator,
) -> Drawn:
    count = 2 + round(4 * severity)
    spread = 0.07 * view
    draw = ImageDraw.Draw(scene)
    xs, ys = [], []
    for _ in range(count):
        r = _lerp(0.014, 0.024, severity) * view * float(rng.uniform(0.85, 1.2))
        px = centre[0] + float(rng.normal(0, spread))
        py = centre[1] + float(rng.normal(0, spread))
        off = max(1.0, r * 0.3)
        draw.ellipse((px - r + off, py - r + off, px + r + off, py + r + off), fill=(235, 232, 225))
        draw.ellipse((px - r, py - r, px + r, py + r), fill=(22, 20, 20))
        xs += [px - r, px + r + off]
        ys += [py - r, py + r + off]
    return scene, (min(xs), min(ys), max(xs), max(ys)), {"count": count}
