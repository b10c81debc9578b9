"""Dataset snapshots: exactly which images, with which labels, a model was trained on.

A snapshot is a directory in the layout the training code reads (``<split>/<class>/<sha>.png``)
plus ``manifest.jsonl``: one record per image with its SHA-256, label, split and source. Its id
is the SHA-256 of the manifest, so the same inputs give the same id, and a model's lineage
names its training data exactly.

Sources:

- the reference dataset(s) the first model was trained on, split as they were generated;
- production images that operators labelled (``LabelStore``, fed by operator feedback), fetched
  from the blob store by hash and split deterministically by hash into train, val (the anomaly
  detector's calibration) and test (acceptance), so an image never moves between them from one
  snapshot to the next. They are stored as the line sent them, so one that is not an RGB PNG at
  the model's input size is resized as the gateway resizes it (``core.images``), and its record
  says what it was;
- the plant's challenge sets (seeded-defect kits from the registry): split ``challenge``,
  acceptance only;
- defects synthesised on good images of the new label design (``synthesis``): ``train`` and
  ``synthetic_test`` (reported apart, never part of acceptance).

Every record names its ``label_design``: acceptance judges each design on its own.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import sqlite3
import tempfile
import threading
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from inspectloop.core.blobstore import BlobStore
from inspectloop.core.errors import ConfigError, PermanentError
from inspectloop.core.images import to_model_input
from inspectloop.core.taxonomy import GOOD_CLASS
from inspectloop.trainer.data import ImageSet
from inspectloop.v1.feedback_pb2 import (
    FEEDBACK_VERDICT_CONFIRMED_DEFECT,
    FEEDBACK_VERDICT_ESCAPE_REPORTED,
    FEEDBACK_VERDICT_FALSE_REJECT,
    FEEDBACK_VERDICT_GOOD_CONFIRMED,
    OperatorFeedback,
)

MANIFEST = "manifest.jsonl"


def label_from_feedback(feedback: OperatorFeedback, classes: Sequence[str]) -> str | None:
    """The class an operator's verdict gives the image, or None when it gives none we train on
    (a defect the operator could not name, or a class the model does not have)."""
    if feedback.verdict in (FEEDBACK_VERDICT_FALSE_REJECT, FEEDBACK_VERDICT_GOOD_CONFIRMED):
        return GOOD_CLASS
    if feedback.verdict in (FEEDBACK_VERDICT_CONFIRMED_DEFECT, FEEDBACK_VERDICT_ESCAPE_REPORTED):
        return feedback.defect_class if feedback.defect_class in classes else None
    return None


@dataclass(frozen=True)
class LabelledImage:
    sha256: str
    label: str
    line: str
    sku: str
    label_design: str
    source: str  # e.g. "operator:op-ana" or "synthetic"
    # Verdicts the image has had, and the classes they gave, oldest first (select() fills them).
    verdicts: int = 1
    labels_given: tuple[str, ...] = ()

    @property
    def disputed(self) -> bool:
        """Whether verdicts on this image gave more than one class."""
        return len(set(self.labels_given)) > 1


@dataclass(frozen=True)
class Verdict:
    """One operator verdict as the label store keeps it (its history is never rewritten)."""

    sha256: str
    label: str
    source: str
    labelled_at: float


class LabelStore:
    """Images operators labelled; SQLite, owned by the trainer.

    Every verdict is kept (``label_history``, append-only: a redelivered verdict is the same
    row); the newest verdict per image is its label (``labels``). An operator who corrects an
    earlier verdict changes what the next snapshot trains on, and the history says who said
    what when; a snapshot's manifest marks the images whose verdicts disagreed."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(
            path, timeout=30, isolation_level=None, check_same_thread=False
        )
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute(
            "CREATE TABLE IF NOT EXISTS labels (image_sha256 TEXT PRIMARY KEY, label TEXT NOT NULL,"
            " line TEXT, sku TEXT, label_design TEXT, source TEXT, labelled_at REAL NOT NULL)"
        )
        self._conn.execute(
            "CREATE TABLE IF NOT EXISTS label_history (image_sha256 TEXT NOT NULL, label TEXT NOT"
            " NULL, source TEXT NOT NULL, labelled_at REAL NOT NULL,"
            " UNIQUE (image_sha256, label, source, labelled_at))"
        )
        self._lock = threading.Lock()

    def add(self, image: LabelledImage, labelled_at: float) -> bool:
        """Records a verdict; True when it changed the image's current label (a correction)."""
        with self._lock, self._conn:
            self._conn.execute("BEGIN IMMEDIATE")
            before = self._conn.execute(
                "SELECT label FROM labels WHERE image_sha256 = ?", (image.sha256,)
            ).fetchone()
            self._conn.execute(
                "INSERT OR IGNORE INTO label_history VALUES (?, ?, ?, ?)",
                (image.sha256, image.label, image.source, labelled_at),
            )
            self._conn.execute(
                "INSERT INTO labels VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (image_sha256) DO "
                "UPDATE SET label = excluded.label, source = excluded.source, "
                "labelled_at = excluded.labelled_at WHERE excluded.labelled_at >= labelled_at",
                (
                    image.sha256,
                    image.label,
                    image.line,
                    image.sku,
                    image.label_design,
                    image.source,
                    labelled_at,
                ),
            )
            after = self._conn.execute(
                "SELECT label FROM labels WHERE image_sha256 = ?", (image.sha256,)
            ).fetchone()
        return before is not None and before[0] != after[0]

    def history(self, sha256: str) -> list[Verdict]:
        """Every verdict on the image, oldest first."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT image_sha256, label, source, labelled_at FROM label_history"
                " WHERE image_sha256 = ? ORDER BY labelled_at, rowid",
                (sha256,),
            ).fetchall()
        return [Verdict(*row) for row in rows]

    def select(self, lines: Sequence[str] = (), skus: Sequence[str] = ()) -> list[LabelledImage]:
        """Labelled images in scope (empty filters mean all), in a stable order."""
        query = (
            "SELECT l.image_sha256, l.label, l.line, l.sku, l.label_design, l.source,"
            " (SELECT COUNT(*) FROM label_history h WHERE h.image_sha256 = l.image_sha256),"
            " (SELECT GROUP_CONCAT(label, ',') FROM (SELECT label FROM label_history h"
            "  WHERE h.image_sha256 = l.image_sha256 ORDER BY labelled_at, rowid))"
            " FROM labels l"
        )
        clauses: list[str] = []
        args: list[str] = []
        if lines:
            clauses.append(f"line IN ({','.join('?' * len(lines))})")
            args.extend(lines)
        if skus:
            clauses.append(f"sku IN ({','.join('?' * len(skus))})")
            args.extend(skus)
        if clauses:
            query += " WHERE " + " AND ".join(f"l.{c}" for c in clauses)
        with self._lock:
            rows = self._conn.execute(query + " ORDER BY l.image_sha256", args).fetchall()
        return [
            LabelledImage(
                sha256=sha,
                label=label,
                line=line,
                sku=sku,
                label_design=design,
                source=source,
                verdicts=max(1, verdicts),
                labels_given=_split(given),
            )
            for sha, label, line, sku, design, source, verdicts, given in rows
        ]

    def close(self) -> None:
        self._conn.close()


def _split(joined: str | None) -> tuple[str, ...]:
    return tuple(joined.split(",")) if joined else ()


@dataclass(frozen=True)
class ChallengeSet:
    """A challenge set downloaded from the registry: ``directory/<label>/<file>``."""

    name: str
    version: int
    label_design: str
    directory: Path


def dataset_design(dataset: Path) -> str:
    """The label design of a dataset in the simulator layout (its ``dataset.json``), or ""."""
    try:
        summary = json.loads((dataset / "dataset.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return ""
    return str((summary.get("spec") or {}).get("design") or summary.get("label_design") or "")


@dataclass(frozen=True)
class Snapshot:
    snapshot_id: str  # SHA-256 of the manifest
    directory: Path
    counts: dict[str, dict[str, int]]  # split -> class -> images

    @property
    def manifest_path(self) -> Path:
        return self.directory / MANIFEST


def hash_split(sha256: str, fractions: Sequence[tuple[str, float]]) -> str:
    """A split chosen by the image's hash: stable across snapshots, independent of order."""
    position = int(sha256[:8], 16) / 0xFFFFFFFF
    total = sum(f for _, f in fractions)
    cumulative = 0.0
    for name, fraction in fractions:
        cumulative += fraction / total
        if position <= cumulative:
            return name
    return fractions[-1][0]


