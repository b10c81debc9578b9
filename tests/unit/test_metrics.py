"""Metric names, units and labels follow one scheme; re-requests return the same metric."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest

import inspectloop.core.metrics as metrics_module
from inspectloop.core.errors import InspectloopError
from inspectloop.core.metrics import ServiceMetrics, metric_names, serve_metrics


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def bus(registry: CollectorRegistry) -> ServiceMetrics:
    return ServiceMetrics("bus", registry)


def exposition(registry: CollectorRegistry) -> str:
    return generate_latest(registry).decode()


def test_counter_gets_total_once(bus: ServiceMetrics, registry: CollectorRegistry) -> None:
    consumed = bus.counter("events_consumed", "events", "Records consumed.", ["topic"])
    consumed.labels(topic="t").inc()
    text = exposition(registry)
    assert 'inspectloop_bus_events_consumed_total{topic="t"} 1.0' in text
    assert "inspectloop_bus_events_consumed_events" not in text


def test_count_unit_is_appended_when_not_in_what(
    bus: ServiceMetrics, registry: CollectorRegistry
) -> None:
    bus.counter("published", "events", "Records published.").inc()
    assert "inspectloop_bus_published_events_total" in metric_names(registry)


def test_measure_unit_is_the_suffix(registry: CollectorRegistry) -> None:
    gateway = ServiceMetrics("gateway", registry)
    gateway.histogram("infer_duration", "seconds", "Inference time.", ["model"], [0.1, 1.0])
    gateway.gauge("false_reject", "ratio", "False rejects / inspections.", ["line"])
    gateway.counter("image", "bytes", "Image bytes received.").inc(10)
    names = metric_names(registry)
    assert {
        "inspectloop_gateway_infer_duration_seconds_bucket",
        "inspectloop_gateway_infer_duration_seconds_sum",
        "inspectloop_gateway_infer_duration_seconds_count",
        "inspectloop_gateway_false_reject_ratio",
        "inspectloop_gateway_image_bytes_total",
    } <= names


def test_name_helper(bus: ServiceMetrics) -> None:
    assert bus.name("consumer_lag", "records") == "inspectloop_bus_consumer_lag_records"
    assert bus.name("handle", "seconds") == "inspectloop_bus_handle_seconds"


@pytest.mark.parametrize(
    "what", ["EventsConsumed", "events__consumed", "1events", "events_", "", "a-b"]
)
def test_what_must_be_snake_case(bus: ServiceMetrics, what: str) -> None:
    with pytest.raises(ValueError, match="snake_case"):
        bus.counter(what, "events", "doc")


def test_service_must_be_snake_case(registry: CollectorRegistry) -> None:
    with pytest.raises(ValueError, match="snake_case"):
        ServiceMetrics("Bus-1", registry)


@pytest.mark.parametrize("unit", ["total", "milliseconds", "ms", "percent", "count", "Seconds"])
def test_unit_must_be_a_known_base_unit(bus: ServiceMetrics, unit: str) -> None:
    with pytest.raises(ValueError, match=r"unit|total"):
        bus.gauge("lag", unit, "doc")


def test_total_is_not_part_of_what(bus: ServiceMetrics) -> None:
    with pytest.raises(ValueError, match="'total' is not a unit"):
        bus.counter("events_total", "events", "doc")


def test_measure_unit_is_not_repeated(bus: ServiceMetrics) -> None:
    with pytest.raises(ValueError, match="leave the unit"):
        bus.histogram("handle_seconds", "seconds", "doc")


def test_counter_cannot_count_a_ratio(bus: ServiceMetrics) -> None:
    with pytest.raises(ValueError, match="counter"):
        bus.counter("hit", "ratio", "doc")


def test_unbounded_label_is_rejected_by_name(bus: ServiceMetrics) -> None:
    with pytest.raises(ValueError, match="'request_id'") as info:
        bus.counter("consumed", "events", "doc", ["topic", "request_id"])
    assert not isinstance(info.value, InspectloopError)  # a programming error, not config


def test_labels_as_a_plain_string_are_rejected(bus: ServiceMetrics) -> None:
    with pytest.raises(ValueError, match="not a string"):
        bus.counter("consumed", "events", "doc", "line")


def test_duplicate_label_is_rejected(bus: ServiceMetrics) -> None:
    with pytest.raises(ValueError, match="duplicate"):
        bus.counter("consumed", "events", "doc", ["line", "line"])


def test_documentation_is_required(bus: ServiceMetrics) -> None:
    with pytest.raises(ValueError, match="documentation"):
        bus.counter("consumed", "events", "  ")


@pytest.mark.parametrize("buckets", [[], [1.0, 1.0], [2.0, 1.0], [0.1, float("inf")]])
def test_histogram_buckets_are_checked(bus: ServiceMetrics, buckets: list[float]) -> None:
    with pytest.raises(ValueError, match="buckets"):
        bus.histogram("handle", "seconds", "doc", buckets=buckets)


def test_same_metric_is_returned_again(bus: ServiceMetrics, registry: CollectorRegistry) -> None:
    first = bus.counter("consumed", "events", "doc", ["topic", "group"])
    again = bus.counter("consumed", "events", "other wording", ("topic", "group"))
    other_helper = ServiceMetrics("bus", registry).counter(
        "consumed", "events", "doc", ["topic", "group"]
    )
    assert first is again is other_helper


def test_conflicting_redefinition_is_rejected(bus: ServiceMetrics) -> None:
    bus.counter("consumed", "events", "doc", ["topic"])
    with pytest.raises(ValueError, match="already defined"):
        bus.counter("consumed", "events", "doc", ["topic", "group"])
    with pytest.raises(ValueError, match="already defined"):
        bus.gauge("consumed", "events", "doc", ["topic"])


def test_histogram_with_other_buckets_is_a_conflict(bus: ServiceMetrics) -> None:
    bus.histogram("handle", "seconds", "doc", buckets=[0.1, 1.0])
    assert bus.histogram("handle", "seconds", "doc", buckets=(0.1, 1)) is not None
    with pytest.raises(ValueError, match="already defined"):
        bus.histogram("handle", "seconds", "doc", buckets=[0.5])


def test_registries_are_independent() -> None:
    a, b = CollectorRegistry(), CollectorRegistry()
    ca = ServiceMetrics("bus", a).counter("consumed", "events", "doc")
    cb = ServiceMetrics("bus", b).counter("consumed", "events", "doc")
    assert ca is not cb
    ca.inc()
    assert "inspectloop_bus_consumed_events_total 1.0" in exposition(a)
    assert "inspectloop_bus_consumed_events_total 0.0" in exposition(b)


def test_concurrent_requests_register_once(registry: CollectorRegistry) -> None:
    results: list[object] = []
    barrier = threading.Barrier(8)

    def request() -> None:
        barrier.wait()
        results.append(ServiceMetrics("bus", registry).counter("consumed", "events", "doc"))

    threads = [threading.Thread(target=request) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 8
    assert all(r is results[0] for r in results)


def test_metric_names_lists_labelled_metrics_before_any_sample(
    bus: ServiceMetrics, registry: CollectorRegistry
) -> None:
    bus.counter("consumed", "events", "doc", ["topic"])
    bus.histogram("handle", "seconds", "doc", ["topic"])
    bus.gauge("build", "info", "Build information.", ["version"])
    names = metric_names(registry)
    assert "inspectloop_bus_consumed_events_total" in names
    assert "inspectloop_bus_handle_seconds_bucket" in names
    assert "inspectloop_bus_build_info" in names
    assert "inspectloop_bus_consumed_events" not in names  # PromQL never sees the bare name


def test_metric_names_of_an_empty_registry(registry: CollectorRegistry) -> None:
    assert metric_names(registry) == set()


class _FakeServer:
    def __init__(self, port: int) -> None:
        self.server_address = ("127.0.0.1", port)
        self.calls: list[str] = []

    def shutdown(self) -> None:
        self.calls.append("shutdown")

    def server_close(self) -> None:
        self.calls.append("server_close")


def test_serve_metrics_returns_the_bound_port(
    monkeypatch: pytest.MonkeyPatch, registry: CollectorRegistry
) -> None:
    # Unit tests stay off the network: the real HTTP endpoint is exercised by integration tests.
    seen: dict[str, Any] = {}
    fake = _FakeServer(43123)
    thread = threading.Thread(target=lambda: None)
    thread.start()

    def fake_start(
        port: int, addr: str, registry: CollectorRegistry
    ) -> tuple[_FakeServer, threading.Thread]:
        seen.update(port=port, addr=addr, registry=registry)
        return fake, thread

    monkeypatch.setattr(metrics_module, "start_http_server", fake_start)
    with serve_metrics(registry, "127.0.0.1", 0) as server:
        assert server.port == 43123
        assert server.host == "127.0.0.1"
    assert seen == {"port": 0, "addr": "127.0.0.1", "registry": registry}
    assert fake.calls == ["shutdown", "server_close"]
