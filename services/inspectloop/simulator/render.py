"""Rendering package-label images: label, carton, defects, camera.

The pipeline for one image:

1. the pre-printed label (stock, colour band, logo, name, strength, pack text) — rendered once
   per (SKU, design, serialization, resolution) and cached, element by element, so that
   defects can leave elements out or shift the colour plate;
2. the variable print of the line printer (lot, expiry, serial, code, human-readable AIs) as one
   ink mask in one colour — lot and expiry cached, serial and code drawn per unit;
3. label defects (missing print, misregistration, wrong text, damaged code, smudge, tear,
   wrinkles), then placement on the carton (skew), then particles on the scene;
4. the camera (``conditions.apply_camera``): pose jitter and downscale in one resampling, blur,
   lighting, glare, noise.

Everything is drawn at ``supersample`` times the output size (2 for outputs under 192 px), so
text keeps its shape when downscaled. Randomness comes only from the ``rng`` passed in, split
into three streams (unit, conditions, defect) so that the same seed with and without a defect
gives the same unit under the same conditions.
"""

from __future__ import annotations

import math
import struct
import zlib
from dataclasses import dataclass, field, replace
from functools import cache
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw, ImageFilter

from inspectloop.simulator import defects as dfx
from inspectloop.simulator.conditions import (
    Conditions,
    ConditionsDistribution,
    apply_camera,
    camera_matrix,
    map_point,
)
from inspectloop.simulator.designs import (
    LABEL_ASPECT,
    Box,
    DesignName,
    LabelDesign,
    Layout,
    design_for,
)
from inspectloop.simulator.fonts import Font, fit_font, load_font
from inspectloop.simulator.products import (
    SERIAL_DIGITS,
    SERIALIZATIONS,
    Serialization,
    Sku,
    datamatrix_modules,
    find_sku,
    linear_modules,
    sample_serial,
)

GENERATOR_VERSION = "1"
"""Bumped whenever the same seed would give different pixels."""

LABEL_WIDTH = 0.86  # of the view
CARTON_FACE = (0.1, 0.9)  # carton face top and bottom, fractions of the view height
SCENE_MARGIN = 1.12  # scene side over view side: room for camera roll and shift
DEFAULT_DISTRIBUTION = ConditionsDistribution()

RGB = tuple[int, int, int]
Image8 = npt.NDArray[np.uint8]


PREPRINT_OMITTABLE = frozenset({"logo", "name", "band"})
TEAR_RESIDUE = (112, 100, 84)
MIN_PARTICLE_POINTS = 12  # candidate spots a contamination defect draws its particles from


def supersample(size: int) -> int:
    """Work resolution over output resolution."""
    return 2 if size < 192 else 1


@dataclass(frozen=True)
class _Element:
    name: str
    plate: Literal["colour", "black"]
    colour: RGB
    mask: Image.Image
    origin: tuple[int, int]


@dataclass(frozen=True)
class _Glyphs:
    """Pre-rendered digits of one font (the faces used have tabular digits: one advance)."""

    ascent: int
    descent: int
    advance: int
    digits: tuple[npt.NDArray[np.uint8], ...]

    def strip(self, digits: str) -> Image.Image:
        """``digits`` as one ink mask, ``ascent + descent`` high."""
        return Image.fromarray(np.concatenate([self.digits[ord(c) - 48] for c in digits], axis=1))


def _glyphs(font: Font) -> _Glyphs:
    ascent, descent = (int(v) for v in font.getmetrics())
    advance = max(1, round(font.getlength("0")))
    digits = []
    for char in "0123456789":
        image = Image.new("L", (advance, ascent + descent), 0)
        ImageDraw.Draw(image).text((0, ascent), char, font=font, fill=255, anchor="ls")
        digits.append(np.asarray(image))
    return _Glyphs(ascent, descent, advance, tuple(digits))


