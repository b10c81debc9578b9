"""The incremental window gives the statistics computed from scratch, across wrap-around and a
restart."""

from __future__ import annotations

import numpy as np
import pytest

from inspectloop.monitor.calibration import CalibrationPlan
from inspectloop.monitor.detectors import (
    CONFIDENCE_KS,
    FEATURE_MMD,
    IMAGE_STATS,
    ks_distance,
    max_mean_shift,
)
from inspectloop.monitor.reference import Reference, ReferenceSettings, WarmUp
from inspectloop.monitor.window import DriftWindow

SIZE = 30


@pytest.fixture(scope="module")
def reference() -> Reference:
    rng = np.random.default_rng(1)
    n = 200
    warm_up = WarmUp(
        rng.normal(size=(n, 12)),
        rng.random((n, 6)) + 0.5,
        rng.random(n),
        (rng.random(n) < 0.05).astype(np.float64),
    )
    settings = ReferenceSettings(
        components=5,
        plan=CalibrationPlan(ert=1e4, window=SIZE, check_every=5, streams=20, stream_length=200),
        reject_rate_shift=0.05,
        interval_z=2.576,
    )
    return Reference.build("ref", "m", "1", warm_up, settings)


def _expected(reference: Reference, rows: list[tuple]) -> dict[str, float]:  # type: ignore[type-arg]
    features = np.array([r[0] for r in rows])
    stats = np.array([r[1] for r in rows])
    return {
        FEATURE_MMD: reference.mmd.mmd2(reference.project(features)),
        IMAGE_STATS: max_mean_shift(stats, reference.stats_mean, reference.stats_std)[0],
        CONFIDENCE_KS: ks_distance(reference.confidences_sorted, np.array([r[2] for r in rows])),
    }


@pytest.mark.parametrize("batch", [1, 7, SIZE, 2 * SIZE + 3])
def test_window_statistics_equal_the_direct_computation(reference: Reference, batch: int) -> None:
    rng = np.random.default_rng(batch)
    window = DriftWindow(reference, SIZE)
    rows = []
    for t in range(5 * SIZE + 1):
        row = (list(rng.normal(size=12) + t / 100), tuple(rng.random(6) + 0.5), rng.random(), t)
        rows.append(row)
        window.append(*row)
        if (t + 1) % batch == 0 and len(rows) >= SIZE:
            last = rows[-SIZE:]
            assert window.full
            assert window.statistics() == pytest.approx(_expected(reference, last))
            assert window.time_span() == (last[0][3], last[-1][3])
    restored = DriftWindow.from_state(window.to_state(), reference, SIZE)
    assert restored.statistics() == pytest.approx(_expected(reference, rows[-SIZE:]))
    assert restored.time_span() == window.time_span()


def test_a_window_fills_before_it_is_full(reference: Reference) -> None:
    window = DriftWindow(reference, SIZE)
    for t in range(SIZE - 1):
        window.append([0.0] * 12, (1.0,) * 6, 0.9, float(t))
    assert len(window) == SIZE - 1 and not window.full
    window.append([0.0] * 12, (1.0,) * 6, 0.9, float(SIZE))
    assert window.full
