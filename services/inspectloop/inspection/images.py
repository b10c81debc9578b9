"""Decoding and validating the images line PCs send.

A camera image is accepted when it is a PNG or JPEG whose bytes, dimensions and aspect ratio
are within the limits, and whose declared content type (when given) matches what the bytes are.
Anything else is an ``InvalidImageError`` naming the problem, which the API answers with 4xx.
Decoding is bounded before pixels are allocated: the header's dimensions are checked first, so
a small file that claims a huge image (a decompression bomb) is refused without decoding it.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from PIL import Image, UnidentifiedImageError

from inspectloop.core.errors import PermanentError
from inspectloop.core.images import to_model_input
from inspectloop.inspection.settings import ImageLimits

FORMATS = {"PNG": "image/png", "JPEG": "image/jpeg"}
CONTENT_TYPES = {"image/png", "image/jpeg", "image/jpg"}


class InvalidImageError(PermanentError):
    """The request's image cannot be inspected; the message says why."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status  # 413 too large, 415 unsupported type, 400 otherwise


@dataclass(frozen=True)
class DecodedImage:
    pixels: npt.NDArray[np.uint8]  # H x W x 3 RGB, at the model's input size
    content_type: str  # what the bytes are
    width: int  # as sent
    height: int


@dataclass(frozen=True)
class CheckedImage:
    rgb: Image.Image  # as sent, decoded
    content_type: str
    width: int
    height: int

    def at_size(self, input_size: int) -> DecodedImage:
        """The pixels at the model's input size (``input_size`` squared)."""
        rgb = to_model_input(self.rgb, input_size)
        return DecodedImage(
            np.asarray(rgb, dtype=np.uint8), self.content_type, self.width, self.height
        )


def check_image(data: bytes, content_type: str, limits: ImageLimits) -> CheckedImage:
    """The image in ``data``, decoded to RGB once every limit is checked, or
    InvalidImageError. Needs no model: a request's faults are named before any backend is
    asked."""
    if not data:
        raise InvalidImageError("the request has no image")
    if len(data) > limits.max_bytes:
        raise InvalidImageError(
            f"image is {len(data)} bytes, over the limit of {limits.max_bytes}", status=413
        )
    declared = content_type.split(";", maxsplit=1)[0].strip().lower()
    if declared and declared not in CONTENT_TYPES:
        raise InvalidImageError(
            f"content type {content_type!r} is not supported; send image/png or image/jpeg",
            status=415,
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise InvalidImageError("image bytes are not a PNG or JPEG image") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InvalidImageError(
            f"image declares more pixels than the decoder allows ({Image.MAX_IMAGE_PIXELS}); "
            f"each side must be within {limits.min_side}..{limits.max_side}"
        ) from None
    if image.format not in FORMATS:
        raise InvalidImageError(f"image is {image.format}, not PNG or JPEG", status=415)
    actual = FORMATS[image.format]
    if declared and declared.replace("jpg", "jpeg") != actual:
        raise InvalidImageError(f"content type says {declared} but the bytes are {actual}")
    width, height = image.size
    if min(width, height) < limits.min_side or max(width, height) > limits.max_side:
        raise InvalidImageError(
            f"image is {width}x{height} pixels; each side must be within "
            f"{limits.min_side}..{limits.max_side}"
        )
    if max(width, height) / min(width, height) > limits.max_aspect_ratio:
        raise InvalidImageError(
            f"image is {width}x{height} pixels, more elongated than the limit of "
            f"{limits.max_aspect_ratio:g}:1"
        )
    try:
        rgb = image.convert("RGB")
    except (OSError, ValueError) as exc:  # truncated or corrupt pixel data
        raise InvalidImageError(f"image data is corrupt: {exc}") from None
    return CheckedImage(rgb, actual, width, height)


def decode_image(
    data: bytes, content_type: str, limits: ImageLimits, input_size: int
) -> DecodedImage:
    """The image in ``data`` as RGB pixels resized to ``input_size`` squared, or
    InvalidImageError."""
    return check_image(data, content_type, limits).at_size(input_size)
