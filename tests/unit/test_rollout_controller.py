"""The controller's clock: which rollouts it analyses, and how often (fakes for the registry, the
bus and the metrics source; the machine itself is in ``test_rollout_machine``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

from prometheus_client import CollectorRegistry

from inspectloop.core.bus import EventBus
from inspectloop.core.errors import BackendUnavailableError
from inspectloop.core.registry_client import RegistryClient
from inspectloop.core.settings import BusSettings
from inspectloop.rollout.analysis import Analyzer
from inspectloop.rollout.machine import (
    APPROVE_PRODUCTION,
    Check,
    Phase,
    Policy,
    RolloutStatus,
    Verdict,
)
from inspectloop.rollout.metrics import RolloutMetrics
from inspectloop.rollout.service import RolloutController, RolloutStore

INTERVAL_S = 10.0
POLICY = Policy(
    step_weights_bps=(1000, 5000),
    failure_threshold=2,
    approvals_required=frozenset({APPROVE_PRODUCTION}),
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Registry:
    def __init__(self) -> None:
        self.approvals: list[dict[str, Any]] = []
        self.transitions: list[tuple[str, str]] = []

    def versions(self, model: str) -> list[dict[str, Any]]:
        return [{"version": 1, "stage": "production"}, {"version": 2, "stage": "canary"}]

    def version(self, model: str, version: int) -> dict[str, Any]:
        return {"approvals": self.approvals}

    def transition(self, model: str, version: int, stage: str, reason: str) -> None:
        self.transitions.append((str(version), stage))


class Delivery:
    def __init__(self, lost: bool) -> None:
        self.lost = lost

    def result(self, timeout: float | None = None) -> None:
        if self.lost:
            raise BackendUnavailableError("Kafka did not acknowledge in time")


class Bus:
    settings = BusSettings()

    def __init__(self) -> None:
        self.published: list[Any] = []
        self.down = False  # deliveries fail, as with the brokers away

    def publish(self, topic: Any, message: Any, **kw: Any) -> Delivery:
        self.published.append(message)
        return Delivery(self.down)


class Checks:
    """The analyzer: every call is recorded with the phase it was asked to judge."""

    def __init__(self, verdict: Verdict) -> None:
        self.verdict = verdict
        self.phases: list[Phase] = []

    def checks(self, status: RolloutStatus) -> tuple[Check, ...]:
        self.phases.append(status.phase)
        return (Check("error_rate", self.verdict, 0.0, 0.01, "q", 100, "detail"),)


def controller(
    tmp_path: Path, analyzer: Checks, registry: Registry, clock: Clock, bus: Bus | None = None
) -> tuple[RolloutController, RolloutStore]:
    store = RolloutStore(tmp_path / "rollout.sqlite")
    paused = RolloutStatus(
        rollout_id="m-v2",
        model="m",
        version="2",
        lines=("line-1",),
        stable_version="1",
        policy=POLICY,
        started_at=0.0,
        updated_at=0.0,
        phase=Phase.PAUSED,
        step_index=1,
        canary_weight_bps=5000,
        waiting_for=APPROVE_PRODUCTION,
        resume_phase=Phase.PRODUCTION_WATCH,
    )
    store.add(paused)
    return RolloutController(
        policy=POLICY,
        analysis_interval_s=INTERVAL_S,
        bus=cast(EventBus, bus or Bus()),
        registry=cast(RegistryClient, registry),
        analyzer=cast(Analyzer, analyzer),
        store=store,
        metrics=RolloutMetrics(CollectorRegistry()),
        clock=clock,
    ), store


def ticks(c: RolloutController, clock: Clock, seconds: float) -> None:
    for _ in range(int(seconds)):
        clock.now += 1.0
        c.tick()


def test_a_paused_canary_is_analysed_every_interval_as_a_canary_and_rolled_back(
    tmp_path: Path,
) -> None:
    clock, analyzer, registry = Clock(), Checks(Verdict.FAIL), Registry()
    c, store = controller(tmp_path, analyzer, registry, clock)
    c.tick()  # the first interval starts
    ticks(c, clock, INTERVAL_S)
    assert analyzer.phases == [Phase.CANARY]
    status = store.get("m-v2")
    assert status is not None and (status.phase, status.failed_checks) == (Phase.PAUSED, 1)
    ticks(c, clock, INTERVAL_S - 1)
    assert len(analyzer.phases) == 1  # not before its interval
    ticks(c, clock, 1)
    status = store.get("m-v2")
    assert status is not None and status.phase is Phase.ROLLED_BACK
    assert registry.transitions == [("2", "rolled_back")]


def test_a_rollback_whose_routing_was_not_delivered_is_not_saved_and_is_tried_again(
    tmp_path: Path,
) -> None:
    clock, analyzer, registry, bus = Clock(), Checks(Verdict.FAIL), Registry(), Bus()
    c, store = controller(tmp_path, analyzer, registry, clock, bus)
    c.tick()
    ticks(c, clock, 2 * INTERVAL_S - 1)  # one failed analysis; the next one rolls back
    bus.down = True
    ticks(c, clock, 1)
    routed = len(bus.published)
    status = store.get("m-v2")
    assert routed > 0, "the rollback published its routing"
    assert status is not None and status.phase is Phase.PAUSED  # not saved as rolled back
    bus.down = False
    ticks(c, clock, 1)
    status = store.get("m-v2")
    assert status is not None and status.phase is Phase.ROLLED_BACK
    assert len(bus.published) > routed  # the routing was published again


def test_a_paused_canary_resumes_at_the_next_tick_after_its_signature(tmp_path: Path) -> None:
    clock, analyzer, registry = Clock(), Checks(Verdict.PASS), Registry()
    c, store = controller(tmp_path, analyzer, registry, clock)
    c.tick()
    ticks(c, clock, 3)
    registry.approvals = [{"meaning": APPROVE_PRODUCTION, "id": "a-1", "valid": True}]
    ticks(c, clock, 1)  # between two analyses: the signature is not kept waiting for one
    status = store.get("m-v2")
    assert status is not None and status.phase is Phase.PRODUCTION_WATCH
    assert analyzer.phases == []
    # The watch gets a whole interval before it is first judged, as a watch.
    ticks(c, clock, INTERVAL_S - 1)
    assert analyzer.phases == []
    ticks(c, clock, 1)
    assert analyzer.phases == [Phase.PRODUCTION_WATCH]
