"""Canary analysis: the checks of one interval, from any metrics source.

A source answers two questions in PromQL terms: the increase of counters over a window, and a
quantile of a histogram over a window; :class:`PrometheusSource` asks a real Prometheus,
:class:`~inspectloop.rollout.embedded.EmbeddedSource` scrapes the services itself (the single
machine default). The checks are the same for both:

- ``error_rate``: failed inferences of the candidate, against the stable's plus a margin;
- ``latency_p99_seconds``: the candidate's p99 inference time, against the stable's times a ratio
  plus a slack;
- ``disagreement_rate``: requests where the candidate and the stable decide differently (both run
  on every request from shadow on: see ``machine``);
- ``false_reject_rate`` and ``escape_rate``: label-delayed quality, the operators' confirmed false
  rejects per decision of the candidate and reported escapes per pass, over a longer window.

No data, or too little, is INCONCLUSIVE, never a pass.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import httpx

from inspectloop.core.errors import BackendUnavailableError
from inspectloop.rollout.machine import Check, Phase, RolloutStatus, Verdict

if TYPE_CHECKING:
    from inspectloop.rollout.fleet import EdgeFleet

Matchers = Mapping[str, Sequence[str]]  # label -> any of these values

INFER_SECONDS = "inspectloop_gateway_infer_duration_seconds"
INFER_ERRORS = "inspectloop_gateway_infer_errors_total"
SHADOW_PREDICTIONS = "inspectloop_gateway_shadow_predictions_total"
INSPECTIONS = "inspectloop_gateway_inspect_requests_total"
FEEDBACK = "inspectloop_monitor_feedback_reviews_total"
#: Every metric the analysis reads: a renamed one must break the build (tests check them).
METRICS_USED = (
    INFER_SECONDS + "_count",
    INFER_SECONDS + "_bucket",
    INFER_ERRORS,
    SHADOW_PREDICTIONS,
    INSPECTIONS,
    FEEDBACK,
)


class MetricsSource(Protocol):
    def increase(self, metric: str, matchers: Matchers, window_s: float) -> float | None:
        """Sum over matching series of their increase in the window; None without data.
        Raises BackendUnavailableError when the source cannot answer."""
        ...

    def quantile(
        self, q: float, histogram: str, matchers: Matchers, window_s: float
    ) -> float | None:
        """``histogram_quantile`` over the window's bucket increases; None without data."""
        ...


def selector(metric: str, matchers: Matchers) -> str:
    """The PromQL series selector: one value is ``=``, several are ``=~`` alternatives."""
    parts = []
    for label, values in sorted(matchers.items()):
        if len(values) == 1:
            parts.append(f'{label}="{values[0]}"')
        else:
            parts.append(f'{label}=~"{"|".join(sorted(values))}"')
    return f"{metric}{{{','.join(parts)}}}"


def increase_query(metric: str, matchers: Matchers, window_s: float) -> str:
    return f"sum(increase({selector(metric, matchers)}[{int(window_s)}s]))"


def quantile_query(q: float, histogram: str, matchers: Matchers, window_s: float) -> str:
    buckets = selector(histogram + "_bucket", matchers)
    return f"histogram_quantile({q}, sum by (le) (increase({buckets}[{int(window_s)}s])))"


class PrometheusSource:
    """PromQL against a Prometheus server's HTTP API."""

    def __init__(self, url: str, timeout_s: float = 5.0) -> None:
        self._http = httpx.Client(base_url=url.rstrip("/"), timeout=timeout_s)

    def _scalar(self, query: str) -> float | None:
        try:
            response = self._http.get("/api/v1/query", params={"query": query})
        except httpx.TransportError as exc:
            raise BackendUnavailableError(f"Prometheus unreachable: {exc}") from exc
        if response.status_code != 200:
            raise BackendUnavailableError(
                f"Prometheus answered {response.status_code} to {query}: {response.text[:300]}"
            )
        result = response.json()["data"]["result"]
        if not result:
            return None
        value = float(result[0]["value"][1])
        return None if math.isnan(value) else value

    def increase(self, metric: str, matchers: Matchers, window_s: float) -> float | None:
        return self._scalar(increase_query(metric, matchers, window_s))

    def quantile(
        self, q: float, histogram: str, matchers: Matchers, window_s: float
    ) -> float | None:
        return self._scalar(quantile_query(q, histogram, matchers, window_s))

    def close(self) -> None:
        self._http.close()


@dataclass(frozen=True)
class Thresholds:
    """Limits of the checks (from ``RolloutSection.analysis``)."""

    window_s: float = 60.0
    quality_window_s: float = 600.0
    min_requests: int = 50
    min_labelled: int = 20
    max_error_rate_increase: float = 0.005
    max_latency_ratio: float = 1.5
    latency_slack_s: float = 0.005
    # None: not judged (a retrain for a redesigned label is meant to disagree with the stable).
    max_disagreement_rate: float | None = 0.05
    max_false_reject_rate: float = 0.01
    max_escape_rate: float = 0.002


