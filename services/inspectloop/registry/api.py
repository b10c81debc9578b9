"""The registry's HTTP API (FastAPI): versions, lineage, artifacts, transitions, signatures, audit.

Authentication is a bearer token (``Authorization: Bearer ilr_...``) on every ``/v1`` endpoint;
``/healthz``, ``/readyz`` and ``/metrics`` are open. Refusals are JSON ``{"detail": "..."}``
with a status that says what went wrong:

* 400 the request cannot be right (an artifact whose bytes do not match its hash);
* 401 no token, an unknown or revoked token, or a wrong password for a signature;
* 403 the caller's role may not do this (the message names the roles that may), or a signer
  is locked out after ``max_failed_signatures`` failed signatures in a row;
* 404 unknown model, version, dataset or artifact;
* 409 the request conflicts with the current state: an invalid stage transition, a missing or
  outdated signature, a compare-and-set that lost, a duplicate;
* 413 an artifact over the blob store's size limit;
* 422 a body or parameter that fails validation (FastAPI's list of errors, each with its
  location and message), or that refers to something missing (an unknown parent version, an
  artifact that was never uploaded);
* 503 the database (or blob store) is unavailable: retry later.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any, Final

from fastapi import (
    APIRouter,
    Depends,
    FastAPI,
    Header,
    HTTPException,
    Path,
    Query,
    Request,
    Response,
)
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from sqlalchemy import Engine

from inspectloop import __version__
from inspectloop.core.blobstore import BlobCorruptError, BlobStore
from inspectloop.core.datasets import (
    DATASET_NAME_PATTERN,
    DatasetCreate,
    DatasetKind,
    DatasetList,
    DatasetVersionList,
    DatasetVersionOut,
)
from inspectloop.core.errors import BackendUnavailableError, PermanentError
from inspectloop.registry.auth import Permission, Principal, Role, allowed_roles
from inspectloop.registry.db import ping
from inspectloop.registry.lifecycle import Stage
from inspectloop.registry.metrics import RegistryMetrics
from inspectloop.registry.schemas import (
    MODEL_NAME_PATTERN,
    ApprovalIn,
    ApprovalOut,
    ArtifactsAttach,
    ArtifactUploadOut,
    AuditPage,
    AuditProblemOut,
    AuditRecordOut,
    AuditVerifyOut,
    ChainHeadOut,
    ErrorOut,
    HealthOut,
    LineageChain,
    ModelList,
    TokenOut,
    TransitionIn,
    UserCreate,
    UserOut,
    VersionCreate,
    VersionList,
    VersionOut,
    WhoAmI,
)
from inspectloop.registry.settings import RegistrySettings
from inspectloop.registry.store import RegistryError, RegistryStore

__all__ = ["create_app"]

logger = logging.getLogger(__name__)

MAX_AUDIT_PAGE: Final = 1000

_DESCRIPTION = """\
The model registry of inspectloop: model versions with their metrics, validation gates,
artifacts and lineage; stage transitions along the model lifecycle; electronic signatures
(21 CFR Part 11 style) that a plant can require before canary and production; and a
hash-chained audit log of every change.

**Authentication**: `Authorization: Bearer <token>`. Roles: `operator` (read), `quality`
(read, transitions, signatures, datasets), `service` (read, register versions, upload artifacts,
transitions; for the trainer and the rollout controller), `admin` (everything, incl. users
and the audit log).

**Datasets**: challenge sets (real units with seeded defects, labelled by class) and label
artwork, versioned per name; `quality` and `admin` create them after uploading their files.

