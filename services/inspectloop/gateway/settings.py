"""Settings of the inspection gateway."""

from __future__ import annotations

from pydantic import Field, SecretStr, model_validator

from inspectloop.core.settings import AbsolutePath, CommonSettings, Section
from inspectloop.inspection.settings import DecisionSettings, ImageLimits, TritonSettings


class ModelSyncSettings(Section):
    repository: AbsolutePath | None = Field(
        default=None,
        description="Triton's model repository, shared with the gateway: routed versions it "
        "lacks are fetched from the registry into it and loaded. None: the repository is "
        "managed elsewhere and the gateway only checks readiness.",
    )
    registry_url: str = Field(
        default="http://127.0.0.1:8600", description="Base URL of the model registry."
    )
    registry_token: SecretStr | None = Field(
        default=None, description="API token of the gateway's account in the registry."
    )
    retry_s: float = Field(
        default=15.0,
        gt=0,
        description="How often routed versions missing from the repository are tried again "
        "after the registry or Triton could not be reached (refused versions never are).",
    )
    verify_routing: bool = Field(
        default=True,
        description="Apply a Routing only when the registry approved each version it names for "
        "its role (stable: production, canary: canary, shadow: shadow); others are "
        "dead-lettered and counted in routing_refused_events_total. Checked with the registry "
        "the repository is filled from (needs repository).",
    )
    artifact_filename: str = Field(
        default="triton-python.tar.gz",
        description="Which of a version's Triton repository artifacts to serve: "
        "triton-python.tar.gz (the Python backend, as here) or triton-onnx.tar.gz (NVIDIA's "
        "ONNX Runtime backend).",
    )


class GatewaySection(Section):
    model_name: str = Field(
        default="label-inspector",
        description="Model served when no routing names one (its stable version: default_version).",
    )
    default_version: str = Field(
        default="1", description="Stable version for lines that no routing event names yet."
    )
    input_size: int = Field(
        default=128, ge=16, le=1024, description="Side in pixels of the models' input images."
    )
    http_host: str = Field(default="127.0.0.1", description="Address the HTTP API listens on.")
    http_port: int = Field(default=8700, ge=1, le=65535, description="Port of the HTTP API.")
    grpc_port: int = Field(
        default=9700, ge=0, le=65535, description="Port of the gRPC Inspect service; 0: none."
    )
    replicas: int = Field(default=1, ge=1, description="Ray Serve replicas of the gateway.")
    direct_ingress: bool = Field(
        default=False,
        description="Ray Serve's direct ingress: each gateway replica also listens itself, "
        "on direct_http_port and direct_grpc_port (the next ports for more replicas on one "
        "node), so that a line PC's call skips Serve's proxy; user code runs on the replica's "
        "event loop. About 8 ms less per request on a 2-core machine. Ray reads it from the "
        "environment of its processes: a local Ray gets it from the gateway, a Ray cluster the "
        "gateway joins (RAY_ADDRESS) must be started with serve_env()'s variables.",
    )
    direct_http_port: int = Field(
        default=8710, ge=1, le=65535, description="First direct-ingress HTTP port."
    )
    direct_grpc_port: int = Field(
        default=9710, ge=1, le=65535, description="First direct-ingress gRPC port."
    )
    state_load_timeout_s: float = Field(
        default=120.0,
        gt=0,
        description="How long a starting replica waits to have read every line's routing and "
        "mode from the bus; until then it answers 503, past this it fails to start.",
    )
    images: ImageLimits = Field(default_factory=ImageLimits, description="Image validation.")
    decision: DecisionSettings = Field(
        default_factory=DecisionSettings, description="Review thresholds of the line modes."
    )
    triton: TritonSettings = Field(default_factory=TritonSettings, description="Triton.")
    models: ModelSyncSettings = Field(
        default_factory=ModelSyncSettings, description="Model repository sync from the registry."
    )

    @model_validator(mode="after")
    def _check_sides(self) -> GatewaySection:
        if self.images.min_side > self.images.max_side:
            raise ValueError("gateway.images.min_side must not exceed gateway.images.max_side")
        return self


class GatewaySettings(CommonSettings):
    gateway: GatewaySection = Field(
        default_factory=GatewaySection, description="The inspection gateway."
    )
