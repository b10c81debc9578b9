"""De-duplication by event id: at-least-once delivery, exactly-once effects.

The bus redelivers a batch whose commit did not happen (a crash, a rebalance). A handler makes
that harmless by recording the event id in the same transaction as its effect: a redelivered
event finds its id and does nothing. Outputs a handler publishes get ids derived from the input
event's id, so that their consumers can de-duplicate a replayed output the same way.
"""

from __future__ import annotations

import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

_NAMESPACE = uuid.UUID("1b0e2a52-6f4c-4a8e-9d3e-2f9a3c7e5b10")


def derived_event_id(source_event_id: str, purpose: str) -> str:
    """A stable id for an output of handling ``source_event_id``: a replay produces the same id."""
    return str(uuid.uuid5(_NAMESPACE, f"{source_event_id}/{purpose}"))


class DedupTransaction:
    def __init__(self, conn: sqlite3.Connection, table: str) -> None:
        self.conn = conn
        self._table = table

    def first_time(self, event_id: str) -> bool:
        """Mark ``event_id`` processed; False if it already was (then skip the effect)."""
        cursor = self.conn.execute(
            f"INSERT OR IGNORE INTO {self._table} (event_id, processed_at) VALUES (?, ?)",  # noqa: S608 - table name is ours
            (event_id, time.time()),
        )
        return cursor.rowcount == 1


class Deduplicator:
    """Processed event ids kept in SQLite, next to (or inside) the handler's own state.

    Pass the handler's own database as ``path`` so that the id and the effect commit together.
    Only the newest ``retention`` ids are kept: redeliveries come from uncommitted batches, so
    an id older than that can no longer come back.
    """

    def __init__(self, path: Path, table: str = "processed_events", retention: int = 1_000_000):
        if not table.isidentifier():
            raise ValueError(f"invalid table name {table!r}")
        path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(path, timeout=30, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        self._table = table
        self._retention = retention
        self._since_prune = 0
        self._conn.execute(
            f"CREATE TABLE IF NOT EXISTS {table} ("
            "event_id TEXT PRIMARY KEY, processed_at REAL NOT NULL)"
        )

    @property
    def connection(self) -> sqlite3.Connection:
        return self._conn

    @contextmanager
    def transaction(self) -> Iterator[DedupTransaction]:
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield DedupTransaction(self._conn, self._table)
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")
        self._since_prune += 1
        if self._since_prune >= 10_000:
            self._prune()

    def process_once(self, event_id: str, effect: Callable[[sqlite3.Connection], T]) -> bool:
        """Run ``effect`` in one transaction with marking ``event_id``; False if a duplicate."""
        with self.transaction() as tx:
            if not tx.first_time(event_id):
                return False
            effect(tx.conn)
            return True

    def seen(self, event_id: str) -> bool:
        row = self._conn.execute(
            f"SELECT 1 FROM {self._table} WHERE event_id = ?",  # noqa: S608
            (event_id,),
        ).fetchone()
        return row is not None

    def _prune(self) -> None:
        self._since_prune = 0
        self._conn.execute(
            f"DELETE FROM {self._table} WHERE rowid IN (SELECT rowid FROM {self._table} "  # noqa: S608
            "ORDER BY processed_at DESC LIMIT -1 OFFSET ?)",
            (self._retention,),
        )

    def close(self) -> None:
        self._conn.close()