**Lifecycle**: candidate → validated | rejected; validated → shadow | rejected | archived;
shadow → canary | rolled_back; canary → production | rolled_back; production → archived |
rolled_back; rolled_back → archived. rejected and archived are final.
"""

_ERRORS: Final[dict[int | str, dict[str, Any]]] = {
    401: {"model": ErrorOut, "description": "Missing, unknown or revoked API token."},
    403: {"model": ErrorOut, "description": "The caller's role may not do this."},
}
_NOT_FOUND: Final[dict[int | str, dict[str, Any]]] = {
    404: {"model": ErrorOut, "description": "Unknown model or version."}
}
_CONFLICT: Final[dict[int | str, dict[str, Any]]] = {
    409: {"model": ErrorOut, "description": "Conflicts with the version's current state."}
}

ModelName = Annotated[
    str,
    Path(
        pattern=MODEL_NAME_PATTERN,
        description="Model name: lowercase letters, digits, '.', '_', '-' (up to 128).",
    ),
]
VersionNumber = Annotated[int, Path(ge=1, description="Version number within the model.")]
DatasetName = Annotated[
    str,
    Path(
        pattern=DATASET_NAME_PATTERN,
        description="Dataset name: lowercase letters, digits, '.', '_', '-' (up to 128).",
    ),
]
DatasetVersionRef = Annotated[
    str,
    Path(
        pattern=r"^(latest|[1-9][0-9]{0,8})$",
        description="Version number within the dataset, or 'latest'.",
    ),
]
Sha256Path = Annotated[
    str, Path(pattern=r"^[0-9a-f]{64}$", description="Lowercase hex SHA-256 of the bytes.")
]


def _status_class(status: int) -> str:
    return f"{status // 100}xx"


_TAGS: Final[list[dict[str, Any]]] = [
    {"name": "models", "description": "Model versions, lineage and stage transitions."},
    {"name": "approvals", "description": "Electronic signatures on versions."},
    {"name": "artifacts", "description": "Content-addressed artifact storage."},
    {"name": "datasets", "description": "Challenge sets and label artwork, versioned."},
    {"name": "audit", "description": "The hash-chained audit log."},
    {"name": "users", "description": "Users, roles and API tokens."},
    {"name": "operations", "description": "Health, readiness and metrics."},
]


@dataclass(frozen=True)
class _Context:
    """What the routes need, kept on ``app.state.ctx`` by :func:`create_app`."""

    store: RegistryStore
    engine: Engine
    metrics_registry: CollectorRegistry
    metrics: RegistryMetrics
    max_upload: int


def _context(request: Request) -> _Context:
    ctx: _Context = request.app.state.ctx
    return ctx


Ctx = Annotated[_Context, Depends(_context)]

_bearer = HTTPBearer(
    auto_error=False,
    description="API token created by `inspectloop registry create-user` or POST /v1/users.",
)


def _principal(
    ctx: Ctx, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> Principal:
    if credentials is None:
        raise HTTPException(
            401,
            "missing API token: send 'Authorization: Bearer <token>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
    found = ctx.store.authenticate(credentials.credentials)
    if found is None:
        raise HTTPException(
            401,
            "invalid or revoked API token",
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
        )
    return found


def _require(permission: Permission, *alternatives: Permission) -> Callable[[Principal], Principal]:
    """A dependency that lets through callers holding ``permission`` or one of ``alternatives``."""
    accepted = (permission, *alternatives)

    def check(caller: Annotated[Principal, Depends(_principal)]) -> Principal:
        if not any(caller.can(p) for p in accepted):
            holders = {r for p in accepted for r in allowed_roles(p)}
            roles = ", ".join(r.value for r in Role if r in holders)
            raise HTTPException(
                403,
                f"user {caller.name!r} with role {caller.role.value} may not "
                f"{permission.value}; allowed roles: {roles}",
            )
        return caller

    return check


Caller = Annotated[Principal, Depends(_principal)]
Reader = Annotated[Principal, Depends(_require(Permission.READ))]
Registrar = Annotated[Principal, Depends(_require(Permission.REGISTER))]
# Quality users upload the files of the datasets they create.
Uploader = Annotated[Principal, Depends(_require(Permission.UPLOAD, Permission.CREATE_DATASET))]
DatasetCreator = Annotated[Principal, Depends(_require(Permission.CREATE_DATASET))]
Transitioner = Annotated[Principal, Depends(_require(Permission.TRANSITION))]
Signer = Annotated[Principal, Depends(_require(Permission.SIGN))]
Auditor = Annotated[Principal, Depends(_require(Permission.AUDIT))]
Admin = Annotated[Principal, Depends(_require(Permission.MANAGE_USERS))]

router = APIRouter()

# --- operations ----------------------------------------------------------------------------


@router.get("/healthz", tags=["operations"], response_model=HealthOut, summary="Liveness")
def healthz() -> HealthOut:
    """The process is up (it does not check the database)."""
    return HealthOut(status="ok")


@router.get(
    "/readyz",
    tags=["operations"],
    response_model=HealthOut,
    summary="Readiness",
    responses={503: {"model": HealthOut, "description": "The database is unreachable."}},
)
def readyz(ctx: Ctx, response: Response) -> HealthOut:
    """Ready when the database answers a query."""
    try:
        ping(ctx.engine)
    except BackendUnavailableError as exc:
        response.status_code = 503
        return HealthOut(status="unavailable", detail=str(exc))
    return HealthOut(status="ok")


@router.get(
    "/metrics",
    tags=["operations"],
    summary="Prometheus metrics",
    response_class=PlainTextResponse,
)
def prometheus_metrics(
    ctx: Ctx,
) -> Response:
    """The service's metrics in the Prometheus text format."""
    return Response(generate_latest(ctx.metrics_registry), media_type=CONTENT_TYPE_LATEST)


