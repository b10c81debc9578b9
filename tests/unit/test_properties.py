"""Property-based tests (Hypothesis) of the event codecs, the gateway's routing table and the
monitor's drift window: what must hold for every input, not only for the examples we thought of."""

from __future__ import annotations

import contextlib
from datetime import UTC

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inspectloop.core.errors import DecodeError
from inspectloop.core.events import (
    H_CONTENT_TYPE,
    H_ID,
    H_SCHEMAVERSION,
    H_TIME,
    H_TYPE,
    Envelope,
    RawRecord,
    decode,
    encode,
)
from inspectloop.core.topics import INSPECTIONS, ROUTING
from inspectloop.gateway.routing import BASIS_POINTS, RoutingTable, canary_bucket
from inspectloop.monitor.calibration import CalibrationPlan
from inspectloop.monitor.detectors import CONFIDENCE_KS, FEATURE_MMD, IMAGE_STATS
from inspectloop.monitor.reference import Reference, ReferenceSettings, WarmUp
from inspectloop.monitor.window import DriftWindow
from inspectloop.v1.common_pb2 import MODEL_ROLE_CANARY, MODEL_ROLE_STABLE, ModelRef
from inspectloop.v1.inspection_pb2 import InspectionEvent
from inspectloop.v1.rollout_pb2 import Routing

