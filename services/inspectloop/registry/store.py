"""What the registry does, as transactions over its database and blob store.

The HTTP API, the CLI and the bus consumer all go through :class:`RegistryStore`. Every change
runs in one write transaction (holding the audit chain lock, see :mod:`.db`) that also appends
its audit record, so a change and its record commit together or not at all. Failures are raised
as :class:`RegistryError` subclasses that carry their HTTP status; the API maps them 1:1.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar, TypeVar

from sqlalchemy import ColumnElement, Engine, and_, func, or_, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, selectinload

from inspectloop.core.blobstore import BlobNotFoundError, BlobStore
from inspectloop.core.datasets import (
    DatasetCreate,
    DatasetItemOut,
    DatasetKind,
    DatasetOut,
    DatasetScope,
    DatasetVersionList,
    DatasetVersionOut,
    DatasetVersionSummary,
)
from inspectloop.core.errors import (
    BackendUnavailableError,
    ConfigError,
    PermanentError,
)
from inspectloop.registry import db
from inspectloop.registry.audit import AuditProblem, AuditRecord, ChainHead, canonical_json
from inspectloop.registry.audit import next_record as next_audit_record
from inspectloop.registry.audit import verify as verify_chain
from inspectloop.registry.auth import (
    Principal,
    Role,
    hash_password,
    hash_token,
    new_token,
    verify_password,
)
from inspectloop.registry.lifecycle import (
    TERMINAL_STAGES,
    SignatureMeaning,
    Stage,
    meaning_for_stage,
    transition_error,
)
from inspectloop.registry.metrics import RegistryMetrics
from inspectloop.registry.schemas import (
    ApprovalIn,
    ApprovalOut,
    ArtifactIn,
    ArtifactOut,
    ArtifactUploadOut,
    ClassMetricsIn,
    GateResultIn,
    LineageChain,
    LineageNode,
    LineageOut,
    ModelOut,
    ScopeIn,
    StageChangeOut,
    TokenOut,
    TransitionIn,
    UserOut,
    VersionCreate,
    VersionOut,
    VersionSummary,
)
from inspectloop.registry.settings import BootstrapUser

__all__ = [
    "AuditReport",
    "BadRequestError",
    "ConflictError",
    "ForbiddenError",
    "InvalidError",
    "NotFoundError",
    "RegistryError",
    "RegistryStore",
    "SignatureRejectedError",
]

logger = logging.getLogger(__name__)

SYSTEM_ACTOR = "registry"


# Audit actions of electronic signatures; a lock-out is counted from them.
SIGNATURE_APPLIED = "signature.applied"
SIGNATURE_FAILED = "signature.failed"
SIGNATURE_REFUSED = "signature.refused"  # locked out: the password was not even checked
SIGNATURE_UNLOCKED = "user.signature-unlocked"
SIGNATURE_RESETS = ("user.created", "user.password-set", SIGNATURE_UNLOCKED)


class RegistryError(PermanentError):
    """A request the registry refuses; ``status`` is its HTTP status code."""

    status: ClassVar[int] = 400


class BadRequestError(RegistryError):
    status = 400


class SignatureRejectedError(RegistryError):
    """The re-entered password did not match (the attempt is in the audit log)."""

    status = 401


class ForbiddenError(RegistryError):
    status = 403


class NotFoundError(RegistryError):
    status = 404


class ConflictError(RegistryError):
    status = 409


class InvalidError(RegistryError):
    """Well-formed but refers to something that does not exist or does not fit (422)."""

    status = 422


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def subject_of(name: str, version: int | None = None) -> str:
    return f"model/{name}" if version is None else f"model/{name}/{version}"


def dataset_subject(name: str, version: int) -> str:
    return f"dataset/{name}/{version}"


# Most SHA-256s in one SQL ``IN (...)``: far below every backend's limit on bound parameters.
_IN_CHUNK = 500


def _dataset_content(body: DatasetCreate) -> dict[str, Any]:
    """What a dataset version is, in a canonical order (items by label, then SHA-256): its
    manifest without name and version, and what an idempotency key's body is compared by."""
    challenge = body.kind is DatasetKind.CHALLENGE
    items = sorted(
        (
            {
                "sha256": i.sha256,
                "label": i.label,
                "filename": i.filename,
                "media_type": i.media_type,
            }
            for i in body.items
        ),
        key=lambda i: (i["label"], i["sha256"]),
    )
    return {
        "kind": body.kind.value,
        "label_design": body.label_design,
        "scope": body.scope.model_dump(mode="json"),
        "description": body.description,
        "classes": list(body.classes) if challenge else [],
        "items": items,
    }


def _dataset_counts(
    kind: DatasetKind, classes: Sequence[str], items: Sequence[Mapping[str, Any]]
) -> dict[str, int]:
    """Items per label; a challenge set lists every declared class, 0 where it has none."""
    counts = {c: 0 for c in classes} if kind is DatasetKind.CHALLENGE else {}
    for item in items:
        counts[item["label"]] = counts.get(item["label"], 0) + 1
    return counts


@dataclass(frozen=True)
class AuditReport:
    """The result of verifying the whole audit chain."""

    records: int
    head: ChainHead
    problems: list[AuditProblem]

    @property
    def ok(self) -> bool:
        return not self.problems


