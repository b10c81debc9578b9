"""Validation gates: what a candidate version must show before it may serve.

``evaluate_gates`` turns the validation metrics (``fit.Metrics``), the golden-set predictions of
the candidate and of its parent, and the measured CPU latency into one :class:`GateResult` per
gate, in this order::

    accuracy              >= min_accuracy                 (0.997)
    recall/<defect class> >= min_recall_per_class         (0.99, per class overridable)
    false_reject_rate     <= max_false_reject_rate        (0.003)  good units rejected / good
    escape_rate           <= max_escape_rate              (0.003)  defects passed / defective
    golden_set            <= max_golden_regressions       (0)      see below
    latency_p95_ms        <= max_latency_ms               (10 ms)  ONNX Runtime, CPU, batch 1

Acceptance (:mod:`inspectloop.trainer.acceptance`) passes metrics judged by the decision: there
a defect class's recall is the share of its units rejected, under any defect class.

A version that fails any gate is ``rejected``; :func:`rejection_reasons` gives one line per
failed gate. No evidence is never a pass: a NaN metric (a defect class without validation
images, no good images, no latency measured) fails its gate, and says so.

Golden set rule (decided here): the golden set must not regress *item by item*. Every golden
image that the parent classified correctly and the candidate classifies wrongly (or did not
classify at all) is a regression, and the gate allows ``max_golden_regressions`` of them (0).
That is stricter than comparing accuracies: with zero regressions the candidate's correct set
contains the parent's, so its golden accuracy cannot be lower, and a candidate cannot trade a
known-good case for another. Items are matched by id (the image's SHA-256), so the parent and
the candidate must be evaluated on the same golden images; items new to the golden set cannot
regress. A first version (no parent) passes the gate, with its golden accuracy in the detail.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from pydantic import Field

from inspectloop.core.onnx_contract import INPUT_NAME, ort_session, read_metadata
from inspectloop.core.settings import Section
from inspectloop.core.taxonomy import GOOD_CLASS

if TYPE_CHECKING:
    from inspectloop.trainer.fit import Metrics
    from inspectloop.trainer.model import InspectionCNN
    from inspectloop.v1 import models_pb2


class GateSettings(Section):
    """Thresholds a candidate must meet (``INSPECTLOOP_TRAINER__GATES__...``)."""

    min_accuracy: float = Field(
        default=0.997,
        ge=0.0,
        le=1.0,
        description="Lowest accuracy a version may have on each design's acceptance images, "
        "judged by its decision (a defective unit rejected under another defect class counts "
        "as rightly rejected, trainer.acceptance).",
    )
    min_recall_per_class: float = Field(
        default=0.99,
        ge=0.0,
        le=1.0,
        description="Lowest recall of every defect class (each defect class is a gate); a "
        "defect class without validation images fails its gate.",
    )
    recall_overrides: dict[str, float] = Field(
        default_factory=dict,
        description="Per defect class recall thresholds that replace min_recall_per_class, "
        'e.g. {"damaged_code": 0.999}.',
    )
    max_false_reject_rate: float = Field(
        default=0.003,
        ge=0.0,
        le=1.0,
        description="Highest share of good units the model may reject (good predicted as any "
        "defect, over good units).",
    )
    max_escape_rate: float = Field(
        default=0.003,
        ge=0.0,
        le=1.0,
        description="Highest share of defective units the model may pass (any defect "
        "predicted good, over defective units).",
    )
    max_golden_regressions: int = Field(
        default=0,
        ge=0,
        description="Golden images the parent classified correctly that the candidate may "
        "get wrong; 0: the golden set must never regress.",
    )
    require_golden_set: bool = Field(
        default=False,
        description="Fail the golden gate when no golden set was evaluated (otherwise it "
        "passes with a note).",
    )
    max_latency_ms: float = Field(
        default=10.0,
        gt=0.0,
        description="Highest p95 latency in ms of one image (batch 1) on CPU with ONNX "
        "Runtime (latency_threads threads); the model measures about 1.6 ms on one core.",
    )
    latency_runs: int = Field(
        default=200, ge=10, description="Timed inferences behind the latency percentiles."
    )
    latency_repeats: int = Field(
        default=5,
        ge=1,
        description="Blocks of latency_runs timed; the gate takes the quietest block's p95 "
        "(another process on a shared CPU only adds time, never removes it).",
    )
    latency_threads: int = Field(
        default=1, ge=1, description="ONNX Runtime intra-op threads when measuring latency."
    )

    def recall_threshold(self, class_name: str) -> float:
        """The recall a defect class needs."""
        return self.recall_overrides.get(class_name, self.min_recall_per_class)


@dataclass(frozen=True)
class GateResult:
    """Outcome of one gate (mirrors ``inspectloop.v1.GateResult``)."""

    name: str
    passed: bool
    value: float
    threshold: float
    detail: str
    higher_is_better: bool = True

    @property
    def comparator(self) -> str:
        """``>=`` or ``<=``: what ``value`` had to be against ``threshold``."""
        return ">=" if self.higher_is_better else "<="

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return asdict(self)

    def to_proto(self) -> models_pb2.GateResult:
        """The protobuf message carried by ``ModelVersion.gate_results``."""
        from inspectloop.v1 import models_pb2  # noqa: PLC0415

        return models_pb2.GateResult(
            gate=self.name,
            passed=self.passed,
            value=self.value,
            threshold=self.threshold,
            higher_is_better=self.higher_is_better,
            detail=self.detail,
        )


@dataclass(frozen=True)
class GoldenPredictions:
    """A model's predictions on the golden set, item by item (ids: image SHA-256s)."""

    item_ids: tuple[str, ...]
    labels: tuple[int, ...]
    predictions: tuple[int, ...]

    def __post_init__(self) -> None:
        if not len(self.item_ids) == len(self.labels) == len(self.predictions):
            raise ValueError("one label and one prediction per golden item")
        if len(set(self.item_ids)) != len(self.item_ids):
            raise ValueError("golden item ids must be unique")

    @classmethod
    def from_probabilities(
        cls,
        item_ids: Sequence[str],
        labels: Sequence[int] | npt.NDArray[np.integer[Any]],
        probabilities: npt.ArrayLike,
    ) -> GoldenPredictions:
        """From class probabilities (or logits) ``N x C``: the argmax is the prediction."""
        predictions = np.asarray(probabilities).reshape(len(item_ids), -1).argmax(axis=1)
        return cls(
            tuple(item_ids),
            tuple(int(v) for v in np.asarray(labels).reshape(-1)),
            tuple(int(v) for v in predictions),
        )

    @property
    def count(self) -> int:
        """Golden items."""
        return len(self.item_ids)

    @property
    def correct_ids(self) -> frozenset[str]:
        """Ids of the items classified correctly."""
        return frozenset(
            i
            for i, y, p in zip(self.item_ids, self.labels, self.predictions, strict=True)
            if y == p
        )

    @property
    def accuracy(self) -> float:
        """Share of items classified correctly; NaN for an empty set."""
        return len(self.correct_ids) / self.count if self.count else math.nan

    def regressions_against(self, parent: GoldenPredictions) -> tuple[list[str], list[str]]:
        """(items the parent got right and this model got wrong, items the parent got right
        that this model was not evaluated on), both sorted."""
        mine = set(self.item_ids)
        correct = self.correct_ids
        wrong = sorted(i for i in parent.correct_ids if i in mine and i not in correct)
        missing = sorted(i for i in parent.correct_ids if i not in mine)
        return wrong, missing


