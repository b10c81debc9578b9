"""A line's last ``size`` inspections, kept so that a check costs little per inspection.

The monitor reads every inspection but checks its window statistics only every few of them.
An inspection is therefore only appended as Python values (no NumPy call per inspection);
at the next check the new rows are projected in one batch and written into fixed ring buffers,
and the MMD's kernel values of each new row (against the reference and against the rows in the
window) are computed once and kept: a check computes ``new x (reference + window)`` kernel
values instead of ``window x (reference + window)``. The result equals
``MmdReference.mmd2`` of the window's rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from inspectloop.monitor.detectors import (
    CONFIDENCE_KS,
    FEATURE_MMD,
    IMAGE_STAT_NAMES,
    IMAGE_STATS,
    Array,
    ks_distance,
    mean_shifts,
    squared_distances,
)
from inspectloop.monitor.reference import Reference


class DriftWindow:
    def __init__(self, reference: Reference, size: int) -> None:
        self.reference = reference
        self.size = size
        k = reference.projection.shape[1]
        self._points = np.zeros((size, k))  # projected feature vectors, ring
        self._cross = np.zeros(size)  # mean kernel value of each row against the reference
        self._kernel = np.zeros((size, size))  # kernel values between the rows
        self._stats = np.zeros((size, len(IMAGE_STAT_NAMES)))
        self._confidences = np.zeros(size)
        self._times = np.zeros(size)
        self._added = 0  # rows written to the ring since the window began
        self._pending: list[tuple[Sequence[float], Sequence[float], float, float]] = []

    def append(
        self, features: Sequence[float], stats: Sequence[float], confidence: float, time: float
    ) -> None:
        self._pending.append((features, stats, confidence, time))

    def __len__(self) -> int:
        return min(self.size, self._added + len(self._pending))

    @property
    def full(self) -> bool:
        return len(self) == self.size

    def _flush(self) -> None:
        if not self._pending:
            return
        pending = self._pending[-self.size :]
        self._pending = []
        features, stats, confidences, times = zip(*pending, strict=True)
        self._write(
            self.reference.project(np.array(features, dtype=np.float64)),
            np.array(stats, dtype=np.float64),
            np.array(confidences, dtype=np.float64),
            np.array(times, dtype=np.float64),
        )

    def _write(self, points: Array, stats: Array, confidences: Array, times: Array) -> None:
        mmd = self.reference.mmd
        rows = (self._added + np.arange(len(points))) % self.size
        self._added += len(points)
        self._points[rows] = points
        self._stats[rows] = stats
        self._confidences[rows] = confidences
        self._times[rows] = times
        self._cross[rows] = np.exp(-mmd.gamma * squared_distances(points, mmd.points)).mean(1)
        filled = min(self._added, self.size)
        kernel = np.exp(-mmd.gamma * squared_distances(points, self._points[:filled]))
        self._kernel[rows, :filled] = kernel
        self._kernel[:filled, rows] = kernel.T

    def _filled(self) -> slice:
        return slice(0, min(self._added, self.size))

    def statistics(self) -> dict[str, float]:
        """The window statistics (MMD, largest image-statistics shift, confidence KS)."""
        self._flush()
        rows = self._filled()
        m = rows.stop
        ref = self.reference
        within = (self._kernel[rows, rows].sum() - m) / (m * (m - 1))  # diagonal: k = 1
        return {
            FEATURE_MMD: float(within + ref.mmd.within - 2.0 * self._cross[rows].mean()),
            IMAGE_STATS: float(self.image_stat_shifts().max()),
            CONFIDENCE_KS: ks_distance(ref.confidences_sorted, self._confidences[rows]),
        }

    def image_stat_means(self) -> Array:
        self._flush()
        return self._stats[self._filled()].mean(0)  # type: ignore[no-any-return]

    def image_stat_shifts(self) -> Array:
        """Standardised shift of each image statistic's window mean from the reference."""
        self._flush()
        ref = self.reference
        return mean_shifts(self._stats[self._filled()], ref.stats_mean, ref.stats_std)

    def time_span(self) -> tuple[float, float]:
        """Capture times of the oldest and the newest inspection in the window."""
        self._flush()
        if self._added == 0:
            return 0.0, 0.0
        newest = (self._added - 1) % self.size
        oldest = (self._added - self.size) % self.size if self._added >= self.size else 0
        return float(self._times[oldest]), float(self._times[newest])

    # --- persistence -----------------------------------------------------------------------

    def _ordered(self, array: Array) -> Array:
        if self._added <= self.size:
            return array[: self._added]
        return np.roll(array, -(self._added % self.size), axis=0)

    def to_state(self) -> dict[str, Any]:
        """The window's rows, oldest first (projected features), JSON-ready."""
        self._flush()
        return {
            "points": self._ordered(self._points).tolist(),
            "stats": self._ordered(self._stats).tolist(),
            "confidences": self._ordered(self._confidences).tolist(),
            "times": self._ordered(self._times).tolist(),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any], reference: Reference, size: int) -> DriftWindow:
        window = cls(reference, size)
        points = np.array(state["points"], dtype=np.float64).reshape(-1, window._points.shape[1])
        if len(points):
            window._write(
                points[-size:],
                np.array(state["stats"], dtype=np.float64)[-size:],
                np.array(state["confidences"], dtype=np.float64)[-size:],
                np.array(state["times"], dtype=np.float64)[-size:],
            )
        return window
