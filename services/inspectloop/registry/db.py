"""The registry's database: ORM tables, the engine factory and the write transaction.

One schema for SQLite (default, one machine) and PostgreSQL (production), through SQLAlchemy 2:
only portable column types (strings, integers, booleans, text, UTC timestamps). Tables are
created at start (:func:`ensure_schema`), together with the audit chain's head row.

Every change runs in :func:`write_session`, which takes the *chain lock* first: on SQLite the
transaction starts with ``BEGIN IMMEDIATE`` (the database's single write lock, waited for up to
the busy timeout); on PostgreSQL the head row of the audit chain is read ``FOR UPDATE``. So all
writers are serialised, version numbers are assigned without races, and two writers can never
fork the audit chain. Reads use ordinary (deferred) transactions and are never blocked on SQLite
(WAL mode).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    Engine,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    select,
    text,
)
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, IntegrityError, OperationalError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship
from sqlalchemy.pool import ConnectionPoolEntry
from sqlalchemy.types import TypeDecorator

from inspectloop.core.errors import BackendUnavailableError, ConfigError
from inspectloop.registry.audit import GENESIS_HASH, AuditRecord, ChainHead

__all__ = [
    "ApiToken",
    "Approval",
    "AuditHeadRow",
    "AuditRow",
    "Base",
    "BlobRow",
    "DatasetRow",
    "DatasetVersionRow",
    "ModelRow",
    "ProcessedEvent",
    "StageChange",
    "User",
    "VersionRow",
    "create_registry_engine",
    "ensure_schema",
    "lock_chain",
    "read_session",
    "redacted_url",
    "utcnow",
    "write_session",
]

logger = logging.getLogger(__name__)

_BEGIN_OPTION: Final = "inspectloop_sqlite_begin"
SQLITE_BUSY_TIMEOUT_MS: Final = 30_000
HEAD_ROW_ID: Final = 1


def utcnow() -> datetime:
    return datetime.now(UTC)


class UtcDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend (SQLite stores naive text)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(column_0_label)s",
            "uq": "uq_%(table_name)s_%(column_0_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )


class User(Base):
    __tablename__ = "registry_users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    # "scrypt$n$r$p$salt$hash" (base64 parts), or None: the user cannot sign.
    password_hash: Mapped[str | None] = mapped_column(String(255), default=None)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)

    tokens: Mapped[list[ApiToken]] = relationship(back_populates="user")


class ApiToken(Base):
    __tablename__ = "registry_api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("registry_users.id"), index=True)
    # Only the SHA-256 of the token is stored; the token itself is shown once, at creation.
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    label: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime, default=None)

    user: Mapped[User] = relationship(back_populates="tokens")


class ModelRow(Base):
    __tablename__ = "registry_models"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class VersionRow(Base):
    __tablename__ = "registry_versions"
    __table_args__ = (
        UniqueConstraint("model_name", "version", name="uq_registry_versions_name_version"),
        UniqueConstraint(
            "model_name", "idempotency_key", name="uq_registry_versions_name_idempotency"
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model_name: Mapped[str] = mapped_column(ForeignKey("registry_models.name"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    stage: Mapped[str] = mapped_column(String(16))
    parent_version: Mapped[int | None] = mapped_column(Integer, default=None)
    # Canonical JSON of everything registered about the version except its stage; immutable
    # except by attaching artifacts. Signatures bind its SHA-256.
    manifest: Mapped[str] = mapped_column(Text)
    manifest_sha256: Mapped[str] = mapped_column(String(64))
    idempotency_key: Mapped[str | None] = mapped_column(String(200), default=None)
    request_sha256: Mapped[str] = mapped_column(String(64))
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)

    approvals: Mapped[list[Approval]] = relationship(
        back_populates="version_row", order_by="Approval.signed_at"
    )
    stage_changes: Mapped[list[StageChange]] = relationship(
        back_populates="version_row", order_by="StageChange.id"
    )


class StageChange(Base):
    __tablename__ = "registry_stage_changes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("registry_versions.id"), index=True)
    from_stage: Mapped[str | None] = mapped_column(String(16))
    to_stage: Mapped[str] = mapped_column(String(16))
    actor: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(Text)
    approval_id: Mapped[str | None] = mapped_column(String(36), default=None)
    audit_seq: Mapped[int] = mapped_column(Integer)
    changed_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)

    version_row: Mapped[VersionRow] = relationship(back_populates="stage_changes")


class Approval(Base):
    """An electronic signature on one version: who, what it means, when, over which manifest."""

    __tablename__ = "registry_approvals"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("registry_versions.id"), index=True)
    signer: Mapped[str] = mapped_column(String(64))
    signer_role: Mapped[str] = mapped_column(String(16))
    meaning: Mapped[str] = mapped_column(String(32))
    manifest_sha256: Mapped[str] = mapped_column(String(64))
    stage_at_signing: Mapped[str] = mapped_column(String(16))
    comment: Mapped[str] = mapped_column(Text, default="")
    audit_seq: Mapped[int] = mapped_column(Integer)
    signed_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)

    version_row: Mapped[VersionRow] = relationship(back_populates="approvals")


class BlobRow(Base):
    """An artifact uploaded through the API (the bytes live in the blob store)."""

    __tablename__ = "registry_blobs"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    uri: Mapped[str] = mapped_column(Text)
    uploaded_by: Mapped[str] = mapped_column(String(64))
    uploaded_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class DatasetRow(Base):
    """A named dataset (challenge set or label artwork); its kind and label design are fixed by
    its first version."""

    __tablename__ = "registry_datasets"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), index=True)
    label_design: Mapped[str] = mapped_column(String(200), index=True)
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class DatasetVersionRow(Base):
    """One immutable version of a dataset: its canonical manifest (items, scope, classes)."""

    __tablename__ = "registry_dataset_versions"
    __table_args__ = (
        UniqueConstraint(
            "dataset_name", "version", name="uq_registry_dataset_versions_name_version"
        ),
        UniqueConstraint(
            "dataset_name",
            "idempotency_key",
            name="uq_registry_dataset_versions_name_idempotency",
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    dataset_name: Mapped[str] = mapped_column(ForeignKey("registry_datasets.name"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    # Canonical JSON of the version; never changed. Its SHA-256 is in the audit record.
    manifest: Mapped[str] = mapped_column(Text)
    manifest_sha256: Mapped[str] = mapped_column(String(64))
    item_count: Mapped[int] = mapped_column(Integer)
    # Canonical JSON {label: items}, so that listings need not parse every manifest.
    counts: Mapped[str] = mapped_column(Text)
    description: Mapped[str] = mapped_column(Text, default="")
    idempotency_key: Mapped[str | None] = mapped_column(String(200), default=None)
    request_sha256: Mapped[str] = mapped_column(String(64))
    audit_seq: Mapped[int] = mapped_column(Integer)
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class AuditRow(Base):
    """One audit record; see :mod:`inspectloop.registry.audit` for what the hash covers."""

    __tablename__ = "registry_audit"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    recorded_at: Mapped[str] = mapped_column(String(32))
    actor: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(64))
    subject: Mapped[str] = mapped_column(String(255))
    details: Mapped[str] = mapped_column(Text)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))

    def to_record(self) -> AuditRecord:
        return AuditRecord(
            seq=self.seq,
            time=self.recorded_at,
            actor=self.actor,
            action=self.action,
            subject=self.subject,
            details=self.details,
            prev_hash=self.prev_hash,
            hash=self.hash,
        )

    @classmethod
    def from_record(cls, record: AuditRecord) -> AuditRow:
        return cls(
            seq=record.seq,
            recorded_at=record.time,
            actor=record.actor,
            action=record.action,
            subject=record.subject,
            details=record.details,
            prev_hash=record.prev_hash,
            hash=record.hash,
        )


class AuditHeadRow(Base):
    """The single row holding the chain's last seq and hash; also the PostgreSQL chain lock."""

    __tablename__ = "registry_audit_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(Integer)
    hash: Mapped[str] = mapped_column(String(64))

    def to_head(self) -> ChainHead:
        return ChainHead(self.seq, self.hash)


