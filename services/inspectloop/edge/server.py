"""The edge node's Inspect API: the gateway's gRPC ``Inspect`` service
(``proto/inspectloop/v1/inspect_service.proto``) answered by the node's own model. The line's
software calls one API whether the gateway or its own PC decides, and keeps getting answers
while the plant network is down (the inspections wait in the outbox)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC
from typing import TYPE_CHECKING

import grpc

from inspectloop.core.errors import ConfigError
from inspectloop.gateway.decision import answer_of, grpc_code
from inspectloop.gateway.images import InvalidImageError
from inspectloop.v1.inspect_service_pb2 import InspectRequest, InspectResponse
from inspectloop.v1.inspect_service_pb2_grpc import (
    InspectServicer,
    add_InspectServicer_to_server,
)

if TYPE_CHECKING:
    from inspectloop.edge.agent import EdgeAgent

# Room above the image limit for the request's other fields, so that an image a little over
# the limit gets the agent's message naming the limit rather than gRPC's own.
_REQUEST_OVERHEAD_BYTES = 1024 * 1024


class EdgeInspectService(InspectServicer):
    def __init__(self, agent: EdgeAgent) -> None:
        self._agent = agent

    def Inspect(  # noqa: N802 - the gRPC method's name
        self, request: InspectRequest, context: grpc.ServicerContext
    ) -> InspectResponse:
        line = self._agent.settings.line
        if request.line and request.line != line:
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"this edge node inspects line {line!r}, not {request.line!r}",
            )
        try:
            event = self._agent.inspect(
                request.image,
                content_type=request.content_type,
                request_id=request.request_id or None,
                station=request.station or None,
                camera=request.camera,
                sku=request.sku,
                label_design=request.label_design,
                captured_at=request.captured_at.ToDatetime(tzinfo=UTC)
                if request.HasField("captured_at")
                else None,
            )
        except InvalidImageError as exc:
            context.abort(grpc_code(exc.status), str(exc))
        return answer_of(event)


def serve_inspect(agent: EdgeAgent) -> grpc.Server:
    """Start the Inspect API on the agent's ``grpc_host:grpc_port``; the caller stops it."""
    settings = agent.settings
    limit = settings.images.max_bytes + _REQUEST_OVERHEAD_BYTES
    server = grpc.server(
        ThreadPoolExecutor(max_workers=settings.grpc_workers, thread_name_prefix="edge-inspect"),
        options=[("grpc.max_receive_message_length", limit)],
    )
    add_InspectServicer_to_server(EdgeInspectService(agent), server)  # type: ignore[no-untyped-call]
    address = f"{settings.grpc_host}:{settings.grpc_port}"
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError as exc:  # grpcio raises when it cannot bind
        raise ConfigError(f"edge Inspect API: cannot listen on {address}: {exc}") from exc
    if not bound:
        raise ConfigError(f"edge Inspect API: cannot listen on {address}")
    server.start()
    return server
