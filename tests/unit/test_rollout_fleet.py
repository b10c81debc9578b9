"""The edge wave check: which nodes must run the candidate at each step, and what holds or
fails a rollout."""

from __future__ import annotations

from inspectloop.rollout.fleet import EdgeFleet
from inspectloop.rollout.machine import Phase, Policy, RolloutStatus, Verdict
from inspectloop.v1.common_pb2 import ModelRef
from inspectloop.v1.edge_pb2 import (
    EDGE_NODE_STATE_DEGRADED,
    EDGE_NODE_STATE_READY,
    EDGE_NODE_STATE_SYNCING,
    EdgeHeartbeat,
    EdgeNodeState,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def rollout(phase: Phase, step_index: int = 0) -> RolloutStatus:
    return RolloutStatus(
        rollout_id="m-v2",
        model="m",
        version="2",
        lines=("line-1",),
        stable_version="1",
        policy=Policy(step_weights_bps=(1000, 5000), edge_waves=2),
        started_at=0,
        updated_at=0,
        phase=phase,
        step_index=step_index,
    )


def beat(
    node: str, wave: int, version: str, state: EdgeNodeState = EDGE_NODE_STATE_READY, **kw: str
) -> EdgeHeartbeat:
    return EdgeHeartbeat(
        node_id=node,
        line=kw.get("line", "line-1"),
        wave=wave,
        loaded_model=ModelRef(name="m", version=version),
        state=state,
        last_error=kw.get("error", ""),
    )


def fleet_of(*beats: EdgeHeartbeat, clock: Clock | None = None) -> EdgeFleet:
    fleet = EdgeFleet(stale_after_s=60, clock=clock or Clock())
    for b in beats:
        fleet.observe(b)
    return fleet


def test_the_first_canary_step_needs_only_the_first_wave() -> None:
    fleet = fleet_of(beat("pc-1", 1, "2"), beat("pc-2", 2, "1"))
    check = fleet.check(rollout(Phase.CANARY, 0))
    assert check is not None and check.verdict is Verdict.PASS
    assert check.samples == 1
    later = fleet.check(rollout(Phase.CANARY, 1))  # wave 2 reached: pc-2 still on v1
    assert later is not None and later.verdict is Verdict.INCONCLUSIVE
    assert "pc-2" in later.detail


def test_a_node_still_syncing_holds_the_rollout_and_a_refusing_one_fails_it() -> None:
    syncing = fleet_of(beat("pc-1", 1, "1", EDGE_NODE_STATE_SYNCING))
    check = syncing.check(rollout(Phase.CANARY))
    assert check is not None and check.verdict is Verdict.INCONCLUSIVE
    refused = fleet_of(
        beat("pc-1", 1, "1", EDGE_NODE_STATE_DEGRADED, error="sha256 mismatch"),
        beat("pc-3", 1, "2"),
    )
    check = refused.check(rollout(Phase.CANARY))
    assert check is not None and check.verdict is Verdict.FAIL
    assert "pc-1: sha256 mismatch" in check.detail
    assert check.value == 0.5


def test_after_promotion_every_wave_must_run_the_candidate() -> None:
    fleet = fleet_of(beat("pc-1", 1, "2"), beat("pc-2", 2, "1"))
    check = fleet.check(rollout(Phase.PRODUCTION_WATCH))
    assert check is not None and check.verdict is Verdict.INCONCLUSIVE
    fleet.observe(beat("pc-2", 2, "2"))
    check = fleet.check(rollout(Phase.PRODUCTION_WATCH))
    assert check is not None and check.verdict is Verdict.PASS


def test_lines_without_live_nodes_are_not_judged() -> None:
    clock = Clock()
    fleet = fleet_of(beat("pc-9", 1, "1", line="line-9"), clock=clock)
    assert fleet.check(rollout(Phase.CANARY)) is None  # another line's node
    fleet.observe(beat("pc-1", 1, "1"))
    assert fleet.check(rollout(Phase.SHADOW)) is None  # nothing reaches the edge in shadow
    clock.now += 61  # pc-1 fell silent
    assert fleet.check(rollout(Phase.CANARY)) is None
