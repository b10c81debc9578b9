"""What a line looked like while its model was right, and the thresholds calibrated on it.

A reference is taken from the first inspections a line's stable model makes (the warm-up), and
again whenever a new model becomes stable, because a new model has a new feature space. The
warm-up is split in two interleaved halves: the statistics compare live windows with one half,
and the thresholds are calibrated by resampling the other, so that the calibration sees windows
that are as independent of the reference as live ones are.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from inspectloop.monitor.calibration import (
    CalibrationPlan,
    calibrate_cusum,
    calibrate_window_statistic,
)
from inspectloop.monitor.detectors import (
    CONFIDENCE_KS,
    FEATURE_MMD,
    IMAGE_STATS,
    REJECT_RATE_CUSUM,
    Array,
    BernoulliCusum,
    MmdReference,
    ks_distance,
    max_mean_shift,
    mmd2_on_pool,
    wilson_interval,
)


@dataclass(frozen=True)
class WarmUp:
    """Observations of the warm-up, one row per inspection."""

    features: Array  # n x d
    image_stats: Array  # n x 6
    confidences: Array  # n
    rejects: Array  # n, bool


@dataclass(frozen=True)
class ReferenceSettings:
    """The parts of the monitor's settings a reference is built with."""

    components: int  # principal components of the feature vectors kept for the MMD
    plan: CalibrationPlan
    reject_rate_shift: float  # the CUSUM is tuned to detect p0 -> max(2 p0, p0 + shift)
    interval_z: float  # normal quantile of the reference reject rate's upper bound


@dataclass(frozen=True)
class Reference:
    reference_id: str
    model_name: str
    model_version: str
    size: int
    feature_mean: Array  # d
    projection: Array  # d x k: centred features @ projection = whitened components
    mmd: MmdReference
    stats_mean: Array  # 6
    stats_std: Array  # 6
    confidences_sorted: Array
    reject_rate: float  # observed in the warm-up
    cusum: BernoulliCusum
    thresholds: dict[str, float]

    @classmethod
    def build(
        cls,
        reference_id: str,
        model_name: str,
        model_version: str,
        warm_up: WarmUp,
        settings: ReferenceSettings,
    ) -> Reference:
        features = np.asarray(warm_up.features, dtype=np.float64)
        n = len(features)
        compare, pool = np.arange(0, n, 2), np.arange(1, n, 2)
        mean = features.mean(0)
        centred = features - mean
        # Principal directions of the reference; whitened so that each counts equally in the
        # kernel, with a floor so that a direction of almost no variance is not blown up.
        _, singular, vt = np.linalg.svd(centred, full_matrices=False)
        k = max(1, min(settings.components, int((singular > 1e-9).sum())))
        scale = singular[:k] / math.sqrt(max(n - 1, 1))
        scale = np.maximum(scale, scale[0] * 1e-3)
        projection = vt[:k].T / scale
        projected = centred @ projection
        mmd = MmdReference.build(projected[compare])

        stats = np.asarray(warm_up.image_stats, dtype=np.float64)
        stats_mean = stats[compare].mean(0)
        stats_std = np.maximum(stats[compare].std(0, ddof=1), 1e-6 + 1e-3 * np.abs(stats_mean))
        confidences = np.asarray(warm_up.confidences, dtype=np.float64)
        confidences_sorted = np.sort(confidences[compare])
        rejects = np.asarray(warm_up.rejects, dtype=bool)
        reject_rate = float(rejects.mean())
        # The CUSUM's in-control rate is the upper bound of the observed one: a line whose true
        # rate is a little above what the warm-up happened to show must not raise alarms.
        p0 = min(0.5, max(wilson_interval(int(rejects.sum()), n, settings.interval_z)[1], 1e-3))
        cusum = BernoulliCusum(p0, min(0.95, max(2 * p0, p0 + settings.reject_rate_shift)))

        plan = settings.plan
        pool_stats, pool_confidences = stats[pool], confidences[pool]
        thresholds = {
            FEATURE_MMD: calibrate_window_statistic(
                mmd2_on_pool(mmd, projected[pool]), len(pool), plan
            ),
            IMAGE_STATS: calibrate_window_statistic(
                lambda rows: max_mean_shift(pool_stats[rows], stats_mean, stats_std)[0],
                len(pool),
                plan,
            ),
            CONFIDENCE_KS: calibrate_window_statistic(
                lambda rows: ks_distance(confidences_sorted, pool_confidences[rows]),
                len(pool),
                plan,
            ),
            REJECT_RATE_CUSUM: calibrate_cusum(cusum, p0, plan),
        }
        return cls(
            reference_id=reference_id,
            model_name=model_name,
            model_version=model_version,
            size=n,
            feature_mean=mean,
            projection=projection,
            mmd=mmd,
            stats_mean=stats_mean,
            stats_std=stats_std,
            confidences_sorted=confidences_sorted,
            reject_rate=reject_rate,
            cusum=cusum,
            thresholds=thresholds,
        )

    def project(self, features: Array) -> Array:
        """Feature vectors in the reference's whitened principal components."""
        return (np.asarray(features, dtype=np.float64) - self.feature_mean) @ self.projection

    # --- persistence -----------------------------------------------------------------------

    def to_state(self) -> dict[str, Any]:
        """JSON-ready scalars plus the arrays as one compressed ``.npz`` blob (base64 apart)."""
        buffer = io.BytesIO()
        np.savez_compressed(
            buffer,
            feature_mean=self.feature_mean,
            projection=self.projection,
            mmd_points=self.mmd.points,
            stats_mean=self.stats_mean,
            stats_std=self.stats_std,
            confidences_sorted=self.confidences_sorted,
        )
        return {
            "reference_id": self.reference_id,
            "model_name": self.model_name,
            "model_version": self.model_version,
            "size": self.size,
            "mmd_gamma": self.mmd.gamma,
            "mmd_within": self.mmd.within,
            "reject_rate": self.reject_rate,
            "p0": self.cusum.p0,
            "p1": self.cusum.p1,
            "thresholds": dict(self.thresholds),
            "arrays": buffer.getvalue(),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Reference:
        arrays = np.load(io.BytesIO(state["arrays"]))
        return cls(
            reference_id=state["reference_id"],
            model_name=state["model_name"],
            model_version=state["model_version"],
            size=int(state["size"]),
            feature_mean=arrays["feature_mean"],
            projection=arrays["projection"],
            mmd=MmdReference(arrays["mmd_points"], state["mmd_gamma"], state["mmd_within"]),
            stats_mean=arrays["stats_mean"],
            stats_std=arrays["stats_std"],
            confidences_sorted=arrays["confidences_sorted"],
            reject_rate=float(state["reject_rate"]),
            cusum=BernoulliCusum(state["p0"], state["p1"]),
            thresholds={k: float(v) for k, v in state["thresholds"].items()},
        )
