"""The rollout state machine, tick by tick: pure data in, data out."""

from __future__ import annotations

import pytest

from inspectloop.rollout.machine import (
    APPROVE_CANARY,
    APPROVE_PRODUCTION,
    Action,
    Analysis,
    Announce,
    Check,
    Phase,
    Policy,
    RolloutStatus,
    SetRouting,
    SetStage,
    Verdict,
    fail,
    step,
)
from inspectloop.rollout.settings import RolloutSection

POLICY = Policy(
    step_weights_bps=(1000, 5000), shadow_intervals=2, watch_intervals=2, failure_threshold=2
)


def status(**kw: object) -> RolloutStatus:
    base = RolloutStatus(
        rollout_id="m-v2",
        model="m",
        version="2",
        lines=("line-1", "line-2"),
        stable_version="1",
        policy=POLICY,
        started_at=0.0,
        updated_at=0.0,
    )
    return RolloutStatus(**{**base.__dict__, **kw})


def analysis(verdict: Verdict | None, now: float = 1.0, **kw: object) -> Analysis:
    checks = (
        () if verdict is None else (Check("error_rate", verdict, 0.0, 0.01, "q", 100, "detail"),)
    )
    return Analysis(now=now, checks=checks, **kw)  # type: ignore[arg-type]


def run(s: RolloutStatus, *verdicts: Verdict | None) -> tuple[RolloutStatus, list[Action]]:
    actions: list[Action] = []
    for i, verdict in enumerate(verdicts):
        s, acts = step(s, analysis(verdict, now=float(i + 1)))
        actions += acts
    return s, actions


def routings(actions: list[Action]) -> list[SetRouting]:
    return [a for a in actions if isinstance(a, SetRouting)]


def stages(actions: list[Action]) -> list[tuple[str, str]]:
    return [(a.version, a.stage) for a in actions if isinstance(a, SetStage)]


def test_a_good_candidate_goes_through_shadow_every_canary_step_and_the_watch() -> None:
    s, acts = step(status(), analysis(None))
    assert s.phase is Phase.SHADOW
    assert stages(acts) == [("2", "shadow")]
    assert routings(acts) == [SetRouting(stable="1", shadows=("2",))]

    s, acts = run(s, Verdict.PASS)
    assert (s.phase, s.passed_intervals, acts) == (Phase.SHADOW, 1, [])
    s, acts = run(s, Verdict.PASS)
    assert (s.phase, s.step_index, s.canary_weight_bps) == (Phase.CANARY, 0, 1000)
    assert stages(acts) == [("2", "canary")]
    assert routings(acts) == [
        SetRouting(stable="1", canary="2", canary_weight_bps=1000, shadows=("1", "2"), edge_wave=1)
    ]

    s, acts = run(s, Verdict.PASS)
    assert (s.phase, s.step_index, s.canary_weight_bps) == (Phase.CANARY, 1, 5000)
    assert stages(acts) == []  # a step within the canary is no stage change
    assert routings(acts)[0].edge_wave == 2

    s, acts = run(s, Verdict.PASS)
    assert s.phase is Phase.PRODUCTION_WATCH
    assert stages(acts) == [("2", "production")]
    assert routings(acts) == [SetRouting(stable="2", shadows=("1",))]

    s, acts = run(s, Verdict.PASS, Verdict.PASS)
    assert s.phase is Phase.PRODUCTION and s.terminal
    assert stages(acts) == [("1", "archived")]
    assert routings(acts) == [SetRouting(stable="2")]
    # A finished rollout ignores later analyses.
    s2, _ = step(s, analysis(Verdict.PASS))
    assert s2 == s


def test_every_transition_is_announced_with_consecutive_event_ids() -> None:
    s, acts = run(status(), None, *[Verdict.PASS] * 7)
    assert s.phase is Phase.PRODUCTION
    events = [a for a in acts if isinstance(a, Announce)]
    assert [e.event_id for e in events] == [f"m-v2-{i}" for i in range(5)]
    assert [e.previous_phase for e in events] == [
        Phase.PENDING,
        Phase.SHADOW,
        Phase.CANARY,
        Phase.CANARY,
        Phase.PRODUCTION_WATCH,
    ]
    assert s.sequence == 5


