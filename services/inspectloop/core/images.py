"""The one resize between a camera image and a model's input.

The gateway and edge agents resize what the line sends to the model's input size; the
trainer's snapshot resizes operator-labelled production images the same way, so that a model
trains on exactly the pixels it is later asked about.
"""

from __future__ import annotations

from PIL import Image


def to_model_input(rgb: Image.Image, input_size: int) -> Image.Image:
    """``rgb`` (an RGB image of any size) at ``input_size`` squared, bilinear; the aspect ratio
    is not kept, as the camera's framing is fixed per line."""
    if rgb.size == (input_size, input_size):
        return rgb
    return rgb.resize((input_size, input_size), Image.Resampling.BILINEAR)
