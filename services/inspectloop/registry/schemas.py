"""Request and response bodies of the registry's HTTP API (they make up its OpenAPI document).

Request bodies forbid unknown fields, so a misspelt field is a 422 naming it rather than a
silently ignored value. Numbers must be finite. :func:`version_to_proto` turns a version into the
``ModelVersion`` message the models topic carries.
"""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Final

from google.protobuf.timestamp_pb2 import Timestamp
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from inspectloop.registry.auth import Role
from inspectloop.registry.lifecycle import INITIAL_STAGES, SignatureMeaning, Stage
from inspectloop.v1.common_pb2 import Scope
from inspectloop.v1.models_pb2 import (
    ClassMetrics,
    GateResult,
    ModelArtifact,
    ModelLineage,
    ModelVersion,
)

MODEL_NAME_PATTERN: Final = r"^[a-z0-9][a-z0-9._-]{0,127}$"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def _check_sha256(value: str) -> str:
    if not _SHA256.fullmatch(value):
        raise ValueError("must be a SHA-256 as 64 lowercase hexadecimal digits")
    return value


Sha256 = Annotated[
    str,
    AfterValidator(_check_sha256),
    Field(description="Lowercase hex SHA-256 (64 digits).", examples=["e3b0c442" + "0" * 56]),
]
ShortText = Annotated[str, Field(max_length=200)]
Finite = Annotated[float, Field(allow_inf_nan=False)]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class ArtifactKind(StrEnum):
    """Kind of a stored artifact (``ArtifactKind`` in models.proto, lower case)."""

    ONNX = "onnx"
    ONNX_INT8 = "onnx_int8"
    TRITON_REPO = "triton_repo"
    REPORT = "report"
    CHECKPOINT = "checkpoint"
    REFERENCE_STATS = "reference_stats"


class ClassMetricsIn(_In):
    class_name: str = Field(min_length=1, max_length=100, description="Dataset class name.")
    precision: Finite = Field(ge=0, le=1, description="Precision on the validation set.")
    recall: Finite = Field(ge=0, le=1, description="Recall on the validation set.")
    f1: Finite = Field(ge=0, le=1, description="F1 score on the validation set.")
    support: int = Field(ge=0, description="Validation images of this class.")


class GateResultIn(_In):
    gate: str = Field(
        min_length=1, max_length=100, description="Gate name, e.g. 'accuracy', 'recall/scratch'."
    )
    passed: bool = Field(description="Whether the gate passed.")
    value: Finite = Field(description="Measured value.")
    threshold: Finite = Field(description="Limit the value was compared with.")
    higher_is_better: bool = Field(
        description="True when the gate needs value >= threshold, false for value <= threshold."
    )
    detail: str = Field(default="", max_length=2000, description="Human-readable explanation.")


class ArtifactIn(_In):
    kind: ArtifactKind = Field(description="What the file is.")
    sha256: Sha256
    size_bytes: int = Field(ge=0, description="Size of the bytes.")
    uri: str = Field(
        default="",
        max_length=2000,
        description="Where it is stored; empty: the registry fills in its blob-store URI.",
    )
    filename: str = Field(
        default="", max_length=200, description="File name, e.g. 'model.onnx' or 'report.html'."
    )
    media_type: str = Field(
        default="application/octet-stream", max_length=100, description="MIME type of the bytes."
    )


class LineageIn(_In):
    parent_version: int | None = Field(
        default=None,
        ge=1,
        description="Version of the same model this one was fine-tuned from; null for a first "
        "model. Must exist.",
    )
    dataset_snapshot_id: str = Field(
        min_length=1, max_length=200, description="Id of the immutable dataset snapshot."
    )
    dataset_sha256: Sha256 = Field(description="SHA-256 over the snapshot's sorted manifest.")
    code_version: str = Field(
        min_length=1, max_length=200, description="Training code version (git commit, package)."
    )
    training_run_id: str = Field(default="", max_length=200, description="Ray job or run id.")
    seed: int = Field(default=0, ge=0, description="Random seed of the run.")
    retrain_request_id: str = Field(
        default="", max_length=200, description="RetrainRequest that asked for this version."
    )
    framework_versions: dict[str, ShortText] = Field(
        default_factory=dict, description="e.g. {'torch': '2.5.1', 'onnx': '1.17.0'}."
    )
    training_config: dict[str, Any] = Field(
        default_factory=dict,
        description="Training configuration (hyper-parameters, workers, epochs...) as JSON.",
    )


class ScopeIn(_In):
    lines: list[ShortText] = Field(default_factory=list, description="Line ids; empty: all.")
    skus: list[ShortText] = Field(default_factory=list, description="Product SKUs; empty: all.")
    label_designs: list[ShortText] = Field(
        default_factory=list, description="Label designs; empty: all."
    )


