"""Label rendering: determinism, defects that show and grow with severity, redesign, drift."""

from __future__ import annotations

import numpy as np
import pytest

from inspectloop.simulator.conditions import NOMINAL, ConditionsDistribution
from inspectloop.simulator.defects import DEFECT_CLASSES, DefectClass
from inspectloop.simulator.designs import design_for
from inspectloop.simulator.products import default_catalogue
from inspectloop.simulator.render import LabelRenderer, encode_png, render_label

SKU = default_catalogue()[0]


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def test_same_seed_same_bytes_different_seed_different() -> None:
    a, meta_a = render_label(SKU, "A", "gs1-dm", rng=_rng(5), defect="ink_smudge")
    b, meta_b = render_label(SKU, "A", "gs1-dm", rng=_rng(5), defect="ink_smudge")
    c, _ = render_label(SKU, "A", "gs1-dm", rng=_rng(6), defect="ink_smudge")
    assert a.shape == (128, 128, 3) and a.dtype == np.uint8
    assert encode_png(a) == encode_png(b)
    assert meta_a == meta_b
    assert not np.array_equal(a, c)
    # a fresh renderer (empty caches) draws the same pixels
    d, _ = LabelRenderer().render(SKU, "A", "gs1-dm", rng=_rng(5), defect="ink_smudge")
    assert np.array_equal(a, d)


def test_sizes_and_sku_ids() -> None:
    image, meta = render_label("SKU-02", "B", "gs1-linear", rng=_rng(1), size=256)
    assert image.shape == (256, 256, 3)
    assert meta["sku"] == "SKU-02" and meta["label"] == "good"
    with pytest.raises(ValueError, match="defect"):
        render_label(SKU, "A", "gs1-dm", rng=_rng(1), defect="nope")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="severity"):
        render_label(SKU, "A", "gs1-dm", rng=_rng(1), defect="torn_label", severity=1.5)


def _changed(defect: DefectClass, severity: float, seed: int) -> tuple[int, float]:
    """Pixels changed by more than 40 levels, and the mean change inside the defect's box."""
    good, _ = render_label(SKU, "A", "gs1-dm", rng=_rng(seed))
    bad, meta = render_label(SKU, "A", "gs1-dm", rng=_rng(seed), defect=defect, severity=severity)
    diff = np.abs(good.astype(np.int16) - bad.astype(np.int16)).max(axis=2)
    x0, y0, x1, y1 = meta["defect_bbox"]
    assert meta["label"] == defect and x1 > x0 and y1 > y0
    return int((diff > 40).sum()), float(diff[y0:y1, x0:x1].mean())


@pytest.mark.parametrize("defect", DEFECT_CLASSES)
def test_each_defect_is_visible_and_grows_with_severity(defect: DefectClass) -> None:
    low = [_changed(defect, 0.0, seed) for seed in range(3)]
    high = [_changed(defect, 1.0, seed) for seed in range(3)]
    for pixels, mean_in_box in low:
        # even the subtlest defect changes a patch of pixels strongly at 128 x 128
        assert pixels >= 8, (defect, low)
        assert mean_in_box > 1.0, (defect, low)
    assert sum(p for p, _ in high) > sum(p for p, _ in low), (defect, low, high)


def test_redesign_differs_strongly_and_carries_the_same_information() -> None:
    a, meta_a = render_label(SKU, "A", "gs1-dm", rng=_rng(3), conditions=NOMINAL)
    b, meta_b = render_label(SKU, "B", "gs1-dm", rng=_rng(3), conditions=NOMINAL)
    diff = np.abs(a.astype(np.int16) - b.astype(np.int16)).mean()
    assert diff > 20
    # the colours themselves change, not only positions
    assert np.abs(a.reshape(-1, 3).mean(0) - b.reshape(-1, 3).mean(0)).max() > 5
    for key in ("sku", "sku_info", "serial", "element_string", "serialization"):
        assert meta_a[key] == meta_b[key]
    assert (meta_a["design"], meta_b["design"]) == ("A", "B")
    design_a, design_b = design_for(SKU, "A"), design_for(SKU, "B")
    assert design_a.palette.band != design_b.palette.band
    assert design_a.typeface != design_b.typeface
    assert design_a.logo != design_b.logo
    assert design_a.layout("gs1-dm").code != design_b.layout("gs1-dm").code


def test_serialization_change_redraws_the_code() -> None:
    dm, _ = render_label(SKU, "A", "gs1-dm", rng=_rng(3), conditions=NOMINAL)
    linear, _ = render_label(SKU, "A", "gs1-linear", rng=_rng(3), conditions=NOMINAL)
    assert np.abs(dm.astype(np.int16) - linear.astype(np.int16)).mean() > 5


def test_lighting_drift_changes_statistics_not_the_label() -> None:
    base = ConditionsDistribution()
    normal = [render_label(SKU, "A", "gs1-dm", rng=_rng(s), distribution=base) for s in range(4)]
    drifted = [
        render_label(SKU, "A", "gs1-dm", rng=_rng(s), distribution=base.with_lighting_drift(1.0))
        for s in range(4)
    ]
    mean_normal = np.mean([img.reshape(-1, 3).mean(0) for img, _ in normal], axis=0)
    mean_drift = np.mean([img.reshape(-1, 3).mean(0) for img, _ in drifted], axis=0)
    assert mean_drift.mean() < mean_normal.mean() - 20  # darker
    # warmer: blue falls more than red
    assert (mean_normal[2] - mean_drift[2]) > (mean_normal[0] - mean_drift[0]) + 5
    for (_, m1), (_, m2) in zip(normal, drifted, strict=True):
        assert m1["label"] == m2["label"] == "good"
        assert m1["serial"] == m2["serial"]
    with pytest.raises(ValueError, match="drift"):
        base.with_lighting_drift(2.0)