def from_reference(record: dict[str, Any]) -> bool:
    """Whether a snapshot record is a reference dataset's image (the old appearance)."""
    return str(record.get("source", "")).startswith("reference:")


def repeat_new_appearance(train: ImageSet, repeats: int, labelled_repeats: int = 0) -> ImageSet:
    """``train`` with every image that is not from the reference datasets (operator-labelled
    and synthesised images of the new appearance) ``repeats`` times, and the operator-labelled
    ones ``labelled_repeats`` times when that is more: the fine-tuning weighs the new
    appearance above the replayed old one, and the few hundred real images of the new design
    against the thousands synthesised from them."""
    indices = list(range(len(train)))
    for i, r in enumerate(train.records):
        if from_reference(r):
            continue
        times = repeats
        if str(r.get("source", "")).startswith("operator:"):
            times = max(times, labelled_repeats)
        indices.extend([i] * (times - 1))
    return train if len(indices) == len(train) else train.subset(indices)


def _link(source: Path, target: Path) -> None:
    if target.exists():  # named by content: the same image from another source
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)  # same filesystem: no copy
    except OSError:
        shutil.copyfile(source, target)


def _as_model_input(data: bytes, image_size: int) -> tuple[bytes, dict[str, Any] | None]:
    """A labelled image's bytes as the snapshot stores them: unchanged when they are an RGB
    PNG of ``image_size`` squared, else the image at that size as the model sees it (and what
    it was, for the manifest)."""
    with Image.open(io.BytesIO(data)) as image:
        if image.format == "PNG" and image.mode == "RGB" and image.size == (image_size,) * 2:
            return data, None
        original = {"format": image.format, "width": image.width, "height": image.height}
        rgb = to_model_input(image.convert("RGB"), image_size)
    out = io.BytesIO()
    rgb.save(out, format="PNG")
    return out.getvalue(), original