# --- users ---------------------------------------------------------------------------------


@router.get("/v1/whoami", tags=["users"], response_model=WhoAmI, responses=_ERRORS)
def whoami(caller: Caller) -> WhoAmI:
    """The user the token belongs to, its role and what it may do."""
    return WhoAmI(
        name=caller.name,
        role=caller.role,
        permissions=[p.value for p in Permission if caller.can(p)],
    )


@router.post(
    "/v1/users",
    tags=["users"],
    status_code=201,
    response_model=TokenOut,
    responses={**_ERRORS, **_CONFLICT},
    summary="Create a user (admin)",
)
def create_user(ctx: Ctx, body: UserCreate, caller: Admin) -> TokenOut:
    """Create a user with a role and its first API token (shown only in this response)."""
    return ctx.store.create_user(
        body.name, body.role, password=body.password, actor=caller.name, label="api"
    )


@router.get("/v1/users", tags=["users"], response_model=list[UserOut], responses=_ERRORS)
def list_users(ctx: Ctx, _caller: Admin) -> list[UserOut]:
    """Every user with role and whether it can sign (admin)."""
    return ctx.store.list_users()


@router.post(
    "/v1/users/{user}/tokens",
    tags=["users"],
    status_code=201,
    response_model=TokenOut,
    responses={**_ERRORS, **_NOT_FOUND},
    summary="Issue another API token (admin)",
)
def issue_token(
    ctx: Ctx,
    user: Annotated[str, Path(description="User name.")],
    caller: Admin,
    label: Annotated[str, Query(max_length=200, description="What the token is for.")] = "",
) -> TokenOut:
    """A new token for ``user``, shown only in this response."""
    return ctx.store.issue_token(user, actor=caller.name, label=label)


@router.post(
    "/v1/users/{user}/signature-unlock",
    tags=["users"],
    status_code=204,
    responses={**_ERRORS, **_NOT_FOUND},
    summary="Let a locked-out user sign again (admin)",
)
def unlock_signatures(
    ctx: Ctx, user: Annotated[str, Path(description="User name.")], caller: Admin
) -> Response:
    """After ``max_failed_signatures`` failed signatures in a row a user may not sign (403);
    this lifts the lock, in the audit trail as ``user.signature-unlocked``."""
    ctx.store.unlock_signatures(user, actor=caller.name)
    return Response(status_code=204)


@router.delete(
    "/v1/tokens/{token_id}",
    tags=["users"],
    status_code=204,
    responses={**_ERRORS, 404: {"model": ErrorOut, "description": "Unknown token."}},
    summary="Revoke an API token (admin)",
)
def revoke_token(
    ctx: Ctx, token_id: Annotated[int, Path(ge=1, description="Token id.")], caller: Admin
) -> Response:
    """Revoke a token at once; requests with it get 401 from now on."""
    ctx.store.revoke_token(token_id, actor=caller.name)
    return Response(status_code=204)