class Analyzer:
    """The checks of a rollout's phase, measured through ``source``; with ``fleet``, also the
    edge nodes' progress through the waves."""

    def __init__(
        self, source: MetricsSource, thresholds: Thresholds, fleet: EdgeFleet | None = None
    ) -> None:
        self.source = source
        self.limits = thresholds
        self.fleet = fleet

    def checks(self, status: RolloutStatus) -> tuple[Check, ...]:
        """Raises BackendUnavailableError when the source is down."""
        assert status.stable_version is not None
        model, new, old = status.model, status.version, status.stable_version
        checks = [self._error_rate(model, new, old), self._latency(model, new, old)]
        if self.limits.max_disagreement_rate is not None:
            checks.append(self._disagreement(model, new, old, self.limits.max_disagreement_rate))
        if status.phase is not Phase.SHADOW:  # a shadow decides nothing operators could judge
            checks += [self._false_rejects(model, new), self._escapes(model, new)]
        edge = self.fleet.check(status) if self.fleet is not None else None
        if edge is not None:
            checks.append(edge)
        return tuple(checks)

    # --- the checks ----------------------------------------------------------------------------

    def _error_rate(self, model: str, new: str, old: str) -> Check:
        w = self.limits.window_s
        rates: dict[str, tuple[float, float]] = {}
        for version in (new, old):
            labels = {"model": [model], "version": [version]}
            ok = self.source.increase(INFER_SECONDS + "_count", labels, w) or 0.0
            failed = self.source.increase(INFER_ERRORS, labels, w) or 0.0
            total = ok + failed
            rates[version] = (failed / total if total else math.nan, total)
        (rate, n), (baseline, n_old) = rates[new], rates[old]
        query = (
            f"{increase_query(INFER_ERRORS, {'model': [model], 'version': [new]}, w)} / "
            f"({increase_query(INFER_ERRORS, {'model': [model], 'version': [new]}, w)} + "
            f"{increase_query(INFER_SECONDS + '_count', {'model': [model], 'version': [new]}, w)})"
        )
        if n < self.limits.min_requests or not n_old:
            return _inconclusive("error_rate", query, int(n), f"{n:.0f} inferences in {w:g}s")
        limit = baseline + self.limits.max_error_rate_increase
        return _judge("error_rate", rate, limit, query, n=n, detail=f"stable v{old} {baseline:.4f}")

    def _latency(self, model: str, new: str, old: str) -> Check:
        w = self.limits.window_s
        new_labels = {"model": [model], "version": [new]}
        query = quantile_query(0.99, INFER_SECONDS, new_labels, w)
        n = self.source.increase(INFER_SECONDS + "_count", new_labels, w) or 0.0
        p99 = self.source.quantile(0.99, INFER_SECONDS, new_labels, w)
        baseline = self.source.quantile(
            0.99, INFER_SECONDS, {"model": [model], "version": [old]}, w
        )
        if n < self.limits.min_requests or p99 is None or baseline is None:
            return _inconclusive("latency_p99_seconds", query, int(n), f"{n:.0f} inferences")
        limit = baseline * self.limits.max_latency_ratio + self.limits.latency_slack_s
        return _judge(
            "latency_p99_seconds", p99, limit, query, n=n, detail=f"stable v{old} {baseline:.4f}s"
        )

    def _disagreement(self, model: str, new: str, old: str, limit: float) -> Check:
        w = self.limits.window_s
        pair = {"model": [model], "version": [new, old], "decider_version": [new, old]}
        disagree = self.source.increase(SHADOW_PREDICTIONS, {**pair, "outcome": ["disagree"]}, w)
        total = self.source.increase(SHADOW_PREDICTIONS, pair, w) or 0.0
        query = (
            f"{increase_query(SHADOW_PREDICTIONS, {**pair, 'outcome': ['disagree']}, w)} / "
            f"{increase_query(SHADOW_PREDICTIONS, pair, w)}"
        )
        if total < self.limits.min_requests:
            return _inconclusive("disagreement_rate", query, int(total), f"{total:.0f} compared")
        rate = (disagree or 0.0) / total
        return _judge("disagreement_rate", rate, limit, query, n=total, detail=f"v{new} vs v{old}")

    def _label_rate(
        self, metric: str, model: str, new: str, *, verdict: str, per: Matchers, limit: float
    ) -> Check:
        w = self.limits.quality_window_s
        labels = {"model": [model], "version": [new]}
        labelled = self.source.increase(FEEDBACK, labels, w) or 0.0
        counted = self.source.increase(FEEDBACK, {**labels, "outcome": [verdict]}, w) or 0.0
        decided = self.source.increase(INSPECTIONS, {**labels, **per}, w) or 0.0
        query = (
            f"{increase_query(FEEDBACK, {**labels, 'outcome': [verdict]}, w)} / "
            f"{increase_query(INSPECTIONS, {**labels, **per}, w)}"
        )
        if labelled < self.limits.min_labelled or not decided:
            detail = f"{labelled:.0f} operator labels on v{new} (need {self.limits.min_labelled})"
            return _inconclusive(metric, query, int(labelled), detail)
        detail = f"{counted:.0f} {verdict} of {decided:.0f} ({labelled:.0f} labelled)"
        return _judge(metric, counted / decided, limit, query, n=labelled, detail=detail)

    def _false_rejects(self, model: str, new: str) -> Check:
        return self._label_rate(
            "false_reject_rate",
            model,
            new,
            verdict="false_reject",
            per={},
            limit=self.limits.max_false_reject_rate,
        )

    def _escapes(self, model: str, new: str) -> Check:
        return self._label_rate(
            "escape_rate",
            model,
            new,
            verdict="escape_reported",
            per={"decision": ["pass"]},
            limit=self.limits.max_escape_rate,
        )


def _judge(metric: str, value: float, limit: float, query: str, *, n: float, detail: str) -> Check:
    verdict = Verdict.PASS if value <= limit else Verdict.FAIL
    sign = "<=" if verdict is Verdict.PASS else ">"
    return Check(
        metric, verdict, value, limit, query, int(n), f"{value:.4g} {sign} {limit:.4g} ({detail})"
    )


def _inconclusive(metric: str, query: str, n: int, detail: str) -> Check:
    return Check(metric, Verdict.INCONCLUSIVE, None, 0.0, query, n, "no data: " + detail)
