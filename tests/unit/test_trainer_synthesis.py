"""Defects synthesised on a new label design for a retraining snapshot."""

from __future__ import annotations

import json
from pathlib import Path

from inspectloop.trainer.synthesis import synthesise_defects


def test_synthesises_the_design_mostly_defective_and_reuses_it(tmp_path: Path) -> None:
    first = synthesise_defects(
        tmp_path, design="B", skus=(), n=30, seed=3, size=48, defect_fraction=0.8
    )
    assert first is not None
    records = [json.loads(line) for line in (first / "manifest.jsonl").open()]
    assert len(records) == 30
    assert {r["design"] for r in records} == {"B"}
    assert sum(r["label"] == "good" for r in records) == 6
    assert len({r["label"] for r in records}) == 9  # good and every defect class
    stamp = (first / "manifest.jsonl").stat().st_mtime_ns
    again = synthesise_defects(
        tmp_path, design="B", skus=(), n=30, seed=3, size=48, defect_fraction=0.8
    )
    assert again == first
    assert (first / "manifest.jsonl").stat().st_mtime_ns == stamp  # reused, not rendered again
    other = synthesise_defects(
        tmp_path, design="B", skus=(), n=30, seed=4, size=48, defect_fraction=0.8
    )
    assert other is not None and other != first


def test_a_design_without_artwork_gets_no_synthesis(tmp_path: Path) -> None:
    assert synthesise_defects(tmp_path, design="2027-autumn", skus=(), n=9, seed=0, size=48) is None
    assert list(tmp_path.iterdir()) == []
