"""Defects synthesised in image space on good units of a new label design.

The good units come from the simulator here (a test may use it); the synthesis itself only sees
pixels, so every check is on what it made of them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt
import pytest

from inspectloop.core.taxonomy import DEFECT_CLASSES
from inspectloop.simulator.render import render_label
from inspectloop.trainer.synthesis import (
    DesignStatistics,
    SynthesisPlan,
    defect_region,
    synthesise,
    synthesise_set,
    visible_fraction,
    write_synthetic_dataset,
)

SIZE = 96


def _goods(n: int, design: Literal["A", "B"] = "B") -> list[npt.NDArray[np.uint8]]:
    return [
        render_label("SKU-01", design, "gs1-dm", rng=np.random.default_rng(40 + i), size=SIZE)[0]
        for i in range(n)
    ]


@pytest.mark.parametrize("defect", DEFECT_CLASSES)
def test_every_class_changes_the_unit(defect: str) -> None:
    good = _goods(1)[0]
    made = synthesise(good, defect, 0.8, np.random.default_rng(1))
    assert made.shape == good.shape and made.dtype == np.uint8
    changed = np.abs(made.astype(int) - good.astype(int)).max(axis=2) > 25
    assert changed.sum() >= 8, f"{defect} left the unit (nearly) unchanged"
    again = synthesise(good, defect, 0.8, np.random.default_rng(1))
    assert np.array_equal(made, again)  # deterministic for a seed


def test_severity_grows_the_change() -> None:
    good = _goods(1)[0]
    small = synthesise(good, "ink_smudge", 0.1, np.random.default_rng(3))
    large = synthesise(good, "ink_smudge", 1.0, np.random.default_rng(3))
    assert np.abs(large.astype(int) - good).sum() > np.abs(small.astype(int) - good).sum()


def test_a_defect_too_faint_to_see_is_never_a_training_image() -> None:
    good = _goods(1)[0]
    floor = 0.0015
    faint = [
        visible_fraction(synthesise(good, defect, 0.0, np.random.default_rng(i)), good)
        for i, defect in enumerate(DEFECT_CLASSES * 2)
    ]
    assert min(faint) < floor  # at severity 0 some operations change almost nothing
    images, labels, severities = synthesise_set(
        [good], 32, seed=3, severity=(0.0, 0.0), min_visible_fraction=floor
    )
    assert images and len(images) == len(labels) == len(severities)
    assert all(visible_fraction(image, good) >= floor for image in images)
    assert max(severities) > 0.0  # the faint ones were drawn again, stronger


def test_the_region_of_a_real_defect_is_found_against_the_designs_goods() -> None:
    goods = _goods(12)
    stats = DesignStatistics.fit(np.stack(goods))
    smudged, _ = render_label(
        "SKU-01",
        "B",
        "gs1-dm",
        rng=np.random.default_rng(99),
        defect="ink_smudge",
        severity=0.9,
        size=SIZE,
    )
    region = defect_region(smudged, stats)
    assert region is not None and 0 < region.mean() < 0.5


def test_a_dataset_covers_every_class_keeps_a_synthetic_test_split_and_is_reused(
    tmp_path: Path,
) -> None:
    goods = _goods(8)
    plan = SynthesisPlan(
        design="B",
        defective=90,
        subtle=18,
        subtle_severity=0.35,
        pasted=0,
        artwork_goods=0,
        test_fraction=0.2,
        min_visible_fraction=0.0,  # every draw kept: the count is exact
        seed=5,
    )
    first = write_synthetic_dataset(tmp_path, plan, goods)
    records = [json.loads(line) for line in (first / "manifest.jsonl").open()]
    assert len(records) == 108
    assert {r["label_design"] for r in records} == {"B"}
    labels = {r["label"] for r in records}
    assert set(DEFECT_CLASSES) <= labels
    splits = {Path(r["path"]).parts[0] for r in records}
    assert splits == {"train", "synthetic_test"}
    for record in records:
        assert (first / record["path"]).is_file()
    stamp = (first / "manifest.jsonl").stat().st_mtime_ns
    assert write_synthetic_dataset(tmp_path, plan, goods) == first
    assert (first / "manifest.jsonl").stat().st_mtime_ns == stamp  # reused, not made again
    other = write_synthetic_dataset(tmp_path, plan, goods[:-1])
    assert other != first


def test_no_good_units_is_an_error_naming_the_design(tmp_path: Path) -> None:
    plan = SynthesisPlan(
        design="2027-autumn",
        defective=1,
        subtle=0,
        subtle_severity=0.3,
        pasted=0,
        artwork_goods=0,
        test_fraction=0.1,
        seed=0,
    )
    with pytest.raises(ValueError, match="2027-autumn"):
        write_synthetic_dataset(tmp_path, plan, [])