@dataclass(frozen=True)
class FieldPrint:
    """How the line printer lays out the variable data on one label layout."""

    boxes: dict[str, tuple[int, int, int, int]]
    lot_text: str  # as normally printed
    expiry_text: str
    field_font: Font
    field_digits: _Glyphs
    serial_prefix: str
    serial_x: float  # where the serial's digits start
    hri_font: Font | None
    hri_digits: _Glyphs | None
    hri_prefix: str
    hri_x: float  # where the human-readable line starts

    def print_text(
        self,
        draw: ImageDraw.ImageDraw,
        lot_text: str,
        expiry_text: str,
        omit: frozenset[str],
        offset: tuple[int, int],
    ) -> None:
        """Prints lot, expiry and the fixed prefixes of the serial and human-readable line."""
        ox, oy = offset
        for name, text in (
            ("lot", lot_text),
            ("expiry", expiry_text),
            ("serial", self.serial_prefix),
        ):
            if name not in omit:
                x0, y0, _, y1 = self.boxes[name]
                draw.text(
                    (x0 + ox, (y0 + y1) / 2 + oy), text, font=self.field_font, fill=255, anchor="lm"
                )
        if self.hri_font is not None and "hri" not in omit:
            _, y0, _, y1 = self.boxes["hri"]
            draw.text(
                (self.hri_x + ox, (y0 + y1) / 2 + oy),
                self.hri_prefix,
                font=self.hri_font,
                fill=255,
                anchor="lm",
            )

    def print_serial(
        self, ink: Image.Image, serial: str, omit: frozenset[str], offset: tuple[int, int]
    ) -> None:
        """Prints the unit's serial digits (in the serial field and the human-readable line)."""
        ox, oy = offset
        if "serial" not in omit:
            _, y0, _, y1 = self.boxes["serial"]
            g = self.field_digits
            top = (y0 + y1) / 2 - (g.ascent + g.descent) / 2
            ink.paste(255, (round(self.serial_x + ox), round(top + oy)), mask=g.strip(serial))
        if self.hri_font is not None and self.hri_digits is not None and "hri" not in omit:
            _, y0, _, y1 = self.boxes["hri"]
            g = self.hri_digits
            top = (y0 + y1) / 2 - (g.ascent + g.descent) / 2
            x = self.hri_x + self.hri_font.getlength(self.hri_prefix)
            ink.paste(255, (round(x + ox), round(top + oy)), mask=g.strip(serial))


@dataclass(frozen=True)
class StaticLabel:
    """The cached, per-unit-invariant part of one label at one resolution."""

    width: int
    height: int
    design: LabelDesign
    layout: Layout
    elements: tuple[_Element, ...]
    preprint: Image.Image  # all pre-printed elements
    fixed_ink: Image.Image  # L mask: lot, expiry and prefixes as normally printed
    fields: FieldPrint
    boxes: dict[str, tuple[int, int, int, int]]
    band_edges: tuple[str, ...]
    stock_points: npt.NDArray[np.float64]  # blank label, for particles
    smudge_points: npt.NDArray[np.float64]  # print area off the band, for smudges

    def element_box(self, name: str) -> tuple[float, float, float, float]:
        """Where element ``name`` (pre-printed or a variable field) is, in label pixels."""
        if name in self.boxes:
            x0, y0, x1, y1 = self.boxes[name]
            return (float(x0), float(y0), float(x1), float(y1))
        for element in self.elements:
            if element.name == name:
                x, y = element.origin
                return (
                    float(x),
                    float(y),
                    float(x + element.mask.width),
                    float(y + element.mask.height),
                )
        raise KeyError(name)

    def compose(self, omit: frozenset[str], colour_shift: tuple[int, int]) -> Image.Image:
        """The pre-printed label without ``omit`` and with the colour plate shifted."""
        image = Image.new("RGB", (self.width, self.height), self.design.palette.stock)
        for element in self.elements:
            if element.name in omit:
                continue
            x, y = element.origin
            if element.plate == "colour":
                x, y = x + colour_shift[0], y + colour_shift[1]
            image.paste(element.colour, box=(x, y), mask=element.mask)
        return image


@dataclass(frozen=True)
class Scene:
    """The carton under the camera, at work resolution."""

    view: int
    side: int
    carton: Image.Image
    label_size: tuple[int, int]

    @property
    def label_origin(self) -> tuple[float, float]:
        """Top-left of a straight, centred label."""
        return ((self.side - self.label_size[0]) / 2, (self.side - self.label_size[1]) / 2)


@dataclass
class _Printing:
    """What the printers do to one unit (defects included)."""

    lot_text: str
    expiry_text: str
    omit: frozenset[str] = frozenset()
    colour_shift: tuple[int, int] = (0, 0)
    overprint: tuple[int, int] = (0, 0)
    stripe: tuple[float, float] | None = None
    params: dict[str, Any] = field(default_factory=dict)
    box: tuple[float, float, float, float] | None = None  # label pixels


@dataclass
class _Damage:
    """What happened to one unit's label after printing."""

    alpha: Image.Image | None = None  # the label's shape, where torn
    box: tuple[float, float, float, float] | None = None  # label pixels
    angle: float = 0.0  # skew against the carton
    params: dict[str, Any] = field(default_factory=dict)


