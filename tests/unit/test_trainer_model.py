"""Unit tests of the inspection model, the metrics, the data loader and the training loop."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import Tensor, nn

from inspectloop.simulator.dataset import DatasetSpec, write_dataset
from inspectloop.simulator.defects import LABEL_CLASSES
from inspectloop.trainer.data import (
    Augment,
    ImageSet,
    InspectionDataset,
    blackbody_rgb,
    clear_cache,
    image_statistics,
    load_dataset,
    load_split,
)
from inspectloop.trainer.fit import epoch_order, evaluate, fit, metrics_from_predictions
from inspectloop.trainer.model import (
    DEFAULT_CLASSES,
    ModelSpec,
    Preprocess,
    build_model,
    count_macs,
    count_parameters,
)

torch.set_num_threads(1)


# --- model ---------------------------------------------------------------------------------


def test_default_classes_are_good_then_the_simulators_defects() -> None:
    assert DEFAULT_CLASSES == LABEL_CLASSES
    assert ModelSpec().good_index == 0


def test_shapes_of_logits_and_embedding() -> None:
    spec = ModelSpec(embedding_dim=40)
    model = build_model(spec, seed=0).eval()
    x = torch.randn(3, 3, 128, 128)
    with torch.no_grad():
        logits = model(x)
        embedding = model.features(x)
        both = model.forward_with_features(x)
    assert logits.shape == (3, len(DEFAULT_CLASSES))
    assert embedding.shape == (3, 40)
    assert torch.equal(both[0], logits)
    assert torch.equal(both[1], embedding)
    assert (embedding >= 0).all()


def test_other_input_sizes_and_widths() -> None:
    for width in (0.5, 1.5):
        spec = ModelSpec(classes=("good", "bad"), input_size=64, width_multiplier=width)
        model = build_model(spec, seed=0).eval()
        with torch.no_grad():
            assert model(torch.randn(2, 3, 64, 64)).shape == (2, 2)


def test_weights_are_determined_by_the_seed_and_leave_the_global_rng_alone() -> None:
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    a = build_model(ModelSpec(), seed=7)
    assert torch.equal(torch.rand(1), expected_next)
    b = build_model(ModelSpec(), seed=7)
    c = build_model(ModelSpec(), seed=8)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(not torch.equal(sa[k], sc[k]) for k in sa if sa[k].is_floating_point())


def test_parameter_and_compute_budget() -> None:
    spec = ModelSpec()
    model = build_model(spec, seed=0)
    assert 100_000 < count_parameters(model) < 500_000
    assert count_macs(spec) < 100_000_000  # a few ms on two CPU threads
    assert count_parameters(build_model(ModelSpec(width_multiplier=2.0))) > count_parameters(model)


def test_spec_validation_and_round_trip() -> None:
    with pytest.raises(ValueError, match="classes"):
        ModelSpec(classes=("good",))
    with pytest.raises(ValueError, match="input size"):
        ModelSpec(input_size=100)
    with pytest.raises(ValueError, match="width"):
        ModelSpec(width_multiplier=8.0)
    spec = ModelSpec(classes=("good", "smudge", "tear"), width_multiplier=1.5, embedding_dim=32)
    data = json.loads(json.dumps(spec.to_dict()))
    assert ModelSpec.from_dict(data) == spec


def test_preprocess_normalises_uint8_nhwc_to_nchw() -> None:
    pre = Preprocess(mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    image = np.zeros((4, 6, 3), dtype=np.uint8)
    image[..., 0] = 255
    out = pre(image)
    assert out.shape == (1, 3, 4, 6)
    assert out.dtype == torch.float32
    assert torch.allclose(out[0, 0], torch.full((4, 6), 2.0))
    assert torch.allclose(out[0, 1], torch.full((4, 6), -2.0))
    with pytest.raises(TypeError):
        pre(np.zeros((4, 6, 3), dtype=np.float32))
    with pytest.raises(ValueError):
        pre(np.zeros((2, 3, 4, 6), dtype=np.uint8))


# --- metrics -------------------------------------------------------------------------------


def test_metrics_on_a_hand_made_confusion() -> None:
    classes = ("good", "smudge", "tear")
    # true good: 6 -> 4 good, 1 smudge, 1 tear   (2 false rejects of 6)
    # true smudge: 3 -> 1 good (escape), 2 smudge
    # true tear: 3 -> 1 smudge (wrong class, not an escape), 2 tear
    labels = [0, 0, 0, 0, 0, 0, 1, 1, 1, 2, 2, 2]
    preds = [0, 0, 0, 0, 1, 2, 0, 1, 1, 1, 2, 2]
    m = metrics_from_predictions(labels, preds, classes)
    assert m.confusion == [[4, 1, 1], [1, 2, 0], [0, 1, 2]]
    assert m.count == 12
    assert m.errors == 4
    assert m.accuracy == pytest.approx(8 / 12)
    assert m.per_class_recall == pytest.approx({"good": 4 / 6, "smudge": 2 / 3, "tear": 2 / 3})
    assert m.per_class_precision == pytest.approx({"good": 4 / 5, "smudge": 2 / 4, "tear": 2 / 3})
    assert (m.good_count, m.defective_count) == (6, 6)
    assert (m.false_rejects, m.escapes) == (2, 1)
    assert m.false_reject_rate == pytest.approx(2 / 6)
    assert m.escape_rate == pytest.approx(1 / 6)
    assert "smudge" in m.format_confusion()
    assert json.loads(json.dumps(m.to_dict()))["errors"] == 4


def test_metrics_without_good_or_defective_images() -> None:
    m = metrics_from_predictions([1, 1], [1, 0], ("good", "bad"))
    assert math.isnan(m.false_reject_rate)
    assert m.escape_rate == 0.5
    assert math.isnan(m.per_class_recall["good"])
    with pytest.raises(ValueError):
        metrics_from_predictions([0, 1], [0], ("good", "bad"))
    with pytest.raises(ValueError):
        metrics_from_predictions([0, 3], [0, 1], ("good", "bad"))


class _Fixed(nn.Module):
    """Predicts class ``image[0, 0, 0] % k`` (the red value of the top-left pixel)."""

    def __init__(self, k: int) -> None:
        super().__init__()
        self.k = k

    def forward(self, x: Tensor) -> Tensor:
        raw = torch.round((x[:, 0, 0, 0] * Preprocess().std[0] + Preprocess().mean[0]) * 255)
        return nn.functional.one_hot(raw.long() % self.k, self.k).float()


def test_evaluate_uses_the_models_argmax() -> None:
    images = np.zeros((5, 8, 8, 3), dtype=np.uint8)
    images[:, 0, 0, 0] = [0, 1, 1, 0, 1]  # predictions
    labels = ["good", "bad", "good", "bad", "bad"]
    data = ImageSet.from_arrays(images, labels, classes=("good", "bad"))
    m = evaluate(_Fixed(2), data)
    assert m.confusion == [[1, 1], [1, 2]]
    assert m.false_reject_rate == 0.5
    assert m.escape_rate == pytest.approx(1 / 3)


# --- data ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tiny")
    write_dataset(DatasetSpec(n=40, seed=3, size=64, golden_per_class=1), out)
    return out


def test_load_split_matches_the_dataset_summary(tiny_dataset: Path) -> None:
    clear_cache()
    summary = json.loads((tiny_dataset / "dataset.json").read_text())
    splits = load_dataset(tiny_dataset)
    assert set(splits) == set(summary["counts"])
    for name, images in splits.items():
        assert images.images.shape[1:] == (64, 64, 3)
        assert images.class_counts() == {
            c: summary["counts"][name].get(c, 0) for c in DEFAULT_CLASSES
        }
        for label, record in zip(images.label_names(), images.records, strict=True):
            assert record["label"] == label  # the manifest entry is joined
            assert record["path"].startswith(f"{name}/{label}/")
            assert record["design"] == "A"
    assert load_split(tiny_dataset, "train") is splits["train"]  # cached
    assert load_split(tiny_dataset, "train", cache=False) is not splits["train"]
    first = splits["train"].records[0]["path"]
    decoded = np.asarray(Image.open(tiny_dataset / first).convert("RGB"))
    assert np.array_equal(splits["train"].images[0], decoded)


def test_load_split_without_manifest_and_unknown_classes(tmp_path: Path) -> None:
    for i, label in enumerate(("good", "good", "torn_label")):
        folder = tmp_path / "train" / label
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((16, 16, 3), i * 40, np.uint8)).save(folder / f"{i}.png")
    images = load_split(tmp_path, "train", cache=False)
    assert images.label_names() == ["good", "good", "torn_label"]
    assert images.records[2]["path"] == "train/torn_label/2.png"
    (tmp_path / "train" / "mystery").mkdir()
    with pytest.raises(ValueError, match="mystery"):
        load_split(tmp_path, "train", cache=False)
    with pytest.raises(FileNotFoundError):
        load_split(tmp_path, "nope")


def test_dataset_items_and_deterministic_augmentation(tiny_dataset: Path) -> None:
    images = load_split(tiny_dataset, "train")
    plain = InspectionDataset(images)
    x, y = plain[0]
    assert x.shape == (3, 64, 64)
    assert y == int(images.labels[0])
    assert torch.allclose(x, Preprocess()(images.images[0])[0])
    augmented = InspectionDataset(images, augment=Augment(), seed=5)
    idx = torch.arange(len(images))
    a, _ = augmented.batch(idx, torch.Generator().manual_seed(1))
    b, _ = augmented.batch(idx, torch.Generator().manual_seed(1))
    c, _ = augmented.batch(idx, torch.Generator().manual_seed(2))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    base, _ = plain.batch(idx)
    assert torch.equal(augmented.batch(idx, augment=False)[0], base)


def test_augmentation_changes_light_and_position_only(tiny_dataset: Path) -> None:
    raw = torch.from_numpy(load_split(tiny_dataset, "train").images).permute(0, 3, 1, 2).float()
    # exposure and colour temperature: one gain per image and channel
    light = Augment(shift=0, blur_p=0.0, noise=0.0)(raw, torch.Generator().manual_seed(3))
    bright = raw > 20
    for i in range(len(raw)):
        for c in range(3):
            ratio = (
                light[i, c][bright[i, c] & (light[i, c] < 254)]
                / raw[i, c][bright[i, c] & (light[i, c] < 254)]
            )
            assert ratio.max() - ratio.min() < 0.02
            assert 0.3 < float(ratio.mean()) < 1.45
    # pose: a whole-pixel shift of at most 2 pixels (never a mirror or a rotation)
    moved = Augment(exposure=(1.0, 1.0), temperature_k=(5500.0, 5500.0), blur_p=0.0, noise=0.0)(
        raw, torch.Generator().manual_seed(4)
    )
    shifts = set()
    for i in range(len(raw)):
        found = [
            (dx, dy)
            for dx in range(-2, 3)
            for dy in range(-2, 3)
            if torch.equal(moved[i, :, 2 + dy : 62 + dy, 2 + dx : 62 + dx], raw[i, :, 2:62, 2:62])
        ]
        assert found, f"image {i} is not a shifted copy"
        shifts.add(found[0])
    assert len(shifts) > 3


def test_colour_temperature_gains_follow_the_black_body() -> None:
    gains = blackbody_rgb(torch.tensor([3000.0, 5500.0, 9000.0]))
    warm, neutral, cool = gains / gains[1]
    assert torch.allclose(neutral, torch.ones(3))
    assert warm[0] >= 1.0 > warm[1] > warm[2]  # warm light: red over green over blue
    assert cool[2] > 1.0 > cool[0]


def test_image_statistics() -> None:
    images = np.zeros((2, 4, 4, 3), np.uint8)
    images[..., 0] = 200
    images[..., 2] = 100
    stats = image_statistics(images)
    assert stats["r"] == 200
    assert stats["r_over_b"] == 2.0
    assert stats["luma"] == pytest.approx(0.299 * 200 + 0.114 * 100)


# --- training ------------------------------------------------------------------------------


def test_epoch_order_is_a_seeded_permutation_sharded_by_rank() -> None:
    a = epoch_order(10, seed=1, epoch=0)
    assert sorted(a.tolist()) == list(range(10))
    assert torch.equal(a, epoch_order(10, seed=1, epoch=0))
    assert not torch.equal(a, epoch_order(10, seed=1, epoch=1))
    shards = [epoch_order(10, 1, 0, rank=r, world_size=3) for r in range(3)]
    assert all(len(s) == 4 for s in shards)
    assert set(torch.cat(shards).tolist()) == set(range(10))


def test_fit_is_deterministic_per_seed_and_learns(tiny_dataset: Path) -> None:
    images = load_split(tiny_dataset, "train")
    spec = ModelSpec(input_size=64, width_multiplier=0.5, embedding_dim=16)

    def run(seed: int) -> tuple[list[float], dict[str, Tensor]]:
        model = build_model(spec, seed=0)
        train = InspectionDataset(images, augment=Augment())
        history = fit(model, train, images, epochs=3, lr=3e-3, seed=seed, batch_size=8)
        assert len(history.epochs) == 3
        assert set(history.last.val) >= {"accuracy", "false_reject_rate", "escape_rate"}
        return [e.train_loss for e in history.epochs], model.state_dict()

    loss_a, state_a = run(1)
    loss_b, state_b = run(1)
    loss_c, _ = run(2)
    assert loss_a == loss_b
    assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)
    assert loss_a != loss_c
    assert loss_a[-1] < loss_a[0]


def test_fit_resumes_where_a_checkpoint_left_off(tiny_dataset: Path) -> None:
    images = load_split(tiny_dataset, "train")
    spec = ModelSpec(input_size=64, width_multiplier=0.5, embedding_dim=16)
    train = InspectionDataset(images, augment=Augment())
    full = build_model(spec, seed=0)
    fit(full, train, None, epochs=2, lr=3e-3, seed=4, batch_size=8)

    checkpoints: list[dict[str, object]] = []
    first = build_model(spec, seed=0)
    fit(
        first, train, None, epochs=2, lr=3e-3, seed=4, batch_size=8,
        on_epoch=lambda record, state: checkpoints.append(
            copy.deepcopy(state.state_dict()) if record.epoch == 1 else {}
        ),
    )  # fmt: skip
    resumed = build_model(spec, seed=99)
    history = fit(
        resumed, train, None, epochs=2, lr=3e-3, seed=4, batch_size=8, resume=checkpoints[0]
    )
    assert [e.epoch for e in history.epochs] == [2]
    expected, got = full.state_dict(), resumed.state_dict()
    assert all(torch.allclose(expected[k].float(), got[k].float(), atol=1e-6) for k in expected)


def test_distillation_keeps_the_teachers_answers_on_the_marked_images(
    tiny_dataset: Path,
) -> None:
    images = load_split(tiny_dataset, "train")
    spec = ModelSpec(input_size=64, width_multiplier=0.5, embedding_dim=16)
    teacher = build_model(spec, seed=0)
    fit(teacher, InspectionDataset(images), None, epochs=4, lr=3e-3, seed=1, batch_size=8)
    # A new task that contradicts the old one on every image: each label moved by one class.
    shifted = ImageSet(
        images.images, (images.labels + 1) % len(images.classes), images.classes, images.records
    )
    marked = torch.arange(len(images)) % 2 == 0
    train = InspectionDataset(shifted)

    def divergence_from_teacher(distill: bool) -> float:
        student = copy.deepcopy(teacher)
        fit(
            student, train, None, epochs=4, lr=3e-3, seed=2, batch_size=8,
            teacher=copy.deepcopy(teacher) if distill else None,
            distill=marked if distill else None, distill_weight=4.0,
        )  # fmt: skip
        with torch.no_grad():
            x = InspectionDataset(images).batch(torch.arange(len(images)), augment=False)[0]
            said = torch.log_softmax(student(x[marked]), 1)
            taught = torch.log_softmax(teacher(x[marked]), 1)
        return float(
            torch.nn.functional.kl_div(said, taught, log_target=True, reduction="batchmean")
        )

    distilled, plain = divergence_from_teacher(True), divergence_from_teacher(False)
    assert distilled < 0.5 * plain, (distilled, plain)
    with pytest.raises(ValueError, match="teacher and distill"):
        fit(teacher, train, None, epochs=1, lr=1e-3, seed=0, teacher=teacher)
