"""Design "N": a pharma carton label drawn by a generator independent of ``inspectloop``.

The product's simulator draws designs "A" and "B". Tests and benchmarks that check the platform
can learn a design it has never seen need images from a generator that shares no code with it:
this module uses only numpy and Pillow (with Pillow's bundled default typeface) and imports
nothing from ``inspectloop``.

The label: a thin dark frame, a coloured header band with a round logo and the brand name, a
thin gold rule, two columns of black print (left: product name, form, strength in a tinted box,
pack text; right: lot, expiry) and a 2D-code-like matrix bottom right. It lies on a textured grey
conveyor belt under a camera whose pose, exposure, focus, lighting and noise vary per unit.

Every unit draws three seeds from the caller's generator: one for the unit (belt patch, code
content), one for the camera and one for the defect. ``_render`` takes those seeds, so the same
seeds rendered as "good" and as a defect give the same unit under the same camera conditions.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from functools import cache

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw, ImageFilter, ImageFont

DESIGN_NAME = "N"
DEFECT_CLASSES = (
    "good",
    "ink_smudge",
    "missing_print",
    "misregistration",
    "wrong_text",
    "torn_label",
    "contamination",
    "skewed_label",
    "damaged_code",
)
SKUS = ("SKU-01", "SKU-02", "SKU-03", "SKU-04")

RGB = tuple[int, int, int]
Box = tuple[float, float, float, float]
FloatImage = npt.NDArray[np.float32]
Seeds = tuple[int, int, int]

_PRODUCTS: dict[str, tuple[str, RGB]] = {
    "SKU-01": ("Cardiprex", (176, 30, 52)),
    "SKU-02": ("Neurolin", (0, 118, 124)),
    "SKU-03": ("Gastrozol", (214, 104, 16)),
    "SKU-04": ("Pulmovant", (92, 58, 148)),
}
_STOCK: RGB = (248, 248, 244)
_FRAME: RGB = (38, 48, 66)
_GOLD: RGB = (196, 156, 48)
_INK: RGB = (22, 22, 26)
_WHITE: RGB = (252, 252, 252)

_LABEL_WIDTH = 0.80  # of the camera's field of view
_LABEL_ASPECT = 1.45  # width / height
_CODE_MODULES = 14

# Replacement lines for wrong_text: each changes the line's length or shape noticeably.
_WRONG_TEXT: dict[str, tuple[str, ...]] = {
    "strength": ("250 mg", "0.5 mg", "1000 mg", "5 mcg"),
    "lot": ("LOT 9X", "L-88", "LOT 2A"),
    "expiry": ("EXP 28", "EXPIRED", "EXP 9"),
    "name": ("Xylo", "Ab", "Tetra-Q"),
    "form": ("oral solution", "sachets"),
}


# --- artwork: elements on two printing plates -----------------------------------------------------


@dataclass(frozen=True)
class _Text:
    text: str
    x: float  # label px
    y: float
    size: int
    anchor: str = "lm"
    bold: bool = False


@dataclass(frozen=True)
class _Element:
    name: str
    plate: str  # "colour" or "black"
    colour: RGB
    mask: FloatImage  # (H, W) coverage in [0, 1]
    box: Box  # x0, y0, x1, y1 in label px
    text: _Text | None = None


@dataclass(frozen=True)
class _Artwork:
    width: int
    height: int
    elements: tuple[_Element, ...]
    good: FloatImage  # (H, W, 3), everything but the code
    code_box: tuple[int, int, int]  # x0, y0, side
    frame: int


@cache
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=max(4, size))


def _text_mask(width: int, height: int, spec: _Text) -> tuple[FloatImage, Box]:
    image = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(image)
    stroke = max(1, round(spec.size / 14)) if spec.bold else 0
    draw.text(
        (spec.x, spec.y),
        spec.text,
        fill=255,
        font=_font(spec.size),
        anchor=spec.anchor,
        stroke_width=stroke,
        stroke_fill=255,
    )
    box = draw.textbbox(
        (spec.x, spec.y), spec.text, font=_font(spec.size), anchor=spec.anchor, stroke_width=stroke
    )
    return np.asarray(image, dtype=np.float32) / 255.0, tuple(float(v) for v in box)  # type: ignore[return-value]


def _shape_mask(width: int, height: int, draw_fn: object) -> FloatImage:
    image = Image.new("L", (width, height), 0)
    draw_fn(ImageDraw.Draw(image))  # type: ignore[operator]
    return np.asarray(image, dtype=np.float32) / 255.0


def _tint(colour: RGB, amount: float) -> RGB:
    return tuple(round(c + (255 - c) * amount) for c in colour)  # type: ignore[return-value]


def _shade(colour: RGB, amount: float) -> RGB:
    return tuple(round(c * (1 - amount)) for c in colour)  # type: ignore[return-value]


def _logo_mask(width: int, height: int, cx: float, cy: float, r: float) -> FloatImage:
    """The brand's mark: a white disc with a capsule knocked out at 45 degrees (disc minus pill)."""
    side = max(4, round(2 * r))
    scale = 4
    big = Image.new("L", (side * scale, side * scale), 0)
    draw = ImageDraw.Draw(big)
    draw.ellipse((0, 0, side * scale - 1, side * scale - 1), fill=255)
    pill = Image.new("L", (side * scale, side * scale), 0)
    pd = ImageDraw.Draw(pill)
    w, h = side * scale * 0.74, side * scale * 0.30
    c = side * scale / 2
    pd.rounded_rectangle((c - w / 2, c - h / 2, c + w / 2, c + h / 2), radius=h / 2, fill=255)
    pd.line((c, c - h / 2, c, c + h / 2), fill=0, width=max(1, round(side * scale * 0.05)))
    pill = pill.rotate(45, resample=Image.Resampling.BICUBIC)
    logo = Image.fromarray(
        np.clip(np.asarray(big, np.int16) - np.asarray(pill, np.int16), 0, 255).astype(np.uint8)
    ).resize((side, side), Image.Resampling.LANCZOS)
    canvas = Image.new("L", (width, height), 0)
    canvas.paste(logo, (round(cx - side / 2), round(cy - side / 2)))
    return np.asarray(canvas, dtype=np.float32) / 255.0


