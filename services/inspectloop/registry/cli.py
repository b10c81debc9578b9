"""``inspectloop registry``: serve the registry, verify its audit log, create users."""

from __future__ import annotations

import getpass
import sys
from pathlib import Path
from typing import Annotated

import typer
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from inspectloop.core.blobstore import build_blob_store
from inspectloop.core.errors import ConfigError, InspectloopError
from inspectloop.core.logging import configure_logging
from inspectloop.core.settings import load_settings
from inspectloop.registry.audit import ChainHead
from inspectloop.registry.auth import MIN_PASSWORD_LENGTH, Role, valid_user_name
from inspectloop.registry.db import create_registry_engine, ensure_schema, redacted_url
from inspectloop.registry.service import serve as serve_registry
from inspectloop.registry.settings import RegistrySettings
from inspectloop.registry.store import RegistryError, RegistryStore

registry_app = typer.Typer(
    help="Model registry: HTTP API, audit log verification, users.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

DatabaseUrlOption = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        help="SQLAlchemy URL of the registry database (default: INSPECTLOOP_REGISTRY__DATABASE_URL "
        "or sqlite:///<data_dir>/registry.sqlite3).",
    ),
]


def _fail(message: str, code: int = 2) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code=code)


def _settings(database_url: str | None) -> RegistrySettings:
    try:
        settings = load_settings(RegistrySettings)
    except InspectloopError as exc:
        raise _fail(str(exc)) from exc
    if database_url is not None:
        section = settings.registry.model_copy(update={"database_url": database_url})
        settings = settings.model_copy(update={"registry": section})
    return settings


def _store(settings: RegistrySettings, *, create: bool) -> RegistryStore:
    """A store on the configured database; ``create=False`` refuses a database that is not
    there (verifying must not create an empty, trivially valid one)."""
    url = make_url(settings.database_url)
    if not create and url.get_backend_name() == "sqlite":
        path = Path(url.database or "")
        if not path.is_file():
            raise ConfigError(f"no registry database at {path}")
    engine = create_registry_engine(settings.database_url)
    if create:
        ensure_schema(engine)
    return RegistryStore(engine, build_blob_store(settings.blob_store))


def _cli_actor() -> str:
    """Who ran the command, for the audit log."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


def _parse_head(text: str) -> ChainHead:
    seq, sep, digest = text.partition(":")
    if not sep or not seq.isdigit() or len(digest) != 64:
        raise typer.BadParameter("expected SEQ:SHA256, e.g. 42:3f5a... (64 hex digits)")
    return ChainHead(int(seq), digest.lower())


@registry_app.command()
def serve(
    host: Annotated[
        str | None, typer.Option(help="Listen address (default from settings).")
    ] = None,
    port: Annotated[int | None, typer.Option(help="Port (default from settings).")] = None,
) -> None:
    """Run the registry's HTTP API (and its bus consumer) until interrupted."""
    try:
        settings = load_settings(RegistrySettings)
    except InspectloopError as exc:
        raise _fail(str(exc)) from exc
    updates = {k: v for k, v in (("host", host), ("port", port)) if v is not None}
    if updates:
        settings = settings.model_copy(
            update={"registry": settings.registry.model_copy(update=updates)}
        )
    configure_logging(settings.logging, settings.service)
    try:
        serve_registry(settings)
    except InspectloopError as exc:
        raise _fail(str(exc), code=1) from exc


@registry_app.command("verify-audit")
def verify_audit(
    database_url: DatabaseUrlOption = None,
    expect_head: Annotated[
        str | None,
        typer.Option(
            "--expect-head",
            help="SEQ:SHA256 of a head printed earlier and kept elsewhere: also fail unless the "
            "chain still contains that record unchanged (detects a fully rewritten chain).",
        ),
    ] = None,
) -> None:
    """Verify the hash chain of the audit log; exit code 1 and a report if it was tampered with."""
    anchor = _parse_head(expect_head) if expect_head else None
    settings = _settings(database_url)
    try:
        store = _store(settings, create=False)
        try:
            report = store.verify_audit()
            anchored = store.audit_records(anchor.seq - 1, 1) if anchor and anchor.seq > 0 else []
        finally:
            store.engine.dispose()
    except SQLAlchemyError as exc:
        raise _fail(f"cannot read the audit log: {exc}") from exc
    except InspectloopError as exc:
        raise _fail(str(exc)) from exc
    problems = [str(p) for p in report.problems]
    if anchor is not None and anchor.seq > 0:
        if not anchored or anchored[0].seq != anchor.seq:
            problems.append(f"seq {anchor.seq}: anchor: the anchored record is missing")
        elif anchored[0].hash != anchor.hash:
            problems.append(
                f"seq {anchor.seq}: anchor: hash {anchored[0].hash} differs from the anchored "
                f"{anchor.hash}: the chain was rewritten"
            )
    where = redacted_url(settings.database_url)
    if problems:
        typer.echo(
            f"audit log of {where} FAILED verification: {len(problems)} problem(s) in "
            f"{report.records} records",
        )
        for problem in problems:
            typer.echo(f"  {problem}")
        raise typer.Exit(code=1)
    typer.echo(
        f"audit log of {where} OK: {report.records} records, head seq {report.head.seq} "
        f"hash {report.head.hash}"
    )


@registry_app.command("create-user")
def create_user(
    name: Annotated[str, typer.Option("--name", help="User name (lowercase).")],
    role: Annotated[Role, typer.Option("--role", help="Role of the user.")],
    password_stdin: Annotated[
        bool,
        typer.Option(
            "--password-stdin",
            help="Read a signature password (first line of stdin) for quality/admin users.",
        ),
    ] = False,
    database_url: DatabaseUrlOption = None,
) -> None:
    """Create a user and print its new API token on stdout (shown only once)."""
    if not valid_user_name(name):
        raise _fail(
            f"invalid user name {name!r}: lowercase letter first, then letters, digits, . _ -"
        )
    password: str | None = None
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
        if len(password) < MIN_PASSWORD_LENGTH:
            raise _fail(f"the password needs at least {MIN_PASSWORD_LENGTH} characters")
    settings = _settings(database_url)
    try:
        store = _store(settings, create=True)
        try:
            issued = store.create_user(
                name, role, password=password, actor=_cli_actor(), label="cli"
            )
        finally:
            store.engine.dispose()
    except RegistryError as exc:
        raise _fail(str(exc), code=1) from exc
    except (InspectloopError, ValueError) as exc:
        raise _fail(str(exc)) from exc
    typer.echo(
        f"created user {issued.user} ({issued.role.value}), token id {issued.token_id}", err=True
    )
    typer.echo(issued.token)
