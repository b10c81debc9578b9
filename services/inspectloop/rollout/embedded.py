"""The single-machine metrics source: scrapes the services' /metrics endpoints itself.

Without a Prometheus server the controller keeps a short history of the counters and histogram
buckets the analysis reads, and answers ``increase`` and ``quantile`` as PromQL would (without
its extrapolation to the window's edges: an increase here is last minus first sample, counter
resets accounted for).
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence

import httpx
from prometheus_client.parser import text_string_to_metric_families

from inspectloop.core.errors import BackendUnavailableError
from inspectloop.rollout.analysis import METRICS_USED, Matchers

log = logging.getLogger(__name__)

SeriesKey = tuple[str, tuple[tuple[str, str], ...]]


class EmbeddedSource:
    """Scrapes ``targets`` (``http://host:port/metrics``) every ``interval_s``, keeping
    ``retention_s`` of history for the metrics the analysis uses."""

    def __init__(
        self,
        targets: Sequence[str],
        *,
        interval_s: float = 1.0,
        retention_s: float = 900.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not targets:
            raise ValueError("the embedded metrics source needs at least one scrape target")
        self.targets = list(targets)
        self.interval_s = interval_s
        self.retention_s = retention_s
        self._clock = clock
        self._series: dict[SeriesKey, deque[tuple[float, float]]] = {}
        self._last_success: float | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._http = httpx.Client(timeout=max(interval_s, 1.0))

    # --- scraping ------------------------------------------------------------------------------

    def scrape_once(self) -> None:
        now = self._clock()
        wanted = set(METRICS_USED)
        samples: list[tuple[SeriesKey, float]] = []
        scraped = 0
        for target in self.targets:
            try:
                response = self._http.get(target)
                response.raise_for_status()
            except httpx.HTTPError as exc:
                log.debug("scrape of %s failed: %s", target, exc)
                continue
            scraped += 1
            for family in text_string_to_metric_families(response.text):
                for sample in family.samples:
                    if sample.name in wanted:
                        key = (sample.name, tuple(sorted(sample.labels.items())))
                        samples.append((key, sample.value))
        with self._lock:
            if scraped:
                self._last_success = now
            for key, value in samples:
                history = self._series.setdefault(key, deque())
                history.append((now, value))
                while history and history[0][0] < now - self.retention_s:
                    history.popleft()

    def start(self) -> EmbeddedSource:
        def loop() -> None:
            while not self._stop.is_set():
                self.scrape_once()
                self._stop.wait(self.interval_s)

        self._thread = threading.Thread(target=loop, name="metrics-scraper", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._http.close()

    # --- queries -------------------------------------------------------------------------------

    def _check_up(self) -> float:
        now = self._clock()
        with self._lock:
            last = self._last_success
        if last is None or now - last > 3 * self.interval_s + 1:
            raise BackendUnavailableError(
                f"no scrape of {', '.join(self.targets)} succeeded in the last "
                f"{3 * self.interval_s + 1:g}s"
            )
        return now

    def _increases(
        self, metric: str, matchers: Matchers, window_s: float, now: float
    ) -> list[tuple[dict[str, str], float]]:
        with self._lock:
            found = [
                (dict(labels), list(history))
                for (name, labels), history in self._series.items()
                if name == metric
                and all(dict(labels).get(k) in values for k, values in matchers.items())
            ]
        results = []
        for labels, history in found:
            points = [v for t, v in history if t >= now - window_s]
            if len(points) < 2:
                continue
            # A drop is a restarted process: its counter began again from zero.
            rise = sum(b - a if b >= a else b for a, b in itertools.pairwise(points))
            results.append((labels, rise))
        return results

    def increase(self, metric: str, matchers: Matchers, window_s: float) -> float | None:
        now = self._check_up()
        found = self._increases(metric, matchers, window_s, now)
        return sum(rise for _, rise in found) if found else None

    def quantile(
        self, q: float, histogram: str, matchers: Matchers, window_s: float
    ) -> float | None:
        now = self._check_up()
        buckets: dict[float, float] = {}
        for labels, rise in self._increases(histogram + "_bucket", matchers, window_s, now):
            le = float(labels["le"])
            buckets[le] = buckets.get(le, 0.0) + rise
        return bucket_quantile(q, sorted(buckets.items()))


def bucket_quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float | None:
    """Prometheus's ``histogram_quantile`` on cumulative ``(le, count)`` pairs sorted by le:
    linear interpolation within the bucket that holds the rank; the highest finite bound when
    the rank falls in +Inf."""
    if not buckets or buckets[-1][0] != float("inf"):
        return None
    total = buckets[-1][1]
    if total <= 0:
        return None
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for le, count in buckets:
        if count >= rank:
            if le == float("inf"):
                return lower_bound
            if count == lower_count:
                return le
            return lower_bound + (le - lower_bound) * (rank - lower_count) / (count - lower_count)
        lower_bound, lower_count = le, count
    return lower_bound