class RegistryStore:
    """The registry's operations. Thread-safe: every call opens its own session."""

    def __init__(
        self,
        engine: Engine,
        blob_store: BlobStore,
        *,
        require_signature_for: Sequence[Stage] = (Stage.CANARY, Stage.PRODUCTION),
        require_artifacts_present: bool = True,
        max_failed_signatures: int = 5,
        metrics: RegistryMetrics | None = None,
        clock: Callable[[], datetime] = db.utcnow,
    ) -> None:
        self.engine = engine
        self.max_failed_signatures = max_failed_signatures
        self.blob_store = blob_store
        self.require_signature_for = frozenset(require_signature_for)
        self.require_artifacts_present = require_artifacts_present
        self.metrics = metrics
        self._clock = clock

    # --- transactions --------------------------------------------------------------------------

    @contextlib.contextmanager
    def _write(self) -> Iterator[Session]:
        try:
            with db.write_session(self.engine) as session:
                yield session
        except OperationalError as exc:
            raise BackendUnavailableError(
                f"registry database unavailable: {exc.orig or exc}"
            ) from exc

    @contextlib.contextmanager
    def _read(self) -> Iterator[Session]:
        try:
            with db.read_session(self.engine) as session:
                yield session
        except OperationalError as exc:
            raise BackendUnavailableError(
                f"registry database unavailable: {exc.orig or exc}"
            ) from exc

    def _append(
        self,
        session: Session,
        *,
        actor: str,
        action: str,
        subject: str,
        details: Mapping[str, Any],
    ) -> int:
        """Append one audit record in this (locked) transaction; return its seq."""
        head = session.get(db.AuditHeadRow, db.HEAD_ROW_ID)
        if head is None:
            raise ConfigError("the registry schema is not initialised (no audit head row)")
        record = next_audit_record(
            head.to_head(),
            time=self._clock(),
            actor=actor,
            action=action,
            subject=subject,
            details=details,
        )
        session.add(db.AuditRow.from_record(record))
        head.seq = record.seq
        head.hash = record.hash
        if self.metrics is not None:
            self.metrics.audit_records.labels(kind=action.split(".", 1)[0]).inc()
        return record.seq

    # --- users and tokens ----------------------------------------------------------------------

    def authenticate(self, token: str) -> Principal | None:
        """The principal holding ``token``; None for an unknown, revoked or disabled one."""
        digest = hash_token(token)
        with self._read() as session:
            row = session.execute(
                select(db.ApiToken, db.User)
                .join(db.User, db.ApiToken.user_id == db.User.id)
                .where(db.ApiToken.token_sha256 == digest)
            ).first()
            if row is None:
                return None
            api_token, user = row
            if api_token.revoked_at is not None or not user.active:
                return None
            return Principal(user.id, user.name, Role(user.role), api_token.id)

    def create_user(
        self, name: str, role: Role, *, password: str | None, actor: str, label: str = ""
    ) -> TokenOut:
        """Create a user with a first API token (returned once)."""
        password_hash = hash_password(password) if password else None
        token = new_token()
        with self._write() as session:
            if session.scalar(select(db.User).where(db.User.name == name)) is not None:
                raise ConflictError(f"user {name!r} exists already")
            user = db.User(name=name, role=role.value, password_hash=password_hash)
            session.add(user)
            session.flush()
            api_token = db.ApiToken(user_id=user.id, token_sha256=hash_token(token), label=label)
            session.add(api_token)
            session.flush()
            self._append(
                session,
                actor=actor,
                action="user.created",
                subject=f"user/{name}",
                details={"role": role.value, "can_sign": password_hash is not None},
            )
            self._append(
                session,
                actor=actor,
                action="token.issued",
                subject=f"user/{name}",
                details={"token_id": api_token.id, "label": label},
            )
            return TokenOut(user=name, role=role, token=token, token_id=api_token.id)

    def issue_token(self, name: str, *, actor: str, label: str = "") -> TokenOut:
        token = new_token()
        with self._write() as session:
            user = session.scalar(select(db.User).where(db.User.name == name))
            if user is None:
                raise NotFoundError(f"user {name!r} not found")
            api_token = db.ApiToken(user_id=user.id, token_sha256=hash_token(token), label=label)
            session.add(api_token)
            session.flush()
            self._append(
                session,
                actor=actor,
                action="token.issued",
                subject=f"user/{name}",
                details={"token_id": api_token.id, "label": label},
            )
            return TokenOut(user=name, role=Role(user.role), token=token, token_id=api_token.id)

    def revoke_token(self, token_id: int, *, actor: str) -> None:
        with self._write() as session:
            api_token = session.get(db.ApiToken, token_id)
            if api_token is None:
                raise NotFoundError(f"token {token_id} not found")
            if api_token.revoked_at is not None:
                return
            api_token.revoked_at = self._clock()
            self._append(
                session,
                actor=actor,
                action="token.revoked",
                subject=f"user/{api_token.user.name}",
                details={"token_id": token_id},
            )

    def unlock_signatures(self, name: str, *, actor: str) -> None:
        """Let ``name`` sign again after a lock-out (an admin's act, audited)."""
        with self._write() as session:
            if session.scalar(select(db.User).where(db.User.name == name)) is None:
                raise NotFoundError(f"user {name!r} not found")
            self._append(
                session, actor=actor, action=SIGNATURE_UNLOCKED, subject=f"user/{name}", details={}
            )

    def _failed_signatures(self, session: Session, name: str) -> int:
        """Consecutive failed signatures of ``name`` (up to the limit), from the audit trail:
        counted back to its last signature, or to the last time its password was set or its
        signing unlocked. The audit trail is the record an inspector reads, so the lock-out
        follows it, and needs no column of its own."""
        rows = session.scalars(
            select(db.AuditRow.action)
            .where(
                or_(
                    and_(
                        db.AuditRow.actor == name,
                        db.AuditRow.action.in_((SIGNATURE_FAILED, SIGNATURE_APPLIED)),
                    ),
                    and_(
                        db.AuditRow.subject == f"user/{name}",
                        db.AuditRow.action.in_(SIGNATURE_RESETS),
                    ),
                )
            )
            .order_by(db.AuditRow.seq.desc())
            .limit(self.max_failed_signatures)
        ).all()
        failed = 0
        for action in rows:
            if action != SIGNATURE_FAILED:
                break
            failed += 1
        return failed

    def list_users(self) -> list[UserOut]:
        with self._read() as session:
            users = session.scalars(select(db.User).order_by(db.User.name)).all()
            return [
                UserOut(
                    name=u.name,
                    role=Role(u.role),
                    active=u.active,
                    can_sign=u.password_hash is not None,
                    created_at=u.created_at,
                )
                for u in users
            ]

    def bootstrap(self, users: Sequence[BootstrapUser]) -> None:
        """Make every configured account exist with its token (and password) and role."""
        for spec in users:
            token_digest = hash_token(spec.token.get_secret_value())
            password = spec.password.get_secret_value() if spec.password is not None else None
            with self._write() as session:
                user = session.scalar(select(db.User).where(db.User.name == spec.name))
                if user is None:
                    user = db.User(
                        name=spec.name,
                        role=spec.role.value,
                        password_hash=hash_password(password) if password else None,
                    )
                    session.add(user)
                    session.flush()
                    self._append(
                        session,
                        actor="bootstrap",
                        action="user.created",
                        subject=f"user/{spec.name}",
                        details={"role": spec.role.value, "can_sign": bool(password)},
                    )
                else:
                    if user.role != spec.role.value:
                        self._append(
                            session,
                            actor="bootstrap",
                            action="user.role-changed",
                            subject=f"user/{spec.name}",
                            details={"from": user.role, "to": spec.role.value},
                        )
                        user.role = spec.role.value
                    if password and not verify_password(password, user.password_hash):
                        user.password_hash = hash_password(password)
                        self._append(
                            session,
                            actor="bootstrap",
                            action="user.password-set",
                            subject=f"user/{spec.name}",
                            details={},
                        )
                existing = session.scalar(
                    select(db.ApiToken).where(db.ApiToken.token_sha256 == token_digest)
                )
                if existing is not None and existing.user_id != user.id:
                    raise ConfigError(
                        f"bootstrap token of user {spec.name!r} belongs to another user"
                    )
                if existing is None:
                    api_token = db.ApiToken(
                        user_id=user.id, token_sha256=token_digest, label="bootstrap"
                    )
                    session.add(api_token)
                    session.flush()
                    self._append(
                        session,
                        actor="bootstrap",
                        action="token.issued",
                        subject=f"user/{spec.name}",
                        details={"token_id": api_token.id, "label": "bootstrap"},
                    )

    # --- artifacts -----------------------------------------------------------------------------

    def store_artifact(self, sha256: str, data: bytes, *, actor: str) -> ArtifactUploadOut:
        """Store ``data`` under ``sha256`` after checking that it hashes to it (idempotent)."""
        actual = hashlib.sha256(data).hexdigest()
        if actual != sha256:
            raise BadRequestError(
                f"the body's SHA-256 is {actual}, not {sha256} as the URL says: the upload was "
                "corrupted or the wrong file was sent; nothing was stored"
            )
        try:
            ref = self.blob_store.put(data)
        except PermanentError as exc:
            raise RegistryError(str(exc)) from exc
        with self._write() as session:
            if session.get(db.BlobRow, sha256) is not None:
                return ArtifactUploadOut(
                    sha256=sha256, size_bytes=ref.size_bytes, uri=ref.uri, created=False
                )
            session.add(
                db.BlobRow(
                    sha256=sha256,
                    size_bytes=ref.size_bytes,
                    uri=ref.uri,
                    uploaded_by=actor,
                    uploaded_at=self._clock(),
                )
            )
            self._append(
                session,
                actor=actor,
                action="artifact.stored",
                subject=f"artifact/{sha256}",
                details={"size_bytes": ref.size_bytes, "uri": ref.uri},
            )
        if self.metrics is not None:
            self.metrics.artifact_bytes.inc(ref.size_bytes)
        return ArtifactUploadOut(
            sha256=sha256, size_bytes=ref.size_bytes, uri=ref.uri, created=True
        )

    def read_artifact(self, sha256: str) -> bytes:
        try:
            return self.blob_store.get(sha256)
        except BlobNotFoundError as exc:
            raise NotFoundError(f"artifact {sha256} not found") from exc

    def artifact_exists(self, sha256: str) -> bool:
        return self.blob_store.exists(sha256)

    def _resolve_artifacts(
        self, session: Session, artifacts: Sequence[ArtifactIn]
    ) -> list[dict[str, Any]]:
        resolved: list[dict[str, Any]] = []
        problems: list[str] = []
        for artifact in artifacts:
            uploaded = session.get(db.BlobRow, artifact.sha256)
            if uploaded is not None and uploaded.size_bytes != artifact.size_bytes:
                problems.append(
                    f"{artifact.kind.value} {artifact.sha256}: size_bytes {artifact.size_bytes} "
                    f"but the stored artifact has {uploaded.size_bytes} bytes"
                )
            elif (
                uploaded is None
                and self.require_artifacts_present
                and not self.blob_store.exists(artifact.sha256)
            ):
                problems.append(
                    f"{artifact.kind.value} {artifact.sha256} is not stored: upload it first "
                    f"with PUT /v1/artifacts/{artifact.sha256}"
                )
            data = artifact.model_dump(mode="json")
            if not data["uri"]:
                data["uri"] = self.blob_store.uri(artifact.sha256)
            resolved.append(data)
        if problems:
            raise InvalidError("; ".join(problems))
        return resolved

    # --- versions ------------------------------------------------------------------------------

    def register_version(
        self,
        name: str,
        body: VersionCreate,
        *,
        actor: Principal,
        idempotency_key: str | None = None,
    ) -> tuple[VersionOut, bool]:
        """Register the next version of ``name``; returns it and whether it was created.

        With an ``idempotency_key``, repeating the same request returns the version it created
        (created=False); the same key with another body is a conflict.
        """
        request_sha = sha256_text(canonical_json(body.model_dump(mode="json")))
        with self._write() as session:
            existing = _earlier_request(
                session,
                db.VersionRow,
                db.VersionRow.model_name == name,
                idempotency_key,
                request_sha,
                f"model {name!r}",
            )
            if existing is not None:
                return self._version_out(session, existing), False
            parent = body.lineage.parent_version
            if parent is not None and self._find(session, name, parent) is None:
                raise InvalidError(
                    f"lineage.parent_version {parent} does not exist for model {name!r}"
                )
            artifacts = self._resolve_artifacts(session, body.artifacts)
            if session.get(db.ModelRow, name) is None:
                session.add(db.ModelRow(name=name, created_at=self._clock()))
                session.flush()
            latest = session.scalar(
                select(func.max(db.VersionRow.version)).where(db.VersionRow.model_name == name)
            )
            version = (latest or 0) + 1
            manifest = body.model_dump(mode="json", exclude={"stage"})
            manifest.update({"name": name, "version": version, "artifacts": artifacts})
            manifest_text = canonical_json(manifest)
            now = self._clock()
            row = db.VersionRow(
                model_name=name,
                version=version,
                stage=body.stage.value,
                parent_version=parent,
                manifest=manifest_text,
                manifest_sha256=sha256_text(manifest_text),
                idempotency_key=idempotency_key,
                request_sha256=request_sha,
                created_by=actor.name,
                created_at=now,
                updated_at=now,
            )
            session.add(row)
            session.flush()
            seq = self._append(
                session,
                actor=actor.name,
                action="version.registered",
                subject=subject_of(name, version),
                details={
                    "stage": body.stage.value,
                    "manifest_sha256": row.manifest_sha256,
                    "parent_version": parent,
                    "dataset_snapshot_id": body.lineage.dataset_snapshot_id,
                    "dataset_sha256": body.lineage.dataset_sha256,
                    "code_version": body.lineage.code_version,
                    "artifacts": [a["sha256"] for a in artifacts],
                },
            )
            session.add(
                db.StageChange(
                    version_id=row.id,
                    from_stage=None,
                    to_stage=body.stage.value,
                    actor=actor.name,
                    reason="registered",
                    audit_seq=seq,
                    changed_at=now,
                )
            )
            session.flush()
            out = self._version_out(session, row)
        if self.metrics is not None:
            self.metrics.versions_registered.labels(phase=body.stage.value).inc()
        return out, True

    def attach_artifacts(
        self, name: str, version: int, artifacts: Sequence[ArtifactIn], *, actor: Principal
    ) -> VersionOut:
        """Add artifacts to a version before it serves traffic; its manifest (and so the
        validity of earlier signatures) changes."""
        with self._write() as session:
            row = self._get(session, name, version)
            stage = Stage(row.stage)
            if stage not in (Stage.CANDIDATE, Stage.VALIDATED, Stage.SHADOW):
                raise ConflictError(
                    f"version {version} of {name!r} is {stage.value}: artifacts can only be "
                    "added in stages candidate, validated and shadow"
                )
            manifest = json.loads(row.manifest)
            present = {(a["kind"], a.get("filename") or a["sha256"]) for a in manifest["artifacts"]}
            added = self._resolve_artifacts(session, artifacts)
            clashes = [a for a in added if (a["kind"], a["filename"] or a["sha256"]) in present]
            if clashes:
                listed = ", ".join(f"{a['kind']} {a['filename'] or a['sha256']}" for a in clashes)
                raise ConflictError(f"the version already has artifact(s) {listed}")
            manifest["artifacts"] = [*manifest["artifacts"], *added]
            old_sha = row.manifest_sha256
            row.manifest = canonical_json(manifest)
            row.manifest_sha256 = sha256_text(row.manifest)
            row.updated_at = self._clock()
            self._append(
                session,
                actor=actor.name,
                action="version.artifacts-added",
                subject=subject_of(name, version),
                details={
                    "artifacts": [a["sha256"] for a in added],
                    "manifest_sha256_before": old_sha,
                    "manifest_sha256": row.manifest_sha256,
                },
            )
            session.flush()
            return self._version_out(session, row)

    def _find(self, session: Session, name: str, version: int) -> db.VersionRow | None:
        return session.scalar(
            select(db.VersionRow)
            .where(db.VersionRow.model_name == name, db.VersionRow.version == version)
            .options(
                selectinload(db.VersionRow.approvals), selectinload(db.VersionRow.stage_changes)
            )
            .execution_options(populate_existing=True)
        )

    def _get(self, session: Session, name: str, version: int) -> db.VersionRow:
        row = self._find(session, name, version)
        if row is None:
            if session.get(db.ModelRow, name) is None:
                raise NotFoundError(f"model {name!r} not found")
            raise NotFoundError(f"version {version} of model {name!r} not found")
        return row

    def list_models(self) -> list[ModelOut]:
        with self._read() as session:
            models = session.scalars(select(db.ModelRow).order_by(db.ModelRow.name)).all()
            rows = session.execute(
                select(db.VersionRow.model_name, db.VersionRow.version, db.VersionRow.stage)
            ).all()
        by_model: dict[str, list[tuple[int, str]]] = {}
        for model_name, version, stage in rows:
            by_model.setdefault(model_name, []).append((version, stage))
        result = []
        for model in models:
            versions = sorted(by_model.get(model.name, []))
            stages: dict[str, list[int]] = {}
            for version, stage in versions:
                stages.setdefault(stage, []).append(version)
            result.append(
                ModelOut(
                    name=model.name,
                    created_at=model.created_at,
                    latest_version=versions[-1][0] if versions else None,
                    versions=len(versions),
                    stages=stages,
                )
            )
        return result

    def list_versions(self, name: str, stage: Stage | None = None) -> list[VersionSummary]:
        with self._read() as session:
            if session.get(db.ModelRow, name) is None:
                raise NotFoundError(f"model {name!r} not found")
            statement = (
                select(db.VersionRow)
                .where(db.VersionRow.model_name == name)
                .order_by(db.VersionRow.version)
            )
            if stage is not None:
                statement = statement.where(db.VersionRow.stage == stage.value)
            return [self._summary(row) for row in session.scalars(statement).all()]

    def get_version(self, name: str, version: int) -> VersionOut:
        with self._read() as session:
            return self._version_out(session, self._get(session, name, version))

    def lineage(self, name: str, version: int) -> LineageChain:
        with self._read() as session:
            self._get(session, name, version)
            rows = {
                row.version: row
                for row in session.scalars(
                    select(db.VersionRow).where(db.VersionRow.model_name == name)
                ).all()
            }
        chain: list[LineageNode] = []
        seen: set[int] = set()
        current: int | None = version
        while current is not None and current in rows and current not in seen:
            seen.add(current)
            row = rows[current]
            manifest = json.loads(row.manifest)
            chain.append(
                LineageNode(
                    version=row.version,
                    stage=Stage(row.stage),
                    created_at=row.created_at,
                    manifest_sha256=row.manifest_sha256,
                    lineage=LineageOut(**manifest["lineage"]),
                    metrics=manifest["metrics"],
                )
            )
            current = row.parent_version
        return LineageChain(name=name, version=version, chain=chain)

    @staticmethod
    def _summary(row: db.VersionRow) -> VersionSummary:
        return VersionSummary(
            name=row.model_name,
            version=row.version,
            stage=Stage(row.stage),
            parent_version=row.parent_version,
            manifest_sha256=row.manifest_sha256,
            created_by=row.created_by,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )

    def _version_out(self, session: Session, row: db.VersionRow) -> VersionOut:
        session.refresh(row, attribute_names=["approvals", "stage_changes"])
        manifest = json.loads(row.manifest)
        actual_sha = sha256_text(row.manifest)
        intact = actual_sha == row.manifest_sha256
        approvals = [
            ApprovalOut(
                id=a.id,
                signer=a.signer,
                signer_role=Role(a.signer_role),
                meaning=SignatureMeaning(a.meaning),
                signed_at=a.signed_at,
                manifest_sha256=a.manifest_sha256,
                stage_at_signing=Stage(a.stage_at_signing),
                comment=a.comment,
                valid=intact and a.manifest_sha256 == actual_sha,
                audit_seq=a.audit_seq,
            )
            for a in row.approvals
        ]
        history = [
            StageChangeOut(
                from_stage=Stage(c.from_stage) if c.from_stage else None,
                to_stage=Stage(c.to_stage),
                actor=c.actor,
                reason=c.reason,
                approval_id=c.approval_id,
                changed_at=c.changed_at,
                audit_seq=c.audit_seq,
            )
            for c in row.stage_changes
        ]
        return VersionOut(
            **self._summary(row).model_dump(),
            manifest_intact=intact,
            metrics=manifest["metrics"],
            class_metrics=[ClassMetricsIn(**m) for m in manifest["class_metrics"]],
            gate_results=[GateResultIn(**g) for g in manifest["gate_results"]],
            rejection_reasons=manifest["rejection_reasons"],
            artifacts=[
                ArtifactOut(**a, download_path=f"/v1/artifacts/{a['sha256']}")
                for a in manifest["artifacts"]
            ],
            lineage=LineageOut(**manifest["lineage"]),
            classes=manifest["classes"],
            input_width=manifest["input_width"],
            input_height=manifest["input_height"],
            scope=ScopeIn(**manifest["scope"]),
            description=manifest["description"],
            approvals=approvals,
            stage_history=history,
        )

    # --- transitions and signatures ------------------------------------------------------------

    def transition(
        self, name: str, version: int, body: TransitionIn, *, actor: Principal
    ) -> VersionOut:
        """Move a version to ``body.to_stage`` if the lifecycle and the approvals allow it."""
        target = body.to_stage
        try:
            with self._write() as session:
                row = self._get(session, name, version)
                current = Stage(row.stage)
                if body.from_stage is not None and body.from_stage != current:
                    raise ConflictError(
                        f"version {version} of {name!r} is in stage {current.value}, not "
                        f"{body.from_stage.value} (from_stage): it changed meanwhile"
                    )
                problem = transition_error(current, target)
                if problem is not None:
                    raise ConflictError(problem)
                approval_id = self._required_approval(row, target)
                now = self._clock()
                seq = self._append(
                    session,
                    actor=actor.name,
                    action="stage.changed",
                    subject=subject_of(name, version),
                    details={
                        "from": current.value,
                        "to": target.value,
                        "reason": body.reason,
                        "approval_id": approval_id,
                        "manifest_sha256": row.manifest_sha256,
                        "role": actor.role.value,
                    },
                )
                row.stage = target.value
                row.updated_at = now
                session.add(
                    db.StageChange(
                        version_id=row.id,
                        from_stage=current.value,
                        to_stage=target.value,
                        actor=actor.name,
                        reason=body.reason,
                        approval_id=approval_id,
                        audit_seq=seq,
                        changed_at=now,
                    )
                )
                session.flush()
                out = self._version_out(session, row)
        except RegistryError:
            if self.metrics is not None:
                self.metrics.transitions.labels(phase=target.value, outcome="refused").inc()
            raise
        if self.metrics is not None:
            self.metrics.transitions.labels(phase=target.value, outcome="ok").inc()
        return out

    def _required_approval(self, row: db.VersionRow, target: Stage) -> str | None:
        """The id of the signature that authorises entering ``target``; ConflictError if none."""
        if target not in self.require_signature_for:
            return None
        meaning = meaning_for_stage(target)
        assert meaning is not None  # settings only allow signable stages
        actual_sha = sha256_text(row.manifest)
        where = f"version {row.version} of {row.model_name!r}"
        if actual_sha != row.manifest_sha256:
            raise ConflictError(
                f"{where}: its stored manifest no longer matches its recorded SHA-256 "
                "(changed outside the registry); no signature can authorise it"
            )
        matching = [a for a in row.approvals if a.meaning == meaning.value]
        valid = [a for a in matching if a.manifest_sha256 == actual_sha]
        if valid:
            return valid[-1].id
        if matching:
            signers = ", ".join(
                f"{a.signer} at {a.signed_at.isoformat()} over manifest {a.manifest_sha256[:12]}…"
                for a in matching
            )
            raise ConflictError(
                f"moving {where} to {target.value} requires a valid electronic signature with "
                f"meaning '{meaning.value}', but the version changed after it was signed "
                f"({signers}; the manifest is now {actual_sha[:12]}…): sign it again"
            )
        raise ConflictError(
            f"moving {where} to {target.value} requires an electronic signature with meaning "
            f"'{meaning.value}' (POST .../approvals by a quality or admin user); none was given"
        )

    def sign(self, name: str, version: int, body: ApprovalIn, *, actor: Principal) -> ApprovalOut:
        """Apply an electronic signature after checking the signer's re-entered password."""
        limit = self.max_failed_signatures
        with self._read() as session:
            self._get(session, name, version)
            user = session.get(db.User, actor.user_id)
            stored = user.password_hash if user is not None else None
            failed = self._failed_signatures(session, actor.name) if limit else 0
        unlock = f"an admin unlocks it (POST /v1/users/{actor.name}/signature-unlock)"
        if limit and failed >= limit:
            with self._write() as session:
                self._append(
                    session,
                    actor=actor.name,
                    action=SIGNATURE_REFUSED,
                    subject=subject_of(name, version),
                    details={"meaning": body.meaning.value, "reason": "locked"},
                )
            if self.metrics is not None:
                self.metrics.signatures.labels(outcome="locked").inc()
            raise ForbiddenError(
                f"signing is locked for {actor.name} after {limit} failed signatures in a row; "
                f"{unlock}"
            )
        if not verify_password(body.password, stored):
            reason = "wrong password" if stored else "the user has no signature password"
            with self._write() as session:
                self._append(
                    session,
                    actor=actor.name,
                    action=SIGNATURE_FAILED,
                    subject=subject_of(name, version),
                    details={"meaning": body.meaning.value, "reason": reason},
                )
            if self.metrics is not None:
                self.metrics.signatures.labels(outcome="wrong_password").inc()
            locked = bool(limit) and failed + 1 >= limit
            raise SignatureRejectedError(
                f"signature refused for {actor.name}: {reason} (the attempt is recorded in the "
                "audit log)" + (f"; signing is now locked: {unlock}" if locked else "")
            )
        with self._write() as session:
            row = self._get(session, name, version)
            stage = Stage(row.stage)
            if stage in TERMINAL_STAGES or stage is Stage.ROLLED_BACK:
                raise ConflictError(
                    f"version {version} of {name!r} is {stage.value}: there is nothing to approve"
                )
            actual_sha = sha256_text(row.manifest)
            if actual_sha != row.manifest_sha256:
                raise ConflictError(
                    f"version {version} of {name!r}: its stored manifest no longer matches its "
                    "recorded SHA-256 (changed outside the registry); it cannot be signed"
                )
            approval_id = str(uuid.uuid4())
            now = self._clock()
            seq = self._append(
                session,
                actor=actor.name,
                action=SIGNATURE_APPLIED,
                subject=subject_of(name, version),
                details={
                    "approval_id": approval_id,
                    "meaning": body.meaning.value,
                    "signer_role": actor.role.value,
                    "manifest_sha256": actual_sha,
                    "stage": stage.value,
                    "comment": body.comment,
                },
            )
            approval = db.Approval(
                id=approval_id,
                version_id=row.id,
                signer=actor.name,
                signer_role=actor.role.value,
                meaning=body.meaning.value,
                manifest_sha256=actual_sha,
                stage_at_signing=stage.value,
                comment=body.comment,
                audit_seq=seq,
                signed_at=now,
            )
            session.add(approval)
        if self.metrics is not None:
            self.metrics.signatures.labels(outcome="signed").inc()
        return ApprovalOut(
            id=approval_id,
            signer=actor.name,
            signer_role=actor.role,
            meaning=body.meaning,
            signed_at=now,
            manifest_sha256=actual_sha,
            stage_at_signing=stage,
            comment=body.comment,
            valid=True,
            audit_seq=seq,
        )

    # --- datasets ------------------------------------------------------------------------------

    def create_dataset(
        self, body: DatasetCreate, *, actor: Principal
    ) -> tuple[DatasetVersionOut, bool]:
        """Create the next version of dataset ``body.name``; returns it and whether it was
        created.

        Every item's bytes must be stored already. The first version fixes the dataset's kind and
        label design. With ``body.idempotency_key``, repeating the same request returns the version
        it created (created=False); the same key with another body is a conflict.
        """
        name = body.name
        kind = body.kind
        content = _dataset_content(body)
        request_sha = sha256_text(canonical_json(content))
        key = body.idempotency_key
        with self._write() as session:
            dataset = session.get(db.DatasetRow, name)
            existing = _earlier_request(
                session,
                db.DatasetVersionRow,
                db.DatasetVersionRow.dataset_name == name,
                key,
                request_sha,
                f"dataset {name!r}",
            )
            if existing is not None:
                return self._dataset_version_out(session, existing), False
            if dataset is not None and (
                dataset.kind != kind.value or dataset.label_design != body.label_design
            ):
                raise ConflictError(
                    f"dataset {name!r} is of kind {dataset.kind} for label design "
                    f"{dataset.label_design!r}, fixed by its first version; this request is of "
                    f"kind {kind.value} for label design {body.label_design!r}: use another name"
                )
            self._check_items_stored(session, body)
            now = self._clock()
            if dataset is None:
                dataset = db.DatasetRow(
                    name=name,
                    kind=kind.value,
                    label_design=body.label_design,
                    created_by=actor.name,
                    created_at=now,
                )
                session.add(dataset)
                session.flush()
            latest = session.scalar(
                select(func.max(db.DatasetVersionRow.version)).where(
                    db.DatasetVersionRow.dataset_name == name
                )
            )
            version = (latest or 0) + 1
            manifest_text = canonical_json({**content, "name": name, "version": version})
            manifest_sha = sha256_text(manifest_text)
            counts = _dataset_counts(kind, content["classes"], content["items"])
            seq = self._append(
                session,
                actor=actor.name,
                action="dataset.created",
                subject=dataset_subject(name, version),
                details={
                    "kind": kind.value,
                    "label_design": body.label_design,
                    "manifest_sha256": manifest_sha,
                    "item_count": len(content["items"]),
                    "counts": counts,
                    "description": body.description,
                    "idempotency_key": key,
                    "role": actor.role.value,
                },
            )
            row = db.DatasetVersionRow(
                dataset_name=name,
                version=version,
                manifest=manifest_text,
                manifest_sha256=manifest_sha,
                item_count=len(content["items"]),
                counts=canonical_json(counts),
                description=body.description,
                idempotency_key=key,
                request_sha256=request_sha,
                audit_seq=seq,
                created_by=actor.name,
                created_at=now,
            )
            session.add(row)
            session.flush()
            out = self._dataset_version_out(session, row)
        if self.metrics is not None:
            self.metrics.dataset_versions.labels(kind=kind.value).inc()
            self.metrics.dataset_images.labels(kind=kind.value).inc(out.item_count)
        return out, True

    def _check_items_stored(self, session: Session, body: DatasetCreate) -> None:
        """InvalidError naming every item whose bytes the registry does not have."""
        stored = self._stored_sizes(session, [i.sha256 for i in body.items])
        missing = [
            i for i in body.items if i.sha256 not in stored and not self.blob_store.exists(i.sha256)
        ]
        if not missing:
            return
        shown = ", ".join(
            f"{i.sha256} ({i.filename})" if i.filename else i.sha256 for i in missing[:50]
        )
        more = f" and {len(missing) - 50} more" if len(missing) > 50 else ""
        raise InvalidError(
            f"{len(missing)} of the {len(body.items)} item(s) of dataset {body.name!r} are not "
            f"stored: upload them first with PUT /v1/artifacts/{{sha256}}; missing: {shown}{more}"
        )

    @staticmethod
    def _stored_sizes(session: Session, shas: Sequence[str]) -> dict[str, int]:
        """Sizes of the uploaded artifacts among ``shas`` (by SHA-256)."""
        sizes: dict[str, int] = {}
        unique = sorted(set(shas))
        for start in range(0, len(unique), _IN_CHUNK):
            chunk = unique[start : start + _IN_CHUNK]
            rows = session.execute(
                select(db.BlobRow.sha256, db.BlobRow.size_bytes).where(db.BlobRow.sha256.in_(chunk))
            ).all()
            sizes.update({sha: size for sha, size in rows})
        return sizes

    def list_datasets(
        self, *, kind: DatasetKind | None = None, label_design: str | None = None
    ) -> list[DatasetOut]:
        """Every dataset (optionally of one kind and label design), by name."""
        with self._read() as session:
            statement = select(db.DatasetRow).order_by(db.DatasetRow.name)
            if kind is not None:
                statement = statement.where(db.DatasetRow.kind == kind.value)
            if label_design is not None:
                statement = statement.where(db.DatasetRow.label_design == label_design)
            datasets = session.scalars(statement).all()
            stats = {
                name: (latest, count)
                for name, latest, count in session.execute(
                    select(
                        db.DatasetVersionRow.dataset_name,
                        func.max(db.DatasetVersionRow.version),
                        func.count(db.DatasetVersionRow.id),
                    ).group_by(db.DatasetVersionRow.dataset_name)
                ).all()
            }
        return [
            DatasetOut(
                name=d.name,
                kind=DatasetKind(d.kind),
                label_design=d.label_design,
                created_at=d.created_at,
                created_by=d.created_by,
                latest_version=stats.get(d.name, (0, 0))[0],
                versions=stats.get(d.name, (0, 0))[1],
            )
            for d in datasets
        ]

    def dataset_versions(self, name: str) -> DatasetVersionList:
        """The versions of a dataset, oldest first."""
        with self._read() as session:
            dataset = session.get(db.DatasetRow, name)
            if dataset is None:
                raise NotFoundError(f"dataset {name!r} not found")
            rows = session.scalars(
                select(db.DatasetVersionRow)
                .where(db.DatasetVersionRow.dataset_name == name)
                .order_by(db.DatasetVersionRow.version)
            ).all()
            return DatasetVersionList(
                name=name,
                kind=DatasetKind(dataset.kind),
                label_design=dataset.label_design,
                versions=[self._dataset_summary(dataset, row) for row in rows],
            )

    def get_dataset_version(self, name: str, version: int | None = None) -> DatasetVersionOut:
        """One version of a dataset with its items; ``version=None``: the latest."""
        with self._read() as session:
            if session.get(db.DatasetRow, name) is None:
                raise NotFoundError(f"dataset {name!r} not found")
            statement = select(db.DatasetVersionRow).where(
                db.DatasetVersionRow.dataset_name == name
            )
            if version is None:
                statement = statement.order_by(db.DatasetVersionRow.version.desc()).limit(1)
            else:
                statement = statement.where(db.DatasetVersionRow.version == version)
            row = session.scalar(statement)
            if row is None:
                latest = session.scalar(
                    select(func.max(db.DatasetVersionRow.version)).where(
                        db.DatasetVersionRow.dataset_name == name
                    )
                )
                raise NotFoundError(
                    f"version {version} of dataset {name!r} not found (latest: {latest})"
                )
            return self._dataset_version_out(session, row)

    @staticmethod
    def _dataset_summary(
        dataset: db.DatasetRow, row: db.DatasetVersionRow
    ) -> DatasetVersionSummary:
        return DatasetVersionSummary(
            name=row.dataset_name,
            version=row.version,
            kind=DatasetKind(dataset.kind),
            label_design=dataset.label_design,
            item_count=row.item_count,
            counts=json.loads(row.counts),
            description=row.description,
            manifest_sha256=row.manifest_sha256,
            created_by=row.created_by,
            created_at=row.created_at,
            audit_seq=row.audit_seq,
        )

    def _dataset_version_out(
        self, session: Session, row: db.DatasetVersionRow
    ) -> DatasetVersionOut:
        dataset = session.get(db.DatasetRow, row.dataset_name)
        if dataset is None:  # the foreign key forbids it
            raise NotFoundError(f"dataset {row.dataset_name!r} not found")
        manifest = json.loads(row.manifest)
        items = manifest["items"]
        sizes = self._stored_sizes(session, [i["sha256"] for i in items])
        return DatasetVersionOut(
            **self._dataset_summary(dataset, row).model_dump(),
            manifest_intact=sha256_text(row.manifest) == row.manifest_sha256,
            scope=DatasetScope(**manifest["scope"]),
            classes=manifest["classes"],
            items=[
                DatasetItemOut(
                    **i,
                    size_bytes=sizes.get(i["sha256"]),
                    download_path=f"/v1/artifacts/{i['sha256']}",
                )
                for i in items
            ],
        )

    # --- audit ---------------------------------------------------------------------------------

    def audit_records(self, after_seq: int = 0, limit: int = 100) -> list[AuditRecord]:
        with self._read() as session:
            rows = session.scalars(
                select(db.AuditRow)
                .where(db.AuditRow.seq > after_seq)
                .order_by(db.AuditRow.seq)
                .limit(limit)
            ).all()
            return [row.to_record() for row in rows]

    def verify_audit(self) -> AuditReport:
        """Verify the whole chain against its head (see :func:`.audit.verify`)."""
        with self._read() as session:
            head_row = session.get(db.AuditHeadRow, db.HEAD_ROW_ID)
            head = head_row.to_head() if head_row is not None else None
            records = [
                row.to_record()
                for row in session.scalars(select(db.AuditRow).order_by(db.AuditRow.seq))
            ]
        problems = verify_chain(records, head)
        if head is None:
            head = ChainHead(records[-1].seq, records[-1].hash) if records else ChainHead(0, "")
            problems.append(AuditProblem(0, "head-mismatch", "the chain head row is missing"))
        return AuditReport(records=len(records), head=head, problems=problems)

    def record_event(
        self,
        event_id: str,
        *,
        actor: str,
        action: str,
        subject: str,
        details: Mapping[str, Any],
    ) -> bool:
        """Append an audit record for a bus event once; False if the event was recorded before."""
        with self._write() as session:
            if session.get(db.ProcessedEvent, event_id) is not None:
                return False
            session.add(db.ProcessedEvent(event_id=event_id, processed_at=self._clock()))
            self._append(
                session, actor=actor, action=action, subject=subject, details=dict(details)
            )
            return True

    def current_stage(self, name: str, version: int) -> Stage | None:
        with self._read() as session:
            row = session.scalar(
                select(db.VersionRow.stage).where(
                    db.VersionRow.model_name == name, db.VersionRow.version == version
                )
            )
        return Stage(row) if row is not None else None


_Versioned = TypeVar("_Versioned", db.VersionRow, db.DatasetVersionRow)


def _earlier_request(  # noqa: PLR0917 -- private, called with the caller's arguments in order
    session: Session,
    row: type[_Versioned],
    owner: ColumnElement[bool],
    key: str | None,
    request_sha: str,
    what: str,
) -> _Versioned | None:
    """The version an earlier request with idempotency key ``key`` created under ``owner``, or
    None; the same key with another body is a conflict."""
    if key is None:
        return None
    existing = session.scalar(select(row).where(owner, row.idempotency_key == key))
    if existing is not None and existing.request_sha256 != request_sha:
        raise ConflictError(
            f"idempotency key {key!r} was used for version {existing.version} of {what} "
            "with a different body"
        )
    return existing
