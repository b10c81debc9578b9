"""The hash-chained audit log: records, their hashes, and the verification of a chain.

Every change the registry makes appends one :class:`AuditRecord`: ``seq`` (1, 2, 3, … without
gaps), ``time``, ``actor``, ``action``, ``subject``, ``details`` (canonical JSON text),
``prev_hash`` (the hash of record ``seq - 1``; 64 zeros for the first) and ``hash``, the SHA-256
over the canonical serialisation of all the other fields. Besides the records the registry keeps
a *chain head* (the last seq and hash), updated in the same transaction as each append.

What :func:`verify` detects, and how it names it (always with the first affected ``seq``):

* ``edited``: a field of a record was changed, so its content no longer hashes to its stored
  ``hash`` (this includes a changed ``seq``, so a record moved by renumbering shows up here);
* ``broken-link``: a record's ``prev_hash`` is not the hash of the record before it; this is
  what is left when an attacker edits a record *and* recomputes its hash;
* ``removed``: a gap in ``seq`` (records missing from the start or the middle);
* ``reordered``: records out of ``seq`` order (in a list given to :func:`verify`, e.g. an
  export), named at the first record that comes too early;
* ``duplicate``: the same ``seq`` twice;
* ``truncated``: with the head, records missing from the end (the head has a larger seq);
* ``head-mismatch``: with the head, records after it, or a last hash different from it.

What it cannot detect on its own: someone with write access who rewrites the whole chain *and*
the head consistently (every hash recomputed). Against that, keep the head's seq and hash outside
the database now and then (``inspectloop registry verify-audit`` prints them;
``--expect-head SEQ:HASH`` checks a chain against such an anchor).

This module is pure: no database, no clock. The registry's store appends inside a transaction
that holds the chain lock (see :mod:`inspectloop.registry.db`), so two writers never fork it.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal

__all__ = [
    "GENESIS",
    "GENESIS_HASH",
    "AuditProblem",
    "AuditRecord",
    "ChainHead",
    "ProblemKind",
    "canonical_json",
    "format_time",
    "next_record",
    "record_hash",
    "verify",
]

GENESIS_HASH: Final = "0" * 64
#: Version of the hashed serialisation; part of every hash, so a future format cannot be confused.
HASH_FORMAT: Final = 1

ProblemKind = Literal[
    "edited", "broken-link", "removed", "reordered", "duplicate", "truncated", "head-mismatch"
]


def canonical_json(value: Any) -> str:
    """One text for one value: sorted keys, no whitespace, UTF-8, no NaN or infinity.

    Raises ValueError for values JSON cannot represent exactly (NaN, infinity) and TypeError for
    objects that are not JSON (bytes, datetimes: format them first).
    """
    _reject_non_finite(value)
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _reject_non_finite(value: Any) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{value!r} has no canonical JSON form")
    if isinstance(value, Mapping):
        for item in value.values():
            _reject_non_finite(item)
    elif isinstance(value, list | tuple):
        for item in value:
            _reject_non_finite(item)


def format_time(moment: datetime) -> str:
    """RFC 3339 UTC with microseconds and ``Z``: the exact text that is stored and hashed."""
    if moment.tzinfo is None:
        raise ValueError("audit times must be timezone-aware")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True, slots=True)
class ChainHead:
    """The last record of a chain: its seq and hash (seq 0 and 64 zeros for an empty chain)."""

    seq: int
    hash: str


GENESIS: Final = ChainHead(0, GENESIS_HASH)


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One record exactly as stored; ``details`` is the stored canonical JSON text."""

    seq: int
    time: str
    actor: str
    action: str
    subject: str
    details: str
    prev_hash: str
    hash: str

    def computed_hash(self) -> str:
        """What ``hash`` must be for the record's current content."""
        return record_hash(
            seq=self.seq,
            time=self.time,
            actor=self.actor,
            action=self.action,
            subject=self.subject,
            details=self.details,
            prev_hash=self.prev_hash,
        )

    def details_dict(self) -> dict[str, Any]:
        """The details parsed; ``{"unparsable": text}`` if the text is not a JSON object."""
        try:
            parsed = json.loads(self.details)
        except ValueError:
            return {"unparsable": self.details}
        return parsed if isinstance(parsed, dict) else {"value": parsed}