@cache
def _artwork(sku: str, width: int) -> _Artwork:
    name, colour = _PRODUCTS[sku]
    w = width
    h = round(width / _LABEL_ASPECT)
    f = max(2, round(0.013 * w))
    elements: list[_Element] = []

    def shape(name_: str, plate: str, colour_: RGB, box: Box, fn: object) -> None:
        elements.append(_Element(name_, plate, colour_, _shape_mask(w, h, fn), box))

    def text(name_: str, plate: str, colour_: RGB, spec: _Text) -> None:
        mask, box = _text_mask(w, h, spec)
        elements.append(_Element(name_, plate, colour_, mask, box, spec))

    header_bottom = 0.25 * h
    # Colour plate.
    shape(
        "frame",
        "colour",
        _FRAME,
        (0, 0, w, h),
        lambda d: (
            d.rectangle((0, 0, w - 1, h - 1), fill=255),
            d.rectangle((f, f, w - 1 - f, h - 1 - f), fill=0),
        ),
    )
    shape(
        "header",
        "colour",
        colour,
        (f, f, w - f, header_bottom),
        lambda d: d.rectangle((f, f, w - 1 - f, header_bottom), fill=255),
    )
    shape(
        "rule",
        "colour",
        _GOLD,
        (f, header_bottom, w - f, header_bottom + 0.03 * h),
        lambda d: d.rectangle((f, header_bottom, w - 1 - f, header_bottom + 0.03 * h), fill=255),
    )
    r = 0.085 * h
    lx, ly = f + 0.055 * w + r / 2, (f + header_bottom) / 2
    elements.append(
        _Element(
            "logo", "colour", _WHITE, _logo_mask(w, h, lx, ly, r), (lx - r, ly - r, lx + r, ly + r)
        )
    )
    text("brand", "colour", _WHITE, _Text("VERIDA", lx + 1.4 * r, ly, round(0.12 * h), bold=True))
    text(
        "rx_badge", "colour", _WHITE, _Text("Rx", w - f - 0.05 * w, ly, round(0.11 * h), "rm", True)
    )
    box_y0, box_y1 = 0.56 * h, 0.75 * h
    shape(
        "strength_box",
        "colour",
        _tint(colour, 0.78),
        (0.055 * w, box_y0, 0.31 * w, box_y1),
        lambda d: d.rounded_rectangle(
            (0.055 * w, box_y0, 0.31 * w, box_y1), radius=0.04 * h, fill=255
        ),
    )
    shape(
        "divider",
        "colour",
        _tint(colour, 0.35),
        (0.525 * w, 0.34 * h, 0.53 * w, 0.92 * h),
        lambda d: d.line(
            (0.527 * w, 0.34 * h, 0.527 * w, 0.92 * h), fill=255, width=max(1, round(0.006 * w))
        ),
    )
    # Black plate: two columns of text.
    x0 = 0.06 * w
    text("name", "black", _INK, _Text(name, x0, 0.375 * h, round(0.14 * h), bold=True))
    text("form", "black", _INK, _Text("film-coated tablets", x0, 0.485 * h, round(0.075 * h)))
    text(
        "strength",
        "black",
        _shade(colour, 0.55),
        _Text("10 mg", 0.1825 * w, (box_y0 + box_y1) / 2, round(0.12 * h), "mm", True),
    )
    text("pack", "black", _INK, _Text("30 tablets  oral use", x0, 0.835 * h, round(0.065 * h)))
    text("storage", "black", _INK, _Text("Store below 25 C", x0, 0.91 * h, round(0.06 * h)))
    x1 = 0.575 * w
    text("lot", "black", _INK, _Text("LOT 24A117", x1, 0.39 * h, round(0.085 * h), bold=True))
    text("expiry", "black", _INK, _Text("EXP 2028-03", x1, 0.50 * h, round(0.085 * h), bold=True))

    side = round(0.36 * h)
    code_box = (round(w - f - 0.045 * w - side), round(h - f - 0.06 * h - side), side)
    good = _compose(w, h, tuple(elements))
    return _Artwork(w, h, tuple(elements), good, code_box, f)


