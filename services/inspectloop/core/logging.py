"""Logging: one formatter on the root logger, configured once in ``main``.

Modules log through ``logging.getLogger(__name__)`` and never configure handlers themselves.
:func:`configure_logging` installs one handler on the root logger that writes one JSON object a
line (or plain text for a terminal). Every line carries the service name and whatever context
is active: :func:`log_context` sets the event id, model, version and line in contextvars, so the
bus consumer can set them once per record and every log line below it is tagged, across
functions, threads that copy the context, and asyncio tasks alike.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from types import MappingProxyType
from typing import Final, TextIO

from pythonjsonlogger.json import JsonFormatter

from inspectloop.core.settings import LoggingSettings

__all__ = [
    "CONTEXT_FIELDS",
    "ContextFilter",
    "configure_logging",
    "current_log_context",
    "log_context",
]

#: Context fields a log line may carry, in the order they are written.
CONTEXT_FIELDS: Final = ("event_id", "model", "version", "line")

_EMPTY: Final[Mapping[str, str]] = MappingProxyType({})
# One immutable mapping in one ContextVar: nesting is a merge and a reset of a single token,
# and a copied context (asyncio task, executor) can never see another task's mutation.
_context: ContextVar[Mapping[str, str]] = ContextVar("inspectloop_log_context", default=_EMPTY)


@contextmanager
def log_context(
    *,
    event_id: str | None = None,
    model: str | None = None,
    version: str | int | None = None,
    line: str | None = None,
) -> Iterator[None]:
    """Tag every log line inside the block with the given fields; ``None`` leaves a field as is.

    Blocks nest: an inner block adds or overrides fields and the outer values come back when
    it exits. Values are stored as strings so that a field keeps one type in the log store.
    """
    given = {"event_id": event_id, "model": model, "version": version, "line": line}
    merged = dict(_context.get())
    merged.update({k: str(v) for k, v in given.items() if v is not None})
    token = _context.set(MappingProxyType(merged))
    try:
        yield
    finally:
        _context.reset(token)


def current_log_context() -> Mapping[str, str]:
    """The context fields set right now (read-only), e.g. to copy them into a worker thread."""
    return _context.get()


class ContextFilter(logging.Filter):
    """Adds ``service`` and the active context fields to every record a handler sees.

    It sits on the handler, not on a logger, because a logger's filters only see records
    logged on that very logger, not those propagated from its children.
    """

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def filter(self, record: logging.LogRecord) -> bool:
        record.service = self.service
        for name, value in _context.get().items():
            # A field passed explicitly through ``extra=`` is more specific than the context.
            if not hasattr(record, name):
                setattr(record, name, value)
        return True


def _rfc3339_utc(created: float) -> str:
    # Millisecond precision and a "Z" suffix: sortable as text and parsed by every log store.
    seconds = int(created)
    millis = int((created - seconds) * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


class _JsonFormatter(JsonFormatter):
    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        return _rfc3339_utc(record.created)


class _TextFormatter(logging.Formatter):
    """Human-readable lines for a terminal; context fields follow the message as key=value."""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        return _rfc3339_utc(record.created)

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802
        text = super().formatMessage(record)
        pairs = [f"{n}={getattr(record, n)}" for n in CONTEXT_FIELDS if hasattr(record, n)]
        return f"{text} {' '.join(pairs)}" if pairs else text


class _InspectloopHandler(logging.StreamHandler[TextIO]):
    """Marks the handler this module installed, so that configuring again replaces it."""


def configure_logging(
    settings: LoggingSettings, service: str, *, stream: TextIO | None = None
) -> None:
    """Install the one inspectloop handler on the root logger (replacing an earlier one).

    Calling it again reconfigures rather than duplicating output; handlers installed by
    others (pytest's capture, a debugger) are left alone. ``stream`` defaults to stderr.
    """
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _InspectloopHandler)]:
        root.removeHandler(old)
        old.close()

    handler = _InspectloopHandler(stream if stream is not None else sys.stderr)
    handler.addFilter(ContextFilter(service))
    formatter: logging.Formatter
    if settings.json_format:
        formatter = _JsonFormatter(
            ["asctime", "levelname", "name", "message", "service"],
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            json_ensure_ascii=False,
        )
    else:
        formatter = _TextFormatter("%(asctime)s %(levelname)-7s %(name)s [%(service)s] %(message)s")
    handler.setFormatter(formatter)
    root.addHandler(handler)
    root.setLevel(settings.level)
