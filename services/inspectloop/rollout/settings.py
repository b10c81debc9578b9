"""Settings of the rollout controller (``INSPECTLOOP_ROLLOUT__...``)."""

from __future__ import annotations

from typing import Literal, get_args

from pydantic import Field, SecretStr, model_validator

from inspectloop.core.settings import AbsolutePath, CommonSettings, Section
from inspectloop.rollout.analysis import Thresholds
from inspectloop.rollout.machine import APPROVE_CANARY, APPROVE_PRODUCTION, Policy

SignedStage = Literal["canary", "production"]


class AnalysisSettings(Section):
    interval_s: float = Field(
        default=60.0, gt=0, description="Seconds between two analyses of a running rollout."
    )
    window_s: float = Field(
        default=120.0,
        gt=0,
        description="Window of the request metrics (error rate, latency, disagreement); at "
        "least a few scrape intervals.",
    )
    quality_window_s: float = Field(
        default=1800.0,
        gt=0,
        description="Window of the label-delayed quality (operator-confirmed false rejects and "
        "escapes): labels arrive minutes after the decisions.",
    )
    min_requests: int = Field(
        default=50,
        ge=1,
        description="Inferences of the candidate below which a check is inconclusive.",
    )
    min_labelled: int = Field(
        default=20,
        ge=1,
        description="Operator labels on the candidate's decisions below which quality is "
        "inconclusive.",
    )
    max_error_rate_increase: float = Field(
        default=0.005, ge=0, le=1, description="Candidate error rate allowed above the stable's."
    )
    max_latency_ratio: float = Field(
        default=1.5, ge=1, description="Candidate p99 inference time allowed, times the stable's."
    )
    latency_slack_s: float = Field(
        default=0.005,
        ge=0,
        description="Added to the latency limit, so that sub-millisecond noise fails nothing.",
    )
    max_disagreement_rate: float | None = Field(
        default=0.05,
        ge=0,
        le=1,
        description="Share of requests the candidate may decide differently from the stable; "
        "null: not judged (set it so for retrains after a redesign, whose stable is known wrong).",
    )
    max_false_reject_rate: float = Field(
        default=0.01,
        ge=0,
        le=1,
        description="Operator-confirmed false rejects per decision of the candidate.",
    )
    max_escape_rate: float = Field(
        default=0.002, ge=0, le=1, description="Reported escapes per pass of the candidate."
    )

    def thresholds(self) -> Thresholds:
        return Thresholds(
            window_s=self.window_s,
            quality_window_s=self.quality_window_s,
            min_requests=self.min_requests,
            min_labelled=self.min_labelled,
            max_error_rate_increase=self.max_error_rate_increase,
            max_latency_ratio=self.max_latency_ratio,
            latency_slack_s=self.latency_slack_s,
            max_disagreement_rate=self.max_disagreement_rate,
            max_false_reject_rate=self.max_false_reject_rate,
            max_escape_rate=self.max_escape_rate,
        )


class MetricsSourceSettings(Section):
    kind: Literal["prometheus", "embedded"] = Field(
        default="embedded",
        description="prometheus: PromQL against prometheus_url; embedded: the controller "
        "scrapes scrape_targets itself (single machine).",
    )
    prometheus_url: str = Field(
        default="http://127.0.0.1:9090", description="Prometheus server's base URL."
    )
    scrape_targets: list[str] = Field(
        default_factory=lambda: ["http://127.0.0.1:8700/metrics"],
        description="Embedded source: the gateway's and the monitor's /metrics URLs.",
    )
    scrape_interval_s: float = Field(
        default=5.0, gt=0, description="Embedded source: seconds between scrapes."
    )


class RolloutSection(Section):
    registry_url: str = Field(
        default="http://127.0.0.1:8600", description="Base URL of the model registry."
    )
    registry_token: SecretStr | None = Field(
        default=None,
        description="API token of the controller's service account in the registry (role "
        "service: stage transitions, no signatures).",
    )
    step_weights_bps: list[int] = Field(
        default_factory=lambda: [1000, 2500, 5000],
        description="Canary traffic shares in basis points (10000 = 100%), one per step.",
    )
    shadow_intervals: int = Field(
        default=2, ge=0, description="Passing analyses in shadow before the canary starts."
    )
    watch_intervals: int = Field(
        default=3,
        ge=1,
        description="Passing analyses after promotion before the previous version is archived.",
    )
    failure_threshold: int = Field(
        default=2, ge=1, description="Consecutive failed analyses that roll a rollout back."
    )
    max_undecided_s: float = Field(
        default=3600.0,
        gt=0,
        description="Seconds a rollout in shadow, canary or production watch may go without a "
        "verdict (analyses inconclusive, or the metrics source unreachable) before it is rolled "
        "back; a PASS or FAIL starts the clock again. Not applied while it waits for a "
        "signature.",
    )
    require_signature_for: list[SignedStage] = Field(
        default_factory=lambda: list(get_args(SignedStage)),
        description="Stages entered only once the registry holds a valid electronic signature "
        "(approve-canary, approve-production); the rollout pauses until then. Keep it equal to "
        "the registry's require_signature_for, which refuses the transition otherwise.",
    )
    edge_waves: int = Field(
        default=2, ge=1, description="Waves of edge nodes; canary step i runs on waves <= i+1."
    )
    edge_stale_after_s: float = Field(
        default=90.0,
        gt=0,
        description="An edge node whose last heartbeat is older than this is left out of the "
        "wave check (a switched-off PC must not hold a rollout).",
    )
    tick_s: float = Field(
        default=1.0, gt=0, description="Seconds between the controller's checks of its rollouts."
    )
    state_path: AbsolutePath | None = Field(
        default=None,
        description="SQLite file of the rollouts' status; default <data_dir>/rollout.sqlite.",
    )
    analysis: AnalysisSettings = Field(
        default_factory=AnalysisSettings, description="Canary analysis thresholds."
    )
    metrics_source: MetricsSourceSettings = Field(
        default_factory=MetricsSourceSettings, description="Where analysis metrics come from."
    )
    kubernetes_namespace: str | None = Field(
        default=None,
        description="Record each rollout as a ModelRollout custom resource in this namespace "
        "(in-cluster credentials); null outside Kubernetes.",
    )

    def policy(self) -> Policy:
        meanings = {"canary": APPROVE_CANARY, "production": APPROVE_PRODUCTION}
        return Policy(
            step_weights_bps=tuple(self.step_weights_bps),
            shadow_intervals=self.shadow_intervals,
            watch_intervals=self.watch_intervals,
            failure_threshold=self.failure_threshold,
            approvals_required=frozenset(meanings[s] for s in self.require_signature_for),
            edge_waves=self.edge_waves,
            max_undecided_s=self.max_undecided_s,
        )

    @model_validator(mode="after")
    def _check_policy(self) -> RolloutSection:
        try:
            self.policy()
        except ValueError as exc:
            raise ValueError(f"rollout.step_weights_bps: {exc}") from exc
        return self


class RolloutSettings(CommonSettings):
    rollout: RolloutSection = Field(
        default_factory=RolloutSection, description="The rollout controller."
    )

    @model_validator(mode="after")
    def _derive_state_path(self) -> RolloutSettings:
        if self.rollout.state_path is None:
            section = self.rollout.model_copy(
                update={"state_path": self.data_dir / "rollout.sqlite"}
            )
            object.__setattr__(self, "rollout", section)
        return self