@pytest.mark.parametrize("phase", [Phase.SHADOW, Phase.CANARY, Phase.PRODUCTION_WATCH])
def test_failures_at_the_threshold_roll_back_traffic_first(phase: Phase) -> None:
    s = status(phase=phase, canary_weight_bps=1000 if phase is Phase.CANARY else 0)
    s, acts = run(s, Verdict.FAIL)
    assert (s.phase, s.failed_checks) == (phase, 1)
    assert [type(a) for a in acts] == [Announce]  # the failure is told, nothing moves
    s, acts = run(s, Verdict.FAIL)
    assert s.phase is Phase.ROLLED_BACK and s.terminal
    assert s.failed_checks == 2
    assert isinstance(acts[0], SetRouting) and acts[0] == SetRouting(stable="1")
    assert stages(acts) == [("2", "rolled_back")]
    assert "rolled back after 2 failed" in s.reason


def test_a_pass_between_failures_resets_the_count() -> None:
    s, _ = run(status(phase=Phase.CANARY), Verdict.FAIL, Verdict.PASS, Verdict.FAIL)
    assert s.phase is Phase.CANARY
    assert s.failed_checks == 1


def test_no_data_is_never_a_pass() -> None:
    s, acts = run(status(phase=Phase.CANARY), *[Verdict.INCONCLUSIVE] * 50, None)
    assert (s.phase, s.step_index, s.failed_checks, s.passed_intervals) == (Phase.CANARY, 0, 0, 0)
    assert acts == []
    mixed = Analysis(
        now=1.0,
        checks=(
            Check("error_rate", Verdict.PASS, 0.0, 0.01, "q", 100, ""),
            Check("false_reject_rate", Verdict.INCONCLUSIVE, None, 0.0, "q", 3, ""),
        ),
    )
    assert mixed.verdict is Verdict.INCONCLUSIVE


def test_an_unreachable_metrics_source_holds_the_rollout_and_says_so_once() -> None:
    s = status(phase=Phase.CANARY, passed_intervals=0)
    down = analysis(Verdict.PASS, source_error="connection refused")
    s, acts = step(s, down)
    assert (s.phase, s.step_index, s.waiting_for) == (Phase.CANARY, 0, "metrics")
    assert [type(a) for a in acts] == [Announce]
    for _ in range(20):
        s, acts = step(s, down)
        assert acts == []
    assert s.phase is Phase.CANARY and s.step_index == 0
    s, acts = step(s, analysis(Verdict.PASS))
    assert (s.phase, s.step_index, s.waiting_for) == (Phase.CANARY, 1, "")


def test_signatures_gate_canary_and_production() -> None:
    policy = Policy(
        step_weights_bps=(5000,),
        shadow_intervals=1,
        watch_intervals=1,
        approvals_required=frozenset({APPROVE_CANARY, APPROVE_PRODUCTION}),
    )
    s = status(phase=Phase.SHADOW, policy=policy)
    s, acts = run(s, Verdict.PASS)
    assert (s.phase, s.waiting_for, s.resume_phase) == (Phase.PAUSED, APPROVE_CANARY, Phase.CANARY)
    assert routings(acts) == [] and stages(acts) == []
    s, acts = run(s, Verdict.PASS, Verdict.PASS)  # analysis alone does not resume it
    assert s.phase is Phase.PAUSED and acts == []

    s, acts = step(s, analysis(None, approvals=frozenset({APPROVE_CANARY})))
    assert (s.phase, s.canary_weight_bps) == (Phase.CANARY, 5000)
    assert next(a for a in acts if isinstance(a, SetStage)).approval == APPROVE_CANARY

    s, _ = step(s, analysis(Verdict.PASS, approvals=frozenset({APPROVE_CANARY})))
    assert (s.phase, s.waiting_for) == (Phase.PAUSED, APPROVE_PRODUCTION)
    both = frozenset({APPROVE_CANARY, APPROVE_PRODUCTION})
    s, acts = step(s, analysis(None, approvals=both))
    assert s.phase is Phase.PRODUCTION_WATCH
    assert stages(acts) == [("2", "production")]


