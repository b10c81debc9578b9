"""The validation report of a model version: one self-contained HTML file.

Everything is inline (CSS, and the worst errors as base64 PNG ``data:`` URIs), so the file can be
stored as an artifact, downloaded from the registry and opened anywhere, offline. Sections:
verdict, summary (accuracy, false reject and escape rates, ONNX parity, int8 delta, latency),
gates (pass/fail with reasons), confusion matrix (counts, cells shaded by the row-normalised
share: the diagonal green, mistakes red), per-class precision / recall / F1 / support, the worst
errors (escapes first, then false rejects, then confusions between defect classes; most
confident first) and lineage.

Rendered with a Jinja2 template with autoescaping on: every string that comes from data (class
names, details, ids, lineage) is HTML-escaped.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from jinja2 import Environment, StrictUndefined
from PIL import Image

from inspectloop.core.taxonomy import GOOD_CLASS

if TYPE_CHECKING:
    from inspectloop.trainer.acceptance import Acceptance
    from inspectloop.trainer.anomaly import Calibration
    from inspectloop.trainer.fit import Metrics
    from inspectloop.trainer.gates import GateResult, LatencyStats
    from inspectloop.trainer.packaging import Int8Delta, PackagedArtifact

THUMBNAIL_MAX_SIDE = 160


@dataclass(frozen=True)
class ReportInfo:
    """Which version the report is about, and its lineage."""

    model_name: str
    version: str
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    parent_version: str = ""
    dataset_snapshot_id: str = ""
    dataset_sha256: str = ""
    training_run_id: str = ""
    code_version: str = ""
    seed: int | None = None
    retrain_request_id: str = ""
    framework_versions: Mapping[str, str] = field(default_factory=dict)
    extra: Mapping[str, str] = field(default_factory=dict)  # further lineage rows

    def lineage_rows(self) -> list[tuple[str, str]]:
        """(label, value) rows of the lineage table; empty values shown as a dash."""
        rows = [
            ("model", self.model_name),
            ("version", self.version),
            ("created", self.created_at.isoformat(timespec="seconds")),
            ("parent version", self.parent_version or "(none: first version)"),
            ("dataset snapshot", self.dataset_snapshot_id),
            ("dataset sha256", self.dataset_sha256),
            ("training run", self.training_run_id),
            ("code version", self.code_version),
            ("seed", "" if self.seed is None else str(self.seed)),
            ("retrain request", self.retrain_request_id),
        ]
        rows += [(f"{k} version", v) for k, v in sorted(self.framework_versions.items())]
        rows += sorted(self.extra.items())
        return [(k, v or "-") for k, v in rows]


@dataclass(frozen=True)
class ErrorExample:
    """One misclassified image."""

    image: npt.NDArray[np.uint8]  # H x W x 3
    true_class: str
    predicted_class: str
    confidence: float  # probability of the predicted class
    item_id: str = ""

    def kind(self, good_class: str = GOOD_CLASS) -> str:
        """``escape`` (defect passed), ``false reject`` (good rejected) or ``wrong defect``."""
        if self.predicted_class == good_class and self.true_class != good_class:
            return "escape"
        if self.true_class == good_class:
            return "false reject"
        return "wrong defect"


_SEVERITY = {"escape": 0, "false reject": 1, "wrong defect": 2}


def select_worst_errors(
    images: npt.NDArray[np.uint8],
    labels: Sequence[int] | npt.NDArray[np.integer[Any]],
    probabilities: npt.ArrayLike,
    classes: Sequence[str],
    *,
    limit: int = 24,
    item_ids: Sequence[str] | None = None,
    good_class: str = GOOD_CLASS,
) -> list[ErrorExample]:
    """The misclassified images to show: escapes first, then false rejects, then wrong defect
    classes; within each, the most confident mistakes first; at most ``limit``."""
    probs = np.asarray(probabilities, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64).reshape(-1)
    if probs.shape != (len(y), len(classes)) or len(images) != len(y):
        raise ValueError("need N images, N labels and N x classes probabilities")
    predicted = probs.argmax(axis=1)
    errors = [
        ErrorExample(
            image=np.asarray(images[i], dtype=np.uint8),
            true_class=classes[int(y[i])],
            predicted_class=classes[int(predicted[i])],
            confidence=float(probs[i, predicted[i]]),
            item_id=item_ids[i] if item_ids is not None else "",
        )
        for i in np.flatnonzero(predicted != y)
    ]
    errors.sort(key=lambda e: (_SEVERITY[e.kind(good_class)], -e.confidence, e.item_id))
    return errors[:limit]


@dataclass(frozen=True)
class FlaggedImage:
    """An acceptance image the version rejected, with the anomaly detector's map of it."""

    image: npt.NDArray[np.uint8]  # H x W x 3
    anomaly_map: npt.NDArray[np.float32]  # g x g, in units of the threshold
    true_class: str
    predicted_class: str
    anomaly_score: float
    source: str