class VersionCreate(_In):
    """A new version of a model, as the trainer registers it after its validation gates."""

    stage: Stage = Field(
        default=Stage.CANDIDATE,
        description="Initial stage: candidate, validated (every gate passed) or rejected "
        "(with rejection_reasons).",
    )
    metrics: dict[Annotated[str, Field(max_length=100)], Finite] = Field(
        default_factory=dict, description="Aggregate metrics, e.g. {'accuracy': 0.998}."
    )
    class_metrics: list[ClassMetricsIn] = Field(
        default_factory=list, description="Per-class metrics."
    )
    gate_results: list[GateResultIn] = Field(
        default_factory=list, description="Outcome of every validation gate."
    )
    rejection_reasons: list[Annotated[str, Field(max_length=2000)]] = Field(
        default_factory=list, description="One line per failed gate; required when rejected."
    )
    artifacts: list[ArtifactIn] = Field(
        default_factory=list,
        description="Stored files; each must have been uploaded (PUT /v1/artifacts/{sha256}).",
    )
    lineage: LineageIn = Field(description="Where the version came from.")
    classes: list[Annotated[str, Field(min_length=1, max_length=100)]] = Field(
        min_length=1, description="Output classes in the model's output order."
    )
    input_width: int = Field(ge=1, le=8192, description="Input width in pixels.")
    input_height: int = Field(ge=1, le=8192, description="Input height in pixels.")
    scope: ScopeIn = Field(default_factory=ScopeIn, description="Where the version applies.")
    description: str = Field(default="", max_length=2000, description="Free text.")

    @model_validator(mode="after")
    def _consistent(self) -> VersionCreate:
        if self.stage not in INITIAL_STAGES:
            allowed = ", ".join(sorted(s.value for s in INITIAL_STAGES))
            raise ValueError(
                f"a new version cannot start in stage {self.stage.value}; allowed: {allowed} "
                "(later stages are reached through transitions)"
            )
        if len(set(self.classes)) != len(self.classes):
            raise ValueError("classes must not repeat")
        unknown = sorted({m.class_name for m in self.class_metrics} - set(self.classes))
        if unknown:
            raise ValueError(f"class_metrics name classes not in 'classes': {', '.join(unknown)}")
        failed = [g.gate for g in self.gate_results if not g.passed]
        if self.stage is Stage.REJECTED and not self.rejection_reasons:
            raise ValueError("a rejected version needs rejection_reasons (one per failed gate)")
        if self.stage is not Stage.REJECTED and self.rejection_reasons:
            raise ValueError("rejection_reasons are only allowed for stage rejected")
        if self.stage is Stage.VALIDATED and failed:
            raise ValueError(
                f"stage validated but gate(s) failed: {', '.join(failed)}; register it as rejected"
            )
        names = [(a.kind, a.filename or a.sha256) for a in self.artifacts]
        if len(set(names)) != len(names):
            raise ValueError("artifacts repeat the same kind and filename")
        return self


class TransitionIn(_In):
    to_stage: Stage = Field(description="Stage to move the version to.")
    reason: str = Field(
        min_length=1, max_length=2000, description="Why (recorded in the audit log)."
    )
    from_stage: Stage | None = Field(
        default=None,
        description="Optional compare-and-set: refuse (409) unless the version is in this stage.",
    )


class ApprovalIn(_In):
    meaning: SignatureMeaning = Field(description="What the signature means.")
    password: str = Field(
        min_length=1,
        max_length=1000,
        description="The signer re-enters their password (21 CFR 11.200(a)).",
    )
    comment: str = Field(default="", max_length=2000, description="Optional comment.")


class ArtifactsAttach(_In):
    artifacts: list[ArtifactIn] = Field(min_length=1, description="Artifacts to add.")


class UserCreate(_In):
    name: str = Field(
        pattern=r"^[a-z][a-z0-9._-]{0,63}$",
        description="User name: lowercase letters, digits, '.', '_', '-'.",
    )
    role: Role = Field(description="operator, quality, service or admin.")
    password: str | None = Field(
        default=None,
        min_length=8,
        max_length=1000,
        description="Password for electronic signatures (quality and admin users).",
    )


# --- responses ---------------------------------------------------------------------------------


class ErrorOut(BaseModel):
    detail: str = Field(description="Why the request was refused.")


class ArtifactOut(BaseModel):
    kind: ArtifactKind
    sha256: str
    size_bytes: int
    uri: str
    filename: str
    media_type: str
    download_path: str = Field(description="Path of GET /v1/artifacts/{sha256} on this registry.")


class LineageOut(BaseModel):
    parent_version: int | None
    dataset_snapshot_id: str
    dataset_sha256: str
    code_version: str
    training_run_id: str
    seed: int
    retrain_request_id: str
    framework_versions: dict[str, str]
    training_config: dict[str, Any]