def _stage_labelled(
    image: LabelledImage, split: str, staging: Path, blob_store: BlobStore, image_size: int
) -> dict[str, Any]:
    """Writes a labelled image into the snapshot being staged; its manifest record."""
    target = Path(split) / image.label / f"{image.sha256}.png"
    data = blob_store.get(image.sha256)  # get() verifies the hash
    try:
        data, original = _as_model_input(data, image_size)
    except (UnidentifiedImageError, OSError) as exc:
        # The gateway checked it before storing it: a damaged blob store, not a label.
        raise PermanentError(f"labelled image {image.sha256}: {exc}") from exc
    (staging / target).parent.mkdir(parents=True, exist_ok=True)
    (staging / target).write_bytes(data)
    record: dict[str, Any] = {
        "path": target.as_posix(),
        "sha256": image.sha256,  # as the line sent it: the blob store's key
        "label": image.label,
        "split": split,
        "source": image.source,
        "line": image.line,
        "sku": image.sku,
        "label_design": image.label_design,
    }
    if original is not None:
        record["original"] = original
    if image.disputed:  # operators disagreed: the newest verdict is the label
        record["verdicts"] = list(image.labels_given)
    return record


def _stage_challenge(
    challenge: ChallengeSet, staging: Path, classes: Sequence[str], image_size: int
) -> list[dict[str, Any]]:
    """Writes a challenge set's images (at the model's input size) into the snapshot."""
    records = []
    for path in sorted(p for p in challenge.directory.rglob("*") if p.is_file()):
        label = path.parent.name
        if label not in classes:
            continue
        data = path.read_bytes()
        sha = hashlib.sha256(data).hexdigest()
        try:
            data, original = _as_model_input(data, image_size)
        except (UnidentifiedImageError, OSError) as exc:
            raise PermanentError(f"challenge set {challenge.name}: {path.name}: {exc}") from exc
        target = Path("challenge") / label / f"{sha}.png"
        (staging / target).parent.mkdir(parents=True, exist_ok=True)
        (staging / target).write_bytes(data)
        record: dict[str, Any] = {
            "path": target.as_posix(),
            "sha256": sha,
            "label": label,
            "split": "challenge",
            "source": f"challenge:{challenge.name}@v{challenge.version}",
            "label_design": challenge.label_design,
        }
        if original is not None:
            record["original"] = original
        records.append(record)
    return records


