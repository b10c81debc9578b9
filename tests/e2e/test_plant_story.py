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
    Timeline,
)

log = logging.getLogger(__name__)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(2400)]

DEMO_SCALE_FALSE_REJECT_RATE = 0.015


def story_of(timeline: Timeline) -> str:
    """The story's last marks, for a failure's message: what the plant was doing (CI keeps the
    message, not the run's logs)."""
    return "\n".join(f"{m.t:.0f} s {m.line} {m.kind}: {m.text}" for m in timeline.marks[-40:])


def test_plant_recovers_from_a_label_redesign_without_human_action(tmp_path: Path) -> None:
    config = DemoConfig(work=tmp_path / "up", timeout_s=1800)
    with process_platform(config, log.info) as (plant, addresses):
        timeline, report = run_story(plant, config, log.info)
        h = timeline.headline
        assert h is not None
        log.info("headline: %s", h)

        registry = RegistryClient(addresses.registry, TOKEN)
        stages = {str(v["version"]): v["stage"] for v in registry.versions(MODEL)}
        registry.close()
        # The canary analysis read Prometheus: the rollout's analyses are in its TSDB.
        analyses = httpx.get(
            f"{addresses.prometheus}/api/v1/query",
            params={"query": 'sum(inspectloop_rollout_analysis_checks_total{outcome="pass"})'},
            timeout=10,
        ).json()["data"]["result"]

    # What the plant guarantees whatever the retrain's verdict: the redesign is caught at once,
    # and no defective unit of line 1 passes unreviewed, in any mode, over the whole run.
    assert h.inspections_until_detection is not None
    assert h.inspections_until_detection <= GOAL_DETECTION_INSPECTIONS
    redesigned = next(line for line in h.lines if line.line == timeline.redesign_line)
    assert sum(c.escapes for c in redesigned.by_mode.values()) == 0, story_of(timeline)
    assert all(line.by_mode["auto"].escapes == 0 for line in h.lines), story_of(timeline)
    assert report.name == "index.html"
    assert report.exists()
    assert {p.name for p in report.parent.glob("*.png")} == {
        "drift.png",
        "line_modes.png",
        "quality_rates.png",
        "review_load.png",
        "rollout.png",
    }

    # The claim: v2, trained on what the plant has, passes its gates and decides line 1 at
    # 100%, and the line is back in auto. A v2 its gates rejected is reported as an expected
    # failure with the reasons (issue 24: the redesign's model does not yet pass them);
    # every other way of not recovering fails.
    if stages.get("2") == "rejected":
        verdict = [m.text for m in timeline.marks if m.kind == "model_version" and " v2 " in m.text]
        pytest.xfail(f"v2 was rejected by its gates: {verdict}")
    assert stages.get("2") == "production", f"{stages}\n{story_of(timeline)}"
    assert analyses and float(analyses[0]["value"][1]) >= 4, analyses
    assert h.escapes_during_transition == 0
    assert h.seconds_to_new_model_at_100 is not None
    assert h.seconds_to_new_model_at_100 <= GOAL_SECONDS_TO_NEW_MODEL
    # The goal is 0.3%, which 60 s of traffic (about 500 units) cannot resolve: one false
    # reject more or less moves it by 0.2%. This bound catches a recovery onto a broken model.
    assert h.inspections_after_recovery >= 200, story_of(timeline)
    assert h.false_reject_rate_after_recovery is not None
    assert h.false_reject_rate_after_recovery <= DEMO_SCALE_FALSE_REJECT_RATE