def _compose(
    w: int,
    h: int,
    elements: tuple[_Element, ...],
    *,
    omit: frozenset[str] = frozenset(),
    colour_shift: tuple[int, int] = (0, 0),
    replaced: dict[str, FloatImage] | None = None,
) -> FloatImage:
    replaced = replaced or {}
    label = np.empty((h, w, 3), np.float32)
    label[:] = _STOCK
    for element in elements:
        if element.name in omit:
            continue
        mask = replaced.get(element.name, element.mask)
        if element.plate == "colour" and colour_shift != (0, 0):
            mask = _shift(mask, *colour_shift)
        y0, y1, x0, x1 = _span(mask)
        a = mask[y0:y1, x0:x1, None]
        region = label[y0:y1, x0:x1]
        region *= 1.0 - a
        region += np.asarray(element.colour, np.float32) * a
    return label


def _span(mask: FloatImage) -> tuple[int, int, int, int]:
    """The rows and columns a mask covers: y0, y1, x0, x1 (empty when the mask is blank)."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return 0, 0, 0, 0
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def _shift(mask: FloatImage, dx: int, dy: int) -> FloatImage:
    out = np.zeros_like(mask)
    h, w = mask.shape
    out[max(0, dy) : h + min(0, dy), max(0, dx) : w + min(0, dx)] = mask[
        max(0, -dy) : h + min(0, -dy), max(0, -dx) : w + min(0, -dx)
    ]
    return out


def _code_modules(rng: np.random.Generator) -> npt.NDArray[np.bool_]:
    """A DataMatrix-like symbol: solid left and bottom edges, alternating top and right edges."""
    n = _CODE_MODULES
    modules = rng.random((n, n)) < 0.5
    modules[:, 0] = True
    modules[-1, :] = True
    modules[0, :] = np.arange(n) % 2 == 0
    modules[:, -1] = np.arange(n) % 2 == 1
    modules[-1, -1] = True
    return modules


def _draw_code(label: FloatImage, art: _Artwork, modules: npt.NDArray[np.bool_]) -> None:
    x0, y0, side = art.code_box
    n = modules.shape[0]
    cells = Image.fromarray((~modules).astype(np.uint8) * 255).resize(
        (side, side), Image.Resampling.NEAREST
    )
    a = 1.0 - np.asarray(cells, np.float32)[..., None] / 255.0
    region = label[y0 : y0 + side, x0 : x0 + side]
    label[y0 : y0 + side, x0 : x0 + side] = region * (1 - a) + np.asarray(_INK, np.float32) * a
    del n


def artwork(sku: str, *, size: int = 512) -> npt.NDArray[np.uint8]:
    """The flat, clean digital artwork of the label, ``size`` px wide, as packaging sends it."""
    if sku not in _PRODUCTS:
        raise ValueError(f"unknown SKU {sku!r}")
    art = _artwork(sku, size)
    label = art.good.copy()
    _draw_code(label, art, _code_modules(np.random.default_rng(SKUS.index(sku))))
    return np.clip(label + 0.5, 0, 255).astype(np.uint8)


# --- the scene: belt, placement, camera -----------------------------------------------------------


@cache
def _belt_texture(view: int) -> Image.Image:
    """A conveyor belt twice the view's side: grey rubber with grain, lengthwise streaks, wear."""
    rng = np.random.default_rng(20240611)
    n = 2 * view
    grain = rng.normal(0, 1, (n, n)).astype(np.float32)
    grain = (
        np.asarray(
            Image.fromarray(np.clip(grain * 40 + 128, 0, 255).astype(np.uint8)).filter(
                ImageFilter.GaussianBlur(0.8)
            ),
            np.float32,
        )
        - 128
    )
    streaks = rng.normal(0, 1, (n, 1)).astype(np.float32)
    streaks = np.convolve(streaks[:, 0], np.ones(3) / 3, mode="same")[:, None]
    low = rng.normal(0, 1, (8, 8)).astype(np.float32)
    low_img = Image.fromarray(np.clip(low * 40 + 128, 0, 255).astype(np.uint8)).resize(
        (n, n), Image.Resampling.BICUBIC
    )
    mottling = np.asarray(low_img, np.float32) - 128
    grey = 96 + grain * 0.35 + streaks * 3.0 + mottling * 0.12
    rgb = np.stack([grey * 0.98, grey * 1.0, grey * 1.03], axis=-1)
    return Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8))


