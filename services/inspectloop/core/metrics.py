"""Metrics: named, unit-checked, bounded-label Prometheus metrics on an injected registry.

Every service builds one :class:`prometheus_client.CollectorRegistry` in ``main`` and hands it
down; nothing registers on prometheus_client's global default registry, so tests and several
services in one process never collide. :class:`ServiceMetrics` is the only way metrics are
created, and it enforces the naming rules that dashboards and alerts rely on:

* name ``inspectloop_<service>_<what>_<unit>``, every part snake_case;
* ``unit`` from a closed set of base units (seconds, never milliseconds; ratio, never percent)
  or counted things (events, requests, ...);
* labels from a closed set of bounded dimensions, so that a request id or an image hash can
  never become a label and explode the number of series.

Counters get ``_total`` from prometheus_client itself: ``counter("events_consumed", "events")``
on the ``bus`` service exports ``inspectloop_bus_events_consumed_total``.
"""

from __future__ import annotations

import itertools
import math
import re
import threading
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final, Literal, TypeVar
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.metrics import MetricWrapperBase

__all__ = [
    "ALLOWED_LABELS",
    "COUNT_UNITS",
    "LATENCY_BUCKETS",
    "MEASURE_UNITS",
    "SECONDS_BUCKETS",
    "MetricsServer",
    "ServiceMetrics",
    "metric_names",
    "serve_metrics",
]

#: Buckets of inspection and inference latencies, which take milliseconds: finer than the default
#: seconds scale.
LATENCY_BUCKETS: Final = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)

#: Units that measure a quantity. Prometheus wants them as the last part of the name (before
#: ``_total``), always the base unit, so that PromQL never mixes ms with s or % with ratios.
MEASURE_UNITS: Final = frozenset({"seconds", "bytes", "ratio", "score", "info"})

#: Units that count things. The counted noun may already be a part of ``what``
#: (``events_consumed`` reads better than ``consumed_events``); if not, it is appended.
COUNT_UNITS: Final = frozenset(
    {
        "events",
        "records",
        "messages",
        "requests",
        "errors",
        "images",
        "predictions",
        "reviews",
        "samples",
        "batches",
        "retries",
        "attempts",
        "models",
        "versions",
        "rollouts",
        "transitions",
        "steps",
        "epochs",
        "checks",
        "lines",
        "nodes",
    }
)

#: Label names with a bounded set of values. Anything per request, per event or per image
#: (request_id, event_id, sha256, user) is rejected: each value would be a new series.
ALLOWED_LABELS: Final = frozenset(
    {
        "line",
        "model",
        "version",
        "decider_version",  # a model version too: which version a shadow was compared with
        "role",
        "outcome",
        "topic",
        "group",
        "kind",
        "decision",
        "detector",
        "mode",
        "phase",
        "metric",
        "component",
        "reason",
        "service",
        "partition",
        "sku",
        "defect_class",
        "gate",
        "backend",
    }
)

#: Latency buckets from 1 ms to 60 s, for handlers and inference calls.
SECONDS_BUCKETS: Final = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)

_PREFIX: Final = "inspectloop"
_SNAKE = re.compile(r"^[a-z][a-z0-9]*(?:_[a-z0-9]+)*$")
# Units that make no sense for a counter: a ratio or score does not accumulate, info is 1.
_NOT_FOR_COUNTERS: Final = frozenset({"ratio", "score", "info"})

_Kind = Literal["counter", "gauge", "histogram"]
_M = TypeVar("_M", bound=MetricWrapperBase)


@dataclass(frozen=True)
class _Spec:
    """What makes two requests for one name the same metric (documentation does not)."""

    kind: _Kind
    labels: tuple[str, ...]
    buckets: tuple[float, ...] | None


# Definitions per registry rather than per ServiceMetrics: the bus and the service that hosts it
# each build their own helper on the same injected registry, and a second registration of one
# name would make prometheus_client raise "Duplicated timeseries". Weak keys let a registry that
# a test dropped be collected together with its entries.
_definitions: weakref.WeakKeyDictionary[
    CollectorRegistry, dict[str, tuple[_Spec, MetricWrapperBase]]
] = weakref.WeakKeyDictionary()
_definitions_lock = threading.Lock()


def _check_snake(kind: str, value: str) -> None:
    if not _SNAKE.fullmatch(value):
        raise ValueError(
            f"metric {kind} {value!r} must be snake_case: lowercase letters and digits in "
            "parts joined by single underscores, starting with a letter"
        )