class ProcessedEvent(Base):
    """Bus events already recorded, so that a redelivered event is recorded once."""

    __tablename__ = "registry_processed_events"

    event_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    processed_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


# --- engine ------------------------------------------------------------------------------------


def redacted_url(url: str | URL) -> str:
    """The URL with its password hidden, for logs and error messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparsable database URL>"


def _normalise_url(url: str) -> URL:
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ConfigError(f"invalid database URL {redacted_url(url)}: {exc}") from exc
    backend = parsed.get_backend_name()
    if backend in ("postgresql", "postgres"):
        # The project ships psycopg 3; a bare postgresql:// would pick psycopg2.
        driver = parsed.get_driver_name()
        if parsed.drivername in ("postgresql", "postgres") or driver == "psycopg2":
            parsed = parsed.set(drivername="postgresql+psycopg")
        return parsed
    if backend == "sqlite":
        return parsed
    raise ConfigError(
        f"unsupported database {redacted_url(url)}: use sqlite:///PATH or postgresql://..."
    )


def create_registry_engine(url: str, *, pool_size: int = 5, echo: bool = False) -> Engine:
    """An engine for ``url`` (sqlite:///PATH or postgresql://...), configured for the registry."""
    parsed = _normalise_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if not database or database == ":memory:":
            raise ConfigError(
                "the registry needs a SQLite file (sqlite:///PATH), not an in-memory database"
            )
        Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            parsed,
            echo=echo,
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "check_same_thread": False},
        )
        _install_sqlite_transactions(engine)
        return engine
    return create_engine(
        parsed, echo=echo, pool_size=pool_size, pool_pre_ping=True, pool_recycle=1800
    )