@cache
def _grids(size: int) -> tuple[FloatImage, FloatImage]:
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / max(1, size - 1) - 0.5
    return x, y


def _to_scene(
    u: float, v: float, art: _Artwork, centre: tuple[float, float], angle: float
) -> tuple[float, float]:
    """A label pixel's position in the scene, for a label rotated ``angle`` degrees (PIL, CCW)."""
    dx, dy = u - art.width / 2, v - art.height / 2
    t = math.radians(angle)
    return (
        centre[0] + dx * math.cos(t) + dy * math.sin(t),
        centre[1] - dx * math.sin(t) + dy * math.cos(t),
    )


@dataclass(frozen=True)
class _Camera:
    shift: tuple[float, float]  # of the output side
    angle: float
    brightness: float
    contrast: float
    blur: float
    noise: float
    gradient: float
    gradient_dir: float
    tint: tuple[float, float, float]
    noise_seed: int


def _draw_camera(rng: np.random.Generator) -> _Camera:
    return _Camera(
        shift=(float(rng.uniform(-0.04, 0.04)), float(rng.uniform(-0.04, 0.04))),
        angle=float(rng.uniform(-1.5, 1.5)),
        brightness=float(rng.uniform(-0.08, 0.08)),
        contrast=float(rng.uniform(-0.08, 0.08)),
        blur=float(rng.uniform(0.25, 0.7)),
        noise=float(rng.uniform(1.0, 3.5)),
        gradient=float(rng.uniform(0.02, 0.09)),
        gradient_dir=float(rng.uniform(0, 2 * math.pi)),
        tint=tuple(float(v) for v in rng.uniform(0.98, 1.02, 3)),  # type: ignore[arg-type]
        noise_seed=int(rng.integers(0, 2**31)),
    )


