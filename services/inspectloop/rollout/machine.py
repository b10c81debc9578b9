"""The rollout state machine: a pure ``step(status, analysis) -> (status, actions)``.

One rollout moves one validated version of a model onto its lines::

    pending ─▶ shadow ─▶ canary (step weights) ─▶ production_watch ─▶ production
                  │            │                        │
                  └────────────┴──── rolled_back ◀──────┘

- **shadow**: the candidate scores a copy of every request; decisions stay with the stable.
- **canary**: the candidate decides for ``step_weights_bps[i]`` of the traffic (and edge wave
  ``i + 1``); both versions are shadowed, so every request compares them. One passing analysis
  interval moves it to the next step.
- **production_watch**: the candidate is stable; the previous one stays warm as a shadow, so a
  rollback is a routing change, until ``watch_intervals`` more intervals pass (label-delayed
  quality arrives in this time).
- A failed analysis counts; ``failure_threshold`` consecutive failures roll back. An inconclusive
  one (no data, labels not in yet) neither counts as a failure nor moves the rollout on: no data
  is never a pass. A metrics source that cannot be reached holds the rollout where it is
  (announced once). Neither lasts forever: a rollout without a verdict (inconclusive or no
  source) for ``max_undecided_s`` since its last PASS or FAIL is rolled back, with the reason it
  had none, so that a candidate nobody can judge does not keep a share of the traffic for good.
- **paused**: waiting for an electronic signature (``approve-canary``, ``approve-production``)
  that the policy requires; the rollout resumes when the registry holds a valid one. A pause from
  shadow or from the canary leaves the candidate routed (as a shadow, or deciding its last step's
  share), so it goes on being analysed every interval as the phase it paused in: failures count
  and roll it back at the threshold, a pass clears them, and a signature resumes it unless that
  interval's failure reached the threshold. The undecided deadline does not run while paused:
  the rollout waits for people, not for data. A line's first version pauses with nothing routed
  and nothing to compare with, so nothing is analysed.

Everything here is data in, data out: the controller gathers the analysis, calls ``step``,
carries out the actions, then persists the new status. That order makes a restart safe: actions
are idempotent (a stage already reached, a routing with a newer generation, an event id already
seen), so a controller killed between acting and persisting repeats them harmlessly.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

BASIS_POINTS = 10_000
APPROVE_CANARY = "approve-canary"
APPROVE_PRODUCTION = "approve-production"


class Phase(StrEnum):
    """``RolloutPhase`` in rollout.proto, lower case."""

    PENDING = "pending"
    SHADOW = "shadow"
    CANARY = "canary"
    PRODUCTION_WATCH = "production_watch"
    PRODUCTION = "production"
    ROLLED_BACK = "rolled_back"
    PAUSED = "paused"
    FAILED = "failed"

    @property
    def proto_name(self) -> str:
        return "ROLLOUT_PHASE_" + self.value.upper()


TERMINAL_PHASES = frozenset({Phase.PRODUCTION, Phase.ROLLED_BACK, Phase.FAILED})
ANALYSED_PHASES = frozenset({Phase.SHADOW, Phase.CANARY, Phase.PRODUCTION_WATCH})
# A paused rollout's resume phase -> the analysed phase it paused in. Only these pauses leave the
# candidate routed; a line's first version pauses from pending, to resume in production.
_PAUSED_IN = {Phase.CANARY: Phase.SHADOW, Phase.PRODUCTION_WATCH: Phase.CANARY}


class Verdict(StrEnum):
    """``AnalysisResult`` in rollout.proto, lower case."""

    PASS = "pass"  # noqa: S105 (a verdict, not a password)
    FAIL = "fail"
    INCONCLUSIVE = "inconclusive"


@dataclass(frozen=True)
class Check:
    """One metric judged at one analysis interval."""

    metric: str
    verdict: Verdict
    value: float | None
    threshold: float
    query: str
    samples: int
    detail: str


@dataclass(frozen=True)
class Analysis:
    """What the controller observed for one rollout at one interval."""

    now: float
    checks: tuple[Check, ...] = ()
    # Signature meanings the registry holds valid signatures for on the candidate.
    approvals: frozenset[str] = frozenset()
    # Why the metrics source could not answer; None when it did.
    source_error: str | None = None

    @property
    def verdict(self) -> Verdict:
        if any(c.verdict is Verdict.FAIL for c in self.checks):
            return Verdict.FAIL
        if self.checks and all(c.verdict is Verdict.PASS for c in self.checks):
            return Verdict.PASS
        return Verdict.INCONCLUSIVE

    def summary(self) -> str:
        return "; ".join(f"{c.metric} {c.verdict.value}: {c.detail}" for c in self.checks)


@dataclass(frozen=True)
class Policy:
    """How a rollout proceeds; captured when it starts, so a settings change mid-rollout does
    not change the rules of a rollout in flight."""

    step_weights_bps: tuple[int, ...] = (1000, 2500, 5000)
    shadow_intervals: int = 1
    watch_intervals: int = 2
    failure_threshold: int = 2
    # Signature meanings required before entering canary / production.
    approvals_required: frozenset[str] = frozenset()
    edge_waves: int = 2
    # Seconds an analysed phase may go without a verdict (inconclusive, or no metrics source)
    # before the rollout is rolled back.
    max_undecided_s: float = 3600.0

    def __post_init__(self) -> None:
        weights = self.step_weights_bps
        if not weights or any(not 0 < w <= BASIS_POINTS for w in weights):
            raise ValueError(f"canary step weights must be in 1..{BASIS_POINTS} bps: {weights}")
        if list(weights) != sorted(set(weights)):
            raise ValueError(f"canary step weights must increase: {weights}")
        if self.failure_threshold < 1:
            raise ValueError("the failure threshold must be at least 1")
        if not self.max_undecided_s > 0:  # also refuses NaN
            raise ValueError(f"max_undecided_s must be > 0: {self.max_undecided_s}")


@dataclass(frozen=True)
class RolloutStatus:
    rollout_id: str
    model: str
    version: str
    lines: tuple[str, ...]
    # The production version being replaced (the rollback target); None for a line's first.
    stable_version: str | None
    policy: Policy
    started_at: float
    updated_at: float
    phase: Phase = Phase.PENDING
    step_index: int = 0
    canary_weight_bps: int = 0
    passed_intervals: int = 0
    failed_checks: int = 0
    # A paused rollout waits for this signature meaning; "metrics" while the source is down.
    waiting_for: str = ""
    # Phase a paused rollout enters once its signature is there.
    resume_phase: Phase | None = None
    # Events published so far: the next event's id is f"{rollout_id}-{sequence}".
    sequence: int = 0
    reason: str = ""
    # When the current run of analyses without a verdict (inconclusive, or no metrics source)
    # began; None after a PASS or a FAIL, and at the start of every phase.
    undecided_since: float | None = None

    @property
    def terminal(self) -> bool:
        return self.phase in TERMINAL_PHASES

    @property
    def analysed_as(self) -> Phase | None:
        """The phase whose checks judge this rollout each interval; None when it is not
        analysed. A rollout paused for a signature with its candidate still routed (a pause from
        shadow, or after the last canary step with its share of traffic) is analysed as the
        phase it paused in: while the candidate runs, something watches it."""
        if self.phase in ANALYSED_PHASES:
            return self.phase
        if self.phase is Phase.PAUSED and self.stable_version is not None:
            return _PAUSED_IN.get(self.resume_phase) if self.resume_phase else None
        return None

    def to_dict(self) -> dict[str, Any]:
        policy = self.policy
        return {
            **{k: v for k, v in self.__dict__.items() if k != "policy"},
            "lines": list(self.lines),
            "phase": self.phase.value,
            "resume_phase": self.resume_phase.value if self.resume_phase else None,
            "policy": {
                "step_weights_bps": list(policy.step_weights_bps),
                "shadow_intervals": policy.shadow_intervals,
                "watch_intervals": policy.watch_intervals,
                "failure_threshold": policy.failure_threshold,
                "approvals_required": sorted(policy.approvals_required),
                "edge_waves": policy.edge_waves,
                "max_undecided_s": policy.max_undecided_s,
            },
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RolloutStatus:
        """Also reads a status stored by an earlier version: a key it lacks takes its default."""
        policy = data["policy"]
        return cls(
            **{
                **data,
                "lines": tuple(data["lines"]),
                "phase": Phase(data["phase"]),
                "resume_phase": Phase(data["resume_phase"]) if data["resume_phase"] else None,
                "policy": Policy(
                    step_weights_bps=tuple(policy["step_weights_bps"]),
                    shadow_intervals=policy["shadow_intervals"],
                    watch_intervals=policy["watch_intervals"],
                    failure_threshold=policy["failure_threshold"],
                    approvals_required=frozenset(policy["approvals_required"]),
                    edge_waves=policy["edge_waves"],
                    max_undecided_s=policy.get("max_undecided_s", Policy.max_undecided_s),
                ),
            }
        )


# --- actions -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SetRouting:
    """Publish this routing for every line of the rollout."""

    stable: str
    canary: str | None = None
    canary_weight_bps: int = 0
    shadows: tuple[str, ...] = ()
    edge_wave: int = 0


@dataclass(frozen=True)
class SetStage:
    """Move ``version`` to ``stage`` in the registry (idempotent: already there is done)."""

    version: str
    stage: str
    reason: str
    approval: str | None = None


@dataclass(frozen=True)
class Announce:
    """Publish a RolloutEvent for the transition from ``previous_phase`` to the new status."""

    event_id: str
    previous_phase: Phase
    checks: tuple[Check, ...] = field(default=())


Action = SetRouting | SetStage | Announce


# --- the machine -------------------------------------------------------------------------------


def step(status: RolloutStatus, analysis: Analysis) -> tuple[RolloutStatus, list[Action]]:
    """The next status of a rollout and the actions that carry it out."""
    if status.terminal:
        return status, []
    if status.phase is Phase.PENDING:
        return _start(status, analysis)
    if status.phase is Phase.PAUSED:
        return _paused(status, analysis)
    if analysis.source_error is None and analysis.verdict is not Verdict.INCONCLUSIVE:
        return _judged(replace(status, waiting_for="", undecided_since=None), analysis)
    return _undecided(status, analysis)


def _judged(status: RolloutStatus, analysis: Analysis) -> tuple[RolloutStatus, list[Action]]:
    """An analysed phase after one interval's PASS or FAIL."""
    if analysis.verdict is Verdict.FAIL:
        failed = status.failed_checks + 1
        if failed >= status.policy.failure_threshold:
            return _roll_back(
                replace(status, failed_checks=failed), analysis, _failed(failed, analysis)
            )
        return _announce(
            status,
            replace(status, failed_checks=failed, reason=f"analysis failed: {analysis.summary()}"),
            analysis,
        )
    return _passed(status, analysis)