def record_hash(
    *,
    seq: int,
    time: str,
    actor: str,
    action: str,
    subject: str,
    details: str,
    prev_hash: str,
) -> str:
    """SHA-256 (hex) over the canonical JSON of every field but the hash itself.

    ``details`` enters as the stored text, so any change to it, even one that keeps the JSON's
    meaning, changes the hash.
    """
    payload = canonical_json(
        {
            "format": HASH_FORMAT,
            "seq": seq,
            "time": time,
            "actor": actor,
            "action": action,
            "subject": subject,
            "details": details,
            "prev_hash": prev_hash,
        }
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def next_record(
    head: ChainHead,
    *,
    time: datetime,
    actor: str,
    action: str,
    subject: str,
    details: Mapping[str, Any],
) -> AuditRecord:
    """The record that follows ``head``; append it and make it the new head in one transaction."""
    seq = head.seq + 1
    text_time = format_time(time)
    text_details = canonical_json(dict(details))
    digest = record_hash(
        seq=seq,
        time=text_time,
        actor=actor,
        action=action,
        subject=subject,
        details=text_details,
        prev_hash=head.hash,
    )
    return AuditRecord(seq, text_time, actor, action, subject, text_details, head.hash, digest)


@dataclass(frozen=True, slots=True)
class AuditProblem:
    """One inconsistency in a chain, at the first record it affects."""

    seq: int
    kind: ProblemKind
    message: str

    def __str__(self) -> str:
        return f"seq {self.seq}: {self.kind}: {self.message}"


def _short(digest: str) -> str:
    return digest[:12] + "…"


def verify(records: Iterable[AuditRecord], head: ChainHead | None = None) -> list[AuditProblem]:
    """Check a whole chain, given in storage order from seq 1; return its problems (or [])."""
    items = list(records)
    present = {r.seq for r in items}
    problems: list[AuditProblem] = []
    seen: set[int] = set()
    expected = 1
    prev_seq = 0
    prev_hash = GENESIS_HASH
    for record in items:
        computed = record.computed_hash()
        if computed != record.hash:
            problems.append(
                AuditProblem(
                    record.seq,
                    "edited",
                    f"record {record.seq} ({record.action} on {record.subject!r}) hashes to "
                    f"{_short(computed)} but its stored hash is {_short(record.hash)}: it was "
                    "changed after it was written",
                )
            )
        if record.seq in seen:
            problems.append(
                AuditProblem(record.seq, "duplicate", f"record {record.seq} appears twice")
            )
            continue
        if record.seq < expected:
            problems.append(
                AuditProblem(
                    record.seq,
                    "reordered",
                    f"record {record.seq} comes after record {prev_seq}: records are out of order",
                )
            )
            seen.add(record.seq)
            continue
        seen.add(record.seq)
        if record.seq > expected:
            if expected in present:
                problems.append(
                    AuditProblem(
                        record.seq,
                        "reordered",
                        f"record {record.seq} comes before record {expected}: records are out "
                        "of order",
                    )
                )
            else:
                missing = (
                    f"record {expected} is"
                    if record.seq == expected + 1
                    else f"records {expected}..{record.seq - 1} are"
                )
                problems.append(
                    AuditProblem(
                        expected,
                        "removed",
                        f"{missing} missing: the chain jumps from record {prev_seq} to record "
                        f"{record.seq}",
                    )
                )
        elif record.prev_hash != prev_hash:
            before = f"record {prev_seq}" if prev_seq else "the start of the chain"
            problems.append(
                AuditProblem(
                    record.seq,
                    "broken-link",
                    f"record {record.seq} links to {_short(record.prev_hash)} but the hash of "
                    f"{before} is {_short(prev_hash)}: a record before it was rewritten, removed "
                    "or inserted",
                )
            )
        expected = record.seq + 1
        prev_seq = record.seq
        prev_hash = record.hash
    if head is not None:
        problems.extend(_check_head(head, prev_seq, prev_hash))
    return problems


def _check_head(head: ChainHead, last_seq: int, last_hash: str) -> list[AuditProblem]:
    if head.seq > last_seq:
        missing = (
            f"record {head.seq} is"
            if head.seq == last_seq + 1
            else (f"records {last_seq + 1}..{head.seq} are")
        )
        return [
            AuditProblem(
                last_seq + 1,
                "truncated",
                f"the chain head is at record {head.seq} but the log ends at record {last_seq}: "
                f"{missing} missing from the end",
            )
        ]
    if head.seq < last_seq:
        return [
            AuditProblem(
                head.seq + 1,
                "head-mismatch",
                f"the log goes on to record {last_seq} after the chain head (record {head.seq}): "
                "records were appended outside the registry",
            )
        ]
    if head.hash != last_hash:
        return [
            AuditProblem(
                head.seq,
                "head-mismatch",
                f"the chain head's hash {_short(head.hash)} differs from the hash of record "
                f"{last_seq} ({_short(last_hash)})",
            )
        ]
    return []
