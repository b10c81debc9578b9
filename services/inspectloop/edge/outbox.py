"""The edge outbox: events are written to disk before anything else, and leave it only once
the bus has acknowledged them.

``Outbox`` is a SQLite table in WAL mode with ``synchronous=FULL``: an appended event survives a
crash or power cut of the line PC. Sequence numbers come from ``AUTOINCREMENT``, so they never
go back after deletions or a restart, and the drain reads in that order.

``OutboxDrainer`` publishes the oldest records in order and deletes each one only after its
acknowledgement. A send whose outcome is unknown (the wait for its ack timed out while the bus
was away) is never sent a second time while it is still in flight: the producer may yet deliver
it, and a second copy would be a duplicate. Only a send that has definitely failed is repeated.
Each record keeps its event id from the start, so that a consumer de-duplicates the one case
left (a copy in flight when the agent itself died).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from google.protobuf.message import Message

from inspectloop.core.bus import Delivery
from inspectloop.core.errors import BackendUnavailableError, PermanentError
from inspectloop.core.events import Topic

log = logging.getLogger(__name__)

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS outbox ("
    " seq INTEGER PRIMARY KEY AUTOINCREMENT,"
    " event_id TEXT NOT NULL UNIQUE,"
    " topic TEXT NOT NULL,"
    " payload BLOB NOT NULL,"
    " event_time REAL NOT NULL)",
    # Records the bus refused for good (too large, undecodable): kept for an operator, never
    # blocking the records behind them.
    "CREATE TABLE IF NOT EXISTS outbox_dead ("
    " seq INTEGER PRIMARY KEY,"
    " event_id TEXT NOT NULL,"
    " topic TEXT NOT NULL,"
    " payload BLOB NOT NULL,"
    " event_time REAL NOT NULL,"
    " reason TEXT NOT NULL)",
)


@dataclass(frozen=True)
class OutboxRecord:
    seq: int
    event_id: str
    topic: str
    payload: bytes
    event_time: datetime


class Outbox:
    """Durable FIFO of encoded events, safe to share between threads."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._conn = sqlite3.connect(
            path, timeout=30, isolation_level=None, check_same_thread=False
        )
        self._conn.execute("PRAGMA journal_mode=WAL")
        # Durable at every commit, not only at checkpoints.
        self._conn.execute("PRAGMA synchronous=FULL")
        for statement in _SCHEMA:
            self._conn.execute(statement)
        self._lock = threading.Lock()
        self._appended = threading.Condition(self._lock)

    def append(self, topic: str, event_id: str, payload: bytes, event_time: datetime) -> int:
        """Store an event durably; returns its sequence number. Appending an event id that is
        already buffered changes nothing (a retried inspection is one event)."""
        with self._appended:
            self._conn.execute(
                "INSERT OR IGNORE INTO outbox (event_id, topic, payload, event_time)"
                " VALUES (?, ?, ?, ?)",
                (event_id, topic, payload, event_time.timestamp()),
            )
            row = self._conn.execute(
                "SELECT seq FROM outbox WHERE event_id = ?", (event_id,)
            ).fetchone()
            self._appended.notify_all()
        return int(row[0]) if row else -1

    def peek(self, limit: int) -> list[OutboxRecord]:
        """The oldest ``limit`` records, oldest first."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT seq, event_id, topic, payload, event_time FROM outbox ORDER BY seq LIMIT ?",
                (limit,),
            ).fetchall()
        return [
            OutboxRecord(seq, event_id, topic, bytes(payload), datetime.fromtimestamp(t, UTC))
            for seq, event_id, topic, payload, t in rows
        ]

    def ack(self, seqs: list[int]) -> None:
        """Remove acknowledged records, in one transaction."""
        if not seqs:
            return
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                self._conn.executemany("DELETE FROM outbox WHERE seq = ?", [(s,) for s in seqs])
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def bury(self, record: OutboxRecord, reason: str) -> None:
        """Move a record the bus can never accept to the dead table."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                self._conn.execute(
                    "INSERT OR REPLACE INTO outbox_dead"
                    " (seq, event_id, topic, payload, event_time, reason)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        record.seq,
                        record.event_id,
                        record.topic,
                        record.payload,
                        record.event_time.timestamp(),
                        reason,
                    ),
                )
                self._conn.execute("DELETE FROM outbox WHERE seq = ?", (record.seq,))
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def depth(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])

    def dead_count(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM outbox_dead").fetchone()[0])

    def oldest_time(self) -> datetime | None:
        """Event time of the oldest buffered record; None when the outbox is empty."""
        with self._lock:
            row = self._conn.execute(
                "SELECT event_time FROM outbox ORDER BY seq LIMIT 1"
            ).fetchone()
        return datetime.fromtimestamp(row[0], UTC) if row else None

    def wait_for_records(self, timeout: float) -> bool:
        """Block until something is buffered (or ``timeout``); True if the outbox is not empty."""
        with self._appended:
            return self._appended.wait_for(
                lambda: self._conn.execute("SELECT 1 FROM outbox LIMIT 1").fetchone() is not None,
                timeout,
            )

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Publisher(Protocol):
    """What the drainer needs of the bus (``EventBus`` fits)."""

    def publish(
        self,
        topic: Topic[Any],
        message: Any,
        *,
        event_id: str | None = None,
        time: datetime | None = None,
    ) -> Delivery: ...


class OutboxDrainer:
    """Moves records from the outbox to the bus, in order, each acknowledged record once."""

    def __init__(
        self,
        outbox: Outbox,
        bus: Publisher,
        topics: Mapping[str, Topic[Any]],
        *,
        batch: int = 200,
        ack_timeout_s: float = 10.0,
        on_published: Callable[[int], None] | None = None,
    ) -> None:
        self._outbox = outbox
        self._bus = bus
        self._topics = dict(topics)
        self._batch = batch
        self._ack_timeout_s = ack_timeout_s
        self._on_published = on_published
        # seq -> a send whose outcome is not known yet; guarded by the single drain thread.
        self._in_flight: dict[int, Delivery] = {}

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    def drain_once(self) -> int:
        """Send the oldest batch and remove what the bus acknowledged; returns how many.

        Raises BackendUnavailableError when the bus did not acknowledge (the rest stays)."""
        records = self._outbox.peek(self._batch)
        if not records:
            return 0
        sent: list[OutboxRecord] = []
        failure: Exception | None = None
        for record in records:
            if record.seq not in self._in_flight:
                try:
                    self._in_flight[record.seq] = self._send(record)
                except PermanentError as exc:
                    log.error("outbox: event %s can never be sent: %s", record.event_id, exc)
                    self._outbox.bury(record, str(exc))
                    continue
                except Exception as exc:  # the bus is away; later records must not overtake
                    failure = exc
                    break
            sent.append(record)
        acked: list[int] = []
        for record in sent:
            delivery = self._in_flight[record.seq]
            try:
                delivery.result(self._ack_timeout_s)
            except Exception as exc:
                if delivery.done():  # failed for certain: send it again next time
                    del self._in_flight[record.seq]
                failure = failure or exc
                break
            del self._in_flight[record.seq]
            acked.append(record.seq)
        self._outbox.ack(acked)
        if acked and self._on_published is not None:
            self._on_published(len(acked))
        if failure is not None:
            raise BackendUnavailableError(f"bus did not acknowledge: {failure}") from failure
        return len(acked)

    def _send(self, record: OutboxRecord) -> Delivery:
        topic = self._topics.get(record.topic)
        if topic is None:
            raise PermanentError(f"outbox record for unknown topic {record.topic}")
        message: Message = topic.message_type.FromString(record.payload)
        return self._bus.publish(topic, message, event_id=record.event_id, time=record.event_time)

    def forget_in_flight(self) -> None:
        """Drop the sends of unknown outcome (the bus connection was rebuilt)."""
        self._in_flight.clear()