@dataclass(frozen=True)
class LatencyStats:
    """CPU latency of one configuration, in milliseconds."""

    p50_ms: float
    p95_ms: float
    mean_ms: float
    runs: int
    threads: int
    batch: int
    # "cpu": the inferring thread's CPU time (one thread: what a dedicated core takes),
    # "wall": wall-clock time (several threads, whose work the calling thread does not see).
    clock: str = "wall"

    def to_dict(self) -> dict[str, float | str]:
        """JSON-ready."""
        return {k: v if isinstance(v, str) else float(v) for k, v in asdict(self).items()}

    def describe(self) -> str:
        """How it was measured, for gate details and reports."""
        return f"{self.clock} time, batch {self.batch}, {self.threads} thread(s), {self.runs} runs"


# --- the gates -----------------------------------------------------------------------------


def _at_least(name: str, value: float, threshold: float, what: str) -> GateResult:
    if math.isnan(value):
        return GateResult(name, False, value, threshold, f"{what}: not measured (no data)")
    passed = value >= threshold
    verb = "meets" if passed else "below"
    return GateResult(name, passed, value, threshold, f"{what} {value:.3%} {verb} {threshold:.3%}")


def _at_most(name: str, value: float, threshold: float, what: str, count: str) -> GateResult:
    if math.isnan(value):
        return GateResult(
            name, False, value, threshold, f"{what}: not measured (no data)", higher_is_better=False
        )
    passed = value <= threshold
    verb = "within" if passed else "above"
    return GateResult(
        name,
        passed,
        value,
        threshold,
        f"{what} {value:.3%} ({count}) {verb} {threshold:.3%}",
        higher_is_better=False,
    )


