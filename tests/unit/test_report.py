"""The HTML validation report: numbers, gates, thumbnails, escaping."""

from __future__ import annotations

import base64
import io
import re
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image

from inspectloop.trainer.fit import metrics_from_predictions
from inspectloop.trainer.gates import GateSettings, LatencyStats, evaluate_gates
from inspectloop.trainer.packaging import Int8Delta
from inspectloop.trainer.report import (
    ErrorExample,
    ReportInfo,
    png_data_uri,
    select_worst_errors,
    write_report,
)

EVIL = "<script>alert('x')</script>"
CLASSES = ("good", "ink_smudge", EVIL)


def _fixture(tmp_path: Path) -> tuple[str, npt.NDArray[np.uint8]]:
    labels = [0] * 50 + [1] * 30 + [2] * 20
    predictions = [0] * 47 + [1] * 3 + [1] * 27 + [0] * 2 + [2] + [2] * 19 + [1]
    metrics = metrics_from_predictions(labels, predictions, CLASSES)
    gates = evaluate_gates(metrics, None, None, 2.5, GateSettings())
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (len(labels), 32, 32, 3), dtype=np.uint8)
    probs = np.full((len(labels), 3), 0.05)
    probs[np.arange(len(labels)), predictions] = 0.9
    errors = select_worst_errors(
        images, labels, probs, CLASSES, limit=4, item_ids=[f"sha{i:03d}" for i in range(100)]
    )
    path = write_report(
        tmp_path / "report" / "validation.html",
        ReportInfo(
            model_name="label-inspector",
            version="7",
            parent_version="6",
            dataset_snapshot_id="snap-1",
            seed=7,
            framework_versions={"torch": "2.15.0"},
            extra={"note": "a & b"},
        ),
        metrics,
        gates,
        errors,
        int8=Int8Delta(0.95, 0.94, -0.01, 0.99, 0.02, 100),
        parity_diff=2.4e-6,
        latency=LatencyStats(1.5, 1.7, 1.55, 200, 1, 1),
    )
    return path.read_text(encoding="utf-8"), images


def test_report_is_one_self_contained_html_file(tmp_path: Path) -> None:
    html, _ = _fixture(tmp_path)

    assert html.startswith("<!DOCTYPE html>")
    assert "<style>" in html
    assert not re.search(r"""(src|href)=["'](?!data:)""", html)  # nothing fetched from outside
    assert "REJECTED" in html  # accuracy 94 % fails the 99.7 % gate


def test_report_holds_the_confusion_matrix_counts(tmp_path: Path) -> None:
    html, _ = _fixture(tmp_path)

    table = html.split('<table class="confusion">')[1].split("</table>")[0]
    rows = re.findall(r"<tr><th>[^<]*</th>(.*?)</tr>", table)
    counts = [[int(c) for c in re.findall(r">(\d+)</td>", row)] for row in rows[1:]]
    # Each row: three class counts, then the row total.
    assert counts == [[47, 3, 0, 50], [2, 27, 1, 30], [0, 1, 19, 20]]
    assert 'title="94.0%"' in table  # row-normalised share of the good row's diagonal
    assert "rgba(220,38,38" in table and "rgba(22,163,74" in table  # shaded cells


def test_report_lists_gates_and_per_class_metrics(tmp_path: Path) -> None:
    html, _ = _fixture(tmp_path)

    for gate in ("accuracy", "recall/ink_smudge", "false_reject_rate", "escape_rate"):
        assert f"<td>{gate}</td>" in html
    assert "PASS" in html and "FAIL" in html
    assert "latency_p95_ms" in html
    assert "90.00%" in html  # ink_smudge recall 27/30
    assert "p95 1.70 ms" in html
    assert "-1.000 points" in html  # int8 delta
    assert "2.4e-06" in html  # parity


def test_report_embeds_worst_errors_as_png_data_uris(tmp_path: Path) -> None:
    html, images = _fixture(tmp_path)

    uris = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert len(uris) == 4
    first = Image.open(io.BytesIO(base64.b64decode(uris[0])))
    assert first.size == (32, 32)
    # Escapes (defects predicted good) come first: images 77 and 78.
    np.testing.assert_array_equal(np.asarray(first), images[77])
    assert "escape" in html and "sha077" in html


def test_report_escapes_class_names_and_details(tmp_path: Path) -> None:
    html, _ = _fixture(tmp_path)

    assert "<script" not in html
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in html
    assert "a &amp; b" in html


def test_worst_errors_order_escapes_false_rejects_then_confusions() -> None:
    images = np.zeros((4, 8, 8, 3), dtype=np.uint8)
    labels = [1, 0, 2, 1]
    probs = np.array([[0.1, 0.2, 0.7], [0.4, 0.6, 0.0], [0.55, 0.0, 0.45], [0.9, 0.1, 0.0]])
    errors = select_worst_errors(images, labels, probs, ("good", "a", "b"))

    assert [(e.true_class, e.predicted_class) for e in errors] == [
        ("a", "good"),  # escape, 0.9
        ("b", "good"),  # escape, 0.55
        ("good", "a"),  # false reject
        ("a", "b"),  # wrong defect
    ]
    assert errors[0].kind() == "escape"
    assert ErrorExample(images[0], "good", "a", 0.5).kind() == "false reject"


def test_large_images_become_thumbnails() -> None:
    uri = png_data_uri(np.zeros((512, 256, 3), dtype=np.uint8))
    image = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))
    assert image.size == (80, 160)
