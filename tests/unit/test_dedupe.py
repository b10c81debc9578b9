"""De-duplication: an effect and its event id commit together, so a redelivery is harmless."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from inspectloop.core.bus.dedupe import Deduplicator, derived_event_id


def test_effect_runs_once_per_event_id(tmp_path: Path) -> None:
    dedupe = Deduplicator(tmp_path / "state.sqlite3")
    dedupe.connection.execute("CREATE TABLE effects (event_id TEXT)")

    def effect(event_id: str):
        return lambda conn: conn.execute("INSERT INTO effects VALUES (?)", (event_id,))

    assert dedupe.process_once("e1", effect("e1")) is True
    assert dedupe.process_once("e1", effect("e1")) is False
    assert dedupe.process_once("e2", effect("e2")) is True
    rows = dedupe.connection.execute("SELECT event_id FROM effects ORDER BY 1").fetchall()
    assert rows == [("e1",), ("e2",)]
    assert dedupe.seen("e1") and not dedupe.seen("e3")


def test_failed_effect_rolls_back_the_mark_so_a_retry_runs_it(tmp_path: Path) -> None:
    dedupe = Deduplicator(tmp_path / "state.sqlite3")

    def failing(conn: sqlite3.Connection) -> None:
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        dedupe.process_once("e1", failing)
    assert not dedupe.seen("e1")
    assert dedupe.process_once("e1", lambda conn: None) is True


def test_marks_survive_reopening(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    first = Deduplicator(path)
    first.process_once("e1", lambda conn: None)
    first.close()
    assert Deduplicator(path).seen("e1")


def test_derived_ids_are_stable_and_distinct_per_purpose() -> None:
    assert derived_event_id("e1", "mode") == derived_event_id("e1", "mode")
    assert derived_event_id("e1", "mode") != derived_event_id("e1", "alert")
    assert derived_event_id("e1", "mode") != derived_event_id("e2", "mode")


def test_table_name_must_be_an_identifier(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="invalid table name"):
        Deduplicator(tmp_path / "s.sqlite3", table="x; DROP TABLE y")
