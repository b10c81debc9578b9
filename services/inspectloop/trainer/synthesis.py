"""Defects synthesised in image space on good images of a label design the platform has never
seen, for every class of the line's taxonomy.

After a redesign, operators label a few hundred production images of the new design, nearly all
of them good: a plant sees too few defects of a new design to learn them from production alone,
and it has no renderer for its new artwork. So the trainer makes defective images out of the
good ones, with generic image operations that know nothing of how the label was drawn. What
they need to know of the design they learn from its good images (:class:`DesignStatistics`):
where the label lies on the carton (the bright region the good images share), the colours of
the stock, the ink and the carton, and which pixels carry printed marks (dark strokes, coloured
plates). Each class is one operation, its size and contrast set by a severity in [0, 1]:

- ``ink_smudge``: a soft, elongated smear of the darkest ink with a tail and drops;
- ``missing_print``: the printed marks of a region erased to the stock (a field, a block, or a
  print-head dropout stripe);
- ``misregistration``: the coloured plate (saturated pixels) shifted against the rest;
- ``wrong_text``: a field of printed marks lengthened, shortened, or of the same length with
  its characters in another order (a camera at this resolution cannot read characters, but it
  sees a field of another length, or glyphs where this design has others);
- ``torn_label``: a bite out of the label's edge showing the carton, with a paper rim;
- ``contamination``: dark particles and fibres lying on the label;
- ``skewed_label``: the label region rotated on the carton by 4 to 14 degrees;
- ``damaged_code``: scratches and an erased patch across the densest printed region (the code).

:func:`paste_defect` adds the other source: a real defect an operator confirmed on any design,
cut out where it differs most from its own design's good appearance and pasted onto a good image
of the new design.

Every output is a pure function of its inputs and the generator's seed. The images are marked
``synthetic`` wherever they go: they train models, and never count toward a version's
acceptance (``trainer.acceptance``).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw
from scipy import ndimage

from inspectloop.core.taxonomy import DEFECT_CLASSES

log = logging.getLogger(__name__)

Image8 = npt.NDArray[np.uint8]
FloatImage = npt.NDArray[np.float32]
Mask = npt.NDArray[np.bool_]

SUPERSAMPLE = 4  # defect masks are drawn at this many times the image size, then reduced


def _luma(image: FloatImage) -> FloatImage:
    out: FloatImage = image @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return out


def _otsu(values: npt.NDArray[np.float32]) -> float:
    hist, edges = np.histogram(values, bins=64)
    centres = (edges[:-1] + edges[1:]) / 2
    weight = np.cumsum(hist)
    total = weight[-1]
    mean = np.cumsum(hist * centres)
    between = (mean[-1] * weight - mean * total) ** 2 / np.maximum(weight * (total - weight), 1)
    return float(centres[int(np.argmax(between[:-1]))])


def _largest_component(mask: Mask) -> Mask:
    labels, count = ndimage.label(mask)
    if count == 0:
        return mask
    sizes = ndimage.sum(mask, labels, range(1, count + 1))
    return np.asarray(labels == 1 + int(np.argmax(sizes)))


def _offset(image_luma: FloatImage, reference_luma: FloatImage) -> tuple[int, int]:
    """(dy, dx) that moves ``reference_luma`` onto ``image_luma``: phase correlation."""
    a = np.fft.rfft2(image_luma - image_luma.mean())
    b = np.fft.rfft2(reference_luma - reference_luma.mean())
    cross = a * np.conj(b)
    corr = np.fft.irfft2(cross / np.maximum(np.abs(cross), 1e-6), s=image_luma.shape)
    dy, dx = np.unravel_index(int(np.argmax(corr)), corr.shape)
    h, w = image_luma.shape
    return (int(dy) - h if dy > h // 2 else int(dy)), (int(dx) - w if dx > w // 2 else int(dx))


def _detail(luma: FloatImage, window: int = 5) -> FloatImage:
    """Local standard deviation of luma: high where something is printed."""
    mean = ndimage.uniform_filter(luma, window)
    out: FloatImage = np.sqrt(
        np.maximum(ndimage.uniform_filter(luma * luma, window) - mean * mean, 0)
    )
    return out


@dataclass(frozen=True)
class LabelGeometry:
    """Where the label is in one image, and its colours."""

    mask: Mask  # the label's box
    stock: tuple[float, float, float]  # its commonest bright colour (the paper)
    ink: tuple[float, float, float]  # its darkest print
    carton: tuple[float, float, float]  # what surrounds it

    @classmethod
    def of(cls, image: FloatImage) -> LabelGeometry:
        """The label is where the print is: the bright region's detail (text, bands, codes)
        joined up, in its bounding box; the carton and the conveyor are smooth, and their
        common edge is left out by keeping to the bright region's interior."""
        size = image.shape[0]
        luma = _luma(image)
        # The conveyor: the dark that touches the frame. Everything else is carton and label
        # (a dark band printed on the label is not connected to it).
        dark, _ = ndimage.label(luma < _otsu(luma))
        edge_labels = np.unique(np.concatenate([dark[0], dark[-1], dark[:, 0], dark[:, -1]]))
        conveyor = np.isin(dark, edge_labels[edge_labels > 0])
        bright = _largest_component(~conveyor)
        interior = ndimage.binary_erosion(bright, iterations=max(2, size // 40))
        printed = _largest_component(
            ndimage.binary_dilation((_detail(luma) > 12) & interior, iterations=max(2, size // 32))
        )
        x0, y0, x1, y1 = _box(printed if printed.sum() > 0.05 * size * size else bright)
        mask = np.zeros(luma.shape, dtype=bool)
        mask[y0:y1, x0:x1] = True
        ring = ndimage.binary_dilation(mask, iterations=max(2, size // 32)) & ~mask
        label_luma = luma[mask]
        paper = mask & (luma >= np.percentile(label_luma, 60))
        ink = mask & (luma <= np.percentile(label_luma, 2))
        return cls(
            mask=mask,
            stock=_colour(image[paper]),
            ink=_colour(image[ink]),
            carton=_colour(image[ring]) if ring.any() else (0.0, 0.0, 0.0),
        )


def _colour(pixels: FloatImage) -> tuple[float, float, float]:
    r, g, b = (float(v) for v in np.median(pixels, axis=0))
    return r, g, b


@dataclass(frozen=True)
class DesignStatistics:
    """What the good images of one design share: their typical appearance (the per-pixel
    median), against which a confirmed defect is found (:func:`defect_region`)."""

    size: int
    median: FloatImage  # H x W x 3

    @classmethod
    def fit(cls, images: Sequence[Image8] | Image8) -> DesignStatistics:
        """From good images of the design (at least one, the more the better)."""
        stack = np.asarray(images, dtype=np.float32)
        if stack.ndim != 4 or stack.shape[-1] != 3 or not len(stack):
            raise ValueError(f"expected N x H x W x 3 good images, got {stack.shape}")
        return cls(size=stack.shape[1], median=np.median(stack, axis=0).astype(np.float32))


def _print_mask(image: FloatImage, geometry: LabelGeometry) -> Mask:
    """Printed marks on the label: pixels well darker than the stock, or coloured."""
    luma = _luma(image)
    stock_luma = float(_luma(np.array([geometry.stock], dtype=np.float32))[0])
    chroma = image.max(axis=2) - image.min(axis=2)
    marks: Mask = geometry.mask & ((luma < stock_luma - 45) | (chroma > 60))
    return marks


# --- drawing helpers --------------------------------------------------------------------------


def _soft_mask(size: int, draw: Callable[[ImageDraw.ImageDraw, int], None]) -> FloatImage:
    """A mask in [0, 1] drawn at SUPERSAMPLE x the size (``draw(canvas, scale)``), reduced
    with antialiasing."""
    big = size * SUPERSAMPLE
    canvas = Image.new("L", (big, big), 0)
    draw(ImageDraw.Draw(canvas), SUPERSAMPLE)
    small = canvas.resize((size, size), Image.Resampling.LANCZOS)
    return np.asarray(small, dtype=np.float32) / 255.0


def _blend(image: FloatImage, alpha: FloatImage, colour: Sequence[float] | FloatImage) -> None:
    """``image`` <- ``alpha * colour + (1 - alpha) * image``, in place."""
    a = alpha[..., None]
    image *= 1.0 - a
    image += a * np.asarray(colour, dtype=np.float32)


def _point_in(mask: Mask, rng: np.random.Generator, margin: int = 0) -> tuple[int, int]:
    """A random (x, y) inside ``mask``, at least ``margin`` pixels from its edge if possible."""
    inner = ndimage.binary_erosion(mask, iterations=margin) if margin else mask
    ys, xs = np.nonzero(inner if inner.any() else mask)
    if not len(xs):
        h, w = mask.shape
        return w // 2, h // 2
    i = int(rng.integers(len(xs)))
    return int(xs[i]), int(ys[i])


def _box(mask: Mask) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask)
    if not len(xs):
        h, w = mask.shape
        return 0, 0, w, h
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def _lerp(low: float, high: float, t: float) -> float:
    return low + (high - low) * t


# --- the defects ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Context:
    geometry: LabelGeometry
    marks: Mask
    rng: np.random.Generator
    severity: float

    @property
    def label(self) -> Mask:
        return self.geometry.mask

    @property
    def size(self) -> int:
        return self.label.shape[0]


def _ink_smudge(image: FloatImage, c: _Context) -> None:
    size, rng, s = c.size, c.rng, c.severity
    x, y = _point_in(c.label, rng, margin=3)
    length = _lerp(0.035, 0.16, s) * size
    width = _lerp(0.018, 0.06, s) * size
    angle = float(rng.uniform(0, math.pi))
    dx, dy = math.cos(angle), math.sin(angle)

    def draw(d: ImageDraw.ImageDraw, k: int) -> None:
        # The smear: overlapping ellipses thinning towards a tail, and a few drops beside it.
        steps = 9
        for i in range(steps):
            t = i / (steps - 1)
            r = width * (1 - 0.7 * t) / 2
            cx, cy = x + dx * length * (t - 0.3), y + dy * length * (t - 0.3)
            d.ellipse([(cx - r) * k, (cy - r) * k, (cx + r) * k, (cy + r) * k], fill=255)
        for _ in range(int(rng.integers(0, 4))):
            r = width * float(rng.uniform(0.1, 0.25))
            cx = x + float(rng.normal(0, length / 2))
            cy = y + float(rng.normal(0, length / 2))
            d.ellipse([(cx - r) * k, (cy - r) * k, (cx + r) * k, (cy + r) * k], fill=255)

    alpha = ndimage.gaussian_filter(_soft_mask(size, draw), 0.6 + 0.6 * s)
    strength = _lerp(0.55, 0.9, s) * float(rng.uniform(0.85, 1.0))
    _blend(image, np.clip(alpha * strength, 0, 1) * c.label, c.geometry.ink)


def _marked_region(c: _Context, fraction: float) -> Mask:
    """A rectangle of the label holding printed marks, about ``fraction`` of its width."""
    size, rng = c.size, c.rng
    source = c.marks if c.marks.any() else c.label
    x, y = _point_in(source, rng)
    x0, _, x1, _ = _box(c.label)
    w = max(3, round(fraction * (x1 - x0)))
    h = max(3, round(float(rng.uniform(0.06, 0.14)) * size))
    region = np.zeros_like(c.label)
    region[max(y - h // 2, 0) : y + h // 2 + 1, max(x - w // 2, 0) : x + w // 2 + 1] = True
    return region & c.label


def _erase_marks(image: FloatImage, where: Mask, c: _Context) -> None:
    """Printed marks inside ``where`` become the stock, the paper's grain kept."""
    erase = ndimage.binary_dilation(where & c.marks, iterations=1) & c.label
    alpha = ndimage.gaussian_filter(erase.astype(np.float32), 0.5)
    _blend(image, alpha, c.geometry.stock)


def _missing_print(image: FloatImage, c: _Context) -> None:
    rng, s = c.rng, c.severity
    if rng.random() < 0.3:  # a print-head dropout: a vertical stripe through the marks
        x0, _, x1, _ = _box(c.label)
        width = max(2, round(_lerp(0.04, 0.18, s) * (x1 - x0)))
        start = int(rng.integers(x0, max(x0 + 1, x1 - width)))
        stripe = np.zeros_like(c.label)
        stripe[:, start : start + width] = True
        _erase_marks(image, stripe, c)
        return
    for _ in range(1 + round(2 * s)):  # one field at low severity, a block at high
        _erase_marks(image, _marked_region(c, _lerp(0.2, 0.6, s)), c)


def _misregistration(image: FloatImage, c: _Context) -> None:
    size, rng, s = c.size, c.rng, c.severity
    chroma = image.max(axis=2) - image.min(axis=2)
    plate = (chroma > 40) & c.label
    if plate.sum() < 0.01 * size * size:  # hardly any colour: the dark print moves instead
        plate = c.marks
    shift = _lerp(0.018, 0.06, s) * size
    angle = float(rng.uniform(0, 2 * math.pi))
    dx, dy = round(shift * math.cos(angle)), round(shift * math.sin(angle))
    if dx == 0 and dy == 0:
        dx = 2
    moved = np.roll(image, (dy, dx), axis=(0, 1))
    moved_plate = np.roll(plate, (dy, dx), axis=(0, 1)) & c.label
    original = image.copy()
    _blend(image, plate.astype(np.float32), c.geometry.stock)  # where the plate was: paper
    image[moved_plate] = moved[moved_plate]
    # What the plate covered stays printed where the black plate was (marks over colour).
    keep = c.marks & ~plate
    image[keep] = original[keep]


def _dense_print(image: FloatImage, c: _Context) -> tuple[FloatImage, int, int, int]:
    """Edge density over the label (a code is nothing but edges; text has fewer, a colour band
    none inside), its densest point (y, x) and the window it was averaged over."""
    luma = _luma(image)
    edges = np.hypot(ndimage.sobel(luma, 0), ndimage.sobel(luma, 1)) > 120
    window = max(5, c.size // 8)
    density = ndimage.uniform_filter((edges & c.label).astype(np.float32), window)
    density[~c.label] = 0
    y, x = np.unravel_index(int(np.argmax(density)), density.shape)
    return density, int(y), int(x), window


def _dense_regions(density: FloatImage, c: _Context) -> npt.NDArray[np.int32]:
    labels, _ = ndimage.label(
        ndimage.binary_dilation(
            (density > 0.6 * density.max()) & c.label, iterations=max(1, c.size // 64)
        )
    )
    return np.asarray(labels, dtype=np.int32)


def _densest_print_box(image: FloatImage, c: _Context) -> tuple[int, int, int, int]:
    """Where a damaged code shows: the largest region dense in edges (the code, and the bold
    type beside it where they run together), or the window around the densest point."""
    density, y, x, window = _dense_print(image, c)
    region = _largest_component(_dense_regions(density, c) > 0)
    if not region[y, x]:
        half = window // 2
        return x - half, y - half, x + half, y + half
    return _box(region)


def _code_box(image: FloatImage, c: _Context) -> tuple[int, int, int, int]:
    """The 2D code or barcode alone: the dense region around the densest point; bold type is
    dense too, so a region reaching over a quarter of the label is text run together with the
    code, and the window around the densest point is taken instead."""
    density, y, x, window = _dense_print(image, c)
    labels = _dense_regions(density, c)
    if labels[y, x]:
        x0, y0, x1, y1 = _box(labels == labels[y, x])
        if (x1 - x0) * (y1 - y0) <= 0.25 * c.label.sum():
            return x0, y0, x1, y1
    half = window // 2
    return x - half, y - half, x + half, y + half


def _text_lines(image: FloatImage, c: _Context) -> list[tuple[int, int, int, int]]:
    """Boxes of lines of small print (fields such as lot and expiry): dark, uncoloured marks
    joined along the line, a few pixels high, outside the code."""
    chroma = image.max(axis=2) - image.min(axis=2)
    dark = c.marks & (chroma < 60)
    x0, y0, x1, y1 = _code_box(image, c)
    dark[max(0, y0 - 1) : y1 + 1, max(0, x0 - 1) : x1 + 1] = False
    joined = ndimage.binary_closing(dark, structure=np.ones((1, max(3, c.size // 32))))
    labels, _ = ndimage.label(joined)
    tallest = max(3, c.size // 11)  # the name of a product is printed larger
    lines = []
    for index, found in enumerate(ndimage.find_objects(labels), start=1):
        if found is None:
            continue
        component = labels[found] == index
        # Lines printed close together touch once blurred: split a block at its emptiest rows.
        rows = component.sum(axis=1)
        inked = rows > 0.15 * rows.max()
        starts = np.flatnonzero(inked & ~np.concatenate(([False], inked[:-1])))
        stops = np.flatnonzero(inked & ~np.concatenate((inked[1:], [False]))) + 1
        for top, bottom in zip(starts, stops, strict=True):
            band = component[top:bottom]
            cols = np.flatnonzero(band.any(axis=0))
            height, width = bottom - top, int(cols[-1] - cols[0] + 1)
            line_shaped = 2 <= height <= tallest and width >= max(6, c.size // 14)
            if line_shaped and band.sum() >= 0.25 * height * width:
                y0, x0 = found[0].start + int(top), found[1].start + int(cols[0])
                lines.append((x0, y0, x0 + width, y0 + height))
    return lines


def _wrong_text(image: FloatImage, c: _Context) -> None:
    rng = c.rng
    lines = _text_lines(image, c)
    if not lines:
        _missing_print(image, c)  # no field found: the nearest failure a camera sees
        return
    x0, y0, x1, y1 = lines[int(rng.integers(len(lines)))]
    height = y1 - y0
    char = max(2, round(0.6 * (height + 1)))  # one character's advance, roughly
    chars = int(rng.integers(3, 8))
    _, _, lx1, _ = _box(c.label)
    room = lx1 - 1 - x1
    cells = (x1 - x0) // char
    if rng.random() < 0.4 and cells >= 3 and height >= c.size // 20:
        # Another text of the same length: the field's character cells in another order (in
        # type large enough for the camera to show glyph shapes; small print is a blur).
        order = rng.permutation(cells)
        while np.array_equal(order, np.arange(cells)):
            order = rng.permutation(cells)
        field = image[y0:y1, x0 : x0 + cells * char].copy()
        for cell, moved in enumerate(order):
            image[y0:y1, x0 + cell * char : x0 + (cell + 1) * char] = field[
                :, moved * char : (moved + 1) * char
            ]
    elif rng.random() < 0.6 and room >= char * 2:
        # Longer: characters of the field printed again after its end.
        extra = min(chars * char, room, x1 - x0)
        source = slice(x1 - extra, x1)
        target = slice(x1 + 1, x1 + 1 + extra)
        marks = c.marks[y0:y1, source] & ~c.marks[y0:y1, target]
        piece = image[y0:y1, source]
        image[y0:y1, target][marks] = piece[marks]
    else:  # shorter: its last characters not printed
        cut = np.zeros_like(c.label)
        cut[y0:y1, max(x0 + char, x1 - chars * char) : x1] = True
        _erase_marks(image, cut, c)


def _torn_label(image: FloatImage, c: _Context) -> None:
    size, rng, s = c.size, c.rng, c.severity
    edge = c.label & ~ndimage.binary_erosion(c.label, iterations=1)
    x, y = _point_in(edge, rng)
    radius = _lerp(0.05, 0.2, s) * size
    points = []
    for i in range(14):  # a ragged bite around the edge point
        a = 2 * math.pi * i / 14
        r = radius * float(rng.uniform(0.55, 1.0))
        points.append((x + r * math.cos(a), y + r * math.sin(a)))

    def draw(d: ImageDraw.ImageDraw, k: int) -> None:
        d.polygon([(px * k, py * k) for px, py in points], fill=255)

    bite = _soft_mask(size, draw) * c.label
    rim = np.clip(ndimage.gaussian_filter(bite, 1.0) - bite, 0, 1) * 2.0 * c.label
    carton = np.array(c.geometry.carton, dtype=np.float32) * 0.8  # adhesive darkens the board
    _blend(image, np.clip(rim, 0, 1), (250.0, 250.0, 248.0))  # torn paper fibres
    _blend(image, bite, carton)


def _contamination(image: FloatImage, c: _Context) -> None:
    size, rng, s = c.size, c.rng, c.severity
    count = 1 + round(_lerp(1, 9, s) * float(rng.uniform(0.6, 1.0)))
    particles = []
    for _ in range(count):
        x, y = _point_in(c.label, rng)
        particles.append((x, y, float(rng.random())))

    def draw(d: ImageDraw.ImageDraw, k: int) -> None:
        for x, y, u in particles:
            if u < 0.7:  # a particle
                r = _lerp(0.008, 0.03, s) * size * float(rng.uniform(0.7, 1.3))
                d.ellipse([(x - r) * k, (y - r) * k, (x + r) * k, (y + r) * k], fill=255)
            else:  # a fibre: a thin curve
                length = _lerp(0.05, 0.15, s) * size
                a = float(rng.uniform(0, math.pi))
                pts = [
                    (
                        (x + t * length * math.cos(a + 0.6 * math.sin(3 * t))) * k,
                        (y + t * length * math.sin(a + 0.6 * math.sin(3 * t))) * k,
                    )
                    for t in np.linspace(-0.5, 0.5, 8)
                ]
                d.line(pts, fill=255, width=max(1, round(0.6 * k)))

    alpha = _soft_mask(size, draw)
    grey = float(rng.uniform(20, 70))
    _blend(image, alpha * float(rng.uniform(0.8, 1.0)), (grey, grey * 0.95, grey * 0.9))


def _skewed_label(image: FloatImage, c: _Context) -> None:
    rng, s = c.rng, c.severity
    angle = _lerp(4.0, 14.0, s) * (1 if rng.random() < 0.5 else -1)
    x0, y0, x1, y1 = _box(c.label)
    centre = ((x0 + x1) / 2, (y0 + y1) / 2)
    background = image.copy()
    ring = ndimage.binary_dilation(c.label, iterations=max(2, c.size // 32)) & ~c.label
    carton = (np.median(image[ring], axis=0) if ring.any() else np.array(c.geometry.carton)).astype(
        np.float32
    )
    background[c.label] = carton
    pil = Image.fromarray(np.clip(image, 0, 255).astype(np.uint8))
    rotated = np.asarray(
        pil.rotate(angle, resample=Image.Resampling.BICUBIC, center=centre), dtype=np.float32
    )
    mask = Image.fromarray((c.label * 255).astype(np.uint8)).rotate(
        angle, resample=Image.Resampling.BILINEAR, center=centre
    )
    alpha = np.asarray(mask, dtype=np.float32) / 255.0
    image[...] = background
    _blend(image, alpha, rotated)


def _damaged_code(image: FloatImage, c: _Context) -> None:
    rng, s = c.rng, c.severity
    x0, y0, x1, y1 = _densest_print_box(image, c)
    w, h = max(4, x1 - x0), max(4, y1 - y0)
    lines = 1 + round(_lerp(0, 3, s))

    def draw(d: ImageDraw.ImageDraw, k: int) -> None:
        for _ in range(lines):  # scratches across the code
            a = float(rng.uniform(0, math.pi))
            length = max(w, h) * float(rng.uniform(0.5, 1.2))
            cx = x0 + w * float(rng.uniform(0.2, 0.8))
            cy = y0 + h * float(rng.uniform(0.2, 0.8))
            d.line(
                [
                    ((cx - length * math.cos(a) / 2) * k, (cy - length * math.sin(a) / 2) * k),
                    ((cx + length * math.cos(a) / 2) * k, (cy + length * math.sin(a) / 2) * k),
                ],
                fill=255,
                width=max(1, round(_lerp(0.7, 1.8, s) * k)),
            )
        if rng.random() < 0.3 + 0.5 * s:  # a patch of it erased as well
            pw, ph = w * _lerp(0.2, 0.6, s), h * _lerp(0.2, 0.6, s)
            px = x0 + float(rng.uniform(0, w - pw))
            py = y0 + float(rng.uniform(0, h - ph))
            d.ellipse([px * k, py * k, (px + pw) * k, (py + ph) * k], fill=255)

    box = np.zeros_like(c.label)
    box[max(0, y0 - 1) : y1 + 1, max(0, x0 - 1) : x1 + 1] = True
    alpha = _soft_mask(c.size, draw) * (box & c.label)
    _blend(image, alpha, c.geometry.stock)


OPERATIONS: dict[str, Callable[[FloatImage, _Context], None]] = {
    "ink_smudge": _ink_smudge,
    "missing_print": _missing_print,
    "misregistration": _misregistration,
    "wrong_text": _wrong_text,
    "torn_label": _torn_label,
    "contamination": _contamination,
    "skewed_label": _skewed_label,
    "damaged_code": _damaged_code,
}


def synthesise(good: Image8, defect: str, severity: float, rng: np.random.Generator) -> Image8:
    """``good`` with a ``defect`` of that ``severity`` (0: subtle, 1: gross)."""
    operation = OPERATIONS.get(defect)
    if operation is None:
        raise ValueError(f"no synthesis for defect class {defect!r}; known: {DEFECT_CLASSES}")
    if not 0.0 <= severity <= 1.0:
        raise ValueError(f"severity is in [0, 1], got {severity}")
    image = good.astype(np.float32)
    geometry = LabelGeometry.of(image)
    context = _Context(geometry, _print_mask(image, geometry), rng, float(severity))
    operation(image, context)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def defect_region(defective: Image8, stats: DesignStatistics, pad: int = 2) -> Mask | None:
    """Where a confirmed defective unit differs most from its design's typical appearance (the
    largest compact blob of difference), or None when nothing stands out."""
    diff = np.abs(defective.astype(np.float32) - stats.median).max(axis=2)
    diff = ndimage.gaussian_filter(diff, 1.0)
    threshold = max(40.0, float(np.percentile(diff, 99)))
    blob = _largest_component(diff > threshold)
    if blob.sum() < 4 or blob.mean() > 0.15:  # nothing, or the whole unit (skew, shift)
        return None
    return np.asarray(ndimage.binary_dilation(blob, iterations=pad))


def paste_defect(good: Image8, source: Image8, region: Mask, rng: np.random.Generator) -> Image8:
    """The defect of ``source`` inside ``region`` pasted (soft-edged) onto the label of
    ``good``, at a random place where it fits."""
    x0, y0, x1, y1 = _box(region)
    patch = source[y0:y1, x0:x1].astype(np.float32)
    alpha = ndimage.gaussian_filter(region[y0:y1, x0:x1].astype(np.float32), 0.8)
    image = good.astype(np.float32)
    label = LabelGeometry.of(image).mask
    h, w = patch.shape[:2]
    inner = np.zeros_like(label)
    inner[: max(1, label.shape[0] - h), : max(1, label.shape[1] - w)] = True
    x, y = _point_in(label & inner, rng)
    target = image[y : y + h, x : x + w]
    a = alpha[: target.shape[0], : target.shape[1], None]
    target *= 1 - a
    target += a * patch[: target.shape[0], : target.shape[1]]
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


VISIBLE_CONTRAST = 40.0  # grey levels: a pixel a defect changes by less is not part of it
MIN_VISIBLE_FRACTION = 0.0015  # of the image a defect must change: 25 pixels at 128 px
VISIBILITY_TRIES = 6


def visible_fraction(defective: Image8, good: Image8) -> float:
    """Share of the image's pixels the defect changed by at least :data:`VISIBLE_CONTRAST`
    grey levels in some channel."""
    diff = np.abs(defective.astype(np.float32) - good.astype(np.float32)).max(axis=2)
    return float((diff >= VISIBLE_CONTRAST).mean())


def synthesise_set(
    goods: Sequence[Image8] | Image8,
    n: int,
    *,
    seed: int,
    severity: tuple[float, float] = (0.0, 1.0),
    classes: Sequence[str] = DEFECT_CLASSES,
    min_visible_fraction: float = 0.0,
) -> tuple[list[Image8], list[str], list[float]]:
    """``n`` defective images made from ``goods`` (classes spread evenly, severities uniform in
    ``severity``): images, their classes and severities.

    A defect must be seen to be learnt: one that changes less than ``min_visible_fraction`` of
    the pixels clearly (a smudge of a few pixels, a field shortened by a character the camera
    blurs away) would teach the classifier to reject good units that look like it. Such a draw
    is made again at a higher severity, and left out after :data:`VISIBILITY_TRIES` tries."""
    goods = list(goods)
    if not goods:
        raise ValueError("no good images to synthesise defects on")
    rng = np.random.default_rng(seed)
    images, labels, severities = [], [], []
    invisible = 0
    for i in range(n):
        defect = classes[i % len(classes)]
        s = float(rng.uniform(*severity))
        base = goods[int(rng.integers(len(goods)))]
        for _ in range(VISIBILITY_TRIES):
            image = synthesise(base, defect, s, rng)
            if visible_fraction(image, base) >= min_visible_fraction:
                images.append(image)
                labels.append(defect)
                severities.append(s)
                break
            s += (1.0 - s) * 0.3
        else:
            invisible += 1
    if invisible:
        log.info("synthesis: %d of %d draws left out, too faint to see", invisible, n)
    return images, labels, severities


# --- placing the plant's artwork -------------------------------------------------------------


def place_artwork(
    artwork: Image8, good: Image8, rng: np.random.Generator, *, strength: float = 1.0
) -> Image8:
    """The design's print artwork in the place of the label of the good unit ``good``, under
    that unit's light and the line's camera: the artwork is scaled into the unit's label box,
    matched to its paper colour, and blurred and noised as the camera does. The unit's
    variable data (lot, expiry, serial, code: print the artwork does not have) is kept."""
    image = good.astype(np.float32)
    geometry = LabelGeometry.of(image)
    x0, y0, x1, y1 = _box(geometry.mask)
    if x1 - x0 < 8 or y1 - y0 < 8:
        return good
    art = np.asarray(
        Image.fromarray(artwork)
        .convert("RGB")
        .resize((x1 - x0, y1 - y0), Image.Resampling.LANCZOS),
        dtype=np.float32,
    )
    art_luma = _luma(art)
    paper = art[art_luma >= np.percentile(art_luma, 60)].mean(axis=0)
    art *= np.asarray(geometry.stock, dtype=np.float32) / np.maximum(paper, 1.0)
    region = image[y0:y1, x0:x1]
    marks_here = _print_mask(image, geometry)[y0:y1, x0:x1]
    # Variable data: printed on the unit where the artwork is blank paper.
    blank = np.abs(art - np.asarray(geometry.stock, dtype=np.float32)).max(axis=2) < 30
    keep = ndimage.binary_dilation(marks_here & blank, iterations=1)
    sigma = float(rng.uniform(0.3, 0.8))
    art = ndimage.gaussian_filter(art, (sigma, sigma, 0))
    art += rng.normal(0, float(rng.uniform(0.5, 2.5)), art.shape).astype(np.float32)
    blend = np.where(keep[..., None], region, strength * art + (1 - strength) * region)
    image[y0:y1, x0:x1] = blend
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


# --- a synthetic dataset on disk -------------------------------------------------------------


@dataclass(frozen=True)
class SynthesisPlan:
    """What to make for one label design."""

    design: str
    defective: int  # images with a synthesised defect, severities 0..1
    subtle: int  # more, at severities 0..subtle_severity
    subtle_severity: float = 0.35
    pasted: int = 0  # confirmed defect regions pasted onto good units
    artwork_goods: int = 0  # good units with the uploaded artwork placed on them
    test_fraction: float = 0.1  # held out as synthetic_test (reported apart)
    min_visible_fraction: float = MIN_VISIBLE_FRACTION  # see synthesise_set
    seed: int = 0


def _png(image: Image8) -> bytes:
    out = io.BytesIO()
    Image.fromarray(image).save(out, format="PNG", optimize=False, compress_level=1)
    return out.getvalue()


def write_synthetic_dataset(
    root: Path,
    plan: SynthesisPlan,
    goods: Sequence[Image8],
    *,
    confirmed: Sequence[tuple[Image8, str, DesignStatistics]] = (),
    artwork: Image8 | None = None,
    paste_classes: Sequence[str] = ("ink_smudge", "contamination"),
) -> Path:
    """A dataset (``train`` and ``synthetic_test`` splits, ``manifest.jsonl``) of defects made
    from the good units ``goods`` of ``plan.design``: every class synthesised, real defects
    ``confirmed`` by operators on any design (image, class, its design's statistics) pasted on,
    and, with the design's ``artwork``, good units re-printed with it (and defects on those).
    The directory is named by a hash of its inputs, so the same request reuses it."""
    if not goods:
        raise ValueError(f"no good images of design {plan.design} to synthesise defects on")
    digest = hashlib.sha256(json.dumps(plan.__dict__, sort_keys=True).encode())
    for image in goods:
        digest.update(hashlib.sha256(image.tobytes()).digest())
    for image, label, _ in confirmed:
        digest.update(label.encode() + hashlib.sha256(image.tobytes()).digest())
    if artwork is not None:
        digest.update(hashlib.sha256(artwork.tobytes()).digest())
    out = root / f"design-{plan.design}-{digest.hexdigest()[:16]}"
    if (out / "manifest.jsonl").exists():
        return out
    rng = np.random.default_rng(plan.seed)
    bases = list(goods)
    made: list[tuple[Image8, str, str, float]] = []  # image, class, how, severity
    if artwork is not None:
        for _ in range(plan.artwork_goods):
            placed = place_artwork(artwork, goods[int(rng.integers(len(goods)))], rng)
            made.append((placed, "good", "artwork", 0.0))
            bases.append(placed)
    for n, high in ((plan.defective, 1.0), (plan.subtle, plan.subtle_severity)):
        images, labels, severities = synthesise_set(
            bases,
            n,
            seed=int(rng.integers(2**31)),
            severity=(0.0, high),
            min_visible_fraction=plan.min_visible_fraction,
        )
        made.extend(
            (i, c, "synthesised", s) for i, c, s in zip(images, labels, severities, strict=True)
        )
    regions = [
        (image, label, region)
        for image, label, stats in confirmed
        if label in paste_classes and (region := defect_region(image, stats)) is not None
    ]
    for k in range(plan.pasted if regions else 0):
        source, label, region = regions[k % len(regions)]
        base = bases[int(rng.integers(len(bases)))]
        made.append((paste_defect(base, source, region, rng), label, "pasted", 1.0))
    staging = root / f".{out.name}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    lines = []
    seen: set[str] = set()
    for image, label, how, severity in made:
        data = _png(image)
        sha = hashlib.sha256(data).hexdigest()
        if sha in seen:  # an operation that changed nothing new (the same image twice)
            continue
        seen.add(sha)
        split = "synthetic_test" if rng.random() < plan.test_fraction else "train"
        path = Path(split) / label / f"{sha}.png"
        (staging / path).parent.mkdir(parents=True, exist_ok=True)
        (staging / path).write_bytes(data)
        lines.append(
            json.dumps(
                {
                    "path": path.as_posix(),
                    "sha256": sha,
                    "label": label,
                    "label_design": plan.design,
                    "synthesis": how,
                    "severity": round(severity, 4),
                },
                sort_keys=True,
            )
        )
    (staging / "manifest.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (staging / "dataset.json").write_text(
        json.dumps({"label_design": plan.design, "synthetic": True, "plan": plan.__dict__}),
        encoding="utf-8",
    )
    staging.rename(out)
    log.info("synthesised %d images of design %s in %s", len(made), plan.design, out)
    return out