def anomaly_overlay(image: npt.NDArray[np.uint8], amap: npt.NDArray[np.float32]) -> str:
    """The image beside itself with the anomaly map laid over it in red (1 = the threshold), as a
    PNG data URI."""
    side = image.shape[0]
    heat = np.asarray(
        Image.fromarray(np.clip(amap / 1.5, 0, 1).astype(np.float32)).resize(
            (side, side), Image.Resampling.BILINEAR
        ),
        dtype=np.float32,
    )
    over = image.astype(np.float32) * (1 - 0.6 * heat[..., None])
    over[..., 0] += 255 * 0.6 * heat
    pair = np.concatenate([image, np.clip(over, 0, 255).astype(np.uint8)], axis=1)
    return png_data_uri(pair, max_side=2 * THUMBNAIL_MAX_SIDE)


def png_data_uri(image: npt.NDArray[np.uint8], max_side: int = THUMBNAIL_MAX_SIDE) -> str:
    """A ``data:image/png;base64,...`` URI of an ``H x W x 3`` uint8 image (downscaled to
    ``max_side`` when larger)."""
    picture = Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8), mode="RGB")
    if max(picture.size) > max_side:
        picture.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _num(value: float | None, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.{digits}f}"


def _pct(value: float | None, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value * 100:.{digits}f}%"


def _gate_number(name: str, value: float) -> str:
    if math.isnan(value):
        return "n/a"
    if name.startswith(("accuracy", "recall/", "false_reject", "escape")):
        return _pct(value, 3)
    if name.startswith("latency"):
        return f"{value:.2f} ms"
    return f"{value:g}"


def _confusion_rows(classes: Sequence[str], confusion: Sequence[Sequence[int]]) -> list[Any]:
    rows = []
    for i, (name, row) in enumerate(zip(classes, confusion, strict=True)):
        total = sum(row)
        cells = []
        for j, count in enumerate(row):
            share = count / total if total else 0.0
            colour = "22,163,74" if i == j else "220,38,38"
            alpha = round(0.08 + 0.8 * share, 3) if count else 0.0
            cells.append(
                {
                    "count": count,
                    "share": _pct(share, 1) if total else "n/a",
                    "style": f"background: rgba({colour},{alpha})",
                    "diagonal": i == j,
                }
            )
        rows.append({"name": name, "cells": cells, "total": total})
    return rows


def _class_rows(metrics: Metrics) -> list[dict[str, str]]:
    rows = []
    for i, name in enumerate(metrics.classes):
        precision = metrics.per_class_precision.get(name, math.nan)
        recall = metrics.per_class_recall.get(name, math.nan)
        f1 = (
            2 * precision * recall / (precision + recall)
            if not (math.isnan(precision) or math.isnan(recall)) and precision + recall
            else math.nan
        )
        rows.append(
            {
                "name": name,
                "support": str(sum(metrics.confusion[i])),
                "predicted": str(sum(row[i] for row in metrics.confusion)),
                "precision": _pct(precision),
                "recall": _pct(recall),
                "f1": _num(f1),
            }
        )
    return rows


