"""How simulated line PCs talk to the plant system, and what the simulator knows that it doesn't.

``InspectClient`` is the interface the gateway serves (the ``Inspect`` gRPC service of
``proto/inspectloop/v1/inspect_service.proto``); ``GrpcInspectClient`` calls it like a line PC.
``GroundTruthStore`` keeps the truth about every simulated unit (its defect, its design), which
the simulated operators use to give correct (or deliberately wrong) feedback and which reports
use to count escapes and false rejects.
"""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import grpc

from inspectloop.core.errors import BackendUnavailableError, PermanentError, TransientError
from inspectloop.v1.common_pb2 import DECISION_REJECT, LineMode
from inspectloop.v1.inspect_service_pb2 import InspectRequest, InspectResponse
from inspectloop.v1.inspect_service_pb2_grpc import InspectStub


class InspectClient(Protocol):
    def inspect(self, request: InspectRequest, timeout_s: float) -> InspectResponse: ...

    def close(self) -> None: ...


class GrpcInspectClient:
    """A line PC's connection to the gateway's gRPC Inspect service."""

    def __init__(self, target: str) -> None:
        self._channel = grpc.insecure_channel(
            target,
            options=[
                ("grpc.max_send_message_length", 32 * 1024 * 1024),
                ("grpc.max_receive_message_length", 32 * 1024 * 1024),
            ],
        )
        self._stub = InspectStub(self._channel)  # type: ignore[no-untyped-call]

    def inspect(self, request: InspectRequest, timeout_s: float) -> InspectResponse:
        try:
            response: InspectResponse = self._stub.Inspect(request, timeout=timeout_s)
        except grpc.RpcError as exc:
            code = exc.code()
            detail = f"inspect {request.request_id}: {code.name}: {exc.details()}"
            if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                raise BackendUnavailableError(detail) from exc
            if code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION):
                raise PermanentError(detail) from exc
            raise TransientError(detail) from exc
        return response

    def close(self) -> None:
        self._channel.close()


@dataclass(frozen=True)
class UnitTruth:
    """What really was in front of the camera."""

    request_id: str
    line: str
    sku: str
    design: str
    serialization: str
    defect_class: str  # "good" for a good unit
    severity: float
    image_sha256: str
    sent_at_s: float

    @property
    def is_defective(self) -> bool:
        return self.defect_class != "good"


_SCHEMA = """
CREATE TABLE IF NOT EXISTS truth (
    request_id TEXT PRIMARY KEY,
    line TEXT NOT NULL,
    sku TEXT NOT NULL,
    design TEXT NOT NULL,
    serialization TEXT NOT NULL,
    defect_class TEXT NOT NULL,
    severity REAL NOT NULL,
    image_sha256 TEXT NOT NULL,
    sent_at_s REAL NOT NULL,
    inspection_id TEXT,
    decision TEXT,
    human_review INTEGER,
    model_version TEXT,
    line_mode TEXT
);
CREATE INDEX IF NOT EXISTS truth_by_inspection ON truth (inspection_id);
"""


@dataclass(frozen=True)
class AnsweredUnit:
    defective: bool
    rejected: bool
    human_review: bool
    mode: str  # the line's mode when the unit was decided: auto, guarded, manual ("" unknown)


def mode_name(mode: int) -> str:
    """``auto``, ``guarded`` or ``manual`` for a LineMode value ("" when unspecified)."""
    return "" if mode == 0 else LineMode.Name(mode).removeprefix("LINE_MODE_").lower()


class GroundTruthStore:
    """Truth per simulated unit in SQLite, shared by the line and operator simulators."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(
            path, timeout=30, isolation_level=None, check_same_thread=False
        )
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.executescript(_SCHEMA)
        self._lock = threading.Lock()

    def record(self, truth: UnitTruth) -> None:
        """Written before the request is sent, so feedback can never outrun its truth."""
        with self._lock:
            self._conn.execute(
                "INSERT OR REPLACE INTO truth (request_id, line, sku, design, serialization, "
                "defect_class, severity, image_sha256, sent_at_s) VALUES (?,?,?,?,?,?,?,?,?)",
                (
                    truth.request_id,
                    truth.line,
                    truth.sku,
                    truth.design,
                    truth.serialization,
                    truth.defect_class,
                    truth.severity,
                    truth.image_sha256,
                    truth.sent_at_s,
                ),
            )

    def record_response(self, request_id: str, response: InspectResponse) -> None:
        with self._lock:
            self._conn.execute(
                "UPDATE truth SET inspection_id = ?, decision = ?, human_review = ?, "
                "model_version = ?, line_mode = ? WHERE request_id = ?",
                (
                    response.inspection_id,
                    str(response.decision),
                    int(response.human_review_required),
                    response.model.version,
                    mode_name(response.line_mode),
                    request_id,
                ),
            )

    def get(self, request_id: str) -> UnitTruth | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT request_id, line, sku, design, serialization, defect_class, severity, "
                "image_sha256, sent_at_s FROM truth WHERE request_id = ?",
                (request_id,),
            ).fetchone()
        if row is None:
            return None
        return UnitTruth(*row)

    def count(self, **where: str) -> int:
        clauses = " AND ".join(f"{column} = ?" for column in where) or "1"
        for column in where:
            if column not in {"line", "sku", "design", "serialization", "defect_class"}:
                raise ValueError(f"cannot filter truth by {column!r}")
        with self._lock:
            row = self._conn.execute(
                f"SELECT COUNT(*) FROM truth WHERE {clauses}",  # noqa: S608 - columns checked above
                tuple(where.values()),
            ).fetchone()
        return int(row[0])

    def answered(
        self, line: str, since_s: float = 0.0, until_s: float = float("inf")
    ) -> list[AnsweredUnit]:
        """The line's units sent in ``[since_s, until_s)`` that got an answer."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT defect_class, decision, human_review, line_mode FROM truth WHERE line = ? "
                "AND decision IS NOT NULL AND sent_at_s >= ? AND sent_at_s < ?",
                (line, since_s, until_s),
            ).fetchall()
        return [
            AnsweredUnit(
                defective=defect != "good",
                rejected=decision == str(DECISION_REJECT),
                human_review=bool(review),
                mode=mode or "",
            )
            for defect, decision, review, mode in rows
        ]

    def close(self) -> None:
        self._conn.close()
