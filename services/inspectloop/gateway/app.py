"""The gateway as a Ray Serve application: HTTP (FastAPI, OpenAPI at ``/docs``) and the gRPC
``Inspect`` service from ``proto/``, both in front of one ``InspectionGateway`` per replica.

HTTP API:

- ``POST /v1/inspect``: JSON, the ``InspectRequest`` fields with the image base64-encoded;
- ``POST /v1/inspect/upload``: multipart form, the same fields and the image as a file;
- ``GET /healthz``: 200 once the replica is up; ``GET /readyz``: 200 once it has read every
  line's routing and mode (503 before); ``GET /metrics``: the replica's Prometheus metrics.

A replica's constructor waits (``state_load_timeout_s``) until the routing and line modes are
read, so Serve sends it no request before; it fails to start when the bus cannot provide them.

Errors: 400 (malformed request or image), 413 (image too large), 415 (not PNG or JPEG), 503
(Triton or the routed model cannot answer), each with ``{"detail": reason}``. Over gRPC the same
cases are INVALID_ARGUMENT, RESOURCE_EXHAUSTED and UNAVAILABLE with the reason as details.

    python -m inspectloop.gateway.app    # serve until SIGTERM (INSPECTLOOP_* settings)

No ``from __future__ import annotations`` here: Serve's ingress hands the endpoints to FastAPI
from another namespace, where string annotations would not resolve and a JSON body would be
taken for a query parameter.
"""

import asyncio
import base64
import binascii
import ipaddress
import logging
import os
from typing import Annotated, Any

from fastapi import FastAPI, File, Form, HTTPException, Request, Response, UploadFile
from fastapi.responses import JSONResponse
from google.protobuf import json_format
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import BaseModel, Field
from ray import serve
from ray.serve.grpc_util import RayServegRPCContext

from inspectloop.core.errors import BackendUnavailableError, ConfigError, PermanentError
from inspectloop.core.readiness import LOOPBACK, is_port_open, poll_until
from inspectloop.gateway.settings import GatewaySection, GatewaySettings
from inspectloop.inspection.decision import grpc_code
from inspectloop.inspection.images import InvalidImageError
from inspectloop.v1.inspect_service_pb2 import InspectRequest, InspectResponse

log = logging.getLogger(__name__)

GRPC_SERVICER = "inspectloop.v1.inspect_service_pb2_grpc.add_InspectServicer_to_server"
APPLICATION = "gateway"

api = FastAPI(
    title="inspectloop gateway",
    description="Inspect one image from a line camera: decision, scores, model version and "
    "whether an operator must review the part.",
    version="1",
)


# A request body may carry the largest image base64-encoded (4/3) plus its form fields.
BODY_OVERHEAD_BYTES = 64 * 1024


@api.middleware("http")
async def refuse_oversized_bodies(request: Request, call_next: Any) -> Any:
    """413 from the declared Content-Length, before the body is read: an upload far over
    the image limit must not be spooled to the replica's disk first. A body without a length
    (chunked) is still held to the image limit after it is read."""
    limit = getattr(request.app.state, "max_body_bytes", None)
    length = request.headers.get("content-length", "")
    if limit is not None and length.isdigit() and int(length) > limit:
        return JSONResponse(
            status_code=413,
            content={"detail": f"request body of {length} bytes is over the limit of {limit}"},
        )
    return await call_next(request)


class InspectBody(BaseModel):
    """An inspect request as JSON."""

    line: str = Field(description="Line id, e.g. line-1.")
    station: str = ""
    camera: str = ""
    sku: str = ""
    label_design: str = Field(default="", description="Label design, if the line PC knows it.")
    request_id: str = Field(
        default="", description="Idempotency key: a retry with the same id is the same inspection."
    )
    content_type: str = Field(default="", description="image/png or image/jpeg.")
    image_base64: str = Field(description="The encoded image, base64.")


def _status(exc: Exception) -> int:
    if isinstance(exc, InvalidImageError):
        return exc.status
    if isinstance(exc, BackendUnavailableError):
        return 503
    return 400


def _answer(response: InspectResponse) -> dict[str, Any]:
    return json_format.MessageToDict(response, preserving_proto_field_name=True)