def _undecided(status: RolloutStatus, analysis: Analysis) -> tuple[RolloutStatus, list[Action]]:
    """An analysed phase after an interval without a verdict: inconclusive, or no metrics
    source. Nothing moves and nothing counts, until ``max_undecided_s`` since the first such
    interval (a PASS or FAIL in between starts the clock afresh) rolls the rollout back."""
    since = analysis.now if status.undecided_since is None else status.undecided_since
    status = replace(status, undecided_since=since)
    waited = analysis.now - since
    limit = status.policy.max_undecided_s
    if waited >= limit:
        why = (
            f"metrics source unavailable ({analysis.source_error})"
            if analysis.source_error is not None
            else f"analysis inconclusive: {analysis.summary() or 'no checks'}"
        )
        reason = f"rolled back: no verdict for {waited:.0f}s (max_undecided_s {limit:g}): {why}"
        return _roll_back(status, analysis, reason)
    if analysis.source_error is not None:
        return _hold(status, analysis)
    return replace(status, waiting_for="", updated_at=analysis.now), []


def _paused(status: RolloutStatus, analysis: Analysis) -> tuple[RolloutStatus, list[Action]]:
    """A rollout waiting for a signature. While its candidate is routed (``analysed_as``), each
    interval's verdict counts as in the phase it paused in: a FAIL toward the threshold, which
    rolls back whatever signature has arrived; a PASS clears the failures; then a signature
    resumes it. Inconclusive analyses and a metrics source outage are waited out here without
    the ``max_undecided_s`` deadline: the pause waits for a person's signature, which may take a
    night or a weekend, and waiting says nothing against the candidate (a failure does, and
    still rolls it back). That is also why the controller's signature checks between two
    analyses, which carry no checks, change nothing but the resume."""
    actions: list[Action] = []
    if status.analysed_as is not None and analysis.source_error is None:
        waiting = f"waiting for a signature '{status.waiting_for}'"
        if analysis.verdict is Verdict.FAIL:
            failed = status.failed_checks + 1
            if failed >= status.policy.failure_threshold:
                return _roll_back(
                    replace(status, failed_checks=failed),
                    analysis,
                    _failed(failed, analysis, "while paused "),
                )
            reason = (
                f"{waiting}; analysis failed ({failed}/{status.policy.failure_threshold}): "
                + analysis.summary()
            )
            status, actions = _announce(
                status, replace(status, failed_checks=failed, reason=reason), analysis
            )
        elif analysis.verdict is Verdict.PASS and status.failed_checks:
            status = replace(status, failed_checks=0, reason=waiting, updated_at=analysis.now)
    resumed, more = _resume_if_signed(status, analysis)
    return resumed, actions + more


