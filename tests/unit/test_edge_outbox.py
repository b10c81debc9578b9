"""The edge outbox: durable order, removal only after the bus acknowledged, never a second copy
of an acknowledged (or still in-flight) event."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from inspectloop.core.bus import RecordMetadata
from inspectloop.core.errors import BackendUnavailableError, RecordTooLargeError
from inspectloop.core.events import Topic
from inspectloop.core.topics import INSPECTIONS
from inspectloop.edge.outbox import Outbox, OutboxDrainer
from inspectloop.v1.inspection_pb2 import InspectionEvent

T0 = datetime(2025, 3, 1, 8, 0, tzinfo=UTC)


def event(i: int) -> InspectionEvent:
    return InspectionEvent(inspection_id=f"id-{i}", request_id=f"req-{i}", line="line-1")


def append(outbox: Outbox, i: int) -> int:
    e = event(i)
    return outbox.append(
        INSPECTIONS.name, e.inspection_id, e.SerializeToString(), T0 + timedelta(seconds=i)
    )


@dataclass
class FakeDelivery:
    """Acknowledged, failed, or (``pending``) still waiting for the broker."""

    error: Exception | None = None
    pending: bool = False

    def result(self, timeout: float | None = None) -> RecordMetadata:
        if self.pending:
            raise BackendUnavailableError("no ack within the timeout")
        if self.error is not None:
            raise self.error
        return RecordMetadata(INSPECTIONS.name, 0, 0)

    def done(self) -> bool:
        return not self.pending


@dataclass
class FakeBus:
    """Records every publish; ``script`` decides the fate of the next sends by event id."""

    sent: list[tuple[str, str, datetime | None]] = field(default_factory=list)
    refuse_send: set[str] = field(default_factory=set)  # raise at send (bus unreachable)
    fail_ack: set[str] = field(default_factory=set)  # send, then the ack fails for certain
    hold_ack: dict[str, FakeDelivery] = field(default_factory=dict)  # ack not in yet
    too_large: set[str] = field(default_factory=set)

    def publish(
        self,
        topic: Topic[Any],
        message: Any,
        *,
        event_id: str | None = None,
        time: datetime | None = None,
    ) -> FakeDelivery:
        assert event_id is not None
        if event_id in self.too_large:
            raise RecordTooLargeError("too large")
        if event_id in self.refuse_send:
            raise BackendUnavailableError("broker unreachable")
        assert isinstance(message, InspectionEvent) and message.inspection_id == event_id
        self.sent.append((topic.name, event_id, time))
        if event_id in self.fail_ack:
            return FakeDelivery(error=BackendUnavailableError("delivery timed out"))
        if event_id in self.hold_ack:
            return self.hold_ack[event_id]
        return FakeDelivery()

    def ids(self) -> list[str]:
        return [e for _, e, _ in self.sent]


@pytest.fixture
def outbox(tmp_path: Path) -> Outbox:
    return Outbox(tmp_path / "outbox.sqlite3")


def drainer(outbox: Outbox, bus: FakeBus, batch: int = 100) -> OutboxDrainer:
    return OutboxDrainer(outbox, bus, {INSPECTIONS.name: INSPECTIONS}, batch=batch)


def test_records_keep_their_order_and_survive_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite3"
    with Outbox(path) as first:
        seqs = [append(first, i) for i in range(5)]
        assert seqs == sorted(seqs)
        assert first.depth() == 5
    with Outbox(path) as reopened:
        records = reopened.peek(10)
        assert [r.event_id for r in records] == [f"id-{i}" for i in range(5)]
        assert [InspectionEvent.FromString(r.payload).request_id for r in records] == [
            f"req-{i}" for i in range(5)
        ]
        assert reopened.oldest_time() == T0
        reopened.ack([r.seq for r in records])
        assert reopened.depth() == 0 and reopened.oldest_time() is None
    with Outbox(path) as again:
        # Sequence numbers never go back, so a restart cannot put a new event before an old one.
        assert append(again, 9) > max(seqs)


def test_the_same_event_id_is_buffered_once(outbox: Outbox) -> None:
    first = append(outbox, 1)
    assert append(outbox, 1) == first
    assert outbox.depth() == 1


def test_drain_publishes_in_order_with_event_ids_and_times(outbox: Outbox) -> None:
    for i in range(7):
        append(outbox, i)
    bus = FakeBus()
    assert drainer(outbox, bus, batch=3).drain_once() == 3
    assert drainer(outbox, bus, batch=3).drain_once() == 3
    assert drainer(outbox, bus, batch=3).drain_once() == 1
    assert bus.ids() == [f"id-{i}" for i in range(7)]
    assert [t for _, _, t in bus.sent] == [T0 + timedelta(seconds=i) for i in range(7)]
    assert outbox.depth() == 0


def test_an_acknowledged_record_is_never_sent_again(outbox: Outbox) -> None:
    for i in range(5):
        append(outbox, i)
    bus = FakeBus(fail_ack={"id-3"})
    d = drainer(outbox, bus)
    with pytest.raises(BackendUnavailableError):
        d.drain_once()
    # 0-2 acknowledged and gone; 3 failed and stays; 4 was sent after it and is still in flight.
    assert [r.event_id for r in outbox.peek(10)] == ["id-3", "id-4"]
    bus.fail_ack.clear()
    assert d.drain_once() == 2
    assert d.drain_once() == 0
    assert bus.ids().count("id-0") == 1
    assert bus.ids().count("id-2") == 1
    assert bus.ids().count("id-3") == 2  # failed for certain, so sent again
    assert bus.ids().count("id-4") == 1  # its first send was acknowledged: no second copy
    assert outbox.depth() == 0


def test_a_failed_ack_keeps_the_record(outbox: Outbox) -> None:
    append(outbox, 1)
    bus = FakeBus(fail_ack={"id-1"})
    d = drainer(outbox, bus)
    for _ in range(3):
        with pytest.raises(BackendUnavailableError):
            d.drain_once()
        assert [r.event_id for r in outbox.peek(10)] == ["id-1"]
    bus.fail_ack.clear()
    assert d.drain_once() == 1
    assert outbox.depth() == 0


def test_a_send_still_in_flight_is_not_sent_a_second_time(outbox: Outbox) -> None:
    append(outbox, 1)
    append(outbox, 2)
    held = FakeDelivery(pending=True)
    bus = FakeBus(hold_ack={"id-1": held})
    d = drainer(outbox, bus)
    for _ in range(3):
        with pytest.raises(BackendUnavailableError):
            d.drain_once()
    assert bus.ids() == ["id-1", "id-2"]  # each sent once, however often the drain ran
    assert outbox.depth() == 2 and d.in_flight == 2
    held.pending = False  # the broker came back and acknowledged the original send
    assert d.drain_once() == 2
    assert bus.ids() == ["id-1", "id-2"]
    assert outbox.depth() == 0 and d.in_flight == 0


def test_an_unreachable_bus_stops_the_batch_and_keeps_everything(outbox: Outbox) -> None:
    for i in range(3):
        append(outbox, i)
    bus = FakeBus(refuse_send={"id-0", "id-1", "id-2"})
    d = drainer(outbox, bus)
    with pytest.raises(BackendUnavailableError):
        d.drain_once()
    assert bus.sent == [] and outbox.depth() == 3
    bus.refuse_send = {"id-1"}  # 0 goes, 1 cannot: 2 must not overtake it
    with pytest.raises(BackendUnavailableError):
        d.drain_once()
    assert bus.ids() == ["id-0"]
    assert [r.event_id for r in outbox.peek(10)] == ["id-1", "id-2"]
    bus.refuse_send.clear()
    assert d.drain_once() == 2
    assert bus.ids() == ["id-0", "id-1", "id-2"]


def test_a_record_the_bus_can_never_take_is_set_aside(outbox: Outbox) -> None:
    for i in range(3):
        append(outbox, i)
    bus = FakeBus(too_large={"id-1"})
    assert drainer(outbox, bus).drain_once() == 2
    assert bus.ids() == ["id-0", "id-2"]
    assert outbox.depth() == 0 and outbox.dead_count() == 1