class ServiceMetrics:
    """Creates (or returns the already created) metrics of one service on one registry."""

    def __init__(self, service: str, registry: CollectorRegistry) -> None:
        _check_snake("service", service)
        self.service = service
        self.registry = registry

    def name(self, what: str, unit: str, kind: _Kind = "gauge") -> str:
        """The metric's name as prometheus_client takes it (a counter's ``_total`` excluded)."""
        _check_snake("what", what)
        if unit == "total" or what == "total" or what.endswith("_total"):
            raise ValueError(
                f"metric {what!r}: 'total' is not a unit; counters get the _total suffix "
                "automatically"
            )
        if unit in MEASURE_UNITS:
            if what == unit or what.endswith("_" + unit):
                raise ValueError(
                    f"metric {what!r}: leave the unit {unit!r} out of 'what'; it is appended"
                )
            if kind == "counter" and unit in _NOT_FOR_COUNTERS:
                raise ValueError(f"metric {what!r}: a counter cannot be measured in {unit!r}")
            return f"{_PREFIX}_{self.service}_{what}_{unit}"
        if unit in COUNT_UNITS:
            parts = what.split("_")
            full = what if unit in parts else f"{what}_{unit}"
            return f"{_PREFIX}_{self.service}_{full}"
        allowed = ", ".join(sorted(MEASURE_UNITS | COUNT_UNITS))
        raise ValueError(f"metric {what!r}: unknown unit {unit!r}; use a base unit: {allowed}")

    def counter(self, what: str, unit: str, doc: str, labels: Sequence[str] = ()) -> Counter:
        """A counter, exported as ``inspectloop_<service>_<what>[_<unit>]_total``."""
        name = self.name(what, unit, "counter")
        spec = _Spec("counter", self._check_labels(name, labels), None)
        return self._get_or_create(
            Counter,
            name,
            doc,
            spec,
            lambda: Counter(name, doc, spec.labels, registry=self.registry),
        )

    def gauge(self, what: str, unit: str, doc: str, labels: Sequence[str] = ()) -> Gauge:
        """A gauge, exported as ``inspectloop_<service>_<what>[_<unit>]``."""
        name = self.name(what, unit, "gauge")
        spec = _Spec("gauge", self._check_labels(name, labels), None)
        return self._get_or_create(
            Gauge, name, doc, spec, lambda: Gauge(name, doc, spec.labels, registry=self.registry)
        )

    def histogram(
        self,
        what: str,
        unit: str,
        doc: str,
        labels: Sequence[str] = (),
        buckets: Sequence[float] = SECONDS_BUCKETS,
    ) -> Histogram:
        """A histogram with ``_bucket``, ``_sum`` and ``_count`` series; +Inf is added for you."""
        if unit == "info":
            raise ValueError(f"metric {what!r}: an info metric is a gauge, not a histogram")
        name = self.name(what, unit, "histogram")
        bounds = tuple(float(b) for b in buckets)
        if not bounds or not all(math.isfinite(b) for b in bounds):
            raise ValueError(f"metric {name}: buckets must be finite numbers, at least one")
        if any(b >= c for b, c in itertools.pairwise(bounds)):
            raise ValueError(f"metric {name}: buckets must be strictly increasing: {bounds}")
        spec = _Spec("histogram", self._check_labels(name, labels), bounds)
        return self._get_or_create(
            Histogram,
            name,
            doc,
            spec,
            lambda: Histogram(name, doc, spec.labels, registry=self.registry, buckets=bounds),
        )

    def _get_or_create(
        self, cls: type[_M], name: str, doc: str, spec: _Spec, make: Callable[[], _M]
    ) -> _M:
        if not doc.strip():
            raise ValueError(f"metric {name}: documentation must not be empty")
        with _definitions_lock:
            defined = _definitions.setdefault(self.registry, {})
            if name not in defined:
                defined[name] = (spec, make())
            existing, metric = defined[name]
        if existing != spec:
            raise ValueError(
                f"metric {name} is already defined as a {existing.kind} with labels "
                f"{list(existing.labels)} and buckets {existing.buckets}; asked for a "
                f"{spec.kind} with labels {list(spec.labels)} and buckets {spec.buckets}"
            )
        assert isinstance(metric, cls)  # equal specs imply equal kinds, hence equal classes
        return metric

    @staticmethod
    def _check_labels(name: str, labels: Sequence[str]) -> tuple[str, ...]:
        if isinstance(labels, str):  # "line" would otherwise be read as l, i, n, e
            raise ValueError(f"metric {name}: labels must be a sequence of names, not a string")
        names = tuple(labels)
        for label in names:
            if label not in ALLOWED_LABELS:
                raise ValueError(
                    f"metric {name}: label {label!r} is not allowed; labels must have a "
                    f"bounded set of values, one of: {', '.join(sorted(ALLOWED_LABELS))}"
                )
        if len(set(names)) != len(names):
            raise ValueError(f"metric {name}: duplicate label in {list(names)}")
        return names


# Sample suffixes each metric family type exposes, so that a labelled metric that has no
# children yet (and therefore no samples) is still listed.
_SUFFIXES: Final[dict[str, tuple[str, ...]]] = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_sum", "_count"),
    "gaugehistogram": ("_bucket", "_gsum", "_gcount"),
    "summary": ("", "_sum", "_count"),
    "info": ("_info",),
}


def metric_names(registry: CollectorRegistry) -> set[str]:
    """Every sample name the registry exports (what PromQL in dashboards and alerts refers to).

    Counters appear with ``_total``, histograms as ``_bucket``/``_sum``/``_count``, whether or
    not a labelled metric has been observed yet; ``_created`` appears once it has samples.
    """
    names: set[str] = set()
    for family in registry.collect():
        names.update(family.name + s for s in _SUFFIXES.get(family.type, ("",)))
        names.update(sample.name for sample in family.samples)
    return names


@dataclass
class MetricsServer:
    """A running ``/metrics`` endpoint; :meth:`close` stops it and frees the port."""

    host: str
    port: int
    _server: WSGIServer
    _thread: threading.Thread

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def serve_metrics(registry: CollectorRegistry, host: str, port: int) -> MetricsServer:
    """Serve ``registry`` on ``http://host:port/metrics`` from a daemon thread.

    ``port=0`` binds a free port chosen by the OS (see :attr:`MetricsServer.port`), which is
    what tests want. ``MetricsSettings.port == 0`` means "no endpoint" instead: that policy
    belongs to the caller, which simply does not call this function then.
    """
    server, thread = start_http_server(port, addr=host, registry=registry)
    bound_port = int(server.server_address[1])
    return MetricsServer(host=host, port=bound_port, _server=server, _thread=thread)
