"""Embedded transport: a durable event log in one SQLite file, for a single machine.

It keeps Kafka's model so that services cannot tell the difference: topics with partitions,
records keyed to a partition by the same murmur2 hash Kafka's default partitioner uses,
consumer groups whose members share the partitions and commit offsets. SQLite's locking
makes it safe for several processes at once; WAL mode with ``synchronous=FULL`` makes an
acknowledged record survive a crash of any process (and of the machine).

What it refuses: topics that were not created, records over the limit (checked by the bus),
and anything Kafka would refuse that the bus does not already check.
"""

from __future__ import annotations

import base64
import itertools
import json
import logging
import os
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from contextlib import contextmanager
from pathlib import Path

from kafka.partitioner.default import murmur2

from inspectloop.core.bus.base import RecordMetadata, TopicPartition
from inspectloop.core.errors import BackendUnavailableError, ConfigError, PermanentError
from inspectloop.core.events import Headers, RawRecord
from inspectloop.core.settings import BusSettings

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS topics (
    name TEXT PRIMARY KEY,
    partitions INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS records (
    topic TEXT NOT NULL,
    partition INTEGER NOT NULL,
    offset INTEGER NOT NULL,
    key BLOB,
    value BLOB NOT NULL,
    headers TEXT NOT NULL,
    timestamp_ms INTEGER NOT NULL,
    PRIMARY KEY (topic, partition, offset)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS offsets (
    grp TEXT NOT NULL,
    topic TEXT NOT NULL,
    partition INTEGER NOT NULL,
    next_offset INTEGER NOT NULL,
    PRIMARY KEY (grp, topic, partition)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS members (
    grp TEXT NOT NULL,
    member_id TEXT NOT NULL,
    topics TEXT NOT NULL,
    heartbeat REAL NOT NULL,
    PRIMARY KEY (grp, member_id)
) WITHOUT ROWID;
"""

_BUSY_TIMEOUT_MS = 30_000


def partition_for(key: bytes, partitions: int) -> int:
    """Kafka's default partitioner, so a key lands in the same partition on both backends."""
    return int(murmur2(key) & 0x7FFFFFFF) % partitions


def _encode_headers(headers: Headers) -> str:
    return json.dumps([[k, base64.b64encode(v).decode()] for k, v in headers])


def _decode_headers(raw: str) -> Headers:
    return [(k, base64.b64decode(v)) for k, v in json.loads(raw)]


class LocalLog:
    """The on-disk log shared by every process that uses the same directory."""

    def __init__(self, directory: Path) -> None:
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create the local bus directory {directory}: {exc}") from exc
        self.path = directory / "events.sqlite3"
        with self.connect() as conn:
            conn.executescript(_SCHEMA)

    def connect(self) -> sqlite3.Connection:
        """A new connection; each thread and component uses its own."""
        try:
            conn = sqlite3.connect(
                self.path,
                timeout=_BUSY_TIMEOUT_MS / 1000,
                isolation_level=None,
                check_same_thread=False,
            )
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
        except sqlite3.Error as exc:
            raise BackendUnavailableError(
                f"cannot open the local bus at {self.path}: {exc}"
            ) from exc
        return conn


@contextmanager
def _write(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One write transaction; IMMEDIATE takes the write lock up front so that two processes
    never both read the same next offset."""
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        raise BackendUnavailableError(f"local bus is locked: {exc}") from exc
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


class LocalDelivery:
    def __init__(self, future: Future[RecordMetadata]) -> None:
        self._future = future

    def result(self, timeout: float | None = None) -> RecordMetadata:
        return self._future.result(timeout)

    def done(self) -> bool:
        return self._future.done()


_Pending = tuple[str, bytes | None, bytes, Headers, Future[RecordMetadata]]


class LocalProducer:
    """Appends records in group commits: a writer thread takes everything published since its
    last transaction and writes it in one, so throughput does not pay one fsync a record."""

    def __init__(self, log_: LocalLog) -> None:
        self._conn = log_.connect()
        self._partitions: dict[str, int] = {}
        self._round_robin = itertools.count()
        self._pending: list[_Pending] = []
        self._cond = threading.Condition()
        self._in_flight = 0
        self._closed = False
        self._writer = threading.Thread(
            target=self._write_loop, name="local-bus-writer", daemon=True
        )
        self._writer.start()

    def send(self, topic: str, key: bytes | None, value: bytes, headers: Headers) -> LocalDelivery:
        future: Future[RecordMetadata] = Future()
        with self._cond:
            if self._closed:
                raise PermanentError("the local bus producer is closed")
            self._pending.append((topic, key, value, headers, future))
            self._cond.notify_all()
        return LocalDelivery(future)

    def _partition_count(self, topic: str) -> int:
        count = self._partitions.get(topic)
        if count is None:
            row = self._conn.execute(
                "SELECT partitions FROM topics WHERE name = ?", (topic,)
            ).fetchone()
            if row is None:
                raise PermanentError(f"unknown topic {topic}: create it with ensure_topics first")
            count = self._partitions[topic] = int(row[0])
        return count

    def _write_loop(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closed:
                    self._cond.wait()
                if not self._pending and self._closed:
                    return
                batch, self._pending = self._pending, []
                self._in_flight = len(batch)
            self._append(batch)
            with self._cond:
                self._in_flight = 0
                self._cond.notify_all()

    def _append(self, batch: list[_Pending]) -> None:
        results: list[tuple[Future[RecordMetadata], RecordMetadata | Exception]] = []
        try:
            with _write(self._conn) as conn:
                next_offsets: dict[TopicPartition, int] = {}
                now_ms = int(time.time() * 1000)
                for topic, key, value, headers, future in batch:
                    try:
                        count = self._partition_count(topic)
                    except PermanentError as exc:
                        results.append((future, exc))
                        continue
                    partition = (
                        partition_for(key, count)
                        if key is not None
                        else next(self._round_robin) % count
                    )
                    tp = (topic, partition)
                    if tp not in next_offsets:
                        row = conn.execute(
                            "SELECT MAX(offset) FROM records WHERE topic = ? AND partition = ?", tp
                        ).fetchone()
                        next_offsets[tp] = 0 if row[0] is None else int(row[0]) + 1
                    offset = next_offsets[tp]
                    next_offsets[tp] = offset + 1
                    conn.execute(
                        "INSERT INTO records VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (topic, partition, offset, key, value, _encode_headers(headers), now_ms),
                    )
                    results.append((future, RecordMetadata(topic, partition, offset)))
        except (sqlite3.Error, BackendUnavailableError) as exc:
            error = BackendUnavailableError(f"local bus write failed: {exc}")
            for *_, future in batch:
                future.set_exception(error)
            return
        # Acknowledge only after COMMIT: the records are on disk now.
        for future, outcome in results:
            if isinstance(outcome, Exception):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)

    def flush(self, timeout: float | None = None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._pending or self._in_flight:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise BackendUnavailableError("local bus flush timed out")
                self._cond.wait(remaining)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._writer.join()
        self._conn.close()


class LocalSource:
    """One member of a consumer group on the local log.

    Members announce themselves with heartbeats; every member derives the same assignment from
    the sorted list of live members (partitions dealt round-robin), so no coordinator is needed.
    A member that leaves deletes its row; one that dies is evicted when its heartbeat is older
    than the session timeout. Offsets only move forward, so a member that loses a partition in
    the middle of a batch cannot undo its successor's progress: it can only cause redelivery.
    """

    def __init__(self, log_: LocalLog, settings: BusSettings, group: str, topics: Sequence[str]):
        self._conn = log_.connect()
        self._group = group
        self._topics = sorted(topics)
        self._poll_interval = settings.local.poll_interval_s
        self._session_timeout = settings.local.session_timeout_s
        self.member_id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._positions: dict[TopicPartition, int] = {}
        self._paused: set[TopicPartition] = set()
        self._last_heartbeat = 0.0
        self._closed = False
        for topic in self._topics:
            if (
                self._conn.execute("SELECT 1 FROM topics WHERE name = ?", (topic,)).fetchone()
                is None
            ):
                raise PermanentError(f"unknown topic {topic}: create it with ensure_topics first")
        self._heartbeat(force=True)
        self._rebalance()

    def _heartbeat(self, force: bool = False) -> None:
        now = time.time()
        if not force and now - self._last_heartbeat < self._session_timeout / 5:
            return
        with _write(self._conn) as conn:
            conn.execute(
                "INSERT INTO members VALUES (?, ?, ?, ?) "
                "ON CONFLICT (grp, member_id) DO UPDATE SET heartbeat = excluded.heartbeat",
                (self._group, self.member_id, json.dumps(self._topics), now),
            )
            conn.execute(
                "DELETE FROM members WHERE grp = ? AND heartbeat < ?",
                (self._group, now - self._session_timeout),
            )
        self._last_heartbeat = now

    def _members(self) -> list[str]:
        return [
            row[0]
            for row in self._conn.execute(
                "SELECT member_id FROM members WHERE grp = ? ORDER BY member_id", (self._group,)
            )
        ]

    def _rebalance(self) -> None:
        members = self._members()
        if self.member_id not in members:  # evicted after a long pause: join again
            self._heartbeat(force=True)
            members = self._members()
        partitions = [
            (name, p)
            for name, count in self._conn.execute(
                "SELECT name, partitions FROM topics ORDER BY name"
            )
            if name in self._topics
            for p in range(int(count))
        ]
        index = members.index(self.member_id)
        mine = {tp for i, tp in enumerate(partitions) if i % len(members) == index}
        current = set(self._positions)
        if mine == current:
            return
        for tp in current - mine:
            del self._positions[tp]
            self._paused.discard(tp)
        for tp in sorted(mine - current):
            row = self._conn.execute(
                "SELECT next_offset FROM offsets WHERE grp = ? AND topic = ? AND partition = ?",
                (self._group, *tp),
            ).fetchone()
            self._positions[tp] = 0 if row is None else int(row[0])
        log.info(
            "group %s: member %s owns %d partitions of %d (%d members)",
            self._group,
            self.member_id,
            len(mine),
            len(partitions),
            len(members),
        )

    def poll(self, max_records: int, timeout_s: float) -> list[RawRecord]:
        deadline = time.monotonic() + timeout_s
        while True:
            self._heartbeat()
            self._rebalance()
            records = self._fetch(max_records)
            if records or time.monotonic() >= deadline:
                return records
            # Idle: the log has no change notification across processes, so look again soon.
            time.sleep(min(self._poll_interval, max(0.0, deadline - time.monotonic())))

    def _fetch(self, max_records: int) -> list[RawRecord]:
        records: list[RawRecord] = []
        for (topic, partition), position in sorted(self._positions.items()):
            if len(records) >= max_records:
                break
            if (topic, partition) in self._paused:
                continue
            rows = self._conn.execute(
                "SELECT offset, key, value, headers FROM records "
                "WHERE topic = ? AND partition = ? AND offset >= ? ORDER BY offset LIMIT ?",
                (topic, partition, position, max_records - len(records)),
            ).fetchall()
            for offset, key, value, headers in rows:
                records.append(
                    RawRecord(topic, partition, int(offset), key, value, _decode_headers(headers))
                )
            if rows:
                self._positions[(topic, partition)] = int(rows[-1][0]) + 1
        return records

    def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        with _write(self._conn) as conn:
            conn.executemany(
                "INSERT INTO offsets VALUES (?, ?, ?, ?) ON CONFLICT (grp, topic, partition) "
                "DO UPDATE SET next_offset = MAX(next_offset, excluded.next_offset)",
                [(self._group, t, p, o) for (t, p), o in offsets.items()],
            )

    def rewind(self, offsets: Mapping[TopicPartition, int]) -> None:
        for tp, offset in offsets.items():
            if tp in self._positions:
                self._positions[tp] = offset

    def assignment(self) -> set[TopicPartition]:
        return set(self._positions)

    def lag(self) -> int | None:
        if not self._positions:
            return None
        lag = 0
        for (topic, partition), position in self._positions.items():
            (newest,) = self._conn.execute(
                "SELECT MAX(offset) FROM records WHERE topic = ? AND partition = ?",
                (topic, partition),
            ).fetchone()
            if newest is not None:
                lag += max(0, int(newest) + 1 - position)
        return lag

    def pause(self, partitions: Iterable[TopicPartition]) -> None:
        self._paused |= set(partitions) & set(self._positions)

    def resume(self, partitions: Iterable[TopicPartition]) -> None:
        self._paused -= set(partitions)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with _write(self._conn) as conn:
            conn.execute(
                "DELETE FROM members WHERE grp = ? AND member_id = ?", (self._group, self.member_id)
            )
        self._conn.close()


class LocalAdmin:
    def __init__(self, log_: LocalLog) -> None:
        self._log = log_

    def create_topics(
        self, names: Sequence[str], partitions: int, *, compacted: Collection[str] = ()
    ) -> None:
        """The local log keeps every record, so a compacted topic needs nothing more here."""
        conn = self._log.connect()
        try:
            with _write(conn):
                conn.executemany(
                    "INSERT INTO topics VALUES (?, ?) ON CONFLICT (name) DO NOTHING",
                    [(name, partitions) for name in names],
                )
        finally:
            conn.close()

    def close(self) -> None:
        """Nothing to release: each call opens and closes its own connection."""