@serve.deployment(name="gateway", max_ongoing_requests=32)
@serve.ingress(api)
class GatewayDeployment:
    def __init__(self, settings: GatewaySettings) -> None:
        from inspectloop.core.blobstore import build_blob_store  # noqa: PLC0415
        from inspectloop.core.bus import build_bus  # noqa: PLC0415
        from inspectloop.core.logging import configure_logging  # noqa: PLC0415
        from inspectloop.core.registry_client import RegistryClient  # noqa: PLC0415
        from inspectloop.gateway.metrics import GatewayMetrics  # noqa: PLC0415
        from inspectloop.gateway.repository import RepositorySync  # noqa: PLC0415
        from inspectloop.gateway.service import (  # noqa: PLC0415
            FOLLOWED,
            PRODUCED,
            InspectionGateway,
        )
        from inspectloop.inspection.triton import TritonScorer  # noqa: PLC0415

        configure_logging(settings.logging, settings.service)
        api.state.max_body_bytes = settings.gateway.images.max_bytes * 4 // 3 + BODY_OVERHEAD_BYTES
        self.registry = CollectorRegistry()
        bus = build_bus(settings.bus, settings.service, self.registry)
        bus.ensure_topics([*FOLLOWED, *PRODUCED])
        triton = TritonScorer(settings.gateway.triton)
        metrics = GatewayMetrics(self.registry)
        sync = None
        models = settings.gateway.models
        if models.repository is not None:
            token = models.registry_token
            sync = RepositorySync(
                models.repository,
                RegistryClient(models.registry_url, token.get_secret_value() if token else None),
                triton,
                metrics,
                models.artifact_filename,
            )
        self.gateway = InspectionGateway(
            settings.gateway,
            bus=bus,
            blobs=build_blob_store(settings.blob_store),
            triton=triton,
            metrics=metrics,
            sync=sync,
        )
        self.gateway.follow()  # returns once the lines' routing and modes are read

    def _inspect(self, request: InspectRequest) -> InspectResponse:
        try:
            return self.gateway.inspect(request)
        except (PermanentError, BackendUnavailableError) as exc:
            raise HTTPException(status_code=_status(exc), detail=str(exc)) from None

    @api.post("/v1/inspect")
    def inspect_json(self, body: InspectBody) -> dict[str, Any]:
        try:
            image = base64.b64decode(body.image_base64, validate=True)
        except binascii.Error:
            raise HTTPException(400, detail="image_base64 is not valid base64") from None
        fields = body.model_dump(exclude={"image_base64"})
        return _answer(self._inspect(InspectRequest(image=image, **fields)))

    @api.post("/v1/inspect/upload")
    def inspect_upload(
        self,
        *,
        image: Annotated[UploadFile, File(description="The encoded image (PNG or JPEG).")],
        line: Annotated[str, Form()],
        station: Annotated[str, Form()] = "",
        camera: Annotated[str, Form()] = "",
        sku: Annotated[str, Form()] = "",
        label_design: Annotated[str, Form()] = "",
        request_id: Annotated[str, Form()] = "",
    ) -> dict[str, Any]:
        data = image.file.read(self.gateway.settings.images.max_bytes + 1)
        request = InspectRequest(
            line=line,
            station=station,
            camera=camera,
            sku=sku,
            label_design=label_design,
            request_id=request_id,
            image=data,
            content_type=image.content_type or "",
        )
        return _answer(self._inspect(request))

    @api.get("/healthz")
    def healthz(self) -> dict[str, str]:
        return {"status": "ok"}

    @api.get("/readyz")
    def readyz(self) -> dict[str, str]:
        if not self.gateway.loaded:
            raise HTTPException(503, detail="routing and line modes are still loading")
        return {"status": "ready"}

    @api.get("/metrics")
    def metrics(self) -> Response:
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)

    async def Inspect(  # noqa: N802 - the gRPC method's name
        self, request: InspectRequest, grpc_context: RayServegRPCContext
    ) -> InspectResponse:
        try:
            # In a thread, as FastAPI runs the HTTP endpoints: the replica's event loop must
            # stay free for the other requests while this one waits on Triton.
            return await asyncio.to_thread(self.gateway.inspect, request)
        except (PermanentError, BackendUnavailableError) as exc:
            grpc_context.set_code(grpc_code(_status(exc)))
            grpc_context.set_details(str(exc))
            return InspectResponse()

    def __del__(self) -> None:
        gateway = getattr(self, "gateway", None)
        if gateway is not None:
            gateway.close()


