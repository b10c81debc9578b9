"""The monitor's statistics and their calibration to an expected run time."""

from __future__ import annotations

import numpy as np
import pytest

from inspectloop.monitor.calibration import (
    CalibrationPlan,
    calibrate_cusum,
    calibrate_window_statistic,
    gumbel_quantile,
)
from inspectloop.monitor.detectors import (
    Array,
    BernoulliCusum,
    MmdReference,
    ks_distance,
    max_mean_shift,
    mmd2_on_pool,
    wilson_interval,
)


def test_mmd_is_near_zero_for_one_distribution_and_large_for_a_shift() -> None:
    rng = np.random.default_rng(0)
    ref = MmdReference.build(rng.normal(size=(300, 8)))
    same = [ref.mmd2(rng.normal(size=(100, 8))) for _ in range(20)]
    shifted = ref.mmd2(rng.normal(size=(100, 8)) + np.r_[1.0, np.zeros(7)])
    assert abs(np.mean(same)) < 0.01
    assert shifted > 5 * max(same)


def test_mmd_on_a_pool_equals_the_direct_computation() -> None:
    rng = np.random.default_rng(5)
    ref = MmdReference.build(rng.normal(size=(200, 4)))
    pool = rng.normal(size=(150, 4)) + 0.2
    rows = rng.integers(0, len(pool), 60)
    assert mmd2_on_pool(ref, pool)(rows) == pytest.approx(ref.mmd2(pool[rows]))


def test_ks_distance_matches_the_definition() -> None:
    ref = np.sort(np.array([0.1, 0.2, 0.3, 0.4]))
    assert ks_distance(ref, np.array([0.1, 0.2, 0.3, 0.4])) == 0.0
    assert ks_distance(ref, np.array([0.9, 0.95])) == 1.0
    assert ks_distance(ref, np.array([0.15, 0.9])) == pytest.approx(0.5)


def test_mean_shift_names_the_column_that_moved() -> None:
    window = np.zeros((25, 3)) + np.array([0.0, -1.0, 0.1])
    z, column = max_mean_shift(window, np.zeros(3), np.ones(3))
    assert column == 1
    assert z == pytest.approx(5.0)


def test_bernoulli_cusum_path_follows_the_recursion() -> None:
    cusum = BernoulliCusum(0.1, 0.3)
    hits = np.array([True, False, True, True, False])
    expected, value = [], 0.0
    for h in hits:
        value = cusum.update(value, bool(h))
        expected.append(value)
    np.testing.assert_allclose(cusum.path(hits), expected)
    with pytest.raises(ValueError, match="p0 < p1"):
        BernoulliCusum(0.3, 0.3)


def test_wilson_interval_contains_the_rate_and_narrows_with_n() -> None:
    low, high = wilson_interval(5, 100, 2.576)
    assert low < 0.05 < high
    low2, high2 = wilson_interval(50, 1000, 2.576)
    assert high2 - low2 < high - low
    assert wilson_interval(0, 0, 2.0) == (0.0, 1.0)


def test_gumbel_quantile_of_gumbel_samples() -> None:
    rng = np.random.default_rng(1)
    samples = rng.gumbel(loc=2.0, scale=0.5, size=20000)
    level = 0.999
    assert gumbel_quantile(samples, level) == pytest.approx(
        2.0 - 0.5 * np.log(-np.log(level)), rel=0.02
    )


def _first_crossings(z_paths: Array, threshold: float, check_every: int) -> Array:
    """Events until each stream's statistic first exceeds ``threshold`` (censored streams get
    their length)."""
    crossed = z_paths > threshold
    first = np.where(crossed.any(1), crossed.argmax(1), z_paths.shape[1])
    return ((first + 1) * check_every).astype(np.float64)


def test_window_threshold_gives_the_expected_run_time_on_fresh_streams() -> None:
    """As the monitor does it: statistics against one half of 800 reference rows, threshold
    calibrated by resampling the other half. On new data from the same distribution the mean
    run length to a false alarm is then within a factor 2 of the ERT asked for."""
    rng = np.random.default_rng(2)
    window, every, ert = 50, 10, 4000
    compare, pool = rng.normal(size=(400, 3)), rng.normal(size=(400, 3))
    mean, std = compare.mean(0), compare.std(0, ddof=1)
    plan = CalibrationPlan(ert=ert, window=window, check_every=every, streams=200, seed=3)
    threshold = calibrate_window_statistic(
        lambda rows: max_mean_shift(pool[rows], mean, std)[0], len(pool), plan
    )
    streams, length = 300, 40_000
    data = rng.normal(size=(streams, length, 3))
    sums = np.cumsum(data, axis=1)
    ends = np.arange(window, length + 1, every)
    window_sums = sums[:, ends - 1] - np.concatenate(
        [np.zeros((streams, 1, 3)), sums[:, ends[1:] - window - 1]], axis=1
    )
    z = (np.abs(window_sums / window - mean) / (std / np.sqrt(window))).max(axis=2)
    run_lengths = _first_crossings(z, threshold, every)
    assert ert / 2 < run_lengths.mean() < ert * 2


def test_cusum_threshold_gives_the_expected_run_time() -> None:
    rng = np.random.default_rng(4)
    cusum = BernoulliCusum(0.05, 0.15)
    ert = 3000
    plan = CalibrationPlan(ert=ert, window=50, check_every=1, streams=300, seed=5)
    threshold = calibrate_cusum(cusum, 0.05, plan)
    paths = cusum.path(rng.random((300, 30_000)) < 0.05)
    run_lengths = _first_crossings(paths, threshold, 1)
    assert ert / 2 < run_lengths.mean() < ert * 2
    # a real rise to 30% is caught within a few dozen inspections
    risen = cusum.path(rng.random((100, 500)) < 0.30)
    assert np.median(_first_crossings(risen, threshold, 1)) < 60