def golden_gate(
    golden: GoldenPredictions | None,
    parent_golden: GoldenPredictions | None,
    settings: GateSettings,
) -> GateResult:
    name, limit = "golden_set", float(settings.max_golden_regressions)
    if golden is None:
        passed = not settings.require_golden_set
        note = "no golden set evaluated" + ("" if passed else " (required)")
        return GateResult(name, passed, math.nan, limit, note, higher_is_better=False)
    accuracy = f"golden accuracy {golden.accuracy:.3%} on {golden.count} images"
    if parent_golden is None:
        return GateResult(
            name, True, 0.0, limit, f"no parent version to regress against; {accuracy}", False
        )
    wrong, missing = golden.regressions_against(parent_golden)
    regressions = len(wrong) + len(missing)
    passed = regressions <= settings.max_golden_regressions
    detail = f"{regressions} golden images regressed (parent right, candidate not)"
    if wrong:
        detail += f"; now wrong: {_ids(wrong)}"
    if missing:
        detail += f"; not evaluated: {_ids(missing)}"
    detail += f"; {accuracy} against the parent's {parent_golden.accuracy:.3%}"
    return GateResult(name, passed, float(regressions), limit, detail, higher_is_better=False)


def _ids(ids: Sequence[str], limit: int = 10) -> str:
    shown = ", ".join(i[:12] for i in ids[:limit])
    return shown + (f" and {len(ids) - limit} more" if len(ids) > limit else "")


def latency_gate(latency: LatencyStats | float | None, settings: GateSettings) -> GateResult:
    name, limit = "latency_p95_ms", settings.max_latency_ms
    if latency is None:
        return GateResult(name, False, math.nan, limit, "latency not measured", False)
    if isinstance(latency, LatencyStats):
        p95, how = latency.p95_ms, latency.describe()
    else:
        p95, how = float(latency), "batch 1"
    if math.isnan(p95):
        return GateResult(name, False, p95, limit, "latency not measured", False)
    passed = p95 <= limit
    verb = "within" if passed else "over"
    return GateResult(
        name, passed, p95, limit, f"p95 {p95:.2f} ms ({how}) {verb} {limit:g} ms budget", False
    )


def evaluate_gates(
    metrics: Metrics,
    golden: GoldenPredictions | None,
    parent_golden: GoldenPredictions | None,
    latency: LatencyStats | float | None,
    settings: GateSettings,
    *,
    good_class: str = GOOD_CLASS,
) -> list[GateResult]:
    """Every gate's result for a candidate (see the module docstring); ``latency`` is a
    :class:`LatencyStats` or a p95 in ms."""
    results = [_at_least("accuracy", metrics.accuracy, settings.min_accuracy, "accuracy")]
    unknown = sorted(set(settings.recall_overrides) - set(metrics.classes))
    if unknown:
        results.append(
            GateResult(
                "recall_overrides",
                False,
                math.nan,
                math.nan,
                f"recall thresholds set for classes the model does not have: {unknown}",
            )
        )
    confusion = metrics.confusion
    for index, class_name in enumerate(metrics.classes):
        if class_name == good_class:
            continue  # the good class's recall is 1 - false reject rate, gated below
        support = sum(confusion[index])
        result = _at_least(
            f"recall/{class_name}",
            metrics.per_class_recall.get(class_name, math.nan),
            settings.recall_threshold(class_name),
            f"recall of {class_name}",
        )
        results.append(
            GateResult(
                result.name,
                result.passed,
                result.value,
                result.threshold,
                f"{result.detail} ({confusion[index][index]}/{support} images)",
            )
        )
    results.append(
        _at_most(
            "false_reject_rate",
            metrics.false_reject_rate,
            settings.max_false_reject_rate,
            "false reject rate",
            f"{metrics.false_rejects} of {metrics.good_count} good",
        )
    )
    results.append(
        _at_most(
            "escape_rate",
            metrics.escape_rate,
            settings.max_escape_rate,
            "escape rate",
            f"{metrics.escapes} of {metrics.defective_count} defective",
        )
    )
    results.append(golden_gate(golden, parent_golden, settings))
    results.append(latency_gate(latency, settings))
    return results