def _passed(status: RolloutStatus, analysis: Analysis) -> tuple[RolloutStatus, list[Action]]:
    passed = replace(status, failed_checks=0, passed_intervals=status.passed_intervals + 1)
    if status.phase is Phase.CANARY:
        if status.step_index + 1 < len(status.policy.step_weights_bps):
            return _canary_step(passed, analysis, status.step_index + 1)
        return _gate(passed, analysis, APPROVE_PRODUCTION, Phase.PRODUCTION_WATCH)
    if status.phase is Phase.SHADOW:
        if passed.passed_intervals >= status.policy.shadow_intervals:
            return _gate(passed, analysis, APPROVE_CANARY, Phase.CANARY)
    elif passed.passed_intervals >= status.policy.watch_intervals:  # production watch
        return _complete(passed, analysis)
    return replace(passed, updated_at=analysis.now), []


def _start(status: RolloutStatus, analysis: Analysis) -> tuple[RolloutStatus, list[Action]]:
    if status.stable_version is None:
        # Nothing to compare with: the line's first version goes to production once signed.
        return _gate(status, analysis, APPROVE_PRODUCTION, Phase.PRODUCTION)
    new = _moved(status, analysis, Phase.SHADOW, "shadowing the stable version")
    return new, [
        SetStage(status.version, "shadow", "rollout: shadow on " + ", ".join(status.lines)),
        SetRouting(stable=status.stable_version, shadows=(status.version,)),
        _event(status, Phase.PENDING, analysis),
    ]