class ApprovalOut(BaseModel):
    id: str = Field(description="Signature id (UUID).")
    signer: str = Field(description="Name of the signer.")
    signer_role: Role
    meaning: SignatureMeaning
    signed_at: datetime
    manifest_sha256: str = Field(description="Manifest of the version the signature binds.")
    stage_at_signing: Stage
    comment: str
    valid: bool = Field(description="True while the version's manifest is still the signed one.")
    audit_seq: int


class StageChangeOut(BaseModel):
    from_stage: Stage | None
    to_stage: Stage
    actor: str
    reason: str
    approval_id: str | None
    changed_at: datetime
    audit_seq: int


class VersionSummary(BaseModel):
    name: str
    version: int
    stage: Stage
    parent_version: int | None
    manifest_sha256: str
    created_by: str
    created_at: datetime
    updated_at: datetime


class VersionOut(VersionSummary):
    manifest_intact: bool = Field(
        description="False when the stored manifest no longer hashes to manifest_sha256 "
        "(changed outside the registry): then no signature is valid."
    )
    metrics: dict[str, float]
    class_metrics: list[ClassMetricsIn]
    gate_results: list[GateResultIn]
    rejection_reasons: list[str]
    artifacts: list[ArtifactOut]
    lineage: LineageOut
    classes: list[str]
    input_width: int
    input_height: int
    scope: ScopeIn
    description: str
    approvals: list[ApprovalOut]
    stage_history: list[StageChangeOut]


class VersionList(BaseModel):
    name: str
    versions: list[VersionSummary]


class ModelOut(BaseModel):
    name: str
    created_at: datetime
    latest_version: int | None
    versions: int
    stages: dict[str, list[int]] = Field(description="Versions by stage, e.g. {'production': [3]}.")


class ModelList(BaseModel):
    models: list[ModelOut]


class LineageNode(BaseModel):
    version: int
    stage: Stage
    created_at: datetime
    manifest_sha256: str
    lineage: LineageOut
    metrics: dict[str, float]


class LineageChain(BaseModel):
    name: str
    version: int
    chain: list[LineageNode] = Field(description="This version first, then its parents.")


class ArtifactUploadOut(BaseModel):
    sha256: str
    size_bytes: int
    uri: str
    created: bool = Field(description="False when the same bytes were stored already.")


class AuditRecordOut(BaseModel):
    seq: int
    time: str
    actor: str
    action: str
    subject: str
    details: dict[str, Any]
    prev_hash: str
    hash: str


class AuditPage(BaseModel):
    records: list[AuditRecordOut]
    next_after_seq: int | None = Field(description="Pass as after_seq for the next page.")


class ChainHeadOut(BaseModel):
    seq: int
    hash: str


class AuditProblemOut(BaseModel):
    seq: int
    kind: str
    message: str


class AuditVerifyOut(BaseModel):
    ok: bool
    records: int
    head: ChainHeadOut
    problems: list[AuditProblemOut]


class UserOut(BaseModel):
    name: str
    role: Role
    active: bool
    can_sign: bool
    created_at: datetime


class TokenOut(BaseModel):
    user: str
    role: Role
    token: str = Field(description="The new API token; shown only this once.")
    token_id: int


class WhoAmI(BaseModel):
    name: str
    role: Role
    permissions: list[str]


class HealthOut(BaseModel):
    status: str
    detail: str = ""


# --- protobuf ----------------------------------------------------------------------------------


def _timestamp(moment: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def version_to_proto(version: VersionOut) -> ModelVersion:
    """The ``ModelVersion`` message for a registered version (version as a decimal string)."""
    lineage = version.lineage
    return ModelVersion(
        name=version.name,
        version=str(version.version),
        stage=version.stage.proto_name,
        metrics=version.metrics,
        class_metrics=[ClassMetrics(**m.model_dump()) for m in version.class_metrics],
        gate_results=[GateResult(**g.model_dump()) for g in version.gate_results],
        rejection_reasons=version.rejection_reasons,
        artifacts=[
            ModelArtifact(
                kind="ARTIFACT_KIND_" + a.kind.value.upper(),
                uri=a.uri,
                sha256=a.sha256,
                size_bytes=a.size_bytes,
            )
            for a in version.artifacts
        ],
        lineage=ModelLineage(
            parent_version=str(lineage.parent_version) if lineage.parent_version else "",
            dataset_snapshot_id=lineage.dataset_snapshot_id,
            dataset_sha256=lineage.dataset_sha256,
            training_run_id=lineage.training_run_id,
            code_version=lineage.code_version,
            seed=lineage.seed,
            retrain_request_id=lineage.retrain_request_id,
            framework_versions=lineage.framework_versions,
        ),
        created_at=_timestamp(version.created_at),
        classes=version.classes,
        input_width=version.input_width,
        input_height=version.input_height,
        scope=Scope(**version.scope.model_dump()),
        updated_at=_timestamp(version.updated_at),
    )
