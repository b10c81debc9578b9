"""Camera and line conditions: lighting, colour temperature, blur, noise, pose jitter, glare.

``ConditionsDistribution`` describes a line's normal variation; ``sample(rng)`` draws the
``Conditions`` of one image. Drifts (``with_lighting_drift``, ``with_blur``) move the
distribution the way a line changes over weeks — an ageing lamp, a dirty or defocused lens —
without changing what is on the label, so the right answer stays the same.

``apply_camera`` turns a scene rendered at ``supersample`` times the output size into the
camera's image: pose (rotation and shift about the centre) and downscaling in one resampling,
then optical blur, then lighting gain, colour cast, vignetting, glare and sensor noise in numpy.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from functools import cache
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image

REFERENCE_TEMPERATURE_K = 5500.0
"""The camera is white-balanced for this colour temperature."""


@dataclass(frozen=True)
class Glare:
    """A specular highlight: centre and radius as fractions of the image, peak added (0..1)."""

    x: float
    y: float
    radius: float
    strength: float


@dataclass(frozen=True)
class Conditions:
    """Conditions of one image."""

    light_level: float = 1.0  # exposure gain; 1 = nominal
    colour_temperature_k: float = REFERENCE_TEMPERATURE_K
    blur_sigma: float = 0.0  # Gaussian sigma in output pixels
    noise_sigma: float = 0.0  # sensor noise, in 0..255 levels
    rotation_deg: float = 0.0  # camera roll
    shift_x: float = 0.0  # image shift, fraction of the image width
    shift_y: float = 0.0
    vignetting: float = 0.0  # relative fall-off at the corners
    glare: Glare | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready parameters, as written into manifests."""
        glare = self.glare
        return {
            "light_level": round(self.light_level, 5),
            "colour_temperature_k": round(self.colour_temperature_k, 5),
            "blur_sigma": round(self.blur_sigma, 5),
            "noise_sigma": round(self.noise_sigma, 5),
            "rotation_deg": round(self.rotation_deg, 5),
            "shift_x": round(self.shift_x, 5),
            "shift_y": round(self.shift_y, 5),
            "vignetting": round(self.vignetting, 5),
            "glare": None
            if glare is None
            else {
                "x": round(glare.x, 5),
                "y": round(glare.y, 5),
                "radius": round(glare.radius, 5),
                "strength": round(glare.strength, 5),
            },
        }

    @property
    def channel_gain(self) -> tuple[float, float, float]:
        """Per-channel gain: light level times the colour cast of the illuminant."""
        r, g, b = colour_temperature_rgb(self.colour_temperature_k)
        r0, g0, b0 = colour_temperature_rgb(REFERENCE_TEMPERATURE_K)
        return (self.light_level * r / r0, self.light_level * g / g0, self.light_level * b / b0)


NOMINAL = Conditions()
"""No variation at all: for reference renders and tests."""