# --- models and versions -------------------------------------------------------------------


@router.get("/v1/models", tags=["models"], response_model=ModelList, responses=_ERRORS)
def list_models(ctx: Ctx, _caller: Reader) -> ModelList:
    """Every model with its latest version and its versions by stage."""
    return ModelList(models=ctx.store.list_models())


@router.post(
    "/v1/models/{name}/versions",
    tags=["models"],
    status_code=201,
    response_model=VersionOut,
    responses={
        200: {"model": VersionOut, "description": "Repeated request (same Idempotency-Key)."},
        **_ERRORS,
        **_CONFLICT,
        422: {"description": "Invalid body, unknown parent version or missing artifact."},
    },
    summary="Register a new version (service, admin)",
)
def register_version(
    *,
    ctx: Ctx,
    name: ModelName,
    body: VersionCreate,
    caller: Registrar,
    response: Response,
    idempotency_key: Annotated[
        str | None,
        Header(
            max_length=200,
            description="Makes a retried registration safe: the same key and body return "
            "the version created the first time (200).",
        ),
    ] = None,
) -> VersionOut:
    """Register the next version of model ``name`` (the registry numbers versions 1, 2, ...).

    Upload every artifact first (PUT /v1/artifacts/{sha256}).
    """
    version, created = ctx.store.register_version(
        name, body, actor=caller, idempotency_key=idempotency_key
    )
    response.status_code = 201 if created else 200
    response.headers["Location"] = f"/v1/models/{name}/versions/{version.version}"
    return version


@router.get(
    "/v1/models/{name}/versions",
    tags=["models"],
    response_model=VersionList,
    responses={**_ERRORS, **_NOT_FOUND},
)
def list_versions(
    ctx: Ctx,
    name: ModelName,
    _caller: Reader,
    stage: Annotated[Stage | None, Query(description="Only versions in this stage.")] = None,
) -> VersionList:
    """The versions of a model, oldest first."""
    return VersionList(name=name, versions=ctx.store.list_versions(name, stage))


@router.get(
    "/v1/models/{name}/versions/{version}",
    tags=["models"],
    response_model=VersionOut,
    responses={**_ERRORS, **_NOT_FOUND},
)
def get_version(ctx: Ctx, name: ModelName, version: VersionNumber, _caller: Reader) -> VersionOut:
    """One version with metrics, gates, artifacts, lineage, approvals and stage history."""
    return ctx.store.get_version(name, version)


@router.get(
    "/v1/models/{name}/versions/{version}/lineage",
    tags=["models"],
    response_model=LineageChain,
    responses={**_ERRORS, **_NOT_FOUND},
)
def get_lineage(ctx: Ctx, name: ModelName, version: VersionNumber, _caller: Reader) -> LineageChain:
    """The version and its ancestors (parent, grandparent, ...) with their lineage."""
    return ctx.store.lineage(name, version)


@router.post(
    "/v1/models/{name}/versions/{version}/artifacts",
    tags=["models"],
    response_model=VersionOut,
    responses={**_ERRORS, **_NOT_FOUND, **_CONFLICT},
    summary="Add artifacts to a version (service, admin)",
)
def attach_artifacts(
    ctx: Ctx, name: ModelName, version: VersionNumber, body: ArtifactsAttach, caller: Registrar
) -> VersionOut:
    """Add artifacts (candidate, validated or shadow only). The manifest changes, so
    signatures made before no longer count."""
    return ctx.store.attach_artifacts(name, version, body.artifacts, actor=caller)


