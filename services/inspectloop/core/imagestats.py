"""Statistics of a raw inspection image (``ImageStats``), computed the same way everywhere.

Deciders (the gateway and edge agents) attach them to every InspectionEvent; the monitor
compares their windows with a reference to tell lighting, exposure and focus drift from a
change in what the product looks like. All values are scale-free: 0..1 for intensities.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from inspectloop.v1.common_pb2 import ImageStats

# ITU-R BT.601 luma weights.
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def image_stats(rgb: npt.NDArray[np.uint8]) -> ImageStats:
    """Brightness (mean luma), contrast (luma standard deviation), sharpness (variance of the
    4-neighbour Laplacian of luma) and channel means of an ``H x W x 3`` uint8 image."""
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an H x W x 3 image, got shape {rgb.shape}")
    pixels = rgb.astype(np.float32) / 255.0
    luma = pixels @ _LUMA
    laplacian = (
        luma[1:-1, :-2] + luma[1:-1, 2:] + luma[:-2, 1:-1] + luma[2:, 1:-1] - 4 * luma[1:-1, 1:-1]
    )
    means = pixels.reshape(-1, 3).mean(0)
    return ImageStats(
        brightness=float(luma.mean()),
        contrast=float(luma.std()),
        sharpness=float(laplacian.var()),
        mean_r=float(means[0]),
        mean_g=float(means[1]),
        mean_b=float(means[2]),
    )
