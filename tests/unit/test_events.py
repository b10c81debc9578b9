"""Envelope encoding and decoding: what a consumer accepts and what it refuses, and why."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from inspectloop.core.errors import DecodeError
from inspectloop.core.events import (
    CONTENT_TYPE,
    Envelope,
    RawRecord,
    decode,
    encode,
    header,
    record_size,
)
from inspectloop.core.topics import ALL_TOPICS, FEEDBACK, INSPECTIONS
from inspectloop.v1.feedback_pb2 import OperatorFeedback
from inspectloop.v1.inspection_pb2 import InspectionEvent


def record(value: bytes, headers: list[tuple[str, bytes]], key: bytes | None = b"L1") -> RawRecord:
    return RawRecord(INSPECTIONS.name, 3, 42, key, value, headers)


def test_round_trip_keeps_message_envelope_and_position() -> None:
    message = InspectionEvent(inspection_id="i-1", line="L1", feature_vector=[0.5, 1.5])
    when = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
    envelope = Envelope.new(INSPECTIONS, "gateway-7", event_id="e-1", time=when)
    key, value, headers = encode(INSPECTIONS, message, envelope)
    assert key == b"L1"  # inspections are keyed by line
    assert header(headers, "ce_type") == "inspectloop.v1.InspectionEvent"
    assert header(headers, "content-type") == CONTENT_TYPE

    event = decode(INSPECTIONS, record(value, headers, key))
    assert event.message == message
    assert event.envelope == envelope
    assert (event.topic, event.partition, event.offset, event.key) == (
        INSPECTIONS.name,
        3,
        42,
        "L1",
    )


def test_encode_refuses_a_message_of_another_kind() -> None:
    with pytest.raises(TypeError, match=r"carries inspectloop\.v1\.InspectionEvent"):
        encode(INSPECTIONS, OperatorFeedback(line="L1"), Envelope.new(INSPECTIONS, "t"))  # type: ignore[misc]


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda h: [x for x in h if x[0] != "ce_id"], "missing header ce_id"),
        (
            lambda h: [
                (k, b"inspectloop.v1.OperatorFeedback" if k == "ce_type" else v) for k, v in h
            ],
            "wrong event type 'inspectloop.v1.OperatorFeedback'",
        ),
        (
            lambda h: [(k, b"7" if k == "ce_schemaversion" else v) for k, v in h],
            "unsupported schema version '7'",
        ),
        (
            lambda h: [(k, b"application/json" if k == "content-type" else v) for k, v in h],
            "unsupported content type 'application/json'",
        ),
        (
            lambda h: [(k, b"yesterday" if k == "ce_time" else v) for k, v in h],
            "invalid ce_time header 'yesterday'",
        ),
    ],
)
def test_decode_names_what_is_wrong(mutate, reason: str) -> None:
    _, value, headers = encode(
        INSPECTIONS, InspectionEvent(line="L1"), Envelope.new(INSPECTIONS, "t")
    )
    with pytest.raises(DecodeError, match=reason):
        decode(INSPECTIONS, record(value, mutate(headers)))


def test_decode_refuses_bytes_that_are_not_the_message() -> None:
    _, _, headers = encode(INSPECTIONS, InspectionEvent(line="L1"), Envelope.new(INSPECTIONS, "t"))
    with pytest.raises(DecodeError, match=r"not a valid inspectloop\.v1\.InspectionEvent protobuf"):
        decode(INSPECTIONS, record(b"\xff\xff\xff garbage", headers))


def test_topics_follow_the_naming_convention_and_have_distinct_kinds() -> None:
    names = [t.name for t in ALL_TOPICS]
    assert len(set(names)) == len(names)
    assert len({t.event_type for t in ALL_TOPICS}) == len(ALL_TOPICS)
    for topic in ALL_TOPICS:
        assert topic.name.startswith("inspectloop.") and topic.name.endswith(".v1")
        assert topic.dlq == topic.name + ".dlq"
    assert FEEDBACK.key is not None and FEEDBACK.key(OperatorFeedback(line="L9")) == "L9"


def test_record_size_counts_key_value_and_headers() -> None:
    assert record_size(b"ab", b"cde", [("h", b"12")]) == 2 + 3 + 1 + 2
    assert record_size(None, b"", []) == 0
