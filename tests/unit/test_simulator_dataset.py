"""Datasets on disk: layout, manifest hashes, splits, golden set, determinism, CLI."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from inspectloop.simulator.cli import simulate_app
from inspectloop.simulator.dataset import (
    DatasetSpec,
    plan,
    read_manifest,
    verify_dataset,
    write_dataset,
)
from inspectloop.simulator.defects import DEFECT_CLASSES

SPEC = DatasetSpec(n=20, seed=3, golden_per_class=1, size=64)


def _hashes(out: Path) -> dict[str, str]:
    return {
        str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(out.rglob("*"))
        if p.is_file()
    }


def test_plan_counts_are_exact_and_balanced() -> None:
    items = plan(DatasetSpec(n=200, seed=1, golden_per_class=2))
    main = [i for i in items if i.split != "golden"]
    assert Counter(i.split for i in main) == {"train": 140, "val": 30, "test": 30}
    train = Counter(i.label for i in main if i.split == "train")
    assert train["good"] == 70
    assert {train[d] for d in DEFECT_CLASSES} <= {8, 9}
    golden = [i for i in items if i.split == "golden"]
    assert Counter(i.label for i in golden) == {c: 2 for c in ("good", *DEFECT_CLASSES)}
    assert min(i.severity for i in golden if i.label != "good") <= 0.1
    assert len({i.index for i in main}) == len(main)


def test_dataset_layout_manifest_and_determinism(tmp_path: Path) -> None:
    out1, out2 = tmp_path / "one", tmp_path / "two"
    summary = write_dataset(SPEC, out1)
    write_dataset(SPEC, out2, workers=2)
    assert _hashes(out1) == _hashes(out2)  # one process or two: same bytes

    entries = read_manifest(out1)
    assert len(entries) == summary["total"] == 20 + 9
    assert verify_dataset(out1) == []
    for entry in entries:
        path = out1 / entry["path"]
        assert path.parts[-3:-1] == (entry["split"], entry["label"])
        assert path.name == f"{entry['sha256']}.png"
        assert entry["product"] == "label" and entry["design"] == "A"
        assert {"conditions", "severity", "sku", "seed", "serialization"} <= set(entry)
    by_split: dict[str, set[str]] = {}
    for entry in entries:
        by_split.setdefault(entry["split"], set()).add(entry["sha256"])
    names = list(by_split)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert not by_split[a] & by_split[b], (a, b)
    golden = Counter(e["label"] for e in entries if e["split"] == "golden")
    assert golden == {c: 1 for c in ("good", *DEFECT_CLASSES)}
    info = json.loads((out1 / "dataset.json").read_text())
    assert info["seed"] == 3 and info["counts"]["golden"]["good"] == 1

    (out1 / entries[0]["path"]).write_bytes(b"tampered")
    assert any("hash mismatch" in p for p in verify_dataset(out1))
    with pytest.raises(FileExistsError):
        write_dataset(SPEC, out1)


def test_another_seed_gives_other_images_but_the_same_golden_set(tmp_path: Path) -> None:
    write_dataset(SPEC, tmp_path / "a")
    write_dataset(DatasetSpec(n=20, seed=4, golden_per_class=1, size=64), tmp_path / "b")
    a, b = read_manifest(tmp_path / "a"), read_manifest(tmp_path / "b")
    main_a = {e["sha256"] for e in a if e["split"] != "golden"}
    main_b = {e["sha256"] for e in b if e["split"] != "golden"}
    assert not main_a & main_b
    assert [e["sha256"] for e in a if e["split"] == "golden"] == [
        e["sha256"] for e in b if e["split"] == "golden"
    ]


def test_spec_validation() -> None:
    with pytest.raises(ValueError, match="design"):
        DatasetSpec(design="C").validate()
    with pytest.raises(ValueError, match="SKU"):
        DatasetSpec(skus=("SKU-42",)).validate()
    with pytest.raises(ValueError, match="defects"):
        DatasetSpec(product="surface", defects=("ink_smudge",)).validate()


def test_cli_dataset_and_catalogue(tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "surf"
    result = runner.invoke(
        simulate_app,
        [
            "dataset",
            "--product", "surface",
            "--design", "B",
            "--n", "10",
            "--out", str(out),
            "--seed", "7",
            "--size", "64",
            "--golden-per-class", "1",
            "--lighting-drift", "0.5",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["total"] == 15
    entries = read_manifest(out)
    assert {e["product"] for e in entries} == {"surface"}
    assert {e["label"] for e in entries if e["split"] == "golden"} == {
        "good", "scratch", "dent", "stain", "pit",
    }  # fmt: skip
    assert verify_dataset(out) == []

    again = runner.invoke(simulate_app, ["dataset", "--n", "4", "--out", str(out)])
    assert again.exit_code == 1  # refuses to overwrite without --overwrite

    bad = runner.invoke(simulate_app, ["dataset", "--n", "4", "--out", str(out), "--sku", "X"])
    assert bad.exit_code != 0

    listing = runner.invoke(simulate_app, ["catalogue"])
    assert listing.exit_code == 0
    assert len(json.loads(listing.output)["label"]) == 4