class LabelRenderer:
    """Renders label images; holds the caches of static parts (one per process is plenty).

    ``use_cache=False`` rebuilds the static parts for every image: the baseline that the
    benchmark compares the cache against.
    """

    def __init__(
        self, distribution: ConditionsDistribution = DEFAULT_DISTRIBUTION, *, use_cache: bool = True
    ) -> None:
        self.distribution = distribution
        self.use_cache = use_cache
        self._static: dict[tuple[Sku, LabelDesign, str, int], StaticLabel] = {}
        self._scenes: dict[tuple[int, int], Scene] = {}

    def static_label(
        self, sku: Sku, design: LabelDesign, serialization: Serialization, view: int
    ) -> StaticLabel:
        """The cached static label (built on first use)."""
        key = (sku, design, serialization, view)
        cached = self._static.get(key) if self.use_cache else None
        if cached is None:
            cached = _build_static(sku, design, serialization, view)
            if self.use_cache:
                self._static[key] = cached
        return cached

    def scene(self, view: int, size: int) -> Scene:
        """The cached carton scene for a ``view``-pixel work view."""
        cached = self._scenes.get((view, size)) if self.use_cache else None
        if cached is None:
            cached = _build_scene(view, size)
            if self.use_cache:
                self._scenes[(view, size)] = cached
        return cached

    def render(
        self,
        sku: Sku | str,
        design: LabelDesign | DesignName,
        serialization: Serialization,
        *,
        rng: np.random.Generator,
        defect: dfx.DefectClass | None = None,
        severity: float = 0.5,
        conditions: Conditions | None = None,
        distribution: ConditionsDistribution | None = None,
        size: int = 128,
    ) -> tuple[Image8, dict[str, Any]]:
        """One camera image (``size`` x ``size`` x 3, uint8) of one unit, and its metadata.

        ``sku`` is a ``Sku`` or an id of the default catalogue. ``conditions`` fixes the camera
        conditions; otherwise they are drawn from ``distribution`` (default: this renderer's).
        """
        if isinstance(sku, str):
            sku = find_sku(sku)
        if isinstance(design, str):
            design = design_for(sku, design)
        if defect is not None and defect not in dfx.DEFECT_CLASSES:
            raise ValueError(f"unknown defect {defect!r}; choose from {dfx.DEFECT_CLASSES}")
        if serialization not in SERIALIZATIONS:
            raise ValueError(f"unknown serialization {serialization!r}")
        if size < 32:
            raise ValueError("size must be >= 32")
        severity = dfx.check_severity(severity)
        unit_rng, cond_rng, defect_rng = rng.spawn(3)
        serial = sample_serial(unit_rng)
        placement = unit_rng.uniform(-1.0, 1.0, size=2)
        if conditions is None:
            conditions = (distribution or self.distribution).sample(cond_rng)

        ss = supersample(size)
        view = size * ss
        static = self.static_label(sku, design, serialization, view)
        scene = self.scene(view, size)

        printing = _plan_printing(static, sku, defect, severity, defect_rng)
        label, ink, code_box = _print_label(static, sku, serialization, serial, printing)
        damage = _damage_label(
            label,
            ink,
            static,
            code_box=code_box,
            defect=defect,
            severity=severity,
            rng=defect_rng,
        )

        canvas = scene.carton.copy()
        jitter = 0.006 * view
        lx = round(scene.label_origin[0] + float(placement[0]) * jitter)
        ly = round(scene.label_origin[1] + float(placement[1]) * jitter)
        _place_label(canvas, label, damage, lx, ly)
        scene_box = _scene_box(
            damage.box or printing.box,
            angle=damage.angle,
            defect=defect,
            lx=lx,
            ly=ly,
            label_size=label.size,
        )
        if defect == "contamination":
            points = static.stock_points
            picks = defect_rng.choice(len(points), size=MIN_PARTICLE_POINTS, replace=False)
            spots = points[picks] + np.array([lx, ly], dtype=np.float64)
            scene_box = dfx.draw_particles(canvas, spots, view, severity, defect_rng)

        image = apply_camera(canvas, conditions, size, float(ss), cond_rng)

        bbox = None if scene_box is None else _to_output(scene_box, conditions, size, scene, ss)
        metadata: dict[str, Any] = {
            "generator_version": GENERATOR_VERSION,
            "product": "label",
            "label": defect or dfx.GOOD,
            "defect": defect,
            "severity": round(severity, 4) if defect else 0.0,
            "defect_params": dfx.describe({**printing.params, **damage.params}),
            "defect_bbox": bbox,
            "sku": sku.sku_id,
            "sku_info": dict(_sku_info(sku)),
            "design": design.name,
            "serialization": serialization,
            "serial": serial,
            "element_string": sku.element_string(serial),
            "printed": {
                "lot": None if "lot" in printing.omit else printing.lot_text,
                "expiry": None if "expiry" in printing.omit else printing.expiry_text,
                "serial": None if "serial" in printing.omit else design.serial_text(serial),
            },
            "conditions": conditions.to_dict(),
            "size": size,
        }
        return image, metadata


@cache
def _sku_info(sku: Sku) -> dict[str, Any]:
    return sku.to_dict()


