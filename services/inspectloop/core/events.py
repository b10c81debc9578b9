"""Event envelopes: how a protobuf message becomes a bus record and back.

The envelope travels in record headers, following the CloudEvents Kafka protocol binding in
binary mode (``ce_id``, ``ce_type``, ``ce_source``, ``ce_time`` …) so that any CloudEvents-aware
tool can read our topics. The value is the bare protobuf encoding of the message; both bus
backends carry exactly these bytes.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Generic, TypeVar

from google.protobuf.message import DecodeError as ProtobufDecodeError
from google.protobuf.message import Message

from inspectloop.core.errors import DecodeError

M = TypeVar("M", bound=Message)

CONTENT_TYPE = "application/protobuf"
CE_SPECVERSION = "1.0"

# Header names (CloudEvents Kafka binding, binary content mode; schemaversion is an extension).
H_ID = "ce_id"
H_TYPE = "ce_type"
H_SOURCE = "ce_source"
H_TIME = "ce_time"
H_SPECVERSION = "ce_specversion"
H_SCHEMAVERSION = "ce_schemaversion"
H_CONTENT_TYPE = "content-type"

Headers = list[tuple[str, bytes]]


@dataclass(frozen=True)
class Topic(Generic[M]):
    """A topic carries exactly one event kind; its name is ``inspectloop.<kind>.v<N>``.

    ``key`` picks the record key from the message (the line, for inspections and feedback),
    which is what keeps per-line order: one key always lands in one partition.

    ``compacted``: each message is the whole current state of its key (a line's routing, its
    mode), so the topic is compacted rather than expired: the newest record of every key is
    kept for as long as the topic exists, and a reader that starts from the beginning always
    rebuilds the full state, however old it is.
    """

    name: str
    message_type: type[M]
    key: Callable[[M], str] | None = None
    schema_version: int = 1
    compacted: bool = False

    @property
    def event_type(self) -> str:
        return self.message_type.DESCRIPTOR.full_name

    @property
    def dlq(self) -> str:
        return dead_letter_topic(self.name)


def dead_letter_topic(topic: str) -> str:
    return f"{topic}.dlq"


@dataclass(frozen=True)
class Envelope:
    """Metadata of one event, carried in the record headers."""

    event_id: str
    event_type: str
    source: str
    schema_version: int
    time: datetime

    @classmethod
    def new(
        cls, topic: Topic[M], source: str, event_id: str | None = None, time: datetime | None = None
    ) -> Envelope:
        return cls(
            event_id=event_id or str(uuid.uuid4()),
            event_type=topic.event_type,
            source=source,
            schema_version=topic.schema_version,
            time=time or datetime.now(UTC),
        )

    def to_headers(self) -> Headers:
        return [
            (H_SPECVERSION, CE_SPECVERSION.encode()),
            (H_ID, self.event_id.encode()),
            (H_TYPE, self.event_type.encode()),
            (H_SOURCE, self.source.encode()),
            (H_TIME, self.time.isoformat().encode()),
            (H_SCHEMAVERSION, str(self.schema_version).encode()),
            (H_CONTENT_TYPE, CONTENT_TYPE.encode()),
        ]


@dataclass(frozen=True)
class Event(Generic[M]):
    """A decoded event as a handler sees it, with where it came from."""

    envelope: Envelope
    message: M
    topic: str
    partition: int
    offset: int
    key: str | None


@dataclass(frozen=True)
class RawRecord:
    """A record exactly as a backend delivered it, before decoding."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: Headers = field(default_factory=list)


def header(headers: Sequence[tuple[str, bytes]], name: str) -> str | None:
    for key, value in headers:
        if key == name:
            return value.decode("utf-8", errors="replace") if value is not None else None
    return None


def encode(topic: Topic[M], message: M, envelope: Envelope) -> tuple[bytes | None, bytes, Headers]:
    """Key, value and headers of the record that carries ``message`` on ``topic``."""
    if not isinstance(message, topic.message_type):
        raise TypeError(
            f"topic {topic.name} carries {topic.event_type}, not {type(message).__name__}"
        )
    key = topic.key(message).encode() if topic.key is not None else None
    return key, message.SerializeToString(), envelope.to_headers()


def decode(topic: Topic[M], record: RawRecord) -> Event[M]:
    """Decode a record of ``topic`` or raise DecodeError saying exactly what is wrong with it."""
    headers = record.headers
    event_id = header(headers, H_ID)
    if not event_id:
        raise DecodeError(f"missing header {H_ID}: not an inspectloop event")
    event_type = header(headers, H_TYPE)
    if event_type != topic.event_type:
        raise DecodeError(
            f"wrong event type {event_type!r}: {topic.name} carries {topic.event_type}"
        )
    raw_version = header(headers, H_SCHEMAVERSION)
    if raw_version != str(topic.schema_version):
        raise DecodeError(
            f"unsupported schema version {raw_version!r} for {topic.event_type}: "
            f"this consumer reads version {topic.schema_version}"
        )
    content_type = header(headers, H_CONTENT_TYPE)
    if content_type not in (None, CONTENT_TYPE):
        raise DecodeError(f"unsupported content type {content_type!r}, expected {CONTENT_TYPE}")
    try:
        message = topic.message_type.FromString(record.value)
    except ProtobufDecodeError as exc:
        raise DecodeError(f"value is not a valid {topic.event_type} protobuf: {exc}") from exc
    raw_time = header(headers, H_TIME)
    try:
        time = datetime.fromisoformat(raw_time) if raw_time else datetime.now(UTC)
    except ValueError as exc:
        raise DecodeError(f"invalid {H_TIME} header {raw_time!r}") from exc
    envelope = Envelope(
        event_id=event_id,
        event_type=event_type,
        source=header(headers, H_SOURCE) or "",
        schema_version=topic.schema_version,
        time=time,
    )
    key = record.key.decode("utf-8", errors="replace") if record.key is not None else None
    return Event(envelope, message, record.topic, record.partition, record.offset, key)


def record_size(key: bytes | None, value: bytes, headers: Headers) -> int:
    """Bytes a record occupies, counted as the limit checks count them."""
    return (
        (len(key) if key else 0)
        + len(value)
        + sum(len(name.encode()) + len(val) for name, val in headers)
    )
