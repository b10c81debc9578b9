"""Settings of the edge agent on a line PC (``INSPECTLOOP_EDGE__...``)."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator

from inspectloop.core.settings import AbsolutePath, CommonSettings, Section
from inspectloop.inspection.settings import DecisionSettings, ImageLimits

# Node and line ids key the bus and label metrics: the gateway's bounded alphabet.
ID_PATTERN = r"^[A-Za-z0-9._-]{1,64}$"


class EdgeSection(Section):
    node_id: str = Field(
        default_factory=socket.gethostname,
        pattern=ID_PATTERN,
        description="Stable id of this edge node (heartbeat key), e.g. 'line-07-pc-2'; "
        "defaults to the host name.",
    )
    line: str = Field(
        default="line-1", pattern=ID_PATTERN, description="The line this node inspects."
    )
    station: str = Field(default="", max_length=64, description="Station on the line.")
    wave: int = Field(
        default=1,
        ge=1,
        description="Rollout wave of this node (1 = pilot nodes): it runs a canary once the "
        "routing's edge_wave reaches it.",
    )
    model_name: str = Field(
        default="label-inspector",
        description="Model the node serves until a routing for its line names one.",
    )
    verify_routing: bool = Field(
        default=True,
        description="Download a routed version only when the registry approved it for the role "
        "this node runs it in (stable: production, canary: canary, at some point of its "
        "history); otherwise it is refused (artifact_rejections, reason 'unapproved') and the "
        "node keeps its model.",
    )
    artifact_kind: Literal["onnx_int8", "onnx"] = Field(
        default="onnx_int8",
        description="Which artifact of a version the node runs: the int8 ONNX built for edge "
        "CPUs, or the float ONNX.",
    )
    registry_url: str = Field(
        default="http://127.0.0.1:8600", description="Base URL of the model registry."
    )
    registry_token: SecretStr | None = Field(
        default=None, description="API token of the node's account in the registry (read)."
    )
    public_key_file: AbsolutePath | None = Field(
        default=None,
        description="PEM Ed25519 public key. When set, an artifact is installed only with a "
        "valid detached signature (artifact '<filename>.sig' of the same version, the raw "
        "64-byte Ed25519 signature of the artifact's bytes); unset: SHA-256 check only.",
    )
    store_dir: AbsolutePath | None = Field(
        default=None,
        description="Where verified models are kept (versions/, current and previous "
        "symlinks, state); defaults to <data_dir>/edge/models.",
    )
    outbox_path: AbsolutePath | None = Field(
        default=None,
        description="SQLite outbox of events not yet acknowledged by the bus; defaults to "
        "<data_dir>/edge/outbox.sqlite3.",
    )
    heartbeat_interval_s: float = Field(
        default=10.0, gt=0, description="Seconds between two heartbeats."
    )
    loop_interval_s: float = Field(
        default=0.5,
        gt=0,
        description="How often the agent looks for a routing to apply and a heartbeat that is due.",
    )
    sync_retry_s: float = Field(
        default=30.0,
        gt=0,
        description="Seconds before a routing whose artifact could not be installed is tried "
        "again (registry down, artifact refused).",
    )
    drain_batch: int = Field(
        default=200, ge=1, description="Most outbox records sent before waiting for their acks."
    )
    drain_idle_s: float = Field(
        default=0.2,
        gt=0,
        description="How long the drain loop waits for new events, or after a failed attempt "
        "to reach the bus.",
    )
    ack_timeout_s: float = Field(
        default=10.0,
        gt=0,
        description="How long the drain loop waits for one acknowledgement before it tries "
        "again later (an unacknowledged record is never sent a second time while in flight).",
    )
    inference_threads: int = Field(
        default=1, ge=1, description="onnxruntime intra-op threads of the loaded model."
    )
    grpc_host: str = Field(
        default="127.0.0.1",
        min_length=1,
        description="Address of the Inspect API: 127.0.0.1 for the line's software on this PC, "
        "0.0.0.0 for cameras elsewhere on the line's network.",
    )
    grpc_port: int = Field(
        default=8701,
        ge=0,
        le=65535,
        description="Port of the Inspect API, the gateway's gRPC Inspect service answered by "
        "the local model; 0: none (the agent then only keeps the model and the outbox).",
    )
    grpc_workers: int = Field(
        default=4, ge=1, description="Inspect requests the API handles at the same time."
    )
    images: ImageLimits = Field(default_factory=ImageLimits, description="Image validation.")
    decision: DecisionSettings = Field(
        default_factory=DecisionSettings, description="Review thresholds of the line modes."
    )


class EdgeSettings(CommonSettings):
    edge: EdgeSection = Field(default_factory=EdgeSection, description="The edge agent.")

    @model_validator(mode="after")
    def _derive_edge_paths(self) -> EdgeSettings:
        # Same rule as CommonSettings: one data_dir moves every piece of local state.
        updates: dict[str, Path] = {}
        if self.edge.store_dir is None:
            updates["store_dir"] = self.data_dir / "edge" / "models"
        if self.edge.outbox_path is None:
            updates["outbox_path"] = self.data_dir / "edge" / "outbox.sqlite3"
        if updates:
            object.__setattr__(self, "edge", self.edge.model_copy(update=updates))
        return self