@router.post(
    "/v1/models/{name}/versions/{version}/transitions",
    tags=["models"],
    response_model=VersionOut,
    responses={
        **_ERRORS,
        **_NOT_FOUND,
        409: {
            "model": ErrorOut,
            "description": "Not allowed by the lifecycle, a required signature is missing "
            "or outdated, or from_stage did not match.",
        },
    },
    summary="Change a version's stage (quality, service, admin)",
)
def transition(
    ctx: Ctx, name: ModelName, version: VersionNumber, body: TransitionIn, caller: Transitioner
) -> VersionOut:
    """Move the version along the lifecycle. Entering a stage listed in
    ``require_signature_for`` needs a valid signature ``approve-<stage>``."""
    return ctx.store.transition(name, version, body, actor=caller)


@router.post(
    "/v1/models/{name}/versions/{version}/approvals",
    tags=["approvals"],
    status_code=201,
    response_model=ApprovalOut,
    responses={
        401: {"model": ErrorOut, "description": "Bad token, or the password did not match."},
        403: _ERRORS[403],
        **_NOT_FOUND,
        **_CONFLICT,
    },
    summary="Sign a version electronically (quality, admin)",
)
def approve(
    ctx: Ctx, name: ModelName, version: VersionNumber, body: ApprovalIn, caller: Signer
) -> ApprovalOut:
    """An electronic signature: the signer re-enters their password; the record holds the
    signer, the meaning, the time and the SHA-256 of the version's manifest, so a later
    change to the version voids it. A wrong password is recorded in the audit log; after
    ``max_failed_signatures`` of them in a row the signer is locked out (403) until an admin
    unlocks it (``POST /v1/users/{user}/signature-unlock``) or sets its password."""
    return ctx.store.sign(name, version, body, actor=caller)


# --- artifacts -----------------------------------------------------------------------------


@router.put(
    "/v1/artifacts/{sha256}",
    tags=["artifacts"],
    response_model=ArtifactUploadOut,
    status_code=201,
    responses={
        200: {"model": ArtifactUploadOut, "description": "Already stored (idempotent)."},
        400: {"model": ErrorOut, "description": "The body does not hash to {sha256}."},
        **_ERRORS,
        413: {"model": ErrorOut, "description": "Larger than the blob store accepts."},
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
            },
        }
    },
    summary="Upload an artifact (service, quality, admin)",
)
async def put_artifact(
    ctx: Ctx, sha256: Sha256Path, request: Request, response: Response, caller: Uploader
) -> ArtifactUploadOut:
    """Store the body under its SHA-256, which must equal ``sha256``. Idempotent."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > ctx.max_upload:
        raise HTTPException(413, f"artifact of {declared} bytes exceeds {ctx.max_upload} bytes")
    chunks: list[bytes] = []
    received = 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > ctx.max_upload:
            raise HTTPException(413, f"artifact exceeds {ctx.max_upload} bytes")
        chunks.append(chunk)
    result = await run_in_threadpool(
        ctx.store.store_artifact, sha256, b"".join(chunks), actor=caller.name
    )
    response.status_code = 201 if result.created else 200
    return result


@router.get(
    "/v1/artifacts/{sha256}",
    tags=["artifacts"],
    response_class=Response,
    responses={
        200: {
            "content": {"application/octet-stream": {}},
            "description": "The bytes; ETag is the SHA-256.",
        },
        304: {"description": "If-None-Match matched: the client has these bytes."},
        **_ERRORS,
        404: {"model": ErrorOut, "description": "No artifact with this hash."},
    },
    summary="Download an artifact",
)
def get_artifact(
    ctx: Ctx,
    sha256: Sha256Path,
    _caller: Reader,
    if_none_match: Annotated[str | None, Header()] = None,
) -> Response:
    """The artifact's bytes, verified against their hash before they are sent."""
    etag = f'"{sha256}"'
    headers = {"ETag": etag, "Cache-Control": "private, max-age=31536000, immutable"}
    if if_none_match is not None and etag in [t.strip() for t in if_none_match.split(",")]:
        if not ctx.store.artifact_exists(sha256):
            raise HTTPException(404, f"artifact {sha256} not found")
        return Response(status_code=304, headers=headers)
    data = ctx.store.read_artifact(sha256)
    return Response(data, media_type="application/octet-stream", headers=headers)


