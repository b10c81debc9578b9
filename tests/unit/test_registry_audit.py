"""The audit hash chain: a valid chain passes; every kind of tampering is named at its seq.

What is detectable (see inspectloop.registry.audit): an edited record (its hash no longer
matches), an edited-and-rehashed record (the next record's link breaks), a removed record (a
gap), reordered or duplicated records, and, with the chain head, a truncated tail or records
appended behind the registry's back. A truncated tail without the head, and a chain rewritten
consistently together with its head, are not detectable from the chain alone.
"""

from __future__ import annotations

import dataclasses
import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from inspectloop.registry.audit import (
    GENESIS,
    GENESIS_HASH,
    AuditRecord,
    ChainHead,
    canonical_json,
    format_time,
    next_record,
    record_hash,
    verify,
)

T0 = datetime(2025, 3, 1, 8, 0, tzinfo=UTC)


def make_chain(n: int = 6) -> list[AuditRecord]:
    records: list[AuditRecord] = []
    head = GENESIS
    for i in range(n):
        record = next_record(
            head,
            time=T0 + timedelta(seconds=i),
            actor="alice" if i % 2 else "trainer",
            action="stage.changed",
            subject=f"model/label-inspector/{i + 1}",
            details={"from": "validated", "to": "shadow", "reason": f"step {i}", "n": i},
        )
        records.append(record)
        head = ChainHead(record.seq, record.hash)
    return records


def head_of(records: list[AuditRecord]) -> ChainHead:
    return ChainHead(records[-1].seq, records[-1].hash)


def rehash(record: AuditRecord) -> AuditRecord:
    return dataclasses.replace(record, hash=record.computed_hash())


def test_valid_chain_passes_with_and_without_head() -> None:
    chain = make_chain()
    assert [r.seq for r in chain] == [1, 2, 3, 4, 5, 6]
    assert chain[0].prev_hash == GENESIS_HASH
    assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(chain))
    assert verify(chain) == []
    assert verify(chain, head_of(chain)) == []
    assert verify([], GENESIS) == []


def test_edited_record_is_named() -> None:
    chain = make_chain()
    chain[2] = dataclasses.replace(chain[2], details=chain[2].details.replace("step 2", "step X"))
    problems = verify(chain, head_of(chain))
    assert [(p.seq, p.kind) for p in problems] == [(3, "edited")]
    assert "record 3" in problems[0].message
    assert str(problems[0]).startswith("seq 3: edited:")


@pytest.mark.parametrize("field", ["time", "actor", "action", "subject", "details", "prev_hash"])
def test_every_field_is_covered_by_the_hash(field: str) -> None:
    chain = make_chain()
    value = getattr(chain[3], field)
    changed = value[:-1] + ("0" if value[-1] != "0" else "1")
    chain[3] = dataclasses.replace(chain[3], **{field: changed})
    assert verify(chain)[0].seq == 4
    assert verify(chain)[0].kind == "edited"


def test_whitespace_only_edit_of_details_is_detected() -> None:
    chain = make_chain()
    chain[1] = dataclasses.replace(chain[1], details=chain[1].details.replace(",", ", "))
    assert [(p.seq, p.kind) for p in verify(chain)] == [(2, "edited")]


def test_edited_and_rehashed_record_breaks_the_next_link() -> None:
    chain = make_chain()
    chain[2] = rehash(dataclasses.replace(chain[2], actor="mallory"))
    problems = verify(chain, head_of(chain))
    assert [(p.seq, p.kind) for p in problems] == [(4, "broken-link")]
    assert "record 3" in problems[0].message


def test_renumbered_record_is_an_edit() -> None:
    chain = make_chain()
    chain[4] = dataclasses.replace(chain[4], seq=7)
    problems = verify(chain)
    assert problems[0].kind == "edited"


def test_removed_record_is_a_gap() -> None:
    chain = make_chain()
    del chain[2]
    problems = verify(chain, head_of(chain))
    assert [(p.seq, p.kind) for p in problems] == [(3, "removed")]
    assert "record 3 is missing" in problems[0].message


def test_removed_first_records_are_detected() -> None:
    chain = make_chain()[2:]
    problems = verify(chain)
    assert [(p.seq, p.kind) for p in problems] == [(1, "removed")]
    assert "records 1..2 are missing" in problems[0].message


def test_swapped_records_are_reordered() -> None:
    chain = make_chain()
    chain[2], chain[3] = chain[3], chain[2]
    problems = verify(chain, head_of(chain))
    assert problems
    assert {p.kind for p in problems} == {"reordered"}
    assert problems[0].seq == 4
    assert "comes before record 3" in problems[0].message


def test_duplicate_record_is_detected() -> None:
    chain = make_chain()
    chain.insert(3, chain[2])
    assert [(p.seq, p.kind) for p in verify(chain)] == [(3, "duplicate")]


def test_truncated_tail_needs_the_head() -> None:
    chain = make_chain()
    head = head_of(chain)
    truncated = chain[:4]
    # The chain alone is self-consistent: a cut-off tail is invisible without the head ...
    assert verify(truncated) == []
    # ... and the head the registry keeps beside the chain reveals it.
    problems = verify(truncated, head)
    assert [(p.seq, p.kind) for p in problems] == [(5, "truncated")]
    assert "records 5..6 are missing" in problems[0].message


def test_records_behind_the_head_are_detected() -> None:
    chain = make_chain()
    stale_head = ChainHead(chain[3].seq, chain[3].hash)
    assert [(p.seq, p.kind) for p in verify(chain, stale_head)] == [(5, "head-mismatch")]
    wrong_hash = ChainHead(6, "f" * 64)
    assert [(p.seq, p.kind) for p in verify(chain, wrong_hash)] == [(6, "head-mismatch")]


def test_consistently_rewritten_chain_needs_an_external_anchor() -> None:
    chain = make_chain()
    anchor = head_of(chain)
    # Rewrite record 2 and re-chain everything after it, head included.
    rewritten: list[AuditRecord] = []
    prev = GENESIS_HASH
    for original in chain:
        forged = original
        if forged.seq == 2:
            forged = dataclasses.replace(forged, actor="mallory")
        forged = rehash(dataclasses.replace(forged, prev_hash=prev))
        rewritten.append(forged)
        prev = forged.hash
    assert verify(rewritten, head_of(rewritten)) == []  # undetectable from inside
    assert verify(rewritten, anchor)[0].kind == "head-mismatch"  # the kept anchor catches it


def test_record_hash_is_deterministic_and_canonical() -> None:
    fields: dict[str, Any] = {
        "seq": 1,
        "time": "2025-03-01T08:00:00.000000Z",
        "actor": "a",
        "action": "x",
        "subject": "s",
        "details": "{}",
        "prev_hash": GENESIS_HASH,
    }
    assert record_hash(**fields) == record_hash(**dict(reversed(list(fields.items()))))
    assert len(record_hash(**fields)) == 64
    assert canonical_json({"b": 1, "a": [1.5, "é"]}) == '{"a":[1.5,"é"],"b":1}'


def test_canonical_json_and_time_refuse_ambiguity() -> None:
    with pytest.raises(ValueError, match="canonical"):
        canonical_json({"x": float("nan")})
    with pytest.raises(ValueError, match="canonical"):
        canonical_json({"x": [float("inf")]})
    with pytest.raises(ValueError, match="timezone"):
        format_time(datetime(2025, 1, 1))
    assert format_time(T0) == "2025-03-01T08:00:00.000000Z"