# Deterministic and without time limits: these machines are shared and noisy.
settings.register_profile(
    "inspectloop", derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("inspectloop")

# Text as it can travel in a header or a protobuf string: any Unicode but lone surrogates.
CHARACTERS = st.characters(exclude_categories=["Cs"])
TEXT = st.text(CHARACTERS, max_size=40)
IDS = st.text(CHARACTERS, min_size=1, max_size=40)


# --- event codecs ------------------------------------------------------------------------------


@given(
    event_id=IDS,
    source=TEXT,
    time=st.datetimes(timezones=st.just(UTC)),
    line=TEXT,
    sku=TEXT,
    score=st.floats(allow_nan=False),
    features=st.lists(st.floats(allow_nan=False, width=32), max_size=16),
)
def test_an_event_decodes_to_what_was_encoded(  # noqa: PLR0917 - one argument per drawn field
    event_id: str,
    source: str,
    time: object,
    line: str,
    sku: str,
    score: float,
    features: list[float],
) -> None:
    message = InspectionEvent(
        inspection_id=event_id, line=line, sku=sku, feature_vector=features, latency_ms=score
    )
    envelope = Envelope.new(INSPECTIONS, source, event_id=event_id, time=time)  # type: ignore[arg-type]
    key, value, headers = encode(INSPECTIONS, message, envelope)
    event = decode(INSPECTIONS, RawRecord(INSPECTIONS.name, 3, 17, key, value, headers))
    assert event.message == message
    assert event.envelope == envelope
    assert (event.key, event.partition, event.offset) == (line, 3, 17)


HEADER_NAMES = st.sampled_from([H_ID, H_TYPE, H_SCHEMAVERSION, H_TIME, H_CONTENT_TYPE, "other"])


@given(
    value=st.binary(max_size=200),
    headers=st.lists(st.tuples(HEADER_NAMES, st.binary(max_size=40)), max_size=8),
    key=st.none() | st.binary(max_size=20),
)
def test_any_record_decodes_or_is_refused_with_a_decode_error(
    value: bytes, headers: list[tuple[str, bytes]], key: bytes | None
) -> None:
    """What a broker delivers is never trusted: whatever its bytes, decoding gives an event or
    a DecodeError (which sends it to the dead-letter topic), never another exception that would
    stop a consumer."""
    with contextlib.suppress(DecodeError):
        decode(ROUTING, RawRecord(ROUTING.name, 0, 0, key, value, headers))


@given(value=st.binary(max_size=200), time=st.binary(max_size=40))
def test_a_well_labelled_record_with_any_payload_decodes_or_is_refused(
    value: bytes, time: bytes
) -> None:
    """The headers right, the payload and the time anything: past the header checks too."""
    headers = [
        *Envelope.new(ROUTING, "fuzz", event_id="e-1").to_headers(),
    ]
    headers = [(k, time if k == H_TIME else v) for k, v in headers]
    try:
        event = decode(ROUTING, RawRecord(ROUTING.name, 0, 0, None, value, headers))
    except DecodeError:
        return
    assert isinstance(event.message, Routing)


# --- the routing table -------------------------------------------------------------------------

LINES = st.sampled_from(["line-1", "line-2", "line-3"])
VERSIONS = st.sampled_from(["1", "2", "3"])


@st.composite
def routings(draw: st.DrawFn) -> Routing:
    routing = Routing(
        line=draw(LINES),
        generation=draw(st.integers(0, 20)),
        stable=ModelRef(name="m", version=draw(VERSIONS)),
        canary_weight_bps=draw(st.integers(0, BASIS_POINTS)),
    )
    if draw(st.booleans()):
        routing.canary.CopyFrom(ModelRef(name="m", version=draw(VERSIONS)))
    for version in draw(st.lists(VERSIONS, max_size=2)):
        routing.shadows.append(ModelRef(name="m", version=version))
    return routing


@given(st.lists(routings(), max_size=30))
def test_each_line_keeps_the_first_routing_of_its_highest_generation(
    applied: list[Routing],
) -> None:
    table = RoutingTable("m", "0")
    for routing in applied:
        table.apply(routing)
    for line in ("line-1", "line-2", "line-3"):
        ours = [r for r in applied if r.line == line]
        if not ours:
            assert table.get(line).stable.version == "0"  # the default
            continue
        top = max(r.generation for r in ours)
        assert table.get(line) == next(r for r in ours if r.generation == top)


@given(
    routing=routings(),
    request_id=TEXT,
    unready=st.sets(VERSIONS, max_size=2),
)
def test_a_request_is_decided_by_the_stable_or_its_canary_and_never_shadowed_by_its_decider(
    routing: Routing, request_id: str, unready: set[str]
) -> None:
    table = RoutingTable("m", "0")
    table.apply(routing)

    def ready(name: str, version: str) -> bool:
        return version not in unready

    if routing.stable.version in unready:
        return  # a 503, tested in the gateway's tests
    route = table.route(routing.line, request_id, ready)
    canary_wins = (
        bool(routing.canary.name)
        and routing.canary.version not in unready
        and canary_bucket(request_id) < routing.canary_weight_bps
    )
    expected = routing.canary if canary_wins else routing.stable
    assert route.decider.version == expected.version
    assert route.decider.role == (MODEL_ROLE_CANARY if canary_wins else MODEL_ROLE_STABLE)
    assert all(s.version != route.decider.version for s in route.shadows)
    assert all(s.version not in unready for s in route.shadows)
    assert table.route(routing.line, request_id, ready) == route  # a retry routes the same


# --- the monitor's drift window ----------------------------------------------------------------

SIZE = 12


@pytest.fixture(scope="module")
def reference() -> Reference:
    rng = np.random.default_rng(2)
    n = 120
    warm_up = WarmUp(
        rng.normal(size=(n, 8)),
        rng.random((n, 6)) + 0.5,
        rng.random(n),
        (rng.random(n) < 0.05).astype(np.float64),
    )
    plan = CalibrationPlan(ert=1e3, window=SIZE, check_every=4, streams=8, stream_length=80)
    settings_ = ReferenceSettings(components=4, plan=plan, reject_rate_shift=0.05, interval_z=2.576)
    return Reference.build("ref", "m", "1", warm_up, settings_)


ROWS = st.lists(
    st.tuples(
        st.lists(st.floats(-5, 5), min_size=8, max_size=8),
        st.lists(st.floats(0.5, 1.5), min_size=6, max_size=6),
        st.floats(0, 1),
    ),
    min_size=1,
    max_size=3 * SIZE,
)


@given(rows=ROWS, checks=st.sets(st.integers(0, 3 * SIZE)), restart_at=st.integers(0, 3 * SIZE))
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_the_incremental_window_equals_the_statistics_of_its_last_rows(
    reference: Reference,
    rows: list[tuple[list[float], list[float], float]],
    checks: set[int],
    restart_at: int,
) -> None:
    """However rows arrive, whenever the statistics are read, and across a restart from the
    saved state: the window's statistics are those of its last ``SIZE`` rows."""
    window = DriftWindow(reference, SIZE)
    for t, (features, stats, confidence) in enumerate(rows):
        window.append(features, stats, confidence, float(t))
        if t == restart_at:
            window = DriftWindow.from_state(window.to_state(), reference, SIZE)
        if t in checks and t + 1 >= SIZE:
            _assert_window_of(window, reference, rows[t + 1 - SIZE : t + 1])
    assert len(window) == min(SIZE, len(rows))


def _assert_window_of(
    window: DriftWindow, reference: Reference, last: list[tuple[list[float], list[float], float]]
) -> None:
    fresh = DriftWindow(reference, SIZE)
    for t, (features, stats, confidence) in enumerate(last):
        fresh.append(features, stats, confidence, float(t))
    got, expected = window.statistics(), fresh.statistics()
    for name in (FEATURE_MMD, IMAGE_STATS, CONFIDENCE_KS):
        assert got[name] == pytest.approx(expected[name], rel=1e-9, abs=1e-9), name