def render_report(
    info: ReportInfo,
    metrics: Metrics,
    gates: Sequence[GateResult],
    worst_errors: Sequence[ErrorExample] = (),
    *,
    int8: Int8Delta | None = None,
    parity_diff: float | None = None,
    latency: LatencyStats | None = None,
    artifacts: Sequence[PackagedArtifact] = (),
    good_class: str = GOOD_CLASS,
    acceptance: Acceptance | None = None,
    calibrations: Sequence[Calibration] = (),
    flagged: Sequence[FlaggedImage] = (),
    flagged_total: int = 0,
) -> str:
    """The report as an HTML string (see :func:`write_report`)."""
    passed = bool(gates) and all(g.passed for g in gates)
    summary = [
        ("images", str(metrics.count)),
        ("accuracy", _pct(metrics.accuracy, 3)),
        ("errors", str(metrics.errors)),
        (
            "false reject rate",
            f"{_pct(metrics.false_reject_rate, 3)} ({metrics.false_rejects} of "
            f"{metrics.good_count} good)",
        ),
        (
            "escape rate",
            f"{_pct(metrics.escape_rate, 3)} ({metrics.escapes} of "
            f"{metrics.defective_count} defective)",
        ),
        ("ONNX parity (max abs diff)", "n/a" if parity_diff is None else f"{parity_diff:.3g}"),
    ]
    if int8 is not None:
        summary.append(
            (
                "int8 (edge) accuracy",
                f"{_pct(int8.int8_accuracy, 3)} vs fp32 {_pct(int8.fp32_accuracy, 3)} "
                f"(delta {int8.delta * 100:+.3f} points, agreement {_pct(int8.agreement)}, "
                f"{int8.count} images)",
            )
        )
    if latency is not None:
        summary.append(
            (
                "CPU latency",
                f"p50 {latency.p50_ms:.2f} ms, p95 {latency.p95_ms:.2f} ms ({latency.describe()})",
            )
        )
    context = {
        "info": info,
        "passed": passed,
        "failed": [g for g in gates if not g.passed],
        "summary": summary,
        "gates": [
            {
                "name": g.name,
                "passed": g.passed,
                "value": _gate_number(g.name, g.value),
                "rule": f"{g.comparator} {_gate_number(g.name, g.threshold)}",
                "detail": g.detail,
            }
            for g in gates
        ],
        "classes": list(metrics.classes),
        "confusion": _confusion_rows(metrics.classes, metrics.confusion),
        "class_rows": _class_rows(metrics),
        "errors": [
            {
                "uri": png_data_uri(e.image),
                "true": e.true_class,
                "pred": e.predicted_class,
                "confidence": _pct(e.confidence, 1),
                "kind": e.kind(good_class),
                "id": e.item_id,
            }
            for e in worst_errors
        ],
        "artifacts": [
            {"kind": str(a.kind), "name": a.path.name, "sha256": a.sha256, "size": a.size_bytes}
            for a in artifacts
        ],
        "lineage": info.lineage_rows(),
        "acceptance": _acceptance_rows(acceptance),
        "evidence": [
            {
                "name": e.class_name,
                "examples": e.examples,
                "detected": e.detected,
                "bound": _pct(e.lower_bound, 1),
                "open": acceptance is not None and e.lower_bound < acceptance.required_lower_bound,
            }
            for e in (acceptance.evidence if acceptance else [])
        ],
        "required_bound": _pct(acceptance.required_lower_bound, 0) if acceptance else "",
        "synthetic": _metric_row("synthetic (reported apart)", acceptance.synthetic)
        if acceptance and acceptance.synthetic
        else None,
        "calibrations": [
            {
                "design": c.design,
                "images": c.images,
                "max": f"{c.max_score:.4g}",
                "threshold": f"{c.threshold:.4g}",
                "method": c.method,
            }
            for c in calibrations
        ],
        "flagged": [
            {
                "uri": anomaly_overlay(f.image, f.anomaly_map),
                "true": f.true_class,
                "pred": f.predicted_class,
                "score": f"{f.anomaly_score:.2f}",
                "source": f.source,
            }
            for f in flagged
        ],
        "flagged_total": flagged_total,
    }
    environment = Environment(
        autoescape=True, undefined=StrictUndefined, keep_trailing_newline=True
    )
    return environment.from_string(TEMPLATE).render(**context)


def _metric_row(name: str, m: Metrics) -> dict[str, str]:
    return {
        "name": name,
        "images": str(m.count),
        "accuracy": _pct(m.accuracy, 2),
        "frr": f"{_pct(m.false_reject_rate, 2)} ({m.false_rejects}/{m.good_count})",
        "escapes": f"{_pct(m.escape_rate, 2)} ({m.escapes}/{m.defective_count})",
    }


def _acceptance_rows(acceptance: Acceptance | None) -> list[dict[str, str]]:
    if acceptance is None:
        return []
    rows = []
    for design, m in sorted(acceptance.by_design.items()):
        sources = acceptance.sources.get(design, {})
        where = ", ".join(f"{n} {s}" for s, n in sources.items() if n)
        rows.append(_metric_row(f"design {design} ({where})", m))
        reason = acceptance.reasons.get(design)
        if reason is not None:
            row = _metric_row(f"design {design}: the defect class named right", reason)
            rows.append(row | {"frr": "", "escapes": ""})  # the same decisions as above
        alone = acceptance.classifier_only.get(design)
        if alone is not None:
            rows.append(_metric_row(f"design {design}: the classifier alone", alone))
    return rows


