"""The independent label generator (design "N"): shapes, determinism, defects, sampling."""

from __future__ import annotations

import ast
import io
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.foreign import labels
from tests.foreign.labels import (
    DEFECT_CLASSES,
    DESIGN_NAME,
    SKUS,
    artwork,
    balanced_units,
    encode_png,
    render_unit,
    sample_units,
)

SEEDS = ((11, 12, 13), (101, 202, 303), (7, 8, 9))


def test_constants() -> None:
    assert DESIGN_NAME == "N"
    assert DEFECT_CLASSES == (
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
    assert SKUS == ("SKU-01", "SKU-02", "SKU-03", "SKU-04")


@pytest.mark.parametrize("size", [64, 128, 224])
def test_render_shape_and_dtype(size: int) -> None:
    image = render_unit(np.random.default_rng(0), "good", "SKU-01", size=size)
    assert image.shape == (size, size, 3)
    assert image.dtype == np.uint8
    # A bright label on a darker belt: neither blank nor saturated.
    assert 60 < image.mean() < 220
    assert image.std() > 20


def test_same_seed_same_bytes() -> None:
    for label in DEFECT_CLASSES:
        a = render_unit(np.random.default_rng(42), label, "SKU-03")
        b = render_unit(np.random.default_rng(42), label, "SKU-03")
        assert encode_png(a) == encode_png(b)
    first = sample_units(np.random.default_rng(5), 12, defect_rate=0.5, size=64)
    second = sample_units(np.random.default_rng(5), 12, defect_rate=0.5, size=64)
    assert [(encode_png(i), lab, s) for i, lab, s in first] == [
        (encode_png(i), lab, s) for i, lab, s in second
    ]


def test_units_vary() -> None:
    rng = np.random.default_rng(1)
    a = render_unit(rng, "good", "SKU-01")
    b = render_unit(rng, "good", "SKU-01")
    assert not np.array_equal(a, b)


def test_good_render_is_reproducible_from_seeds() -> None:
    a = labels._render(SEEDS[0], "good", "SKU-02")
    b = labels._render(SEEDS[0], "good", "SKU-02")
    assert np.array_equal(a, b)


@pytest.mark.parametrize("label", DEFECT_CLASSES[1:])
@pytest.mark.parametrize("severity", [0.3, 1.0])
def test_every_defect_changes_the_unit(label: str, severity: float) -> None:
    """Same unit, same camera: the defect alone changes a visible number of pixels."""
    for sku, seeds in zip(SKUS, SEEDS, strict=False):
        good = labels._render(seeds, "good", sku, severity=severity).astype(np.int16)
        bad = labels._render(seeds, label, sku, severity=severity).astype(np.int16)
        diff = np.abs(good - bad).max(axis=-1)
        changed = int((diff > 40).sum())
        assert changed >= 25, (label, sku, changed)
        assert np.abs(good - bad).mean() > 0.3, (label, sku)


def test_severity_scales_the_defect() -> None:
    for label in ("ink_smudge", "skewed_label", "damaged_code", "misregistration"):
        good = labels._render(SEEDS[1], "good", "SKU-01").astype(np.int16)
        weak = labels._render(SEEDS[1], label, "SKU-01", severity=0.3).astype(np.int16)
        strong = labels._render(SEEDS[1], label, "SKU-01", severity=1.0).astype(np.int16)
        assert np.abs(strong - good).mean() > np.abs(weak - good).mean(), label


def test_bad_arguments() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="label"):
        render_unit(rng, "scratch", "SKU-01")
    with pytest.raises(ValueError, match="SKU"):
        render_unit(rng, "good", "SKU-99")
    with pytest.raises(ValueError, match="severity"):
        render_unit(rng, "ink_smudge", "SKU-01", severity=1.5)
    with pytest.raises(ValueError, match="SKU"):
        artwork("SKU-99")


def test_sample_units_prevalence() -> None:
    n, rate = 2000, 0.03
    units = sample_units(np.random.default_rng(123), n, defect_rate=rate, size=32)
    assert len(units) == n
    defective = sum(label != "good" for _, label, _ in units)
    tolerance = 4 * math.sqrt(n * rate * (1 - rate))  # four binomial standard deviations
    assert abs(defective - n * rate) <= tolerance, defective
    assert {sku for _, _, sku in units} == set(SKUS)
    assert all(image.shape == (32, 32, 3) for image, _, _ in units)


def test_sample_units_defect_classes_uniform() -> None:
    units = sample_units(np.random.default_rng(9), 400, defect_rate=1.0, size=32)
    counts = Counter(label for _, label, _ in units)
    assert set(counts) == set(DEFECT_CLASSES[1:])
    expected = 400 / 8
    for count in counts.values():
        assert abs(count - expected) <= 4 * math.sqrt(expected), counts
    none = sample_units(np.random.default_rng(9), 50, defect_rate=0.0, size=32)
    assert all(label == "good" for _, label, _ in none)


def test_balanced_units_counts() -> None:
    units = balanced_units(np.random.default_rng(3), 2, size=48)
    assert len(units) == 2 * len(DEFECT_CLASSES)
    assert Counter(label for _, label, _ in units) == dict.fromkeys(DEFECT_CLASSES, 2)
    assert all(sku in SKUS for _, _, sku in units)
    assert all(image.shape == (48, 48, 3) and image.dtype == np.uint8 for image, _, _ in units)


@pytest.mark.parametrize("sku", SKUS)
def test_artwork_is_flat_label_without_conveyor(sku: str) -> None:
    art = artwork(sku, size=400)
    assert art.dtype == np.uint8
    assert art.ndim == 3 and art.shape[1] == 400 and art.shape[2] == 3
    assert 250 < art.shape[0] < 300  # landscape label
    frame = np.asarray(labels._FRAME, np.int16)
    border = np.concatenate([art[0], art[-1], art[:, 0], art[:, -1]]).astype(np.int16)
    assert np.abs(border - frame).max() <= 2
    assert art.mean() > 150  # mostly label stock, not belt grey
    assert np.array_equal(art, artwork(sku, size=400))


def test_skus_differ() -> None:
    arts = [artwork(sku, size=256).astype(np.int16) for sku in SKUS]
    for i in range(len(arts)):
        for j in range(i + 1, len(arts)):
            assert np.abs(arts[i] - arts[j]).mean() > 5


def test_encode_png_round_trip() -> None:
    image = render_unit(np.random.default_rng(4), "torn_label", "SKU-04", size=96)
    data = encode_png(image)
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")), image)


def test_generator_imports_nothing_from_inspectloop() -> None:
    tree = ast.parse(Path(labels.__file__).read_text(encoding="utf-8"))
    modules: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "no relative imports"
            modules.add(node.module or "")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            assert node.func.id not in {"__import__", "exec", "eval"}
    roots = {m.split(".")[0] for m in modules}
    assert "inspectloop" not in roots
    assert roots <= {"__future__", "io", "math", "dataclasses", "functools", "numpy", "PIL"}
    assert "inspectloop" not in Path(labels.__file__).read_text(encoding="utf-8").replace(
        "``inspectloop``", ""
    )