def all_passed(results: Sequence[GateResult]) -> bool:
    """True when every gate passed (and there was at least one)."""
    return bool(results) and all(r.passed for r in results)


def rejection_reasons(results: Sequence[GateResult]) -> list[str]:
    """One line per failed gate, for ``ModelVersion.rejection_reasons``."""
    return [f"{r.name}: {r.detail}" for r in results if not r.passed]


def gate_values(results: Sequence[GateResult]) -> Mapping[str, float]:
    """Gate name -> measured value."""
    return {r.name: r.value for r in results}


# --- latency -------------------------------------------------------------------------------


def measure_latency(
    model: Path | InspectionCNN,
    input_size: int | None = None,
    *,
    runs: int = 200,
    warmup: int = 20,
    threads: int = 1,
    batch: int = 1,
    repeats: int = 1,
) -> LatencyStats:
    """CPU latency of the exported model with ONNX Runtime (what Triton and the edge run):
    ``repeats`` blocks of ``runs`` timed inferences of ``batch`` uint8 images after ``warmup``,
    and the statistics of the block with the lowest p95. An ``InspectionCNN`` is exported to a
    temporary ONNX file first. ``input_size`` defaults to the model's.

    The gate judges the model, not the machine it happens to be validated on, which is shared
    with the plant's other services. With one thread ONNX Runtime computes on the calling
    thread, so its CPU time is what the inference costs a dedicated core, and time the thread
    spends preempted does not count. With several threads the work runs on ONNX Runtime's pool,
    out of the caller's sight, and wall time is measured instead. Either way another process
    only ever adds time, so the least disturbed block is the best estimate of the model's own
    cost (the reasoning behind timeit's minimum of repeats)."""
    import tempfile  # noqa: PLC0415

    from inspectloop.trainer.packaging import export_onnx  # noqa: PLC0415 - torch is heavy

    if runs < 1 or warmup < 0 or batch < 1 or repeats < 1:
        raise ValueError("runs, batch and repeats must be >= 1, warmup >= 0")
    if isinstance(model, Path):
        size = input_size or int(read_metadata(model)["input_size"])
        return _time_session(ort_session(model, threads), size, runs, warmup, batch, repeats)
    with tempfile.TemporaryDirectory(prefix="inspectloop-latency-") as tmp:
        path = export_onnx(model, model.spec, Path(tmp) / "model.onnx")
        size = input_size or model.spec.input_size
        return _time_session(ort_session(path, threads), size, runs, warmup, batch, repeats)


def _time_session(  # noqa: PLR0917 -- private, called with the caller's arguments in order
    session: Any, size: int, runs: int, warmup: int, batch: int, repeats: int
) -> LatencyStats:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8)
    feed = {INPUT_NAME: images}
    for _ in range(warmup):
        session.run(None, feed)
    threads = int(session.get_session_options().intra_op_num_threads)
    clock, now = ("cpu", time.thread_time_ns) if threads == 1 else ("wall", time.perf_counter_ns)
    blocks = np.empty((repeats, runs))
    for block in blocks:
        for i in range(runs):
            start = now()
            session.run(None, feed)
            block[i] = (now() - start) / 1e6
    times = blocks[int(np.argmin(np.percentile(blocks, 95, axis=1)))]
    return LatencyStats(
        p50_ms=float(np.percentile(times, 50)),
        p95_ms=float(np.percentile(times, 95)),
        mean_ms=float(times.mean()),
        runs=runs,
        threads=threads,
        batch=batch,
        clock=clock,
    )