def test_a_lines_first_version_goes_to_production_through_every_stage() -> None:
    s, acts = step(status(stable_version=None), analysis(None))
    assert s.phase is Phase.PRODUCTION
    assert stages(acts) == [("2", "shadow"), ("2", "canary"), ("2", "production")]
    assert routings(acts) == [SetRouting(stable="2")]


def test_final_phases_do_nothing_more() -> None:
    for phase in (Phase.PRODUCTION, Phase.ROLLED_BACK, Phase.FAILED):
        s = status(phase=phase)
        assert step(s, analysis(Verdict.FAIL)) == (s, [])


def test_a_failure_outside_analysis_returns_traffic_to_the_stable() -> None:
    s, acts = fail(status(phase=Phase.CANARY, canary_weight_bps=1000), 5.0, "registry refused")
    assert (s.phase, s.canary_weight_bps, s.reason) == (Phase.FAILED, 0, "registry refused")
    assert acts[0] == SetRouting(stable="1")


def test_status_survives_a_round_trip_through_its_stored_form() -> None:
    s, _ = run(status(), None, Verdict.PASS, Verdict.PASS, Verdict.FAIL)
    assert RolloutStatus.from_dict(s.to_dict()) == s
    paused = status(phase=Phase.PAUSED, waiting_for=APPROVE_CANARY, resume_phase=Phase.CANARY)
    assert RolloutStatus.from_dict(paused.to_dict()) == paused


@pytest.mark.parametrize("weights", [(), (0, 5000), (5000, 1000), (1000, 1000), (1000, 20000)])
def test_the_policy_refuses_bad_step_weights(weights: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="weights"):
        Policy(step_weights_bps=weights)


# --- a rollout without a verdict, and a paused one -------------------------------------------

DEADLINE = Policy(
    step_weights_bps=(1000, 5000),
    shadow_intervals=2,
    watch_intervals=2,
    failure_threshold=2,
    max_undecided_s=100.0,
)
SIGNED = Policy(
    step_weights_bps=(1000, 5000),
    shadow_intervals=1,
    watch_intervals=1,
    failure_threshold=2,
    approvals_required=frozenset({APPROVE_CANARY, APPROVE_PRODUCTION}),
    max_undecided_s=100.0,
)


def assert_rolled_back(s: RolloutStatus, acts: list[Action]) -> None:
    assert s.phase is Phase.ROLLED_BACK and s.terminal
    assert s.canary_weight_bps == 0
    assert acts[0] == SetRouting(stable="1")  # traffic first
    assert stages(acts) == [("2", "rolled_back")]
    assert [type(a) for a in acts].count(Announce) == 1


@pytest.mark.parametrize("phase", [Phase.SHADOW, Phase.CANARY, Phase.PRODUCTION_WATCH])
def test_an_inconclusive_rollout_rolls_back_at_its_deadline_and_not_before(phase: Phase) -> None:
    s = status(phase=phase, policy=DEADLINE, canary_weight_bps=1000)
    s, acts = step(s, analysis(Verdict.INCONCLUSIVE, now=10.0))
    assert (s.phase, s.undecided_since, acts) == (phase, 10.0, [])
    s, acts = step(s, analysis(Verdict.INCONCLUSIVE, now=109.0))
    assert (s.phase, s.undecided_since, acts) == (phase, 10.0, [])  # 99 s: not yet
    s, acts = step(s, analysis(Verdict.INCONCLUSIVE, now=110.0))
    assert_rolled_back(s, acts)
    assert "no verdict for 100s" in s.reason
    assert "inconclusive: error_rate inconclusive: detail" in s.reason
    assert next(a for a in acts if isinstance(a, SetStage)).reason == s.reason


