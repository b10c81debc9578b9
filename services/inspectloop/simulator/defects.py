"""Label defect synthesis: ground-truth classes, severity, and the drawing primitives.

Every defect takes a ``severity`` in [0, 1]. Severity 0 is the subtlest version that is still
visible to a camera at 128 x 128 (a few output pixels of change, at full contrast); severity 1
is gross. ``render.LabelRenderer`` decides *where* in the pipeline each defect acts (on the print
layers, on the printed label, on the label's placement on the carton, or on the scene); this
module holds the parameter draws and the pixel work.

Classes and what they look like (real causes in brackets):

- ``ink_smudge``: a soft, elongated ink smear with a tail and satellite drops (wet ink rubbed).
- ``missing_print``: variable data not printed — one field at low severity, the whole block at
  high — or a print-head dropout stripe through it, or (high severity) a pre-printed element
  missing (failed printer, empty ribbon, dry plate).
- ``misregistration``: a print layer shifted — the colour plate against the black plate, leaving
  an unprinted gap at the label edge, or the variable-data block against the pre-printed label.
- ``wrong_text``: the lot or expiry printed differs from the SKU's true value. A 128-pixel camera
  cannot read characters, so the wrong value always differs in length (by 3..7 characters) as
  well as in content: a same-length wrong value is a known limitation (only OCR would see it).
- ``torn_label``: a bite torn out of the label edge (the board shows, darkened by adhesive and
  torn fibres, with a white paper rim), or creases (wrinkles) across it.
- ``contamination``: dark particles and fibres lying on the label.
- ``skewed_label``: the label applied at an angle to the carton (4..14 degrees).
- ``damaged_code``: the 2D code or barcode scratched or partly erased.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw, ImageFilter

DefectClass = Literal[
    "ink_smudge",
    "missing_print",
    "misregistration",
    "wrong_text",
    "torn_label",
    "contamination",
    "skewed_label",
    "damaged_code",
]
DEFECT_CLASSES: tuple[DefectClass, ...] = (
    "ink_smudge",
    "missing_print",
    "misregistration",
    "wrong_text",
    "torn_label",
    "contamination",
    "skewed_label",
    "damaged_code",
)
LABEL_DEFECTS = DEFECT_CLASSES  # alias used by the line simulator
GOOD = "good"
LABEL_CLASSES: tuple[str, ...] = (GOOD, *DEFECT_CLASSES)

RGB = tuple[int, int, int]
BBox = tuple[float, float, float, float]


def check_severity(severity: float) -> float:
    """``severity`` as a float, or ValueError outside [0, 1]."""
    value = float(severity)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"severity is in [0, 1], got {severity}")
    return value


def _lerp(low: float, high: float, t: float) -> float:
    return low + (high - low) * t


# --- missing print --------------------------------------------------------------------------

VARIABLE_FIELDS = ("lot", "expiry", "serial")


@dataclass(frozen=True)
class MissingPlan:
    """What is not printed: whole elements, or a dropout stripe: ``(position, width)``, the
    position in [0, 1) picks a column among those the line printer inks, the width is a
    fraction of the label width."""

    variant: Literal["fields", "dropout", "preprint"]
    omit: frozenset[str]
    stripe: tuple[float, float] | None = None


def plan_missing(severity: float, rng: np.random.Generator, has_hri: bool) -> MissingPlan:
    """Draws what a failed printer leaves out."""
    u = float(rng.random())
    if severity > 0.6 and u < 0.25:
        pool = ("logo", "name", "band")
        k = 1 + int(severity > 0.85)
        omit = frozenset(str(x) for x in rng.choice(pool, size=k, replace=False))
        return MissingPlan("preprint", omit)
    if u < 0.65:
        k = 1 + round(2 * severity)
        fields = {str(x) for x in rng.choice(VARIABLE_FIELDS, size=min(k, 3), replace=False)}
        if severity > 0.75:
            fields |= {"code", "hri"} if has_hri else {"code"}
        return MissingPlan("fields", frozenset(fields))
    return MissingPlan(
        "dropout", frozenset(), stripe=(float(rng.random()), _lerp(0.05, 0.2, severity))
    )


# --- misregistration ------------------------------------------------------------------------


@dataclass(frozen=True)
class MisregistrationPlan:
    """A layer shift: which layer and by how much (fractions of label width and height)."""

    variant: Literal["colour-plate", "overprint"]
    dx: float
    dy: float


def plan_misregistration(
    severity: float, rng: np.random.Generator, band_edges: tuple[str, ...]
) -> MisregistrationPlan:
    """Draws a shift. ``band_edges`` are the label edges the colour band touches (``top``,
    ``left``...): the colour plate moves away from one of them, so that the unprinted gap shows."""
    if float(rng.random()) < 0.5:
        amount = _lerp(0.035, 0.12, severity)
        away = {"top": (0.0, 1.0), "bottom": (0.0, -1.0), "left": (1.0, 0.0), "right": (-1.0, 0.0)}
        ux, uy = away[band_edges[int(rng.integers(0, len(band_edges)))]]
        wobble = float(rng.uniform(-0.3, 0.3))
        return MisregistrationPlan(
            "colour-plate", amount * (ux + wobble * uy), amount * (uy + wobble * ux)
        )
    amount = _lerp(0.05, 0.16, severity)
    angle = float(rng.uniform(0, 2 * math.pi))
    return MisregistrationPlan("overprint", amount * math.cos(angle), amount * math.sin(angle))


# --- wrong text -----------------------------------------------------------------------------


def mutate_value(value: str, severity: float, rng: np.random.Generator) -> str:
    """A wrong value for ``value``: different content and 3..7 characters longer or shorter."""
    delta = 3 + round(4 * severity)
    chars = list(value)
    alphabet = "0123456789" if value.replace("-", "").replace("/", "").isdigit() else None
    if len(chars) - delta < 3 or float(rng.random()) < 0.65:
        for _ in range(delta):
            pool = alphabet or "0123456789ABCDEFGHJKLMNPRSTUVWXYZ"
            chars.insert(
                int(rng.integers(1, len(chars) + 1)), pool[int(rng.integers(0, len(pool)))]
            )
    else:
        for _ in range(delta):
            del chars[int(rng.integers(0, len(chars)))]
    # and a changed character, so that the value is wrong even where the length looks plausible
    digits = [i for i, c in enumerate(chars) if c.isdigit()]
    if digits:
        i = digits[int(rng.integers(0, len(digits)))]
        chars[i] = str((int(chars[i]) + int(rng.integers(1, 10))) % 10)
    return "".join(chars)


def plan_wrong_fields(severity: float, rng: np.random.Generator) -> tuple[str, ...]:
    """Which of ``lot``, ``expiry`` is printed wrong (both at high severity, sometimes)."""
    if severity > 0.6 and float(rng.random()) < 0.5:
        return ("lot", "expiry")
    return (("lot", "expiry")[int(rng.integers(0, 2))],)


# --- ink smudge -----------------------------------------------------------------------------


def draw_smudge(
    label: Image.Image,
    centre: tuple[float, float],
    colour: RGB,
    severity: float,
    rng: np.random.Generator,
) -> BBox:
    """A soft ink smear centred near ``centre`` (pixels); returns its bounding box."""
    width = label.size[0]
    length = _lerp(0.11, 0.26, severity) * width
    thickness = length * float(rng.uniform(0.35, 0.6))
    opacity = _lerp(0.75, 0.95, severity)
    angle = float(rng.uniform(0, math.pi))
    pad = int(length) + 4
    side = 2 * pad
    mask = Image.new("L", (side, side), 0)
    draw = ImageDraw.Draw(mask)
    ca, sa = math.cos(angle), math.sin(angle)
    # the blot, then a tail of shrinking, fading dabs along the smear direction
    steps = 6
    for k in range(steps):
        t = k / steps
        r_long = length / 2 * (1 - 0.55 * t)
        r_short = thickness / 2 * (1 - 0.6 * t)
        cx = pad + ca * t * length * 0.6
        cy = pad + sa * t * length * 0.6
        shade = round(255 * (1 - 0.7 * t))
        _ellipse(draw, (cx, cy), (r_long, r_short), angle, shade)
    for _ in range(int(rng.integers(2, 5))):
        r = thickness * float(rng.uniform(0.08, 0.18))
        off = length * float(rng.uniform(0.45, 0.8))
        phi = angle + math.pi + float(rng.uniform(-0.8, 0.8))
        _ellipse(draw, (pad + off * math.cos(phi), pad + off * math.sin(phi)), (r, r), 0.0, 230)
    mask = mask.filter(ImageFilter.GaussianBlur(max(thickness * 0.12, 0.8)))
    mask = mask.point(lambda v: round(v * opacity))
    x0, y0 = round(centre[0]) - pad, round(centre[1]) - pad
    label.paste(colour, box=(x0, y0, x0 + side, y0 + side), mask=mask)
    bbox = mask.getbbox() or (0, 0, side, side)
    return (x0 + bbox[0], y0 + bbox[1], x0 + bbox[2], y0 + bbox[3])


def _ellipse(
    draw: ImageDraw.ImageDraw,
    centre: tuple[float, float],
    radii: tuple[float, float],
    angle: float,
    fill: int,
) -> None:
    (cx, cy), (rx, ry) = centre, radii
    ca, sa = math.cos(angle), math.sin(angle)
    points = []
    for k in range(24):
        t = 2 * math.pi * k / 24
        x, y = rx * math.cos(t), ry * math.sin(t)
        points.append((cx + x * ca - y * sa, cy + x * sa + y * ca))
    draw.polygon(points, fill=fill)


# --- torn / wrinkled ------------------------------------------------------------------------


def tear_label(
    label: Image.Image, alpha: Image.Image, severity: float, rng: np.random.Generator
) -> BBox:
    """Tears a jagged bite out of one edge: clears ``alpha`` there and whitens the torn rim of
    ``label`` (paper fibres). Returns the bounding box of the damage."""
    w, h = label.size
    depth = _lerp(0.13, 0.5, severity) * h
    span = depth * float(rng.uniform(1.1, 1.8))
    edge = int(rng.integers(0, 4))  # 0 top, 1 bottom, 2 left, 3 right
    along = w if edge < 2 else h
    start = float(rng.uniform(0.05 * along, max(0.95 * along - span, 0.05 * along + 1)))
    n = 11
    points: list[tuple[float, float]] = []
    for k in range(n + 1):
        t = k / n
        a = start + span * t
        d = depth * math.sin(math.pi * t) ** 0.7 * float(rng.uniform(0.75, 1.15))
        points.append((a, d))
    poly = [_edge_point(edge, a, d, w, h) for a, d in points]
    poly = [_edge_point(edge, start, -3, w, h), *poly, _edge_point(edge, start + span, -3, w, h)]
    torn = Image.new("L", (w, h), 0)
    ImageDraw.Draw(torn).polygon(poly, fill=255)
    rim = torn.filter(ImageFilter.MaxFilter(5))
    # white fibres on the rim that stays, then cut the bite out
    label.paste((252, 252, 250), mask=rim)
    alpha.paste(0, mask=torn)
    box = rim.getbbox() or (0, 0, w, h)
    return (float(box[0]), float(box[1]), float(box[2]), float(box[3]))


def _edge_point(edge: int, along: float, depth: float, w: int, h: int) -> tuple[float, float]:
    if edge == 0:
        return (along, depth)
    if edge == 1:
        return (along, h - depth)
    if edge == 2:
        return (depth, along)
    return (w - depth, along)


def wrinkle_label(label: Image.Image, severity: float, rng: np.random.Generator) -> BBox:
    """Creases across the label: light on one side of each fold, dark on the other."""
    w, h = label.size
    pixels = np.asarray(label, dtype=np.float32)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    shade = np.ones((h, w), dtype=np.float32)
    folds = 1 + round(2 * severity)
    amp = _lerp(0.22, 0.4, severity)
    width = _lerp(0.025, 0.05, severity) * w
    for _ in range(folds):
        px, py = float(rng.uniform(0.2, 0.8)) * w, float(rng.uniform(0.2, 0.8)) * h
        angle = float(rng.uniform(-0.6, 0.6)) + (math.pi / 2 if rng.random() < 0.6 else 0.0)
        nx, ny = -math.sin(angle), math.cos(angle)
        d = ((xs - px) * nx + (ys - py) * ny) / width
        shade += amp * -2.3 * d * np.exp(-(d**2))
    pixels *= shade[:, :, None]
    np.clip(pixels, 0, 255, out=pixels)
    label.paste(Image.fromarray(pixels.astype(np.uint8)))
    return (0.0, 0.0, float(w), float(h))


# --- contamination --------------------------------------------------------------------------


def draw_particles(
    scene: Image.Image,
    spots: npt.NDArray[np.float64],
    view: float,
    severity: float,
    rng: np.random.Generator,
) -> BBox:
    """Dark specks and fibres at ``spots`` (scene pixels, at least as many as needed)."""
    draw = ImageDraw.Draw(scene)
    count = 3 + round(8 * severity)
    x0 = y0 = math.inf
    x1 = y1 = -math.inf
    for k in range(count):
        cx, cy = float(spots[k % len(spots), 0]), float(spots[k % len(spots), 1])
        tone = int(rng.integers(15, 70))
        colour = (tone + int(rng.integers(0, 25)), tone, max(tone - int(rng.integers(0, 15)), 0))
        if k % 3 == 2:  # a fibre: a thin curved stroke
            length = view * _lerp(0.05, 0.1, severity)
            phi = float(rng.uniform(0, math.pi))
            bend = float(rng.uniform(-0.8, 0.8))
            points = []
            for t in np.linspace(-0.5, 0.5, 6):
                a = phi + bend * float(t)
                points.append(
                    (cx + length * float(t) * math.cos(a), cy + length * float(t) * math.sin(a))
                )
            draw.line(points, fill=colour, width=max(2, round(view * 0.008)))
            r = length / 2
        else:  # a speck: an irregular blob
            r = view * _lerp(0.014, 0.022, severity) * float(rng.uniform(0.85, 1.2))
            points = []
            for j in range(7):
                a = 2 * math.pi * j / 7
                rr = r * float(rng.uniform(0.7, 1.2))
                points.append((cx + rr * math.cos(a), cy + rr * math.sin(a)))
            draw.polygon(points, fill=colour)
        x0, y0 = min(x0, cx - r), min(y0, cy - r)
        x1, y1 = max(x1, cx + r), max(y1, cy + r)
    return (x0, y0, x1, y1)


# --- skew -----------------------------------------------------------------------------------


def skew_angle(severity: float, rng: np.random.Generator) -> float:
    """Degrees between label and carton: 4 at severity 0, 14 at 1, either sign."""
    sign = 1.0 if float(rng.random()) < 0.5 else -1.0
    return sign * _lerp(4.0, 14.0, severity)


# --- damaged code ---------------------------------------------------------------------------


def damage_code(code: Image.Image, severity: float, rng: np.random.Generator) -> tuple[str, BBox]:
    """Scratches or erases part of a code. ``code`` is the crop of the variable-print ink mask
    (``L``, 255 = ink) around the symbol; damage clears ink. Returns variant and box (crop px)."""
    w, h = code.size
    draw = ImageDraw.Draw(code)
    side = min(w, h)
    if float(rng.random()) < 0.5:
        thickness = max(4, round(_lerp(0.08, 0.16, severity) * side))
        scratches = 1 + int(severity > 0.5)
        for _ in range(scratches):
            if w > 1.6 * h:  # barcode: along, across the bars
                ya, yb = float(rng.uniform(0.15, 0.85)) * h, float(rng.uniform(0.15, 0.85)) * h
                line = [(-2.0, ya), (w + 2.0, yb)]
            else:
                ya, yb = float(rng.uniform(0.1, 0.9)) * h, float(rng.uniform(0.1, 0.9)) * h
                line = [(-2.0, ya), (w + 2.0, yb)]
                if float(rng.random()) < 0.5:  # or top to bottom
                    line = [(ya * w / h, -2.0), (yb * w / h, h + 2.0)]
            draw.line(line, fill=0, width=thickness)
        return "scratch", (0.0, 0.0, float(w), float(h))
    frac = _lerp(0.35, 0.6, severity)
    ew, eh = max(frac * w, 0.35 * side), max(frac * h, 0.35 * side)
    ex = float(rng.uniform(0, max(w - ew, 1)))
    ey = float(rng.uniform(0, max(h - eh, 1)))
    points = []
    for j in range(9):
        a = 2 * math.pi * j / 9
        rr = float(rng.uniform(0.8, 1.1))
        points.append(
            (ex + ew / 2 + rr * ew / 2 * math.cos(a), ey + eh / 2 + rr * eh / 2 * math.sin(a))
        )
    draw.polygon(points, fill=0)
    return "erased", (ex, ey, ex + ew, ey + eh)


def describe(params: dict[str, Any]) -> dict[str, Any]:
    """Rounds floats for JSON metadata."""
    out: dict[str, Any] = {}
    for key, value in params.items():
        if isinstance(value, float):
            out[key] = round(value, 4)
        elif isinstance(value, tuple | list):
            out[key] = [round(v, 2) if isinstance(v, float) else v for v in value]
        else:
            out[key] = value
    return out