def _gate(
    status: RolloutStatus, analysis: Analysis, meaning: str, target: Phase
) -> tuple[RolloutStatus, list[Action]]:
    """Enter ``target``, or pause until the signature ``meaning`` is there if required."""
    if meaning in status.policy.approvals_required and meaning not in analysis.approvals:
        paused = _moved(status, analysis, Phase.PAUSED, f"waiting for a signature '{meaning}'")
        paused = replace(paused, waiting_for=meaning, resume_phase=target)
        return paused, [_event(status, status.phase, analysis)]
    return _enter(status, analysis, target, meaning if meaning in analysis.approvals else None)


def _resume_if_signed(
    status: RolloutStatus, analysis: Analysis
) -> tuple[RolloutStatus, list[Action]]:
    if status.waiting_for not in analysis.approvals or status.resume_phase is None:
        return status, []
    new, actions = _enter(status, analysis, status.resume_phase, status.waiting_for)
    # Failures counted while paused are consecutive intervals of the same candidate: they still
    # count in the phase it resumes in.
    return replace(new, failed_checks=status.failed_checks), actions


def _enter(
    status: RolloutStatus, analysis: Analysis, target: Phase, approval: str | None
) -> tuple[RolloutStatus, list[Action]]:
    status = replace(status, waiting_for="", resume_phase=None)
    if target is Phase.CANARY:
        return _canary_step(status, analysis, 0, approval)
    if target is Phase.PRODUCTION_WATCH:
        return _promote(status, analysis, approval)
    return _first_production(status, analysis, approval)


def _canary_step(
    status: RolloutStatus, analysis: Analysis, index: int, approval: str | None = None
) -> tuple[RolloutStatus, list[Action]]:
    assert status.stable_version is not None
    weight = status.policy.step_weights_bps[index]
    new = _moved(
        status,
        analysis,
        Phase.CANARY,
        f"canary step {index + 1}/{len(status.policy.step_weights_bps)}: "
        f"{weight / 100:g}% of traffic",
    )
    new = replace(new, step_index=index, canary_weight_bps=weight)
    actions: list[Action] = []
    if status.phase is not Phase.CANARY:
        actions.append(SetStage(status.version, "canary", new.reason, approval))
    actions += [
        SetRouting(
            stable=status.stable_version,
            canary=status.version,
            canary_weight_bps=weight,
            shadows=(status.stable_version, status.version),
            edge_wave=min(index + 1, status.policy.edge_waves),
        ),
        _event(status, status.phase, analysis),
    ]
    return new, actions