def _plan_printing(
    static: StaticLabel,
    sku: Sku,
    defect: str | None,
    severity: float,
    rng: np.random.Generator,
) -> _Printing:
    design = static.design
    printing = _Printing(lot_text=design.lot_text(sku.lot), expiry_text=design.expiry_text(sku))
    if defect == "missing_print":
        plan = dfx.plan_missing(severity, rng, static.layout.hri is not None)
        printing.omit, printing.stripe = plan.omit, plan.stripe
        printing.params.update(variant=plan.variant, omitted=sorted(plan.omit))
    elif defect == "misregistration":
        mis = dfx.plan_misregistration(severity, rng, static.band_edges)
        shift = (round(mis.dx * static.width), round(mis.dy * static.width))
        if mis.variant == "colour-plate":
            printing.colour_shift = shift
        else:
            printing.overprint = shift
        printing.params.update(variant=mis.variant, shift_px=shift)
    elif defect == "wrong_text":
        wrong = dfx.plan_wrong_fields(severity, rng)
        if "lot" in wrong:
            printing.lot_text = design.lot_text(dfx.mutate_value(sku.lot, severity, rng))
        if "expiry" in wrong:
            prefix, value = _split_label(printing.expiry_text)
            printing.expiry_text = prefix + dfx.mutate_value(value, severity, rng)
        printing.params.update(fields=list(wrong))
    return printing


def _print_label(
    static: StaticLabel,
    sku: Sku,
    serialization: Serialization,
    serial: str,
    printing: _Printing,
) -> tuple[Image.Image, Image.Image, tuple[int, int, int, int]]:
    """The pre-printed label, the line printer's ink mask (not yet laid down, so that code
    damage can clear ink rather than paper) and the code's box."""
    omit = printing.omit
    preprint_omit = omit & PREPRINT_OMITTABLE
    if preprint_omit or printing.colour_shift != (0, 0):
        label = static.compose(preprint_omit, printing.colour_shift)
    else:
        label = static.preprint.copy()
    fixed = (
        printing.overprint == (0, 0)
        and printing.lot_text == static.fields.lot_text
        and printing.expiry_text == static.fields.expiry_text
        and not omit & {"lot", "expiry", "serial", "hri"}
    )
    if fixed:
        ink = static.fixed_ink.copy()
    else:
        ink = Image.new("L", label.size, 0)
        static.fields.print_text(
            ImageDraw.Draw(ink), printing.lot_text, printing.expiry_text, omit, printing.overprint
        )
    static.fields.print_serial(ink, serial, omit, printing.overprint)
    code_box = static.boxes["code"]
    if "code" not in omit:
        code_box = _draw_code(ink, static, serialization, sku.payload(serial), printing.overprint)
    if printing.stripe is not None:  # centred on a column that carries ink
        position, width = printing.stripe
        columns = np.flatnonzero(np.asarray(ink).max(axis=0) > 128)
        centre = int(columns[int(position * len(columns))]) if len(columns) else 0
        half = width * static.width / 2
        ImageDraw.Draw(ink).rectangle((centre - half, 0, centre + half, static.height), fill=0)
        printing.params.update(stripe_px=(round(centre - half), round(centre + half)))
        printing.box = (centre - half, 0.0, centre + half, float(static.height))
    elif omit:
        printing.box = _union([static.element_box(name) for name in sorted(omit)])
    elif printing.params.get("fields"):  # wrong text: from the field to the label's edge
        boxes = [static.boxes[name] for name in printing.params["fields"]]
        x0, y0, _, y1 = _union(
            [(float(b[0]), float(b[1]), float(b[2]), float(b[3])) for b in boxes]
        )
        printing.box = (x0, y0, float(static.width), y1)
    return label, ink, code_box


def _damage_label(
    label: Image.Image,
    ink: Image.Image,
    static: StaticLabel,
    *,
    code_box: tuple[int, int, int, int],
    defect: str | None,
    severity: float,
    rng: np.random.Generator,
) -> _Damage:
    """Applies damage to the printed label (and lays the line printer's ink down first)."""
    damage = _Damage()
    if defect == "damaged_code":
        x0, y0 = code_box[:2]
        crop = ink.crop(code_box)
        variant, box = dfx.damage_code(crop, severity, rng)
        ink.paste(crop, (x0, y0))
        damage.box = (box[0] + x0, box[1] + y0, box[2] + x0, box[3] + y0)
        damage.params.update(variant=variant)
    label.paste(static.design.palette.field_text, mask=ink)
    if defect == "ink_smudge":
        points = static.smudge_points
        centre = points[int(rng.integers(0, len(points)))]
        colour = (18, 18, 22) if rng.random() < 0.6 else static.design.palette.band
        damage.box = dfx.draw_smudge(
            label, (float(centre[0]), float(centre[1])), colour, severity, rng
        )
    elif defect == "torn_label":
        if rng.random() < 0.65:
            damage.alpha = Image.new("L", label.size, 255)
            damage.box = dfx.tear_label(label, damage.alpha, severity, rng)
            damage.params.update(variant="tear")
        else:
            damage.box = dfx.wrinkle_label(label, severity, rng)
            damage.params.update(variant="wrinkle")
    elif defect == "skewed_label":
        damage.angle = dfx.skew_angle(severity, rng)
        damage.params.update(angle_deg=damage.angle)
    return damage