def test_a_metrics_source_down_past_the_deadline_rolls_back() -> None:
    s = status(phase=Phase.CANARY, policy=DEADLINE, canary_weight_bps=1000)
    down = analysis(None, now=10.0, source_error="connection refused")
    s, acts = step(s, down)
    assert (s.phase, s.waiting_for, s.undecided_since) == (Phase.CANARY, "metrics", 10.0)
    assert [type(a) for a in acts] == [Announce]  # the hold, told once
    s, acts = step(s, analysis(Verdict.INCONCLUSIVE, now=60.0))  # back, but no data yet
    assert (s.phase, s.waiting_for, s.undecided_since, acts) == (Phase.CANARY, "", 10.0, [])
    s, acts = step(s, analysis(None, now=109.0, source_error="connection refused"))
    assert s.phase is Phase.CANARY and s.waiting_for == "metrics"
    s, acts = step(s, analysis(None, now=110.0, source_error="connection refused"))
    assert_rolled_back(s, acts)
    assert "no verdict for 100s" in s.reason
    assert "metrics source unavailable (connection refused)" in s.reason


@pytest.mark.parametrize("verdict", [Verdict.PASS, Verdict.FAIL])
def test_a_verdict_between_undecided_intervals_starts_the_clock_again(verdict: Verdict) -> None:
    s = status(phase=Phase.SHADOW, policy=DEADLINE)
    s, _ = step(s, analysis(Verdict.INCONCLUSIVE, now=10.0))
    s, _ = step(s, analysis(verdict, now=50.0))
    assert (s.phase, s.undecided_since) == (Phase.SHADOW, None)
    s, _ = step(s, analysis(Verdict.INCONCLUSIVE, now=60.0))
    s, acts = step(s, analysis(Verdict.INCONCLUSIVE, now=150.0))  # 140 s after the first
    assert (s.phase, s.undecided_since, acts) == (Phase.SHADOW, 60.0, [])
    s, acts = step(s, analysis(Verdict.INCONCLUSIVE, now=160.0))
    assert_rolled_back(s, acts)


def test_every_phase_starts_its_own_undecided_clock() -> None:
    s = status(phase=Phase.CANARY, policy=DEADLINE, canary_weight_bps=1000)
    s, _ = step(s, analysis(Verdict.INCONCLUSIVE, now=10.0))
    s, _ = step(s, analysis(Verdict.PASS, now=20.0))
    assert (s.phase, s.step_index, s.undecided_since) == (Phase.CANARY, 1, None)


def paused_canary() -> RolloutStatus:
    """Paused after its last canary step, waiting for approve-production, 50% still routed."""
    s = status(phase=Phase.CANARY, policy=SIGNED, step_index=1, canary_weight_bps=5000)
    s, acts = step(s, analysis(Verdict.PASS, now=1.0, approvals=frozenset({APPROVE_CANARY})))
    assert (s.phase, s.waiting_for, s.resume_phase) == (
        Phase.PAUSED,
        APPROVE_PRODUCTION,
        Phase.PRODUCTION_WATCH,
    )
    assert (s.canary_weight_bps, s.analysed_as) == (5000, Phase.CANARY)
    assert routings(acts) == []
    return s


def test_a_paused_canary_that_fails_is_rolled_back_at_the_failure_threshold() -> None:
    s, acts = step(paused_canary(), analysis(Verdict.FAIL, now=2.0))
    assert (s.phase, s.failed_checks) == (Phase.PAUSED, 1)
    assert [type(a) for a in acts] == [Announce]  # the failure is told, nothing moves
    assert "waiting for a signature 'approve-production'; analysis failed (1/2)" in s.reason
    # The signature arriving with the failure at the threshold does not promote it.
    signed = frozenset({APPROVE_CANARY, APPROVE_PRODUCTION})
    s, acts = step(s, analysis(Verdict.FAIL, now=3.0, approvals=signed))
    assert_rolled_back(s, acts)
    assert s.failed_checks == 2
    assert "rolled back while paused after 2 failed analysis intervals" in s.reason


def test_a_paused_canary_that_passes_resumes_when_signed() -> None:
    s, _ = step(paused_canary(), analysis(Verdict.FAIL, now=2.0))
    s, acts = step(s, analysis(Verdict.PASS, now=3.0))
    assert (s.phase, s.failed_checks, acts) == (Phase.PAUSED, 0, [])
    assert s.reason == "waiting for a signature 'approve-production'"
    s, acts = step(s, analysis(Verdict.PASS, now=4.0))
    assert (s.phase, acts) == (Phase.PAUSED, [])  # passing alone does not resume it
    signed = frozenset({APPROVE_CANARY, APPROVE_PRODUCTION})
    s, acts = step(s, analysis(Verdict.PASS, now=5.0, approvals=signed))
    assert s.phase is Phase.PRODUCTION_WATCH
    assert stages(acts) == [("2", "production")]
    assert next(a for a in acts if isinstance(a, SetStage)).approval == APPROVE_PRODUCTION
    assert routings(acts) == [SetRouting(stable="2", shadows=("1",))]