def _promote(
    status: RolloutStatus, analysis: Analysis, approval: str | None
) -> tuple[RolloutStatus, list[Action]]:
    assert status.stable_version is not None
    new = _moved(
        status,
        analysis,
        Phase.PRODUCTION_WATCH,
        f"promoted; v{status.stable_version} stays warm as a shadow while the watch lasts",
    )
    new = replace(new, canary_weight_bps=BASIS_POINTS)
    return new, [
        SetStage(status.version, "production", new.reason, approval),
        SetRouting(stable=status.version, shadows=(status.stable_version,)),
        _event(status, status.phase, analysis),
    ]


def _complete(status: RolloutStatus, analysis: Analysis) -> tuple[RolloutStatus, list[Action]]:
    assert status.stable_version is not None
    new = _moved(status, analysis, Phase.PRODUCTION, "watch passed: rollout complete")
    return new, [
        SetRouting(stable=status.version),
        SetStage(
            status.stable_version,
            "archived",
            f"replaced by v{status.version} (rollout {status.rollout_id})",
        ),
        _event(status, status.phase, analysis),
    ]


def _first_production(
    status: RolloutStatus, analysis: Analysis, approval: str | None
) -> tuple[RolloutStatus, list[Action]]:
    reason = "first version on " + ", ".join(status.lines) + ": nothing to compare with"
    new = replace(
        _moved(status, analysis, Phase.PRODUCTION, reason), canary_weight_bps=BASIS_POINTS
    )
    return new, [
        SetStage(status.version, "shadow", reason),
        SetStage(status.version, "canary", reason),
        SetStage(status.version, "production", reason, approval),
        SetRouting(stable=status.version),
        _event(status, status.phase, analysis),
    ]


def _failed(failed: int, analysis: Analysis, where: str = "") -> str:
    """The reason of a rollback at the failure threshold."""
    return f"rolled back {where}after {failed} failed analysis intervals: {analysis.summary()}"


def _roll_back(
    status: RolloutStatus, analysis: Analysis, reason: str
) -> tuple[RolloutStatus, list[Action]]:
    """Traffic back to the stable version, for ``reason``."""
    # Only an analysed rollout rolls back, and a line's first version (no stable) never is.
    assert status.stable_version is not None
    new = replace(_moved(status, analysis, Phase.ROLLED_BACK, reason), canary_weight_bps=0)
    # Traffic first: the registry's record follows, and may be retried, but the line must not
    # wait for it.
    return new, [
        SetRouting(stable=status.stable_version),
        SetStage(status.version, "rolled_back", reason[:2000]),
        _event(status, status.phase, analysis),
    ]


def _hold(status: RolloutStatus, analysis: Analysis) -> tuple[RolloutStatus, list[Action]]:
    """The metrics source is unreachable: nothing moves, said once."""
    if status.waiting_for == "metrics":
        return status, []
    held = replace(
        status,
        waiting_for="metrics",
        updated_at=analysis.now,
        reason=f"held: metrics source unavailable ({analysis.source_error})",
    )
    return _announce(status, held, analysis)


def fail(status: RolloutStatus, now: float, reason: str) -> tuple[RolloutStatus, list[Action]]:
    """The rollout cannot proceed for a reason other than analysis (the registry refused a
    transition, the artifact is missing): traffic goes back to the stable version."""
    analysis = Analysis(now=now)
    new = replace(_moved(status, analysis, Phase.FAILED, reason), canary_weight_bps=0)
    actions: list[Action] = []
    if status.stable_version is not None:
        actions.append(SetRouting(stable=status.stable_version))
    actions.append(_event(status, status.phase, analysis))
    return new, actions


# --- helpers -----------------------------------------------------------------------------------


def _moved(status: RolloutStatus, analysis: Analysis, phase: Phase, reason: str) -> RolloutStatus:
    return replace(
        status,
        phase=phase,
        passed_intervals=0,
        failed_checks=0 if phase is not Phase.ROLLED_BACK else status.failed_checks,
        updated_at=analysis.now,
        reason=reason,
        sequence=status.sequence + 1,
        # Every phase starts its own clock; a final one keeps the record of how it ended.
        undecided_since=status.undecided_since if phase in TERMINAL_PHASES else None,
    )


def _event(before: RolloutStatus, previous_phase: Phase, analysis: Analysis) -> Announce:
    return Announce(f"{before.rollout_id}-{before.sequence}", previous_phase, analysis.checks)


def _announce(
    before: RolloutStatus, after: RolloutStatus, analysis: Analysis
) -> tuple[RolloutStatus, list[Action]]:
    """An event within a phase (a failed interval, a hold)."""
    after = replace(after, sequence=before.sequence + 1, updated_at=analysis.now)
    return after, [_event(before, before.phase, analysis)]