@router.head("/v1/artifacts/{sha256}", tags=["artifacts"], include_in_schema=False)
def head_artifact(ctx: Ctx, sha256: Sha256Path, _caller: Reader) -> Response:
    """200 if stored, else 404 (lets an uploader skip what the registry has)."""
    if not ctx.store.artifact_exists(sha256):
        return Response(status_code=404)
    return Response(status_code=200, headers={"ETag": f'"{sha256}"'})


# --- datasets ------------------------------------------------------------------------------


@router.post(
    "/v1/datasets",
    tags=["datasets"],
    status_code=201,
    response_model=DatasetVersionOut,
    responses={
        200: {
            "model": DatasetVersionOut,
            "description": "Repeated request (same idempotency_key and body).",
        },
        **_ERRORS,
        409: {
            "model": ErrorOut,
            "description": "The kind or label design differs from the dataset's first version, "
            "or the idempotency_key was used with another body.",
        },
        422: {"description": "Invalid body (e.g. an unknown class), or an item not uploaded."},
    },
    summary="Create a dataset version (quality, admin)",
)
def create_dataset(
    ctx: Ctx, body: DatasetCreate, caller: DatasetCreator, response: Response
) -> DatasetVersionOut:
    """Create the next version of dataset ``body.name`` (numbered 1, 2, ... per name) from
    files uploaded before with PUT /v1/artifacts/{sha256}. Its first version fixes the
    dataset's kind and label design. The creation is an audit record holding the SHA-256 of
    the version's manifest."""
    version, created = ctx.store.create_dataset(body, actor=caller)
    response.status_code = 201 if created else 200
    response.headers["Location"] = f"/v1/datasets/{version.name}/versions/{version.version}"
    return version


@router.get("/v1/datasets", tags=["datasets"], response_model=DatasetList, responses=_ERRORS)
def list_datasets(
    ctx: Ctx,
    _caller: Reader,
    kind: Annotated[DatasetKind | None, Query(description="Only datasets of this kind.")] = None,
    label_design: Annotated[
        str | None, Query(max_length=200, description="Only datasets for this label design.")
    ] = None,
) -> DatasetList:
    """Every dataset with its latest version, by name."""
    return DatasetList(datasets=ctx.store.list_datasets(kind=kind, label_design=label_design))


@router.get(
    "/v1/datasets/{name}",
    tags=["datasets"],
    response_model=DatasetVersionList,
    responses={**_ERRORS, 404: {"model": ErrorOut, "description": "Unknown dataset."}},
)
def list_dataset_versions(ctx: Ctx, name: DatasetName, _caller: Reader) -> DatasetVersionList:
    """The versions of a dataset, oldest first, with their item counts per label."""
    return ctx.store.dataset_versions(name)


@router.get(
    "/v1/datasets/{name}/versions/{version}",
    tags=["datasets"],
    response_model=DatasetVersionOut,
    responses={
        **_ERRORS,
        404: {"model": ErrorOut, "description": "Unknown dataset or version."},
    },
)
def get_dataset_version(
    ctx: Ctx, name: DatasetName, version: DatasetVersionRef, _caller: Reader
) -> DatasetVersionOut:
    """One version with its items (each downloadable from GET /v1/artifacts/{sha256});
    ``manifest_intact`` is recomputed from the stored manifest."""
    return ctx.store.get_dataset_version(name, None if version == "latest" else int(version))


# --- audit ---------------------------------------------------------------------------------


@router.get(
    "/v1/audit",
    tags=["audit"],
    response_model=AuditPage,
    responses=_ERRORS,
    summary="Read the audit log (admin)",
)
def audit(
    ctx: Ctx,
    _caller: Auditor,
    after_seq: Annotated[int, Query(ge=0, description="Records after this seq.")] = 0,
    limit: Annotated[
        int, Query(ge=1, le=MAX_AUDIT_PAGE, description="Most records returned.")
    ] = 100,
) -> AuditPage:
    """Audit records in seq order, a page at a time."""
    records = ctx.store.audit_records(after_seq, limit)
    return AuditPage(
        records=[
            AuditRecordOut(
                seq=r.seq,
                time=r.time,
                actor=r.actor,
                action=r.action,
                subject=r.subject,
                details=r.details_dict(),
                prev_hash=r.prev_hash,
                hash=r.hash,
            )
            for r in records
        ],
        next_after_seq=records[-1].seq if len(records) == limit else None,
    )


