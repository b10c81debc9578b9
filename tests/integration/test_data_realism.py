"""The simulator's data has teeth (issue 3, item 5), at small scale: the same experiment as
``benchmarks/data_realism.py`` with smaller datasets and fewer epochs, on 2 CPU threads.

Small-scale bounds are far looser than the full-scale goals (99.7%), and say so: with 3,000
training images and 12 epochs the CNN gets about 86% of design A right (it has not yet learnt
the subtle ink smudges; at full scale, 99.6%), far from chance (1/9) and from the 6% the same
model gets on the redesign; a few hundred B images bring B back to about 79%. What the test holds
fixed is the shape of the story: collapse on B, recovery from a few hundred B images, no
collapse under lighting drift.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from benchmarks.data_realism import (
    STORY_FALSE_REJECT_RATE,
    RealismConfig,
    RealismResult,
    format_result,
    run_realism,
)

pytestmark = pytest.mark.integration

SMALL = RealismConfig(
    seed=0,
    a_train=2000,
    a_train_subtle=1000,
    a_train_hard=0,
    a_test=600,
    b_labelled=200,
    b_synthesised=240,
    b_synthesised_subtle=0,
    b_test=600,
    drift_test=600,
    epochs=12,
    finetune_epochs=4,
    workers=2,
    threads=2,
)
SMALL_SCALE_ACCURACY = 0.7
"""Bound at this scale (the full-scale goal is 99.7%; see the module docstring)."""


@pytest.fixture(scope="module")
def realism(tmp_path_factory: pytest.TempPathFactory) -> RealismResult:
    result = run_realism(SMALL, Path(tmp_path_factory.mktemp("realism")))
    print(format_result(result))
    return result


def test_design_a_model_is_accurate_on_design_a(realism: RealismResult) -> None:
    m = realism.metrics("A on A")
    assert m.count == SMALL.a_test
    assert m.accuracy >= SMALL_SCALE_ACCURACY, m.format_confusion()


def test_the_redesign_breaks_the_design_a_model(realism: RealismResult) -> None:
    on_a, on_b = realism.metrics("A on A"), realism.metrics("A on B")
    assert on_b.false_reject_rate > STORY_FALSE_REJECT_RATE or on_b.escape_rate > 0.05, (
        on_b.format_confusion()
    )
    # and the break is the redesign's doing: far below what the same model does on design A
    assert on_b.accuracy < on_a.accuracy - 0.2


def test_a_few_hundred_b_images_recover_both_designs(realism: RealismResult) -> None:
    sizes = realism.sizes
    assert sizes["B labelled"]["images"] + sizes["B synthesised"]["images"] < 1000
    on_b, on_a = realism.metrics("A+B on B"), realism.metrics("A+B on A")
    assert on_b.accuracy >= SMALL_SCALE_ACCURACY, on_b.format_confusion()
    assert on_a.accuracy >= SMALL_SCALE_ACCURACY, on_a.format_confusion()
    assert on_b.false_reject_rate < STORY_FALSE_REJECT_RATE


def test_lighting_drift_moves_the_statistics_not_the_answers(realism: RealismResult) -> None:
    base = realism.statistics["A test"]
    drifted = realism.statistics["A lighting drift test"]
    assert drifted["luma"] < 0.9 * base["luma"]  # dimmer
    assert drifted["r_over_b"] > 1.1 * base["r_over_b"]  # warmer
    on_a, on_drift = realism.metrics("A on A"), realism.metrics("A on A, drifted light")
    assert on_drift.accuracy >= SMALL_SCALE_ACCURACY - 0.01
    assert on_drift.accuracy >= on_a.accuracy - 0.015