@dataclass(frozen=True)
class ConditionsDistribution:
    """How conditions vary between images on one line; ranges are uniform ``(low, high)``."""

    light_level: tuple[float, float] = (0.9, 1.06)
    colour_temperature_k: tuple[float, float] = (5000.0, 6000.0)
    blur_sigma: tuple[float, float] = (0.0, 0.45)
    noise_sigma: tuple[float, float] = (1.0, 2.5)
    max_rotation_deg: float = 1.0
    max_shift: float = 0.02
    vignetting: tuple[float, float] = (0.03, 0.12)
    glare_probability: float = 0.08
    glare_strength: tuple[float, float] = (0.12, 0.3)
    glare_radius: tuple[float, float] = (0.06, 0.14)

    def sample(self, rng: np.random.Generator) -> Conditions:
        """Draws one image's conditions (always the same number of draws from ``rng``)."""
        u = rng.random(12)
        glare = Glare(
            x=0.15 + 0.7 * float(u[8]),
            y=0.15 + 0.7 * float(u[9]),
            radius=_lerp(self.glare_radius, float(u[10])),
            strength=_lerp(self.glare_strength, float(u[11])),
        )
        return Conditions(
            light_level=_lerp(self.light_level, float(u[0])),
            colour_temperature_k=_lerp(self.colour_temperature_k, float(u[1])),
            blur_sigma=_lerp(self.blur_sigma, float(u[2])),
            noise_sigma=_lerp(self.noise_sigma, float(u[3])),
            rotation_deg=self.max_rotation_deg * (2 * float(u[4]) - 1),
            shift_x=self.max_shift * (2 * float(u[5]) - 1),
            shift_y=self.max_shift * (2 * float(u[6]) - 1),
            vignetting=_lerp(self.vignetting, float(u[7])),
            glare=glare if float(rng.random()) < self.glare_probability else None,
        )

    def with_lighting_drift(self, amount: float) -> ConditionsDistribution:
        """Lighting drift: ``amount`` > 0 dims and warms the light (an ageing lamp, 1 = 40%
        darker and 2500 K warmer); ``amount`` < 0 brightens and cools it. Nothing else moves."""
        if not -1.0 <= amount <= 1.0:
            raise ValueError("lighting drift is in [-1, 1]")
        scale = 1.0 - 0.4 * amount
        shift = -2500.0 * amount
        level = (self.light_level[0] * scale, self.light_level[1] * scale)
        temp = (
            max(self.colour_temperature_k[0] + shift, 2000.0),
            max(self.colour_temperature_k[1] + shift, 2200.0),
        )
        return replace(self, light_level=level, colour_temperature_k=temp)

    def with_blur(self, extra_sigma: float) -> ConditionsDistribution:
        """Camera blur drift: adds ``extra_sigma`` output pixels of defocus to every image."""
        if extra_sigma < 0:
            raise ValueError("extra blur must be >= 0")
        low, high = self.blur_sigma
        return replace(self, blur_sigma=(low + extra_sigma, high + extra_sigma))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description."""
        return asdict(self)


def _lerp(bounds: tuple[float, float], t: float) -> float:
    return bounds[0] + (bounds[1] - bounds[0]) * t


@cache
def colour_temperature_rgb(kelvin: float) -> tuple[float, float, float]:
    """Approximate sRGB colour (0..1) of a black body at ``kelvin`` (Tanner Helland's fit)."""
    t = min(max(kelvin, 1000.0), 40000.0) / 100.0
    if t <= 66:
        r = 255.0
        g = 99.4708025861 * math.log(t) - 161.1195681661
        b = 0.0 if t <= 19 else 138.5177312231 * math.log(t - 10) - 305.0447927307
    else:
        r = 329.698727446 * (t - 60) ** -0.1332047592
        g = 288.1221695283 * (t - 60) ** -0.0755148492
        b = 255.0
    return tuple(min(max(c, 0.0), 255.0) / 255.0 for c in (r, g, b))  # type: ignore[return-value]


@cache
def _radial(size: int) -> npt.NDArray[np.float32]:
    """Squared distance from the centre, 1 at the corners."""
    axis = (np.arange(size, dtype=np.float32) + 0.5) / size * 2 - 1
    return ((axis[None, :] ** 2 + axis[:, None] ** 2) / 2).astype(np.float32)


@cache
def _axis(size: int) -> npt.NDArray[np.float32]:
    return ((np.arange(size, dtype=np.float32) + 0.5) / size).astype(np.float32)


def camera_matrix(
    conditions: Conditions, size: int, source_size: tuple[int, int], scale: float
) -> tuple[float, float, float, float, float, float]:
    """PIL affine coefficients mapping output pixels to source pixels: the output is a
    ``size`` square looking at the source centre, ``scale`` source pixels per output pixel,
    rolled by ``rotation_deg`` and shifted by ``shift_x/y`` (fractions of the output)."""
    angle = math.radians(conditions.rotation_deg)
    cos, sin = math.cos(angle) * scale, math.sin(angle) * scale
    cx_out = size / 2 + conditions.shift_x * size
    cy_out = size / 2 + conditions.shift_y * size
    cx_src, cy_src = source_size[0] / 2, source_size[1] / 2
    # source = R * (out - c_out) + c_src
    return (
        cos,
        -sin,
        cx_src - cos * cx_out + sin * cy_out,
        sin,
        cos,
        cy_src - sin * cx_out - cos * cy_out,
    )


def map_point(
    matrix: tuple[float, float, float, float, float, float], x: float, y: float
) -> tuple[float, float]:
    """Where source point ``(x, y)`` lands in the output (inverse of ``camera_matrix``)."""
    a, b, c, d, e, f = matrix
    det = a * e - b * d
    u, v = x - c, y - f
    return ((e * u - b * v) / det, (-d * u + a * v) / det)


NOISE_BANK_SIZE = 1 << 21


@cache
def _noise_bank() -> npt.NDArray[np.float32]:
    """Standard normal samples, drawn once: an image's noise is a window at a random offset."""
    return np.random.default_rng(0x4015E).standard_normal(NOISE_BANK_SIZE, dtype=np.float32)


def sensor_noise(rng: np.random.Generator, shape: tuple[int, ...]) -> npt.NDArray[np.float32]:
    """Unit Gaussian noise of ``shape``: a window of the noise bank chosen by ``rng`` (much
    cheaper than fresh draws, and as deterministic)."""
    count = math.prod(shape)
    bank = _noise_bank()
    if count > len(bank):
        return rng.standard_normal(shape, dtype=np.float32)
    start = int(rng.integers(0, len(bank) - count + 1))
    window: npt.NDArray[np.float32] = bank[start : start + count].reshape(shape)
    return window


def gaussian_blur(pixels: npt.NDArray[np.float32], sigma: float) -> npt.NDArray[np.float32]:
    """Separable Gaussian blur of an ``H x W x C`` float image (normalised at the edges)."""
    radius = max(1, math.ceil(2.5 * sigma))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2).astype(np.float32)
    rows = _blur_axis(pixels, taps)
    return _blur_axis(rows.swapaxes(0, 1), taps).swapaxes(0, 1)