def _place_label(
    canvas: Image.Image, label: Image.Image, damage: _Damage, lx: int, ly: int
) -> None:
    if damage.alpha is not None:
        # where the label tore away, the board keeps adhesive and torn fibres: darker, brownish
        hole = damage.alpha.point(lambda v: round((255 - v) * 0.6))
        canvas.paste(TEAR_RESIDUE, (lx, ly), mask=hole)
    if not damage.angle:
        canvas.paste(label, (lx, ly), mask=damage.alpha)
        return
    rgba = label.convert("RGBA")
    if damage.alpha is not None:
        rgba.putalpha(damage.alpha)
    rotated = rgba.rotate(damage.angle, resample=Image.Resampling.BICUBIC, expand=True)
    cx, cy = lx + label.width / 2, ly + label.height / 2
    canvas.paste(
        rotated, (round(cx - rotated.width / 2), round(cy - rotated.height / 2)), mask=rotated
    )


def _scene_box(
    box: tuple[float, float, float, float] | None,
    *,
    angle: float,
    defect: str | None,
    lx: int,
    ly: int,
    label_size: tuple[int, int],
) -> tuple[float, float, float, float] | None:
    """Where the defect is, in scene pixels (the whole label for a layer shift or skew)."""
    w, h = label_size
    if box is not None:
        x0, y0, x1, y1 = box
        return (x0 + lx, y0 + ly, x1 + lx, y1 + ly)
    if defect == "skewed_label":
        return _rotated_box(lx, ly, w, h, angle)
    if defect is not None:
        return (float(lx), float(ly), float(lx + w), float(ly + h))
    return None


def _union(boxes: list[tuple[float, float, float, float]]) -> tuple[float, float, float, float]:
    return (
        min(b[0] for b in boxes),
        min(b[1] for b in boxes),
        max(b[2] for b in boxes),
        max(b[3] for b in boxes),
    )


def _split_label(text: str) -> tuple[str, str]:
    """``"EXP 2027-03"`` -> ``("EXP ", "2027-03")``."""
    head, sep, tail = text.rpartition(" ")
    return (head + sep, tail) if sep else ("", text)


def _rotated_box(
    x: float, y: float, w: float, h: float, angle: float
) -> tuple[float, float, float, float]:
    cx, cy = x + w / 2, y + h / 2
    rad = math.radians(angle)
    hw = (abs(w * math.cos(rad)) + abs(h * math.sin(rad))) / 2
    hh = (abs(w * math.sin(rad)) + abs(h * math.cos(rad))) / 2
    return (cx - hw, cy - hh, cx + hw, cy + hh)


def _to_output(
    box: tuple[float, float, float, float],
    conditions: Conditions,
    size: int,
    scene: Scene,
    ss: int,
) -> list[int]:
    """A scene-pixel box as an output-pixel box (clipped), through the camera's pose."""
    source = scene.side // ss
    matrix = camera_matrix(conditions, size, (source, source), 1.0)
    xs, ys = [], []
    for x, y in ((box[0], box[1]), (box[2], box[1]), (box[0], box[3]), (box[2], box[3])):
        u, v = map_point(matrix, x / ss, y / ss)
        xs.append(u)
        ys.append(v)
    return [
        max(0, math.floor(min(xs))),
        max(0, math.floor(min(ys))),
        min(size, math.ceil(max(xs))),
        min(size, math.ceil(max(ys))),
    ]


# --- codes ------------------------------------------------------------------------------------


def _draw_code(
    ink: Image.Image,
    static: StaticLabel,
    serialization: Serialization,
    payload: str,
    offset: tuple[int, int],
) -> tuple[int, int, int, int]:
    """Prints the code for ``payload``; returns the symbol's box."""
    x0, y0, x1, y1 = static.boxes["code"]
    w, h = x1 - x0, y1 - y0
    if serialization == "gs1-dm":
        grid = datamatrix_modules(payload)
        side = min(w, h)
        modules = Image.fromarray(grid.astype(np.uint8) * 255)
        symbol = modules.resize((side, side), Image.Resampling.BOX)
        left = x0 + (w - side) // 2 + offset[0]
        top = y0 + (h - side) // 2 + offset[1]
        ink.paste(symbol, (left, top))
        return (left, top, left + side, top + side)
    bars = linear_modules(payload)
    row = Image.fromarray((bars.astype(np.uint8) * 255)[None, :])
    symbol = row.resize((w, 1), Image.Resampling.BOX).resize((w, h), Image.Resampling.NEAREST)
    ink.paste(symbol, (x0 + offset[0], y0 + offset[1]))
    return (x0 + offset[0], y0 + offset[1], x1 + offset[0], y1 + offset[1])