def _apply_camera(scene: Image.Image, cam: _Camera, size: int) -> npt.NDArray[np.uint8]:
    image = scene.resize((size, size), Image.Resampling.LANCZOS)
    image = image.filter(ImageFilter.GaussianBlur(cam.blur * size / 128))
    x = np.asarray(image, np.float32) / 255.0
    x = ((x - 0.5) * (1 + cam.contrast) + 0.5) * (1 + cam.brightness)
    gx, gy = _grids(size)
    light = 1 + 2 * cam.gradient * (
        gx * math.cos(cam.gradient_dir) + gy * math.sin(cam.gradient_dir)
    )
    x *= light[..., None]
    x *= np.asarray(cam.tint, np.float32)
    noise = np.random.default_rng(cam.noise_seed).standard_normal((size, size, 3), np.float32)
    x = x * 255.0 + noise * cam.noise
    return np.clip(x + 0.5, 0, 255).astype(np.uint8)


# --- defects on the label -------------------------------------------------------------------------


def _blob_mask(
    rng: np.random.Generator,
    w: int,
    h: int,
    centre: tuple[float, float],
    *,
    length: float,
    width: float,
    soft: float,
) -> FloatImage:
    """A soft irregular streak: overlapping ellipses along a wobbling line, blurred."""
    image = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(image)
    angle = rng.uniform(0, math.pi)
    steps = 7
    for i in range(steps):
        t = (i / (steps - 1) - 0.5) * length
        cx = centre[0] + t * math.cos(angle) + rng.normal(0, width * 0.15)
        cy = centre[1] + t * math.sin(angle) + rng.normal(0, width * 0.15)
        rx = width * rng.uniform(0.35, 0.65)
        ry = width * rng.uniform(0.3, 0.6)
        draw.ellipse((cx - rx, cy - ry, cx + rx, cy + ry), fill=int(rng.integers(170, 256)))
    image = image.filter(ImageFilter.GaussianBlur(soft))
    return np.asarray(image, np.float32) / 255.0


def _ink_smudge(rng: np.random.Generator, label: FloatImage, art: _Artwork, sev: float) -> None:
    printed = [e for e in art.elements if e.plate == "black"]
    target = printed[int(rng.integers(len(printed)))].box
    cx = rng.uniform(target[0], target[2])
    cy = rng.uniform(target[1], target[3])
    w, h = art.width, art.height
    length = (0.10 + 0.22 * sev) * w
    width = (0.06 + 0.07 * sev) * h
    mask = _blob_mask(rng, w, h, (cx, cy), length=length, width=width, soft=0.012 * w + 0.5)
    opacity = 0.55 + 0.4 * sev
    a = (mask * opacity)[..., None]
    ink = np.asarray((40, 36, 44), np.float32)
    label *= 1 - a
    label += ink * a