@router.get(
    "/v1/audit/verify",
    tags=["audit"],
    response_model=AuditVerifyOut,
    responses=_ERRORS,
    summary="Verify the audit chain (admin)",
)
def audit_verify(ctx: Ctx, _caller: Auditor) -> AuditVerifyOut:
    """Recompute every hash and link; ``ok`` is false with the problems found (edited,
    removed, reordered or truncated records), each naming its seq."""
    report = ctx.store.verify_audit()
    return AuditVerifyOut(
        ok=report.ok,
        records=report.records,
        head=ChainHeadOut(seq=report.head.seq, hash=report.head.hash),
        problems=[
            AuditProblemOut(seq=p.seq, kind=p.kind, message=p.message) for p in report.problems
        ],
    )


def create_app(
    settings: RegistrySettings,
    engine: Engine,
    blob_store: BlobStore,
    *,
    metrics_registry: CollectorRegistry | None = None,
    store: RegistryStore | None = None,
) -> FastAPI:
    """The registry's FastAPI application over ``engine`` and ``blob_store``.

    The caller owns the engine (and creates the schema with :func:`.db.ensure_schema`);
    ``metrics_registry`` receives the ``inspectloop_registry_*`` metrics served on /metrics.
    ``store`` replaces the store built from the other arguments (the service shares its own).
    """
    registry = metrics_registry if metrics_registry is not None else CollectorRegistry()
    metrics = RegistryMetrics(registry)
    if store is None:
        store = RegistryStore(
            engine,
            blob_store,
            require_signature_for=settings.registry.require_signature_for,
            require_artifacts_present=settings.registry.require_artifacts_present,
            max_failed_signatures=settings.registry.max_failed_signatures,
            metrics=metrics,
        )
    app = FastAPI(
        title="inspectloop model registry",
        version=__version__,
        description=_DESCRIPTION,
        openapi_tags=_TAGS,
    )
    app.state.ctx = _Context(
        store=store,
        engine=engine,
        metrics_registry=registry,
        metrics=metrics,
        max_upload=settings.blob_store.max_blob_bytes,
    )
    app.include_router(router)
    _install_handlers(app, metrics)
    return app


def _install_handlers(app: FastAPI, metrics: RegistryMetrics) -> None:
    # --- errors and metrics --------------------------------------------------------------------

    @app.exception_handler(RegistryError)
    async def _registry_error(_request: Request, exc: RegistryError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=exc.status)

    @app.exception_handler(BackendUnavailableError)
    async def _unavailable(_request: Request, exc: BackendUnavailableError) -> JSONResponse:
        logger.warning("backend unavailable: %s", exc)
        return JSONResponse(
            {"detail": f"temporarily unavailable: {exc}"},
            status_code=503,
            headers={"Retry-After": "5"},
        )

    @app.exception_handler(BlobCorruptError)
    async def _corrupt(_request: Request, exc: BlobCorruptError) -> JSONResponse:
        logger.error("corrupt artifact: %s", exc)
        return JSONResponse({"detail": str(exc)}, status_code=500)

    @app.middleware("http")
    async def _observe(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        started = time.perf_counter()
        status = 500
        try:
            response = await call_next(request)
            status = response.status_code
            return response
        finally:
            route = request.scope.get("route")
            kind = getattr(route, "name", None) or "unmatched"
            metrics.requests.labels(kind=kind, outcome=_status_class(status)).inc()
            metrics.request_seconds.labels(kind=kind).observe(time.perf_counter() - started)

    @app.exception_handler(PermanentError)
    async def _permanent(_request: Request, exc: PermanentError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=400)