# --- static parts -------------------------------------------------------------------------


def _label_size(view: int) -> tuple[int, int]:
    width = round(LABEL_WIDTH * view)
    return width, round(width / LABEL_ASPECT)


def _build_static(
    sku: Sku, design: LabelDesign, serialization: Serialization, view: int
) -> StaticLabel:
    layout = design.layout(serialization)
    width, height = _label_size(view)
    elements = _preprint_elements(sku, design, layout, width, height)
    fields = _field_print(sku, design, layout, width, height)
    fixed_ink = Image.new("L", (width, height), 0)
    fields.print_text(
        ImageDraw.Draw(fixed_ink), fields.lot_text, fields.expiry_text, frozenset(), (0, 0)
    )
    static = StaticLabel(
        width=width,
        height=height,
        design=design,
        layout=layout,
        elements=elements,
        preprint=Image.new("RGB", (1, 1)),
        fixed_ink=fixed_ink,
        fields=fields,
        boxes=fields.boxes,
        band_edges=_band_edges(layout.band),
        stock_points=np.zeros((0, 2)),
        smudge_points=np.zeros((0, 2)),
    )
    preprint = static.compose(frozenset(), (0, 0))
    stock_points, smudge_points = _landing_points(preprint, fixed_ink, design, fields.boxes)
    return replace(
        static, preprint=preprint, stock_points=stock_points, smudge_points=smudge_points
    )