def test_a_failure_below_the_threshold_does_not_stop_the_signature_but_still_counts() -> None:
    signed = frozenset({APPROVE_CANARY, APPROVE_PRODUCTION})
    s, acts = step(paused_canary(), analysis(Verdict.FAIL, now=2.0, approvals=signed))
    assert (s.phase, s.failed_checks) == (Phase.PRODUCTION_WATCH, 1)
    events = [a for a in acts if isinstance(a, Announce)]
    assert [e.event_id for e in events] == ["m-v2-1", "m-v2-2"]  # the failure, the promotion
    s, acts = step(s, analysis(Verdict.FAIL, now=3.0, approvals=signed))
    assert_rolled_back(s, acts)


def test_a_pause_for_a_signature_has_no_undecided_deadline() -> None:
    s = paused_canary()
    before = s
    for now in (10.0, 500.0, 5000.0):
        s, acts = step(s, analysis(Verdict.INCONCLUSIVE, now=now))
        assert acts == []
        s, acts = step(s, analysis(None, now=now + 1, source_error="connection refused"))
        assert acts == []
    assert s == before
    s, _ = step(s, analysis(None, now=6000.0, approvals=frozenset({APPROVE_PRODUCTION})))
    assert (s.phase, s.undecided_since) == (Phase.PRODUCTION_WATCH, None)


def test_a_pause_from_shadow_is_analysed_and_a_first_versions_is_not() -> None:
    s, _ = step(status(phase=Phase.SHADOW, policy=SIGNED), analysis(Verdict.PASS))
    assert (s.phase, s.resume_phase, s.analysed_as) == (Phase.PAUSED, Phase.CANARY, Phase.SHADOW)
    s, _ = run(s, Verdict.FAIL, Verdict.FAIL)
    assert s.phase is Phase.ROLLED_BACK
    first = status(phase=Phase.PENDING, policy=SIGNED, stable_version=None)
    first, _ = step(first, analysis(None))
    assert (first.phase, first.resume_phase, first.analysed_as) == (
        Phase.PAUSED,
        Phase.PRODUCTION,
        None,
    )
    assert step(first, analysis(Verdict.FAIL)) == (first, [])


def test_a_status_stored_before_the_undecided_deadline_still_loads() -> None:
    s = status(phase=Phase.CANARY, canary_weight_bps=1000, failed_checks=1)
    old = s.to_dict()
    del old["undecided_since"]
    del old["policy"]["max_undecided_s"]
    loaded = RolloutStatus.from_dict(old)
    assert loaded == s
    assert (loaded.undecided_since, loaded.policy.max_undecided_s) == (None, 3600.0)
    # And it goes on as any other: an inconclusive interval starts its clock.
    loaded, acts = step(loaded, analysis(Verdict.INCONCLUSIVE, now=7.0))
    assert (loaded.phase, loaded.undecided_since, acts) == (Phase.CANARY, 7.0, [])
    undecided = status(phase=Phase.CANARY, policy=DEADLINE, undecided_since=12.5)
    assert RolloutStatus.from_dict(undecided.to_dict()) == undecided


@pytest.mark.parametrize("seconds", [0.0, -1.0, float("nan")])
def test_the_policy_refuses_a_deadline_that_is_not_positive(seconds: float) -> None:
    with pytest.raises(ValueError, match="max_undecided_s"):
        Policy(max_undecided_s=seconds)


def test_the_deadline_is_a_rollout_setting() -> None:
    assert RolloutSection().policy().max_undecided_s == 3600.0
    assert RolloutSection(max_undecided_s=900).policy().max_undecided_s == 900.0
    with pytest.raises(ValueError, match="max_undecided_s"):
        RolloutSection(max_undecided_s=0)
