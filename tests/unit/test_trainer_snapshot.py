"""Dataset snapshots: the reference replay limit, the weight of the new appearance, labelled
images at the model's input size, datasets of another size refused at start, and the labels a
request requires."""

from __future__ import annotations

import io
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from prometheus_client import CollectorRegistry

from inspectloop.core.blobstore import FilesystemBlobStore
from inspectloop.core.errors import ConfigError, PermanentError
from inspectloop.core.events import Envelope, Event
from inspectloop.core.topics import RETRAIN_REQUESTS
from inspectloop.inspection.images import check_image
from inspectloop.inspection.settings import ImageLimits
from inspectloop.simulator.dataset import DatasetSpec, write_dataset
from inspectloop.trainer.data import load_split
from inspectloop.trainer.metrics import TrainerMetrics
from inspectloop.trainer.model import ModelSpec
from inspectloop.trainer.service import TrainerService
from inspectloop.trainer.settings import TrainerSection
from inspectloop.trainer.snapshot import (
    LabelledImage,
    LabelStore,
    build_snapshot,
    from_reference,
    repeat_new_appearance,
)
from inspectloop.v1.monitor_pb2 import RetrainRequest


def test_reference_replay_keeps_a_fixed_sample_of_training_images(tmp_path: Path) -> None:
    reference = tmp_path / "reference"
    write_dataset(DatasetSpec(n=60, seed=3, size=48, golden_per_class=0), reference)
    blobs = FilesystemBlobStore(tmp_path / "blobs", 1 << 20)
    classes = ModelSpec().classes

    def snapshot(limit: int | None) -> tuple[str, Counter[str]]:
        snap = build_snapshot(
            tmp_path / "snapshots",
            reference_datasets=[reference],
            labelled=[],
            blob_store=blobs,
            classes=classes,
            image_size=48,
            reference_train_limit=limit,
        )
        files = Counter(p.parts[-3] for p in snap.directory.glob("*/*/*.png"))
        return snap.snapshot_id, files

    full_id, full = snapshot(None)
    limited_id, limited = snapshot(10)
    assert full["train"] == 42 and limited["train"] == 10
    assert limited["val"] == full["val"] > 0 and limited["test"] == full["test"] > 0
    assert snapshot(10)[0] == limited_id != full_id  # the same sample every time


def test_the_new_appearance_is_repeated_and_the_reference_is_not(tmp_path: Path) -> None:
    reference, synthetic = tmp_path / "reference", tmp_path / "synthetic"
    write_dataset(DatasetSpec(n=40, seed=3, size=48, golden_per_class=0), reference)
    write_dataset(DatasetSpec(design="B", n=30, seed=4, size=48, golden_per_class=0), synthetic)
    snap = build_snapshot(
        tmp_path / "snapshots",
        reference_datasets=[reference],
        synthetic_datasets=[synthetic],
        labelled=[],
        blob_store=FilesystemBlobStore(tmp_path / "blobs", 1 << 20),
        classes=ModelSpec().classes,
        image_size=48,
    )
    train = load_split(snap.directory, "train")
    old = sum(from_reference(r) for r in train.records)
    new = len(train) - old
    assert old > 0 and new > 0
    tripled = repeat_new_appearance(train, 3)
    assert sum(from_reference(r) for r in tripled.records) == old
    assert len(tripled) == old + 3 * new
    sources = Counter(r["source"] for r in tripled.records)
    assert sources == {"reference:reference": old, "synthetic:synthetic": 3 * new}
    assert repeat_new_appearance(train, 1) is train