def _damage_code(rng: np.random.Generator, label: FloatImage, art: _Artwork, sev: float) -> None:
    x0, y0, side = art.code_box
    target = 0.25 + 0.45 * sev + 0.03
    mode = ("white_patch", "black_patch", "scratches")[int(rng.integers(3))]
    image = Image.new("L", (side, side), 0)
    draw = ImageDraw.Draw(image)
    cover = 0.0
    for _ in range(40):
        if mode == "scratches":
            a = rng.uniform(0, math.pi)
            c = rng.uniform(0.15, 0.85, 2) * side
            d = side * 0.8
            draw.line(
                (
                    c[0] - d * math.cos(a),
                    c[1] - d * math.sin(a),
                    c[0] + d * math.cos(a),
                    c[1] + d * math.sin(a),
                ),
                fill=255,
                width=max(2, round(side * rng.uniform(0.07, 0.13))),
            )
        else:
            c = rng.uniform(0.1, 0.9, 2) * side
            r = side * rng.uniform(0.18, 0.32)
            pts = [
                (
                    c[0] + r * rng.uniform(0.6, 1.3) * math.cos(t),
                    c[1] + r * rng.uniform(0.6, 1.3) * math.sin(t),
                )
                for t in np.linspace(0, 2 * math.pi, 9, endpoint=False)
            ]
            draw.polygon(pts, fill=255)
        cover = float(np.mean(np.asarray(image) > 127))
        if cover >= target:
            break
    mask = np.asarray(image.filter(ImageFilter.GaussianBlur(0.6)), np.float32)[..., None] / 255.0
    colour = np.asarray((20, 20, 24) if mode == "black_patch" else (246, 246, 242), np.float32)
    region = label[y0 : y0 + side, x0 : x0 + side]
    label[y0 : y0 + side, x0 : x0 + side] = region * (1 - mask) + colour * mask


def _tear_mask(rng: np.random.Generator, art: _Artwork, sev: float) -> Image.Image:
    """Alpha of the label with an irregular piece torn off an edge or corner (0 where missing)."""
    w, h = art.width, art.height
    area = (0.05 + 0.12 * sev) * w * h
    r = math.sqrt(area / math.pi) * 1.25
    side = int(rng.integers(4))
    along = rng.uniform(0.15, 0.85)
    centre = [
        (along * w, -0.15 * r),
        (w + 0.15 * r, along * h),
        (along * w, h + 0.15 * r),
        (-0.15 * r, along * h),
    ][side]
    if rng.random() < 0.35:  # a corner instead
        centre = (float(rng.choice([0.0, w])), float(rng.choice([0.0, h])))
        r *= 1.35
    # A ragged outline: a few smooth lobes plus fine fibre jitter.
    lobes = [(int(k), rng.uniform(0.06, 0.2), rng.uniform(0, 2 * math.pi)) for k in (2, 3, 5)]
    pts = []
    for t in np.linspace(0, 2 * math.pi, 48, endpoint=False):
        rr = r * (1 + sum(amp * math.sin(k * t + ph) for k, amp, ph in lobes))
        rr *= rng.uniform(0.94, 1.06)
        pts.append((centre[0] + rr * math.cos(t), centre[1] + rr * math.sin(t)))
    alpha = Image.new("L", (w, h), 255)
    ImageDraw.Draw(alpha).polygon(pts, fill=0)
    return alpha


def _wrong_text(rng: np.random.Generator, art: _Artwork, sev: float) -> dict[str, FloatImage]:
    names = list(_WRONG_TEXT)
    count = 1 + int(sev > 0.75)
    picks = rng.choice(len(names), size=count, replace=False)
    by_name = {e.name: e for e in art.elements}
    replaced: dict[str, FloatImage] = {}
    for i in picks:
        element = by_name[names[int(i)]]
        assert element.text is not None
        options = _WRONG_TEXT[element.name]
        new = options[int(rng.integers(len(options)))]
        spec = _Text(
            new,
            element.text.x,
            element.text.y,
            element.text.size,
            element.text.anchor,
            element.text.bold,
        )
        replaced[element.name] = _text_mask(art.width, art.height, spec)[0]
    return replaced


