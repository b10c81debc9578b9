"""The plant story on the services as separate processes (``inspectloop up``): real Kafka, Triton,
a Ray head, Prometheus, the registry, the gateway on Ray Serve, the monitor, the trainer and the
rollout controller, each its own process. Nobody touches the plant after line 1's redesign; the
test asserts the story's headline figures against their goals, and what the plant recorded."""

from __future__ import annotations

import logging
from pathlib import Path

import httpx
import pytest

from inspectloop.core.registry_client import RegistryClient
from inspectloop.demo.platform import process_platform
from inspectloop.demo.story import MODEL, TOKEN, DemoConfig, run_story
from inspectloop.demo.timeline import (
    GOAL_DETECTION_INSPECTIONS,
    GOAL_SECONDS_TO_NEW_MODEL,
)

log = logging.getLogger(__name__)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(2400)]

DEMO_SCALE_FALSE_REJECT_RATE = 0.015


def test_plant_recovers_from_a_label_redesign_without_human_action(tmp_path: Path) -> None:
    config = DemoConfig(work=tmp_path / "up", timeout_s=1800)
    with process_platform(config, log.info) as (plant, addresses):
        timeline, report = run_story(plant, config, log.info)
        h = timeline.headline
        assert h is not None
        log.info("headline: %s", h)

        # The story completed: v2 decides line 1 at 100%, its rollout is complete, the line
        # is back in auto, and the registry holds the same stages.
        registry = RegistryClient(addresses.registry, TOKEN)
        stages = {str(v["version"]): v["stage"] for v in registry.versions(MODEL)}
        registry.close()
        assert stages.get("2") == "production", stages
        # The canary analysis read Prometheus: the rollout's analyses are in its TSDB.
        analyses = httpx.get(
            f"{addresses.prometheus}/api/v1/query",
            params={"query": 'sum(inspectloop_rollout_analysis_checks_total{outcome="pass"})'},
            timeout=10,
        ).json()["data"]["result"]
        assert analyses and float(analyses[0]["value"][1]) >= 4, analyses

    assert h.inspections_until_detection is not None
    assert h.inspections_until_detection <= GOAL_DETECTION_INSPECTIONS
    assert h.escapes_during_transition == 0
    assert h.seconds_to_new_model_at_100 is not None
    assert h.seconds_to_new_model_at_100 <= GOAL_SECONDS_TO_NEW_MODEL
    # The goal is 0.3%; the story's model (a half-width CNN trained for two minutes, gates at
    # 85% accuracy) reaches about 0.8% on the line, as version 1 does on line 2. This bound
    # catches a recovery onto a broken model; the goal needs the full-scale training recipe.
    assert h.inspections_after_recovery >= 200
    assert h.false_reject_rate_after_recovery is not None
    assert h.false_reject_rate_after_recovery <= DEMO_SCALE_FALSE_REJECT_RATE
    assert report.name == "index.html"
    assert report.exists()
    assert {p.name for p in report.parent.glob("*.png")} == {
        "drift.png",
        "line_modes.png",
        "quality_rates.png",
        "review_load.png",
        "rollout.png",
    }
