"""One JSON line per record, tagged with the service and the active log context."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from inspectloop.core.logging import (
    ContextFilter,
    configure_logging,
    current_log_context,
    log_context,
)
from inspectloop.core.settings import LoggingSettings

RFC3339_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
BASE_FIELDS = {"time", "level", "logger", "message", "service"}


@pytest.fixture(autouse=True)
def restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    for handler in root.handlers[:]:
        if handler not in handlers:
            root.removeHandler(handler)
            handler.close()
    root.setLevel(level)


@pytest.fixture
def stream() -> io.StringIO:
    return io.StringIO()


def configure(stream: io.StringIO, *, json_format: bool = True, level: str = "DEBUG") -> None:
    settings = LoggingSettings.model_validate({"level": level, "json_format": json_format})
    configure_logging(settings, "monitor", stream=stream)


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_line_has_the_base_fields(stream: io.StringIO) -> None:
    configure(stream)
    before = datetime.now(UTC)
    logging.getLogger("inspectloop.test").info("hello %s", "world")
    (record,) = lines(stream)
    assert set(record) == BASE_FIELDS
    assert record["message"] == "hello world"
    assert record["level"] == "INFO"
    assert record["logger"] == "inspectloop.test"
    assert record["service"] == "monitor"
    assert RFC3339_UTC.match(record["time"])
    logged = datetime.fromisoformat(record["time"])
    assert logged.utcoffset() == timedelta(0)
    assert before - timedelta(seconds=1) <= logged <= datetime.now(UTC)


def test_context_fields_appear_only_when_set(stream: io.StringIO) -> None:
    configure(stream)
    log = logging.getLogger("inspectloop.test")
    with log_context(event_id="e-1", model="bottle-cap"):
        log.info("inside")
    log.info("outside")
    inside, outside = lines(stream)
    assert inside["event_id"] == "e-1"
    assert inside["model"] == "bottle-cap"
    assert "version" not in inside
    assert "line" not in inside
    assert set(outside) == BASE_FIELDS


def test_log_context_nests_and_restores(stream: io.StringIO) -> None:
    configure(stream)
    log = logging.getLogger("inspectloop.test")
    with log_context(model="a", line="line-3"):
        with log_context(model="b", version=7):
            log.info("inner")
            assert current_log_context() == {"model": "b", "version": "7", "line": "line-3"}
        log.info("outer")
    assert current_log_context() == {}
    inner, outer = lines(stream)
    assert (inner["model"], inner["version"], inner["line"]) == ("b", "7", "line-3")
    assert (outer["model"], outer["line"]) == ("a", "line-3")
    assert "version" not in outer


def test_log_context_is_restored_after_an_exception() -> None:
    with pytest.raises(RuntimeError), log_context(event_id="e-2"):
        raise RuntimeError("boom")
    assert current_log_context() == {}


def test_context_is_per_asyncio_task(stream: io.StringIO) -> None:
    configure(stream)
    log = logging.getLogger("inspectloop.test")

    async def handle(event_id: str) -> None:
        with log_context(event_id=event_id):
            await asyncio.sleep(0)  # let the other task run inside its own context
            log.info("handled")

    async def main() -> None:
        await asyncio.gather(handle("e-a"), handle("e-b"))

    asyncio.run(main())
    handled = [r for r in lines(stream) if r["logger"] == "inspectloop.test"]  # not asyncio's
    assert sorted(r["event_id"] for r in handled) == ["e-a", "e-b"]


def test_explicit_extra_wins_over_context(stream: io.StringIO) -> None:
    configure(stream)
    with log_context(event_id="from-context"):
        logging.getLogger("t").info("x", extra={"event_id": "explicit", "topic": "t1"})
    (record,) = lines(stream)
    assert record["event_id"] == "explicit"
    assert record["topic"] == "t1"


def test_exception_is_a_field(stream: io.StringIO) -> None:
    configure(stream)
    try:
        raise ValueError("bad pixel")
    except ValueError:
        logging.getLogger("t").exception("failed")
    (record,) = lines(stream)
    assert record["level"] == "ERROR"
    assert record["message"] == "failed"
    assert "Traceback" in record["exc_info"]
    assert "ValueError: bad pixel" in record["exc_info"]


def test_configuring_twice_does_not_duplicate_output(stream: io.StringIO) -> None:
    configure(stream)
    configure(stream)
    logging.getLogger("t").info("once")
    assert len(lines(stream)) == 1
    ours = [
        h
        for h in logging.getLogger().handlers
        if any(isinstance(f, ContextFilter) for f in h.filters)
    ]
    assert len(ours) == 1


def test_reconfiguring_switches_format(stream: io.StringIO) -> None:
    configure(stream)
    second = io.StringIO()
    configure(second, json_format=False)
    logging.getLogger("t").info("where")
    assert stream.getvalue() == ""
    assert "where" in second.getvalue()


def test_plain_text_format(stream: io.StringIO) -> None:
    configure(stream, json_format=False)
    with log_context(event_id="e-9", model="cap"):
        logging.getLogger("inspectloop.gateway").warning("slow %d ms", 12)
    text = stream.getvalue().strip()
    assert re.match(
        r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z WARNING inspectloop\.gateway \[monitor\] "
        r"slow 12 ms event_id=e-9 model=cap$",
        text,
    ), text


def test_plain_text_exception_follows_the_line(stream: io.StringIO) -> None:
    configure(stream, json_format=False)
    try:
        raise KeyError("k")
    except KeyError:
        logging.getLogger("t").exception("lookup failed")
    first, *rest = stream.getvalue().splitlines()
    assert first.endswith("lookup failed")
    assert rest[0].startswith("Traceback")


def test_level_is_applied(stream: io.StringIO) -> None:
    configure(stream, level="WARNING")
    log = logging.getLogger("t")
    log.info("hidden")
    log.warning("shown")
    assert [r["message"] for r in lines(stream)] == ["shown"]


def test_other_handlers_are_left_alone(stream: io.StringIO) -> None:
    foreign = logging.NullHandler()
    logging.getLogger().addHandler(foreign)
    configure(stream)
    configure(stream)
    assert foreign in logging.getLogger().handlers
