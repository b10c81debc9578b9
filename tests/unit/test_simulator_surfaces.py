"""Surface images: bundled textures, determinism, defects."""

from __future__ import annotations

import numpy as np
import pytest

from inspectloop.simulator.surfaces import (
    SURFACE_DEFECTS,
    SURFACE_PRODUCTS,
    SurfaceDefect,
    render_surface,
)

PRODUCT = SURFACE_PRODUCTS[1]


def test_deterministic_and_seed_dependent() -> None:
    a, meta = render_surface(PRODUCT, "A", rng=np.random.default_rng(1))
    b, _ = render_surface(PRODUCT, "A", rng=np.random.default_rng(1))
    c, _ = render_surface(PRODUCT, "A", rng=np.random.default_rng(2))
    assert a.shape == (128, 128, 3)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert meta["label"] == "good" and meta["sku"] == PRODUCT.product_id
    b_finish, _ = render_surface(PRODUCT, "B", rng=np.random.default_rng(1))
    assert np.abs(a.astype(np.int16) - b_finish.astype(np.int16)).mean() > 10


@pytest.mark.parametrize("defect", SURFACE_DEFECTS)
def test_defects_show_and_grow(defect: SurfaceDefect) -> None:
    changed = {}
    for severity in (0.0, 1.0):
        total = 0
        for seed in range(2):
            good, _ = render_surface(PRODUCT, "A", rng=np.random.default_rng(seed))
            bad, meta = render_surface(
                PRODUCT, "A", rng=np.random.default_rng(seed), defect=defect, severity=severity
            )
            diff = np.abs(good.astype(np.int16) - bad.astype(np.int16)).max(axis=2)
            x0, y0, x1, y1 = meta["defect_bbox"]
            assert diff[y0:y1, x0:x1].max() > 40
            assert (diff > 30).sum() >= 8, (defect, severity)
            total += int((diff > 30).sum())
        changed[severity] = total
    assert changed[1.0] > changed[0.0]
