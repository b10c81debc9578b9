"""The monitor's drift statistics, as pure functions of a window and a reference.

Each detector compares the last ``window`` inspections of a line with a reference taken from the
same line when its model was known to be right, and reduces the comparison to one number that
grows with the change. Thresholds are never set by hand: ``calibration`` bootstraps each
statistic on reference data to the false-alarm rate asked for.

- ``feature_mmd``: squared maximum mean discrepancy (Gretton et al. 2012, unbiased estimate)
  between the window's and the reference's feature vectors, projected on the reference's
  principal components; an RBF kernel with the median-distance bandwidth. Chosen over
  per-feature tests: the embedding's dimensions are correlated, and a redesign moves all of
  them at once, which one multivariate statistic sees earlier than many corrected ones.
- ``image_stats``: the largest standardised shift of the window mean of brightness, contrast,
  sharpness or a colour channel: the nuisance detector (lighting, exposure, focus).
- ``confidence_ks``: Kolmogorov-Smirnov distance between the window's and the reference's
  top-class confidences.
- ``reject_rate_cusum``: one-sided Bernoulli CUSUM on the reject decisions (Reynolds and
  Stoumbos), tuned to detect the reject rate rising from the reference rate ``p0`` to ``p1``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
import numpy.typing as npt

FEATURE_MMD = "feature_mmd"
IMAGE_STATS = "image_stats"
CONFIDENCE_KS = "confidence_ks"
REJECT_RATE_CUSUM = "reject_rate_cusum"
FALSE_REJECT_RATE = "false_reject_rate"
ESCAPE_RATE = "escape_rate"

#: Arrays of observations and statistics.
Array = npt.NDArray[np.float64]
Index = npt.NDArray[np.intp]

#: The image statistics of ``ImageStats``, in the order the monitor keeps them.
IMAGE_STAT_NAMES = ("brightness", "contrast", "sharpness", "mean_r", "mean_g", "mean_b")


def squared_distances(x: Array, y: Array) -> Array:
    """Pairwise squared Euclidean distances, ``len(x) x len(y)``."""
    d = (x * x).sum(1)[:, None] + (y * y).sum(1)[None, :] - 2.0 * (x @ y.T)
    return np.maximum(d, 0.0)  # type: ignore[no-any-return]


def median_bandwidth(x: Array) -> float:
    """The median pairwise distance of ``x`` (the usual RBF bandwidth heuristic)."""
    d = squared_distances(x, x)[np.triu_indices(len(x), k=1)]
    median = float(np.sqrt(np.median(d))) if d.size else 1.0
    return median if median > 0 else 1.0


@dataclass(frozen=True)
class MmdReference:
    """The reference side of the MMD, with the parts of the statistic that only depend on it
    computed once."""

    points: Array  # n x k
    gamma: float  # 1 / (2 bandwidth^2)
    within: float  # mean of k(r, r') over distinct reference pairs

    @classmethod
    def build(cls, points: Array) -> MmdReference:
        points = np.asarray(points, dtype=np.float64)
        bandwidth = median_bandwidth(points)
        gamma = 1.0 / (2.0 * bandwidth * bandwidth)
        kernel = np.exp(-gamma * squared_distances(points, points))
        n = len(points)
        within = float((kernel.sum() - np.trace(kernel)) / (n * (n - 1)))
        return cls(points, gamma, within)

    def mmd2(self, window: Array) -> float:
        """Unbiased squared MMD between ``window`` (m x k) and the reference."""
        w = np.asarray(window, dtype=np.float64)
        m = len(w)
        k_ww = np.exp(-self.gamma * squared_distances(w, w))
        within_w = (k_ww.sum() - np.trace(k_ww)) / (m * (m - 1))
        cross = np.exp(-self.gamma * squared_distances(w, self.points)).mean()
        return float(within_w + self.within - 2.0 * cross)


def mmd2_on_pool(reference: MmdReference, pool: Array) -> Callable[[Index], float]:
    """``reference.mmd2`` of windows given as row indices into ``pool``, with every kernel value
    computed once: calibration evaluates thousands of windows drawn from one pool."""
    k_pool = np.exp(-reference.gamma * squared_distances(pool, pool))
    cross = np.exp(-reference.gamma * squared_distances(pool, reference.points)).mean(1)

    def mmd2(rows: Index) -> float:
        m = len(rows)
        within_w = (k_pool[np.ix_(rows, rows)].sum() - m) / (m * (m - 1))  # diagonal: k = 1
        return float(within_w + reference.within - 2.0 * cross[rows].mean())

    return mmd2


def ks_distance(reference_sorted: Array, sample: Array) -> float:
    """Two-sample Kolmogorov-Smirnov distance; ``reference_sorted`` must be sorted."""
    s = np.sort(np.asarray(sample, dtype=np.float64))
    grid = np.concatenate([reference_sorted, s])
    cdf_ref = np.searchsorted(reference_sorted, grid, side="right") / len(reference_sorted)
    cdf_s = np.searchsorted(s, grid, side="right") / len(s)
    return float(np.abs(cdf_ref - cdf_s).max())


def mean_shifts(window: Array, mean: Array, std: Array) -> Array:
    """``|window mean - mean| / (std / sqrt(n))`` of each column."""
    n = len(window)
    return np.abs(np.asarray(window, dtype=np.float64).mean(0) - mean) / (std / math.sqrt(n))  # type: ignore[no-any-return]


def max_mean_shift(window: Array, mean: Array, std: Array) -> tuple[float, int]:
    """Largest ``|window mean - mean| / (std / sqrt(n))`` over the columns, and its column."""
    z = mean_shifts(window, mean, std)
    column = int(np.argmax(z))
    return float(z[column]), column


@dataclass(frozen=True)
class BernoulliCusum:
    """Log-likelihood-ratio increments of a CUSUM for a rate rising from ``p0`` to ``p1``."""

    p0: float
    p1: float

    def __post_init__(self) -> None:
        if not 0 < self.p0 < self.p1 < 1:
            raise ValueError(f"need 0 < p0 < p1 < 1, got p0={self.p0}, p1={self.p1}")

    @property
    def up(self) -> float:
        """Increment for an event (a reject)."""
        return math.log(self.p1 / self.p0)

    @property
    def down(self) -> float:
        """Increment for a non-event (negative)."""
        return math.log((1 - self.p1) / (1 - self.p0))

    def update(self, value: float, hit: bool) -> float:
        return max(0.0, value + (self.up if hit else self.down))

    def path(self, hits: npt.NDArray[np.bool_]) -> Array:
        """CUSUM values after each of ``hits`` (streams along the last axis), from 0."""
        increments = np.where(hits, self.up, self.down)
        values = np.empty(increments.shape, dtype=np.float64)
        current = np.zeros(increments.shape[:-1], dtype=np.float64)
        for t in range(increments.shape[-1]):
            current = np.maximum(0.0, current + increments[..., t])
            values[..., t] = current
        return values


def wilson_interval(hits: int, n: int, z: float) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion; (0, 1) when ``n`` is 0."""
    if n <= 0:
        return 0.0, 1.0
    p = hits / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def z_for_confidence(confidence: float) -> float:
    """Two-sided normal quantile for a confidence level (0.99 -> 2.576)."""
    return NormalDist().inv_cdf(0.5 + confidence / 2)
