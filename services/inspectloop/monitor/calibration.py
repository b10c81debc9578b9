"""Alarm thresholds calibrated to an expected run time, by bootstrap on reference data.

The expected run time (ERT) of a detector on a stable line is the number of inspections between
false alarms. To set a threshold for it, the monitor simulates stable streams by resampling the
half of its reference data that the statistic is not computed against, runs the detector over
each stream exactly as it runs in production (same window, same checking interval), and keeps
the largest value each stream reached. Those maxima follow an extreme-value law; a Gumbel fit
(method of moments) extrapolates them to the level at which a stream of that length stays
below the threshold with probability ``exp(-length / ERT)``, i.e. to one false alarm per ERT
inspections. An ERT of millions cannot be simulated directly on a line PC's CPU; the Gumbel
tail is the standard way to reach it from a few hundred simulated streams.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from inspectloop.monitor.detectors import Array, BernoulliCusum, Index

EULER_GAMMA = 0.5772156649015329


@dataclass(frozen=True)
class CalibrationPlan:
    """How thresholds are calibrated: the ERT asked for and the simulation's size."""

    ert: float  # inspections between false alarms on a stable line
    window: int  # inspections per window
    check_every: int  # inspections between two checks of a window statistic
    streams: int = 100  # simulated stable streams
    stream_length: int = 2000  # inspections per simulated stream
    seed: int = 0

    def __post_init__(self) -> None:
        if self.stream_length <= self.window:
            raise ValueError("a simulated stream must be longer than the window")


def gumbel_quantile(maxima: Array, level: float) -> float:
    """The ``level`` quantile of a Gumbel law fitted to ``maxima`` by moments."""
    maxima = np.asarray(maxima, dtype=np.float64)
    beta = max(float(maxima.std(ddof=1)), 1e-12) * math.sqrt(6) / math.pi
    mu = float(maxima.mean()) - EULER_GAMMA * beta
    return mu - beta * math.log(-math.log(level))


def _level(monitored: int, ert: float) -> float:
    return math.exp(-monitored / ert)


def calibrate_window_statistic(
    statistic: Callable[[Index], float], pool_size: int, plan: CalibrationPlan
) -> float:
    """Threshold of a statistic computed on the last ``plan.window`` rows every
    ``plan.check_every`` rows, for streams resampled from a pool of ``pool_size`` rows (i.i.d.);
    ``statistic`` takes a window as row indices into the pool."""
    rng = np.random.default_rng(plan.seed)
    checks = range(plan.window, plan.stream_length + 1, plan.check_every)
    maxima = np.empty(plan.streams)
    for s in range(plan.streams):
        stream = rng.integers(0, pool_size, plan.stream_length)
        maxima[s] = max(statistic(stream[t - plan.window : t]) for t in checks)
    return gumbel_quantile(maxima, _level(plan.stream_length - plan.window, plan.ert))


def calibrate_cusum(cusum: BernoulliCusum, rate: float, plan: CalibrationPlan) -> float:
    """Threshold of a CUSUM updated on every inspection, for Bernoulli(``rate``) streams."""
    rng = np.random.default_rng(plan.seed)
    hits = rng.random((plan.streams, plan.stream_length)) < rate
    maxima = cusum.path(hits).max(axis=1)
    return gumbel_quantile(maxima, _level(plan.stream_length, plan.ert))