def _contaminate(
    rng: np.random.Generator,
    scene: Image.Image,
    art: _Artwork,
    *,
    centre: tuple[float, float],
    angle: float,
    sev: float,
    view: int,
) -> None:
    draw = ImageDraw.Draw(scene)
    palette = [(30, 28, 26), (58, 40, 24), (120, 62, 28), (30, 60, 150), (70, 70, 74)]
    specks = int(6 + 14 * sev)
    for _ in range(specks):
        u = rng.uniform(0.04, 0.96) * art.width
        v = rng.uniform(0.04, 0.96) * art.height
        x, y = _to_scene(u, v, art, centre, angle)
        r = view * rng.uniform(0.006, 0.012 + 0.01 * sev)
        colour = palette[int(rng.integers(len(palette)))]
        pts = [
            (
                x + r * rng.uniform(0.5, 1.3) * math.cos(t),
                y + r * rng.uniform(0.5, 1.3) * math.sin(t),
            )
            for t in np.linspace(0, 2 * math.pi, 6, endpoint=False)
        ]
        draw.polygon(pts, fill=colour)
    if rng.random() < 0.4 + 0.5 * sev:  # a fibre or hair
        u, v = rng.uniform(0.2, 0.8) * art.width, rng.uniform(0.2, 0.8) * art.height
        x, y = _to_scene(u, v, art, centre, angle)
        a = rng.uniform(0, 2 * math.pi)
        length = view * (0.18 + 0.25 * sev)
        bend = rng.uniform(-1.2, 1.2)
        pts = []
        for t in np.linspace(-0.5, 0.5, 16):
            aa = a + bend * t
            pts.append((x + t * length * math.cos(aa), y + t * length * math.sin(aa)))
        colour = (26, 22, 20) if rng.random() < 0.6 else (60, 44, 30)
        draw.line(pts, fill=colour, width=max(1, round(view * 0.006)), joint="curve")


# --- one unit -------------------------------------------------------------------------------------


def _supersample(size: int) -> int:
    return 2 if size < 256 else 1