def check_image_size(dataset: Path, image_size: int) -> None:
    """Raises ConfigError unless every image of ``dataset`` (simulator layout) is
    ``image_size`` squared: a reference or golden dataset is the model's own input, so another
    size is a deployment mistake (regenerate it, or set the size), found at start rather than
    in the Ray workers hours later. Reads image headers only."""
    manifest = dataset / MANIFEST
    if not manifest.is_file():
        raise ConfigError(f"dataset {dataset}: no {MANIFEST} (not a dataset directory)")
    sizes: Counter[tuple[int, int]] = Counter()
    for line in manifest.read_text(encoding="utf-8").splitlines():
        if line.strip():
            with Image.open(dataset / json.loads(line)["path"]) as image:
                sizes[image.size] += 1
    wrong = {size: n for size, n in sizes.items() if size != (image_size, image_size)}
    if wrong:
        found = ", ".join(f"{n} at {w}x{h}" for (w, h), n in sorted(wrong.items()))
        raise ConfigError(
            f"dataset {dataset}: images must be {image_size}x{image_size} (the trainer's "
            f"image_size), found {found}; regenerate the dataset at that size or set image_size "
            "to the size of the line's images"
        )


def _limit_reference_train(
    sources: list[tuple[Path, dict[str, Any]]], limit: int
) -> list[tuple[Path, dict[str, Any]]]:
    train = sorted(
        (r["sha256"], i)
        for i, (_, r) in enumerate(sources)
        if r["split"] == "train" and from_reference(r)
    )
    dropped = {i for _, i in train[limit:]}
    return [s for i, s in enumerate(sources) if i not in dropped]


def _dataset_sources(
    datasets: Sequence[Path], kind: str, classes: Sequence[str]
) -> list[tuple[Path, dict[str, Any]]]:
    """Every image of ``datasets`` (in the dataset layout) with the record it gets in a
    snapshot; classes the model does not have are left out."""
    sources: list[tuple[Path, dict[str, Any]]] = []
    for dataset in datasets:
        design = dataset_design(dataset)
        for line in (dataset / MANIFEST).read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            rel = Path(item["path"])
            split, label = rel.parts[0], rel.parts[1]
            if label not in classes:
                continue
            sha = rel.stem
            record = {
                "path": (Path(split) / label / f"{sha}.png").as_posix(),
                "sha256": sha,
                "label": label,
                "split": split,
                "source": f"{kind}:{dataset.name}",
                "label_design": str(item.get("label_design") or design),
            }
            sources.append((dataset / rel, record))
    return sources


def build_snapshot(
    root: Path,
    *,
    reference_datasets: Sequence[Path],
    labelled: Iterable[LabelledImage],
    synthetic_datasets: Sequence[Path] = (),
    challenge_sets: Sequence[ChallengeSet] = (),
    blob_store: BlobStore,
    classes: Sequence[str],
    image_size: int,
    splits: Sequence[tuple[str, float]] = (("train", 0.6), ("val", 0.1), ("test", 0.3)),
    reference_train_limit: int | None = None,
) -> Snapshot:
    """Assemble a snapshot under ``root/<snapshot_id>`` (reused when it exists already).

    Labelled images come at ``image_size`` squared (see the module's docstring); the
    reference and synthetic datasets are at that size already (``check_image_size``).

    ``reference_train_limit`` keeps at most that many training images of the reference
    datasets (those with the smallest content hashes: a fixed, class-blind sample), so that a
    fine-tuning replays the old appearance without its time growing with the reference; the
    reference's validation and test images are always kept."""
    root.mkdir(parents=True, exist_ok=True)
    records: list[dict[str, Any]] = []
    staging = Path(tempfile.mkdtemp(prefix=".snapshot-", dir=root))
    try:
        sources = [
            *_dataset_sources(reference_datasets, "reference", classes),
            *_dataset_sources(synthetic_datasets, "synthetic", classes),
        ]
        if reference_train_limit is not None:
            sources = _limit_reference_train(sources, reference_train_limit)
        for source, record in sources:
            _link(source, staging / record["path"])
            records.append(record)
        for image in labelled:
            if image.label in classes:
                split = hash_split(image.sha256, splits)
                records.append(_stage_labelled(image, split, staging, blob_store, image_size))
        for challenge in challenge_sets:
            records.extend(_stage_challenge(challenge, staging, classes, image_size))
        records.sort(key=lambda r: r["path"])
        manifest = "".join(json.dumps(r, sort_keys=True) + "\n" for r in records)
        snapshot_id = hashlib.sha256(manifest.encode()).hexdigest()
        (staging / MANIFEST).write_text(manifest, encoding="utf-8")
        final = root / snapshot_id
        if final.exists():
            shutil.rmtree(staging)
        else:
            staging.rename(final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    counts: dict[str, Counter[str]] = {}
    for record in records:
        counts.setdefault(record["split"], Counter())[record["label"]] += 1
    return Snapshot(snapshot_id, final, {s: dict(c) for s, c in counts.items()})