def write_report(
    path: Path,
    info: ReportInfo,
    metrics: Metrics,
    gates: Sequence[GateResult],
    worst_errors: Sequence[ErrorExample] = (),
    *,
    int8: Int8Delta | None = None,
    parity_diff: float | None = None,
    latency: LatencyStats | None = None,
    artifacts: Sequence[PackagedArtifact] = (),
    good_class: str = GOOD_CLASS,
    **acceptance: Any,
) -> Path:
    """Write the self-contained HTML validation report to ``path``; returns ``path``.

    ``metrics`` carries the classes, the confusion matrix (rows true, columns predicted) and
    the per-class precision and recall; ``worst_errors`` comes from
    :func:`select_worst_errors`."""
    text = render_report(
        info,
        metrics,
        gates,
        worst_errors,
        int8=int8,
        parity_diff=parity_diff,
        latency=latency,
        artifacts=artifacts,
        good_class=good_class,
        **acceptance,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


TEMPLATE = """\
<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Validation report: {{ info.model_name }} {{ info.version }}</title>
<style>
  body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1f2933;
         margin: 2rem auto; max-width: 1200px; padding: 0 1rem; }
  h1 { font-size: 1.5rem; margin-bottom: .25rem; }
  h2 { font-size: 1.15rem; margin-top: 2rem; border-bottom: 1px solid #d9e2ec; }
  table { border-collapse: collapse; margin: .5rem 0; }
  th, td { border: 1px solid #d9e2ec; padding: .3rem .55rem; text-align: left;
           vertical-align: top; }
  th { background: #f0f4f8; font-weight: 600; }
  td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
  .verdict { display: inline-block; padding: .35rem .8rem; border-radius: 4px;
             font-weight: 700; color: #fff; }
  .verdict.pass, .badge.pass { background: #15803d; }
  .verdict.fail, .badge.fail { background: #b91c1c; }
  .badge { color: #fff; padding: .1rem .45rem; border-radius: 3px; font-size: .8rem;
           font-weight: 700; }
  tr.failed td { background: #fef2f2; }
  table.confusion td { text-align: right; min-width: 3.2rem; }
  table.confusion td.diagonal { font-weight: 700; }
  .muted { color: #627d98; }
  .errors { display: flex; flex-wrap: wrap; gap: .75rem; }
  figure { margin: 0; border: 1px solid #d9e2ec; padding: .4rem; width: 170px;
           font-size: .8rem; }
  figure img { width: 160px; height: auto; image-rendering: pixelated; display: block; }
  code { font-size: .8rem; word-break: break-all; }
</style>
</head>
<body>
<h1>Validation report: {{ info.model_name }} version {{ info.version }}</h1>
<p class="muted">Created {{ info.created_at.isoformat(timespec="seconds") }}</p>
{% if passed %}
<p><span class="verdict pass">VALIDATED</span> every gate passed</p>
{% else %}
<p><span class="verdict fail">REJECTED</span> {{ failed | length }} gate(s) failed:</p>
<ul>
{% for g in failed %}  <li><strong>{{ g.name }}</strong>: {{ g.detail }}</li>
{% endfor %}</ul>
{% endif %}

<h2>Summary</h2>
<table>
{% for label, value in summary %}  <tr><th>{{ label }}</th><td>{{ value }}</td></tr>
{% endfor %}</table>

{% if acceptance %}
<h2>Acceptance: real images no training step saw</h2>
<p class="muted">Combined decision (a unit passes only if the classifier says good and the
anomaly detector does not flag it), on held-out real images (test) and the plant's challenge
sets, each label design on its own. Synthetic images never count. Accuracy and the gates judge
the decision: a defective unit rejected under another defect class was rightly rejected; the row
"the defect class named right" gives the accuracy of the reason as well.</p>
<table>
  <tr><th>set</th><th class="num">images</th><th class="num">accuracy</th><th class="num">false rejects</th><th class="num">escapes</th></tr>
{% for r in acceptance %}  <tr><td>{{ r.name }}</td><td class="num">{{ r.images }}</td><td class="num">{{ r.accuracy }}</td><td class="num">{{ r.frr }}</td><td class="num">{{ r.escapes }}</td></tr>
{% endfor %}{% if synthetic %}  <tr class="muted"><td>{{ synthetic.name }}</td><td class="num">{{ synthetic.images }}</td><td class="num">{{ synthetic.accuracy }}</td><td class="num">{{ synthetic.frr }}</td><td class="num">{{ synthetic.escapes }}</td></tr>
{% endif %}</table>
<h2>Real evidence per defect class</h2>
<p class="muted">Real defective units of the class and how many were rejected, with the one-sided
95% Clopper-Pearson lower bound of the recall. A class under {{ required_bound }} is open: its
lines run guarded until operator-confirmed production units close the bound.</p>
<table>
  <tr><th>class</th><th class="num">real examples</th><th class="num">rejected</th><th class="num">recall lower bound</th><th>evidence</th></tr>
{% for e in evidence %}  <tr class="{{ 'failed' if e.open else '' }}"><td>{{ e.name }}</td><td class="num">{{ e.examples }}</td><td class="num">{{ e.detected }}</td><td class="num">{{ e.bound }}</td><td>{{ 'too few: lines stay guarded' if e.open else 'sufficient' }}</td></tr>
{% endfor %}</table>
{% endif %}
{% if calibrations %}
<h2>Anomaly detector</h2>
<table>
  <tr><th>design</th><th class="num">held-out good images</th><th class="num">largest score</th><th class="num">threshold</th><th>method</th></tr>
{% for c in calibrations %}  <tr><td>{{ c.design }}</td><td class="num">{{ c.images }}</td><td class="num">{{ c.max }}</td><td class="num">{{ c.threshold }}</td><td>{{ c.method }}</td></tr>
{% endfor %}</table>
{% endif %}
{% if flagged %}
<h2>Flagged images and their anomaly maps</h2>
<p class="muted">Every acceptance image the version rejects{% if flagged_total > flagged|length %} (the first {{ flagged|length }} of {{ flagged_total }}){% endif %}: the image, and the anomaly map over it (red: the patches past the threshold).</p>
<div class="errors">
{% for f in flagged %}  <figure style="width: 340px">
    <img src="{{ f.uri }}" style="width: 330px" alt="{{ f.true }} flagged">
    <figcaption>true: {{ f.true }}; decided: {{ f.pred }}; anomaly {{ f.score }}<br>{{ f.source }}</figcaption>
  </figure>
{% endfor %}</div>
{% endif %}

<h2>Gates</h2>
<table class="gates">
  <tr><th>gate</th><th class="num">value</th><th>rule</th><th>result</th><th>detail</th></tr>
{% for g in gates %}  <tr class="{{ 'passed' if g.passed else 'failed' }}">
    <td>{{ g.name }}</td><td class="num">{{ g.value }}</td><td>{{ g.rule }}</td>
    <td><span class="badge {{ 'pass' if g.passed else 'fail' }}">{{ 'PASS' if g.passed else 'FAIL' }}</span></td>
    <td>{{ g.detail }}</td>
  </tr>
{% endfor %}</table>

<h2>Confusion matrix</h2>
<p class="muted">Rows: true class; columns: predicted class. Shading: share of the row.</p>
<table class="confusion">
  <tr><th>true \\ predicted</th>{% for c in classes %}<th>{{ c }}</th>{% endfor %}<th>total</th></tr>
{% for row in confusion %}  <tr><th>{{ row.name }}</th>{% for cell in row.cells %}<td class="{{ 'diagonal' if cell.diagonal else '' }}" style="{{ cell.style }}" title="{{ cell.share }}">{{ cell.count }}</td>{% endfor %}<td class="num">{{ row.total }}</td></tr>
{% endfor %}</table>

<h2>Per-class metrics</h2>
<table class="classes">
  <tr><th>class</th><th class="num">support</th><th class="num">predicted</th><th class="num">precision</th><th class="num">recall</th><th class="num">F1</th></tr>
{% for r in class_rows %}  <tr><td>{{ r.name }}</td><td class="num">{{ r.support }}</td><td class="num">{{ r.predicted }}</td><td class="num">{{ r.precision }}</td><td class="num">{{ r.recall }}</td><td class="num">{{ r.f1 }}</td></tr>
{% endfor %}</table>

<h2>Worst errors</h2>
{% if errors %}<div class="errors">
{% for e in errors %}  <figure>
    <img src="{{ e.uri }}" alt="{{ e.true }} predicted as {{ e.pred }}">
    <figcaption><strong>{{ e.kind }}</strong><br>true: {{ e.true }}<br>predicted: {{ e.pred }} ({{ e.confidence }}){% if e.id %}<br><code>{{ e.id[:16] }}</code>{% endif %}</figcaption>
  </figure>
{% endfor %}</div>
{% else %}<p>No misclassified images.</p>
{% endif %}
{% if artifacts %}
<h2>Artifacts</h2>
<table>
  <tr><th>kind</th><th>file</th><th class="num">bytes</th><th>sha256</th></tr>
{% for a in artifacts %}  <tr><td>{{ a.kind }}</td><td>{{ a.name }}</td><td class="num">{{ a.size }}</td><td><code>{{ a.sha256 }}</code></td></tr>
{% endfor %}</table>
{% endif %}
<h2>Lineage</h2>
<table>
{% for label, value in lineage %}  <tr><th>{{ label }}</th><td>{{ value }}</td></tr>
{% endfor %}</table>
</body>
</html>
"""  # noqa: E501