def _blur_axis(
    x: npt.NDArray[np.float32], taps: npt.NDArray[np.float32]
) -> npt.NDArray[np.float32]:
    """Convolves along axis 0; each output is divided by the weight that fell inside."""
    radius = len(taps) // 2
    n = x.shape[0]
    out: npt.NDArray[np.float32] = x * taps[radius]
    weight = np.full(n, taps[radius], dtype=np.float32)
    for k in range(1, min(radius, n - 1) + 1):
        out[k:] += taps[radius - k] * x[:-k]
        out[:-k] += taps[radius + k] * x[k:]
        weight[k:] += taps[radius - k]
        weight[:-k] += taps[radius + k]
    out /= weight.reshape((n,) + (1,) * (x.ndim - 1))
    return out


def apply_camera(
    scene: Image.Image,
    conditions: Conditions,
    size: int,
    scale: float,
    rng: np.random.Generator,
) -> npt.NDArray[np.uint8]:
    """The camera's ``size`` x ``size`` RGB image of ``scene`` under ``conditions``.

    ``scale`` is scene pixels per output pixel. ``rng`` supplies the sensor noise only.
    """
    # one bilinear resampling does pose and downscale: at 2x its 2x2 taps are a box filter
    matrix = camera_matrix(conditions, size, scene.size, scale)
    image = scene.transform(
        (size, size), Image.Transform.AFFINE, matrix, resample=Image.Resampling.BILINEAR
    )
    pixels = np.asarray(image, dtype=np.float32)
    if conditions.blur_sigma > 0.05:
        pixels = gaussian_blur(pixels, conditions.blur_sigma)
    gain = np.asarray(conditions.channel_gain, dtype=np.float32)
    if conditions.vignetting > 0:
        shade = 1.0 - conditions.vignetting * _radial(size)
        pixels *= shade[:, :, None] * gain
    else:
        pixels *= gain
    if conditions.glare is not None:
        glare = conditions.glare
        axis = _axis(size)
        gx = np.exp(-(((axis - glare.x) / glare.radius) ** 2))
        gy = np.exp(-(((axis - glare.y) / glare.radius) ** 2))
        pixels += (255.0 * glare.strength) * (gy[:, None] * gx[None, :])[:, :, None]
    if conditions.noise_sigma > 0:
        pixels += sensor_noise(rng, pixels.shape) * np.float32(conditions.noise_sigma)
    pixels += np.float32(0.5)  # round, not truncate
    np.clip(pixels, 0, 255, out=pixels)
    return pixels.astype(np.uint8)
