"""The edge node's Inspect API: the gateway's gRPC ``Inspect`` service
(``proto/inspectloop/v1/inspect_service.proto``) answered by the node's own model. The line's
software calls one API whether the gateway or its own PC decides, and keeps getting answers
while the plant network is down (the inspections wait in the outbox)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

import grpc

from inspectloop.core.errors import ConfigError
from inspectloop.edge.settings import EdgeSection
from inspectloop.inspection.decision import answer_of, grpc_code
from inspectloop.inspection.images import InvalidImageError
from inspectloop.v1.inspect_service_pb2 import InspectRequest, InspectResponse
from inspectloop.v1.inspect_service_pb2_grpc import (
    InspectServicer,
    add_InspectServicer_to_server,
)
from inspectloop.v1.inspection_pb2 import InspectionEvent


class Inspector(Protocol):
    """What the API serves: the edge agent."""

    settings: EdgeSection

    def inspect_request(self, request: InspectRequest) -> InspectionEvent: ...


# Room above the image limit for the request's other fields, so that an image a little over
# the limit gets the agent's message naming the limit rather than gRPC's own.
_REQUEST_OVERHEAD_BYTES = 1024 * 1024


class EdgeInspectService(InspectServicer):
    def __init__(self, agent: Inspector) -> None:
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
            own = InspectRequest()
            own.CopyFrom(request)
            own.line = line
            own.station = request.station or self._agent.settings.station
            event = self._agent.inspect_request(own)
        except InvalidImageError as exc:
            context.abort(grpc_code(exc.status), str(exc))
        return answer_of(event)


def serve_inspect(agent: Inspector) -> grpc.Server:
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