def serve_env(section: GatewaySection) -> dict[str, str]:
    """The environment the Ray processes need for ``section``: Serve reads these switches when
    its controller and replicas start, so they belong to the Ray cluster, not to the job."""
    # gRPC refuses a message over the largest image and its fields (RESOURCE_EXHAUSTED) before
    # anything decodes it; Serve's own limit is 2 GiB.
    env = {"RAY_SERVE_GRPC_MAX_MESSAGE_SIZE": str(section.images.max_bytes + BODY_OVERHEAD_BYTES)}
    if not section.direct_ingress:
        return env
    # Twice the replicas: a restarted replica takes the next port while its predecessor's
    # port is quarantined.
    span = 2 * section.replicas
    return env | {
        "RAY_SERVE_ENABLE_DIRECT_INGRESS": "1",
        "RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT": str(section.direct_http_port),
        "RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT": str(section.direct_http_port + span),
        "RAY_SERVE_DIRECT_INGRESS_MIN_GRPC_PORT": str(section.direct_grpc_port),
        "RAY_SERVE_DIRECT_INGRESS_MAX_GRPC_PORT": str(section.direct_grpc_port + span),
        # The handlers already move blocking work to threads (FastAPI's pool, to_thread).
        "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0",
    }


def init_local_ray(section: GatewaySection, **options: Any) -> None:
    """``ray.init(**options)`` for a local Ray whose processes inherit ``serve_env(section)``;
    this process's environment is left as it was."""
    import ray  # noqa: PLC0415

    env = serve_env(section)
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    try:
        ray.init(**options)
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def check_direct_ingress(section: GatewaySection, timeout_s: float = 60) -> None:
    """With direct ingress on, wait until the first replica listens on its direct ports; a Ray
    cluster started without ``serve_env`` never does, which is a deployment error."""
    if not section.direct_ingress:
        return
    ports = [section.direct_http_port] + ([section.direct_grpc_port] if section.grpc_port else [])
    host = LOOPBACK if _is_wildcard(section.http_host) else section.http_host
    try:
        poll_until(
            lambda: all(is_port_open(port, host) for port in ports),
            timeout=timeout_s,
            what=f"the gateway replica listening on ports {ports}",
        )
    except BackendUnavailableError:
        variables = ", ".join(f"{k}={v}" for k, v in serve_env(section).items())
        raise ConfigError(
            f"gateway.direct_ingress is on but nothing listens on ports {ports}: start "
            f"the Ray cluster with {variables}"
        ) from None


def _is_wildcard(host: str) -> bool:
    """Whether ``host`` means every interface (then loopback reaches it)."""
    try:
        return ipaddress.ip_address(host or "::").is_unspecified
    except ValueError:  # a host name
        return False


def start(settings: GatewaySettings) -> None:
    """Start Serve's proxies on the gateway's ports and deploy the gateway application."""
    from ray.serve.config import HTTPOptions, gRPCOptions  # noqa: PLC0415

    section = settings.gateway
    serve.start(
        http_options=HTTPOptions(host=section.http_host, port=section.http_port),
        grpc_options=gRPCOptions(
            port=section.grpc_port,
            grpc_servicer_functions=[GRPC_SERVICER] if section.grpc_port else [],
        ),
    )
    deployment: Any = GatewayDeployment  # a serve.Deployment once decorated
    # The settings object itself travels to the replicas (pickled by Ray): a JSON round trip
    # would mask its secrets.
    app = deployment.options(num_replicas=section.replicas).bind(settings)
    serve.run(app, name=APPLICATION, route_prefix="/")
    check_direct_ingress(section)


def main() -> None:
    """``python -m inspectloop.gateway.app``: serve on a local Ray until SIGTERM."""
    import signal  # noqa: PLC0415
    import threading  # noqa: PLC0415

    import ray  # noqa: PLC0415

    from inspectloop.core.logging import configure_logging  # noqa: PLC0415
    from inspectloop.core.settings import load_settings  # noqa: PLC0415

    settings = load_settings(GatewaySettings, service="gateway")
    configure_logging(settings.logging, settings.service)
    if os.environ.get("RAY_ADDRESS"):  # a cluster's Ray: started with serve_env already
        ray.init(include_dashboard=False)
    else:
        init_local_ray(settings.gateway, include_dashboard=False)
    start(settings)
    section = settings.gateway
    log.info(
        "gateway ready: http %s:%d, grpc %d%s",
        section.http_host,
        section.http_port,
        section.grpc_port,
        f"; direct ingress http {section.direct_http_port}, grpc {section.direct_grpc_port}"
        if section.direct_ingress
        else "",
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    serve.shutdown()  # type: ignore[no-untyped-call]
    ray.shutdown()


if __name__ == "__main__":
    main()