def _install_sqlite_transactions(engine: Engine) -> None:
    """Let SQLAlchemy, not the sqlite3 module, emit BEGIN (DEFERRED, or IMMEDIATE to write)."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
        # sqlite3's legacy mode would BEGIN only before DML; take transaction control instead.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        mode = connection.get_execution_options().get(_BEGIN_OPTION, "DEFERRED")
        if mode not in ("DEFERRED", "IMMEDIATE"):
            raise ValueError(f"invalid SQLite BEGIN mode {mode!r}")
        connection.exec_driver_sql(f"BEGIN {mode}")


def ensure_schema(engine: Engine) -> None:
    """Create missing tables and the audit chain's head row (safe to run on every start)."""
    try:
        Base.metadata.create_all(engine)
        with write_session(engine, lock=False) as session:
            if session.get(AuditHeadRow, HEAD_ROW_ID) is None:
                session.add(AuditHeadRow(id=HEAD_ROW_ID, seq=0, hash=GENESIS_HASH))
    except IntegrityError:
        # Another process created the head row at the same moment: that is fine.
        logger.debug("audit head row created concurrently")
    except OperationalError as exc:
        raise BackendUnavailableError(
            f"registry database {redacted_url(engine.url)} unavailable: {exc.orig}"
        ) from exc


# --- sessions ----------------------------------------------------------------------------------


@contextlib.contextmanager
def read_session(engine: Engine) -> Iterator[Session]:
    """A session for reads; closing it ends (rolls back) its transaction, and the objects it
    loaded stay readable, detached."""
    with Session(engine, expire_on_commit=False, autoflush=False) as session:
        yield session


@contextlib.contextmanager
def write_session(engine: Engine, *, lock: bool = True) -> Iterator[Session]:
    """A transaction holding the chain lock (see the module docstring); commits on success.

    ``lock=False`` is for schema set-up only, before the head row exists.
    """
    with Session(engine, expire_on_commit=False) as session:
        # Procuring the connection with the option makes the begin hook emit BEGIN IMMEDIATE.
        session.connection(execution_options={_BEGIN_OPTION: "IMMEDIATE"})
        try:
            if lock:
                lock_chain(session)
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


def lock_chain(session: Session) -> AuditHeadRow:
    """Take the chain lock in this transaction and return the head row (fresh from the DB)."""
    statement = select(AuditHeadRow).where(AuditHeadRow.id == HEAD_ROW_ID)
    if session.get_bind().dialect.name != "sqlite":
        statement = statement.with_for_update()
    head = session.execute(statement.execution_options(populate_existing=True)).scalar_one_or_none()
    if head is None:
        raise ConfigError("the registry schema is not initialised: run ensure_schema() first")
    return head


def ping(engine: Engine) -> None:
    """Raise BackendUnavailableError unless the database answers a trivial query."""
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except OperationalError as exc:
        raise BackendUnavailableError(
            f"registry database {redacted_url(engine.url)} unavailable: {exc.orig}"
        ) from exc