def _render(
    seeds: Seeds, label: str, sku: str, *, size: int = 128, severity: float | None = None
) -> npt.NDArray[np.uint8]:
    """One camera image from explicit (unit, camera, defect) seeds.

    The same seeds give the same unit, belt and camera whatever ``label`` is, so a defective
    render differs from the good one by the defect alone.
    """
    if label not in DEFECT_CLASSES:
        raise ValueError(f"unknown label {label!r}")
    if sku not in _PRODUCTS:
        raise ValueError(f"unknown SKU {sku!r}")
    if size < 32:
        raise ValueError("size must be >= 32")
    unit_rng = np.random.default_rng(seeds[0])
    cam = _draw_camera(np.random.default_rng(seeds[1]))
    defect_rng = np.random.default_rng(seeds[2])
    sev = float(defect_rng.uniform(0.3, 1.0)) if severity is None else float(severity)
    if not 0.0 <= sev <= 1.0:
        raise ValueError("severity must be in [0, 1]")

    view = size * _supersample(size)
    art = _artwork(sku, round(_LABEL_WIDTH * view))
    modules = _code_modules(unit_rng)
    belt_offset = unit_rng.uniform(0, view, 2)
    belt_gain = float(unit_rng.uniform(0.85, 1.15))
    shadow = unit_rng.uniform(0.006, 0.014, 2) * view

    # The label itself.
    if label == "missing_print":
        candidates = ("name", "strength", "lot", "expiry", "logo")
        count = 1 + int(sev > 0.6) + int(sev > 0.9)
        picks = defect_rng.choice(len(candidates), size=count, replace=False)
        omit = frozenset(candidates[int(i)] for i in picks)
        img = _compose(art.width, art.height, art.elements, omit=omit)
    elif label == "misregistration":
        dist = (0.025 + 0.045 * sev) * art.width
        a = defect_rng.uniform(0, 2 * math.pi)
        shift = (round(dist * math.cos(a)), round(dist * math.sin(a)))
        img = _compose(art.width, art.height, art.elements, colour_shift=shift)
    elif label == "wrong_text":
        replaced = _wrong_text(defect_rng, art, sev)
        img = _compose(art.width, art.height, art.elements, replaced=replaced)
    else:
        img = art.good.copy()
    _draw_code(img, art, modules)
    if label == "ink_smudge":
        _ink_smudge(defect_rng, img, art, sev)
    elif label == "damaged_code":
        _damage_code(defect_rng, img, art, sev)

    alpha = Image.new("L", (art.width, art.height), 255)
    if label == "torn_label":
        alpha = _tear_mask(defect_rng, art, sev)
        rim = np.asarray(alpha.filter(ImageFilter.MinFilter(3)), np.float32) / 255.0
        edge = (np.asarray(alpha, np.float32) / 255.0 - rim)[..., None]
        img = img * (1 - edge) + np.float32(252) * edge
    label_img = Image.fromarray(np.clip(img + 0.5, 0, 255).astype(np.uint8))

    # Placement on the belt under the camera.
    angle = cam.angle
    if label == "skewed_label":
        angle += float(defect_rng.choice([-1.0, 1.0])) * (4.0 + 8.0 * sev)
    centre = (view / 2 + cam.shift[0] * view, view / 2 + cam.shift[1] * view)
    t = math.radians(cam.angle)
    ox, oy = belt_offset
    c, s = math.cos(t), math.sin(t)
    half = view / 2
    coeffs = (c, s, ox + half - c * half - s * half, -s, c, oy + half + s * half - c * half)
    scene = _belt_texture(view).transform(
        (view, view), Image.Transform.AFFINE, coeffs, resample=Image.Resampling.BILINEAR
    )
    if belt_gain != 1.0:
        scene = Image.eval(scene, lambda p: min(255, round(p * belt_gain)))

    rot_rgb = label_img.rotate(angle, Image.Resampling.BICUBIC, expand=True, fillcolor=_FRAME)
    rot_alpha = alpha.rotate(angle, Image.Resampling.BICUBIC, expand=True, fillcolor=0)
    pos = (round(centre[0] - rot_rgb.width / 2), round(centre[1] - rot_rgb.height / 2))
    shade = rot_alpha.filter(ImageFilter.GaussianBlur(view * 0.008)).point(lambda p: p * 45 // 100)
    scene.paste((0, 0, 0), (pos[0] + round(shadow[0]), pos[1] + round(shadow[1])), shade)
    scene.paste(rot_rgb, pos, rot_alpha)
    if label == "contamination":
        _contaminate(defect_rng, scene, art, centre=centre, angle=angle, sev=sev, view=view)
    return _apply_camera(scene, cam, size)


def render_unit(
    rng: np.random.Generator,
    label: str,
    sku: str,
    *,
    size: int = 128,
    severity: float | None = None,
) -> npt.NDArray[np.uint8]:
    """One ``size`` x ``size`` x 3 uint8 RGB camera image of a unit of ``sku`` with ``label``.

    ``severity`` in [0, 1] scales the defect; drawn uniformly in [0.3, 1] when None.
    """
    seeds = tuple(int(v) for v in rng.integers(0, 2**62, size=3))
    return _render(seeds, label, sku, size=size, severity=severity)  # type: ignore[arg-type]


def sample_units(
    rng: np.random.Generator, n: int, *, defect_rate: float = 0.03, size: int = 128
) -> list[tuple[npt.NDArray[np.uint8], str, str]]:
    """``n`` units of random SKUs, each defective with probability ``defect_rate``.

    Defect classes are uniform among the defective units.
    """
    if not 0.0 <= defect_rate <= 1.0:
        raise ValueError("defect_rate must be in [0, 1]")
    defects = DEFECT_CLASSES[1:]
    out = []
    for _ in range(n):
        sku = SKUS[int(rng.integers(len(SKUS)))]
        label = "good"
        if rng.random() < defect_rate:
            label = defects[int(rng.integers(len(defects)))]
        out.append((render_unit(rng, label, sku, size=size), label, sku))
    return out


def balanced_units(
    rng: np.random.Generator, per_class: int, *, size: int = 128
) -> list[tuple[npt.NDArray[np.uint8], str, str]]:
    """``per_class`` units of every class in ``DEFECT_CLASSES``, random SKUs, in class order."""
    out = []
    for label in DEFECT_CLASSES:
        for _ in range(per_class):
            sku = SKUS[int(rng.integers(len(SKUS)))]
            out.append((render_unit(rng, label, sku, size=size), label, sku))
    return out


def encode_png(image: npt.NDArray[np.uint8]) -> bytes:
    """PNG bytes of an H x W x 3 uint8 RGB image."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image), "RGB").save(buffer, format="PNG")
    return buffer.getvalue()