def _preprint_elements(
    sku: Sku, design: LabelDesign, layout: Layout, width: int, height: int
) -> tuple[_Element, ...]:
    """The pre-printed label, element by element (each its own ink mask and plate)."""
    palette = design.palette
    face = design.typeface
    elements: list[_Element] = []

    def add(name: str, plate: Literal["colour", "black"], colour: RGB, mask: Image.Image) -> None:
        bbox = mask.getbbox()
        if bbox is not None:
            elements.append(_Element(name, plate, colour, mask.crop(bbox), (bbox[0], bbox[1])))

    def blank() -> tuple[Image.Image, ImageDraw.ImageDraw]:
        mask = Image.new("L", (width, height), 0)
        return mask, ImageDraw.Draw(mask)

    def text_in(box: Box, text: str, font_face: str, anchor: str = "lm") -> Image.Image:
        mask, draw = blank()
        x0, y0, x1, y1 = box.px(width, height)
        font = fit_font(font_face, text, x1 - x0, y1 - y0)
        x = x0 if anchor[0] == "l" else (x0 + x1) / 2
        draw.text((x, (y0 + y1) / 2), text, font=font, fill=255, anchor=anchor)
        return mask

    mask, draw = blank()
    draw.rectangle(layout.band.px(width, height), fill=255)
    add("band", "colour", palette.band, mask)
    if layout.strength_pill:
        mask, draw = blank()
        x0, y0, x1, y1 = layout.strength.px(width, height)
        draw.rounded_rectangle((x0 - 0.02 * width, y0, x1, y1), radius=(y1 - y0) // 2, fill=255)
        add("pill", "colour", palette.accent, mask)
    for k, rule in enumerate(layout.rules):
        mask, draw = blank()
        draw.rectangle(rule.px(width, height), fill=255)
        add(f"rule{k}", "colour", palette.accent, mask)
    mask, _ = blank()
    _draw_logo(mask, layout.logo.px(width, height), design.logo)
    add("logo", "colour", palette.band_text, mask)
    name = sku.drug_name.upper() if design.text.name_upper else sku.drug_name
    add(
        "name",
        "colour" if layout.name_on_band else "black",
        palette.band_text if layout.name_on_band else palette.text,
        text_in(layout.name, name, face.name),
    )
    add(
        "rx",
        "colour",
        palette.band_text if layout.rx_on_band else palette.band,
        text_in(layout.rx, design.text.rx, face.name, "mm"),
    )
    add("strength", "black", palette.text, text_in(layout.strength, sku.strength, face.name))
    form = design.text.form.format(pack_size=sku.pack_size, form=sku.dosage_form)
    add("form", "black", palette.text, text_in(layout.form, form, face.body))
    add(
        "manufacturer",
        "black",
        palette.text,
        text_in(layout.manufacturer, sku.manufacturer, face.body),
    )
    return tuple(elements)


def _field_print(
    sku: Sku, design: LabelDesign, layout: Layout, width: int, height: int
) -> FieldPrint:
    """Fonts and positions of the variable data: one size for the three fields, fitted to the
    longest of their normal texts."""
    face = design.typeface
    samples = {
        "lot": design.lot_text(sku.lot),
        "expiry": design.expiry_text(sku),
        "serial": design.serial_text("0" * SERIAL_DIGITS),
    }
    boxes = {name: layout.field_box(name).px(width, height) for name in samples}
    size = min(_fit_size(face.fields, text, boxes[name]) for name, text in samples.items())
    field_font = load_font(face.fields, size)
    boxes["code"] = layout.code.px(width, height)
    boxes["band"] = layout.band.px(width, height)
    hri_font: Font | None = None
    hri_x = 0.0
    if layout.hri is not None:
        boxes["hri"] = layout.hri.px(width, height)
        x0, y0, x1, y1 = boxes["hri"]
        full = sku.element_string("0" * SERIAL_DIGITS)
        hri_font = fit_font(face.body, full, x1 - x0, y1 - y0)
        hri_x = (x0 + x1) / 2 - hri_font.getlength(full) / 2
    serial_prefix = design.serial_text("")
    return FieldPrint(
        boxes=boxes,
        lot_text=samples["lot"],
        expiry_text=samples["expiry"],
        field_font=field_font,
        field_digits=_glyphs(field_font),
        serial_prefix=serial_prefix,
        serial_x=boxes["serial"][0] + field_font.getlength(serial_prefix),
        hri_font=hri_font,
        hri_digits=_glyphs(hri_font) if hri_font is not None else None,
        hri_prefix=sku.element_string(""),
        hri_x=hri_x,
    )


def _landing_points(
    preprint: Image.Image,
    fixed_ink: Image.Image,
    design: LabelDesign,
    boxes: dict[str, tuple[int, int, int, int]],
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Where particles land visibly (blank stock, clear of any print) and where smudges go
    (off the colour band), in label pixels."""
    width, height = preprint.size
    full = preprint.copy()
    full.paste(design.palette.field_text, mask=fixed_ink)
    grey = np.asarray(full.convert("L"), dtype=np.int16)
    stock_grey = np.asarray(Image.new("RGB", (1, 1), design.palette.stock).convert("L"))[0, 0]
    stock = np.abs(grey - int(stock_grey)) < 12
    margin = round(0.05 * height)
    # Keep particles off the ink; on small renders a 9-pixel erosion can leave no blank stock
    # at all (design B at 48 px), so it shrinks until enough landing points remain.
    for erosion in (9, 5, 3):
        blank_img = Image.fromarray(stock.astype(np.uint8) * 255).filter(
            ImageFilter.MinFilter(erosion)
        )
        blank = np.asarray(blank_img) > 0
        for name in ("serial", "code", "hri"):
            if name in boxes:
                x0, y0, x1, y1 = boxes[name]
                blank[max(y0 - 4, 0) : y1 + 4, max(x0 - 4, 0) : x1 + 4] = False
        blank[:margin, :] = False
        blank[-margin:, :] = False
        blank[:, :margin] = False
        blank[:, -margin:] = False
        ys, xs = np.nonzero(blank[::2, ::2])
        if len(xs) >= MIN_PARTICLE_POINTS:
            break
    stock_points = np.stack([xs * 2, ys * 2], axis=1).astype(np.float64)
    off_band = np.ones((height, width), dtype=bool)
    bx0, by0, bx1, by1 = boxes["band"]
    off_band[by0:by1, bx0:bx1] = False
    off_band[: 2 * margin, :] = False
    off_band[-2 * margin :, :] = False
    off_band[:, : 2 * margin] = False
    off_band[:, -2 * margin :] = False
    ys, xs = np.nonzero(off_band[::3, ::3])
    smudge_points = np.stack([xs * 3, ys * 3], axis=1).astype(np.float64)
    return stock_points, smudge_points


def _fit_size(face: str, text: str, box: tuple[int, int, int, int]) -> int:
    font = fit_font(face, text, box[2] - box[0], box[3] - box[1])
    return int(getattr(font, "size", 10))


def _band_edges(band: Box) -> tuple[str, ...]:
    edges = []
    if band.y0 <= 0.0:
        edges.append("top")
    if band.y1 >= 1.0:
        edges.append("bottom")
    if band.x0 <= 0.0:
        edges.append("left")
    if band.x1 >= 1.0:
        edges.append("right")
    return tuple(edges)


def _draw_logo(mask: Image.Image, box: tuple[int, int, int, int], kind: str) -> None:
    draw = ImageDraw.Draw(mask)
    x0, y0, x1, y1 = box
    side = min(x1 - x0, y1 - y0)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    r = side / 2
    stroke = max(2, round(side * 0.11))
    if kind == "cross-circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), outline=255, width=stroke)
        arm, half = r * 0.55, stroke * 0.9
        draw.rectangle((cx - half, cy - arm, cx + half, cy + arm), fill=255)
        draw.rectangle((cx - arm, cy - half, cx + arm, cy + half), fill=255)
    else:  # hex-leaf: a hexagon with a three-armed molecule inside
        corners = [
            (
                cx + r * math.cos(math.pi / 6 + k * math.pi / 3),
                cy + r * math.sin(math.pi / 6 + k * math.pi / 3),
            )
            for k in range(6)
        ]
        draw.polygon(corners, outline=255, width=stroke)
        for k in range(3):
            a = -math.pi / 2 + k * 2 * math.pi / 3
            draw.line(
                (cx, cy, cx + 0.55 * r * math.cos(a), cy + 0.55 * r * math.sin(a)),
                fill=255,
                width=stroke,
            )
        dot = stroke * 1.2
        draw.ellipse((cx - dot, cy - dot, cx + dot, cy + dot), fill=255)


def _build_scene(view: int, size: int) -> Scene:
    ss = view // size
    side = ss * round(size * SCENE_MARGIN)
    offset = (side - view) / 2
    rng = np.random.default_rng(0x5CE4E)  # fixed: the carton is part of the set, not the sample
    board = np.empty((side, side, 3), dtype=np.float32)
    board[:] = np.array([206, 199, 186], dtype=np.float32)
    # faint board texture: low-frequency blotches plus fine grain
    coarse = rng.standard_normal((side // 16 + 2, side // 16 + 2)).astype(np.float32)
    coarse_img = Image.fromarray(((coarse * 20) + 128).clip(0, 255).astype(np.uint8))
    blotch = np.asarray(coarse_img.resize((side, side), Image.Resampling.BICUBIC), np.float32)
    board += ((blotch - 128) * 0.12)[:, :, None]
    board += rng.standard_normal((side, side, 1)).astype(np.float32) * 2.0
    top = round(offset + CARTON_FACE[0] * view)
    bottom = round(offset + CARTON_FACE[1] * view)
    belt = np.array([58, 60, 64], dtype=np.float32)
    board[:top] = belt + rng.standard_normal((top, side, 1)).astype(np.float32) * 3
    board[bottom:] = belt + rng.standard_normal((side - bottom, side, 1)).astype(np.float32) * 3
    board[top : top + max(1, ss)] *= 0.8  # the carton's edges catch less light
    board[bottom - max(1, ss) : bottom] *= 0.8
    carton = Image.fromarray(board.clip(0, 255).astype(np.uint8))
    return Scene(view=view, side=side, carton=carton, label_size=_label_size(view))


@cache
def default_renderer() -> LabelRenderer:
    """The per-process renderer used by ``render_label``."""
    return LabelRenderer()


def render_label(
    sku: Sku | str,
    design: LabelDesign | DesignName,
    serialization: Serialization,
    *,
    rng: np.random.Generator,
    defect: dfx.DefectClass | None = None,
    severity: float = 0.5,
    conditions: Conditions | None = None,
    distribution: ConditionsDistribution | None = None,
    size: int = 128,
) -> tuple[Image8, dict[str, Any]]:
    """One label image and its metadata (see ``LabelRenderer.render``); ``conditions`` fixes
    the camera conditions, otherwise they are drawn from ``distribution`` (default: nominal
    line variation)."""
    return default_renderer().render(
        sku,
        design,
        serialization,
        rng=rng,
        defect=defect,
        severity=severity,
        conditions=conditions,
        distribution=distribution,
        size=size,
    )


def encode_png(image: Image8) -> bytes:
    """PNG bytes of an 8-bit RGB (``H x W x 3``) or grey (``H x W``) image, deterministic and
    fast: every row Sub-filtered, deflated Huffman-only (sensor noise defeats string matching:
    this is ~4x faster than Pillow's default and smaller), no metadata chunks, no timestamps."""
    if image.dtype != np.uint8 or image.ndim not in (2, 3):
        raise ValueError("encode_png takes uint8 H x W or H x W x 3 arrays")
    height, width = image.shape[:2]
    channels = 1 if image.ndim == 2 else image.shape[2]
    colour_type = {1: 0, 3: 2}.get(channels)
    if colour_type is None:
        raise ValueError("encode_png takes 1 or 3 channels")
    flat = np.ascontiguousarray(image).reshape(height, width * channels)
    rows = np.empty((height, width * channels + 1), dtype=np.uint8)
    rows[:, 0] = 1  # filter type Sub
    rows[:, 1 : 1 + channels] = flat[:, :channels]
    np.subtract(flat[:, channels:], flat[:, :-channels], out=rows[:, 1 + channels :])
    deflate = zlib.compressobj(6, zlib.DEFLATED, 15, 9, zlib.Z_HUFFMAN_ONLY)
    data = deflate.compress(rows.tobytes()) + deflate.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)
    return b"".join(
        (b"\x89PNG\r\n\x1a\n", _chunk(b"IHDR", header), _chunk(b"IDAT", data), _chunk(b"IEND", b""))
    )


def _chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))
