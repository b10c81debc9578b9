"""``inspectloop registry``: serve the registry, verify its audit log, create users; and
``inspectloop datasets``: upload, list and show the registry's datasets over its HTTP API."""

from __future__ import annotations

import contextlib
import getpass
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from inspectloop.core.blobstore import build_blob_store
from inspectloop.core.datasets import DatasetKind, DatasetScope, DatasetVersionOut
from inspectloop.core.errors import ConfigError, InspectloopError
from inspectloop.core.logging import configure_logging
from inspectloop.core.registry_client import RegistryClient
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


# --- datasets (over the HTTP API) ---------------------------------------------------------------

datasets_app = typer.Typer(
    help="Datasets in the registry: challenge sets and label artwork (upload, list, show).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

# Not INSPECTLOOP_*: the services refuse INSPECTLOOP_ variables that are not their settings.
REGISTRY_URL_ENV = "ILR_REGISTRY_URL"
REGISTRY_TOKEN_ENV = "ILR_REGISTRY_TOKEN"  # noqa: S105 - the variable's name, not a token
DEFAULT_REGISTRY_URL = "http://127.0.0.1:8600"

RegistryUrlOption = Annotated[
    str,
    typer.Option(
        "--registry-url", envvar=REGISTRY_URL_ENV, help="Base URL of the registry's HTTP API."
    ),
]
TokenOption = Annotated[
    str | None,
    typer.Option(
        "--token",
        envvar=REGISTRY_TOKEN_ENV,
        help=f"API token (prefer the variable {REGISTRY_TOKEN_ENV}: options show in `ps`).",
        show_default=False,
    ),
]


@contextlib.contextmanager
def _client(url: str, token: str | None) -> Iterator[RegistryClient]:
    """A registry client; a refusal or an unreachable registry ends the command (exit 1)."""
    client = RegistryClient(url, token)
    try:
        yield client
    except InspectloopError as exc:
        raise _fail(str(exc), code=1) from exc
    finally:
        client.close()


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{label or '(no SKU)'} {n}" for label, n in counts.items())


def _describe(version: DatasetVersionOut) -> list[str]:
    lines = [
        f"dataset {version.name} version {version.version} ({version.kind.value}, label design "
        f"{version.label_design}): {version.item_count} items",
        f"  items per {'class' if version.kind is DatasetKind.CHALLENGE else 'SKU'}: "
        f"{_counts(version.counts)}",
        f"  created by {version.created_by} at {version.created_at.isoformat()}, "
        f"audit seq {version.audit_seq}",
        f"  manifest sha256 {version.manifest_sha256}"
        + ("" if version.manifest_intact else " (NOT INTACT: changed outside the registry)"),
    ]
    if version.scope.lines or version.scope.skus:
        lines.append(
            f"  scope: lines {', '.join(version.scope.lines) or 'any'}; "
            f"SKUs {', '.join(version.scope.skus) or 'any'}"
        )
    if version.description:
        lines.append(f"  description: {version.description}")
    return lines


@datasets_app.command("upload")
def upload_dataset(
    *,
    name: Annotated[str, typer.Option("--name", help="Dataset name (lowercase).")],
    design: Annotated[str, typer.Option("--design", help="The label design it is for.")],
    challenge: Annotated[
        Path | None,
        typer.Option(
            "--challenge",
            help="A challenge set: a directory with one subdirectory of PNG/JPEG images per "
            "class (good/, ink_smudge/, ...).",
            show_default=False,
        ),
    ] = None,
    artwork: Annotated[
        Path | None,
        typer.Option(
            "--artwork",
            help="Label artwork: an image file, or a directory of them (subdirectories: SKUs).",
            show_default=False,
        ),
    ] = None,
    lines: Annotated[
        list[str] | None,
        typer.Option("--line", help="A line it was made on (repeatable; none: any)."),
    ] = None,
    skus: Annotated[
        list[str] | None,
        typer.Option("--sku", help="A SKU it covers (repeatable; none: any)."),
    ] = None,
    description: Annotated[
        str, typer.Option("--description", help="Why this version exists (audited).")
    ] = "",
    idempotency_key: Annotated[
        str | None,
        typer.Option(
            "--idempotency-key",
            help="Key making a retry safe (default: derived from the files and options).",
            show_default=False,
        ),
    ] = None,
    registry_url: RegistryUrlOption = DEFAULT_REGISTRY_URL,
    token: TokenOption = None,
) -> None:
    """Upload a challenge set or label artwork as the next version of dataset NAME."""
    if (challenge is None) == (artwork is None):
        raise _fail("give exactly one of --challenge DIR and --artwork FILE")
    kind = DatasetKind.CHALLENGE if challenge is not None else DatasetKind.ARTWORK
    source = challenge if challenge is not None else artwork
    assert source is not None
    try:
        scope = DatasetScope(lines=lines or [], skus=skus or [])
    except ValueError as exc:
        raise _fail(f"invalid --line or --sku: {exc}") from exc
    with _client(registry_url, token) as client:
        result = client.upload_dataset(
            source,
            name=name,
            kind=kind,
            label_design=design,
            description=description,
            scope=scope,
            idempotency_key=idempotency_key,
        )
    version = result.version
    if result.created:
        typer.echo(f"created dataset {version.name} version {version.version}")
    else:
        typer.echo(
            f"dataset {version.name} version {version.version} exists already with these files "
            f"(idempotency key {result.idempotency_key}); nothing new was created"
        )
    for line in _describe(version)[1:]:
        typer.echo(line)
    typer.echo(f"  files: {result.files_uploaded} uploaded, {result.files_present} already stored")


@datasets_app.command("list")
def list_datasets(
    kind: Annotated[
        DatasetKind | None, typer.Option("--kind", help="Only datasets of this kind.")
    ] = None,
    design: Annotated[
        str | None, typer.Option("--design", help="Only datasets for this label design.")
    ] = None,
    registry_url: RegistryUrlOption = DEFAULT_REGISTRY_URL,
    token: TokenOption = None,
) -> None:
    """List the datasets: name, kind, label design, latest version."""
    with _client(registry_url, token) as client:
        found = client.datasets(kind=kind.value if kind else None, label_design=design)
    if not found:
        typer.echo("no datasets", err=True)
        return
    for d in found:
        typer.echo(
            f"{d.name}\t{d.kind.value}\tdesign {d.label_design}\tlatest v{d.latest_version}\t"
            f"{d.versions} version(s)"
        )


@datasets_app.command("show")
def show_dataset(
    name: Annotated[str, typer.Argument(help="Dataset name.")],
    version: Annotated[
        int | None,
        typer.Option("--version", min=1, help="Version number (default: the latest)."),
    ] = None,
    registry_url: RegistryUrlOption = DEFAULT_REGISTRY_URL,
    token: TokenOption = None,
) -> None:
    """Show one version of a dataset (default: the latest) and the dataset's versions."""
    with _client(registry_url, token) as client:
        record = client.dataset_version(name, version if version is not None else "latest")
        history = client.dataset_versions(name)
    for line in _describe(record):
        typer.echo(line)
    typer.echo(f"  versions: {', '.join(str(v.version) for v in history.versions)}")