def _encoded(width: int, height: int, fmt: str) -> bytes:
    pixels = np.random.default_rng(width).integers(0, 255, (height, width, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format=fmt)
    return out.getvalue()


def test_labelled_images_are_stored_as_the_gateway_hands_them_to_the_model(
    tmp_path: Path,
) -> None:
    blobs = FilesystemBlobStore(tmp_path / "blobs", 1 << 20)
    camera = _encoded(96, 80, "JPEG")  # a line whose camera sends another size and format
    fitting = _encoded(48, 48, "PNG")
    labels = [
        LabelledImage(blobs.put(data).sha256, "good", "line-1", "4711", "B", "operator:op")
        for data in (camera, fitting)
    ]
    snap = build_snapshot(
        tmp_path / "snapshots",
        reference_datasets=[],
        labelled=labels,
        blob_store=blobs,
        classes=ModelSpec().classes,
        image_size=48,
    )
    records = {r["sha256"]: r for r in map(json.loads, snap.manifest_path.read_text().splitlines())}
    resized, kept = (records[image.sha256] for image in labels)
    assert resized["original"] == {"format": "JPEG", "width": 96, "height": 80}
    served = check_image(camera, "image/jpeg", ImageLimits()).at_size(48).pixels
    with Image.open(snap.directory / resized["path"]) as stored:
        assert stored.format == "PNG"
        assert np.array_equal(np.asarray(stored), served)  # the very pixels served
    assert "original" not in kept
    assert (snap.directory / kept["path"]).read_bytes() == fitting  # as the line sent it


def test_a_dataset_of_another_size_fails_at_start(tmp_path: Path) -> None:
    reference = tmp_path / "reference"
    write_dataset(DatasetSpec(n=20, seed=3, size=48, golden_per_class=1), reference)

    def start(**settings: object) -> TrainerService:
        return TrainerService(
            TrainerSection(work_dir=tmp_path / "trainer", **settings),  # type: ignore[arg-type]
            bus=None,  # type: ignore[arg-type]  # not reached: a check at construction
            blob_store=None,  # type: ignore[arg-type]
            registry=None,  # type: ignore[arg-type]
            runner=None,  # type: ignore[arg-type]
            labels=None,  # type: ignore[arg-type]
            metrics=None,  # type: ignore[arg-type]
        )

    images = sum(1 for _ in reference.glob("*/*/*.png"))
    with pytest.raises(
        ConfigError,
        match=rf"{reference}: images must be 64x64 .* found "
        rf"{images} at 48x48",
    ):
        start(image_size=64, reference_datasets=(reference,))
    with pytest.raises(ConfigError, match="images must be 64x64"):
        start(image_size=64, golden_dataset=reference)
    with pytest.raises(ConfigError, match=f"{tmp_path / 'missing'}: no manifest.jsonl"):
        start(image_size=48, reference_datasets=(tmp_path / "missing",))
    assert start(image_size=48, reference_datasets=(reference,), golden_dataset=reference)


def test_a_retrain_request_waits_for_the_labels_it_requires(tmp_path: Path) -> None:
    labels = LabelStore(tmp_path / "labels.sqlite3")
    metrics = CollectorRegistry()
    service = TrainerService(
        TrainerSection(work_dir=tmp_path / "trainer", label_wait_s=0.2),
        bus=None,  # type: ignore[arg-type]  # not reached: the request is refused first
        blob_store=None,  # type: ignore[arg-type]
        registry=None,  # type: ignore[arg-type]
        runner=None,  # type: ignore[arg-type]
        labels=labels,
        metrics=TrainerMetrics(metrics),
    )
    request = RetrainRequest(request_id="r-1", min_labelled_images=2)
    request.scope.lines.append("line-1")
    for k, line in enumerate(["line-1", "line-2"]):
        labels.add(LabelledImage(f"{k:064x}", "good", line, "4711", "B", "operator:op"), 0.0)
    event = Event(
        Envelope.new(RETRAIN_REQUESTS, "test"), request, RETRAIN_REQUESTS.name, 0, 0, None
    )
    with pytest.raises(
        PermanentError, match="needs 2 operator-labelled images in scope; the trainer holds 1"
    ):
        service.handle_retrain(event)
    # Dead-lettered: counted as failed, and no longer running.
    failed = {"outcome": "failed"}
    assert metrics.get_sample_value("inspectloop_trainer_retrains_requests_total", failed) == 1
    count = "inspectloop_trainer_retrain_duration_seconds_count"
    assert metrics.get_sample_value(count, failed) == 1
    assert metrics.get_sample_value("inspectloop_trainer_retrains_running_requests") == 0
    labels.add(LabelledImage(f"{9:064x}", "good", "line-1", "4711", "B", "operator:op"), 0.0)
    service.wait_for_labels(request)  # returns: two in scope now


def test_every_verdict_is_kept_and_the_newest_is_the_label(tmp_path: Path) -> None:
    labels = LabelStore(tmp_path / "labels.sqlite3")
    blobs = FilesystemBlobStore(tmp_path / "blobs", 1 << 20)
    sha = blobs.put(_encoded(48, 48, "PNG")).sha256

    def verdict(label: str, operator: str, at: float) -> bool:
        image = LabelledImage(sha, label, "line-1", "4711", "B", f"operator:{operator}")
        return labels.add(image, at)

    assert verdict("good", "op-ana", 10.0) is False  # a first verdict corrects nothing
    assert verdict("good", "op-ana", 10.0) is False  # redelivered: the same verdict
    assert verdict("ink_smudge", "op-ben", 20.0) is True  # overruled
    assert verdict("good", "op-chidi", 15.0) is False  # late, older: history only
    assert [(v.label, v.source, v.labelled_at) for v in labels.history(sha)] == [
        ("good", "operator:op-ana", 10.0),
        ("good", "operator:op-chidi", 15.0),
        ("ink_smudge", "operator:op-ben", 20.0),
    ]
    [current] = labels.select(lines=["line-1"])
    assert (current.label, current.source, current.verdicts) == ("ink_smudge", "operator:op-ben", 3)
    assert current.disputed and current.labels_given == ("good", "good", "ink_smudge")
    snap = build_snapshot(
        tmp_path / "snapshots",
        reference_datasets=[],
        labelled=[current],
        blob_store=blobs,
        classes=ModelSpec().classes,
        image_size=48,
    )
    [record] = map(json.loads, snap.manifest_path.read_text().splitlines())
    assert (record["label"], record["verdicts"]) == ("ink_smudge", ["good", "good", "ink_smudge"])
    labels.close()
    reopened = LabelStore(tmp_path / "labels.sqlite3")  # the history survives a restart
    assert len(reopened.history(sha)) == 3
    reopened.close()
