from google.protobuf import timestamp_pb2 as _timestamp_pb2
from inspectloop.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ModelStage(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MODEL_STAGE_UNSPECIFIED: _ClassVar[ModelStage]
    MODEL_STAGE_CANDIDATE: _ClassVar[ModelStage]
    MODEL_STAGE_VALIDATED: _ClassVar[ModelStage]
    MODEL_STAGE_REJECTED: _ClassVar[ModelStage]
    MODEL_STAGE_SHADOW: _ClassVar[ModelStage]
    MODEL_STAGE_CANARY: _ClassVar[ModelStage]
    MODEL_STAGE_PRODUCTION: _ClassVar[ModelStage]
    MODEL_STAGE_ARCHIVED: _ClassVar[ModelStage]
    MODEL_STAGE_ROLLED_BACK: _ClassVar[ModelStage]

class ArtifactKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ARTIFACT_KIND_UNSPECIFIED: _ClassVar[ArtifactKind]
    ARTIFACT_KIND_ONNX: _ClassVar[ArtifactKind]
    ARTIFACT_KIND_ONNX_INT8: _ClassVar[ArtifactKind]
    ARTIFACT_KIND_TRITON_REPO: _ClassVar[ArtifactKind]
    ARTIFACT_KIND_REPORT: _ClassVar[ArtifactKind]
    ARTIFACT_KIND_CHECKPOINT: _ClassVar[ArtifactKind]
    ARTIFACT_KIND_REFERENCE_STATS: _ClassVar[ArtifactKind]
MODEL_STAGE_UNSPECIFIED: ModelStage
MODEL_STAGE_CANDIDATE: ModelStage
MODEL_STAGE_VALIDATED: ModelStage
MODEL_STAGE_REJECTED: ModelStage
MODEL_STAGE_SHADOW: ModelStage
MODEL_STAGE_CANARY: ModelStage
MODEL_STAGE_PRODUCTION: ModelStage
MODEL_STAGE_ARCHIVED: ModelStage
MODEL_STAGE_ROLLED_BACK: ModelStage
ARTIFACT_KIND_UNSPECIFIED: ArtifactKind
ARTIFACT_KIND_ONNX: ArtifactKind
ARTIFACT_KIND_ONNX_INT8: ArtifactKind
ARTIFACT_KIND_TRITON_REPO: ArtifactKind
ARTIFACT_KIND_REPORT: ArtifactKind
ARTIFACT_KIND_CHECKPOINT: ArtifactKind
ARTIFACT_KIND_REFERENCE_STATS: ArtifactKind

class ClassMetrics(_message.Message):
    __slots__ = ("class_name", "precision", "recall", "f1", "support")
    CLASS_NAME_FIELD_NUMBER: _ClassVar[int]
    PRECISION_FIELD_NUMBER: _ClassVar[int]
    RECALL_FIELD_NUMBER: _ClassVar[int]
    F1_FIELD_NUMBER: _ClassVar[int]
    SUPPORT_FIELD_NUMBER: _ClassVar[int]
    class_name: str
    precision: float
    recall: float
    f1: float
    support: int
    def __init__(self, class_name: _Optional[str] = ..., precision: _Optional[float] = ..., recall: _Optional[float] = ..., f1: _Optional[float] = ..., support: _Optional[int] = ...) -> None: ...

class GateResult(_message.Message):
    __slots__ = ("gate", "passed", "value", "threshold", "higher_is_better", "detail")
    GATE_FIELD_NUMBER: _ClassVar[int]
    PASSED_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    HIGHER_IS_BETTER_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    gate: str
    passed: bool
    value: float
    threshold: float
    higher_is_better: bool
    detail: str
    def __init__(self, gate: _Optional[str] = ..., passed: bool = ..., value: _Optional[float] = ..., threshold: _Optional[float] = ..., higher_is_better: bool = ..., detail: _Optional[str] = ...) -> None: ...

class ModelArtifact(_message.Message):
    __slots__ = ("kind", "uri", "sha256", "size_bytes")
    KIND_FIELD_NUMBER: _ClassVar[int]
    URI_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    kind: ArtifactKind
    uri: str
    sha256: str
    size_bytes: int
    def __init__(self, kind: _Optional[_Union[ArtifactKind, str]] = ..., uri: _Optional[str] = ..., sha256: _Optional[str] = ..., size_bytes: _Optional[int] = ...) -> None: ...

class ModelLineage(_message.Message):
    __slots__ = ("parent_version", "dataset_snapshot_id", "dataset_sha256", "training_run_id", "code_version", "seed", "retrain_request_id", "framework_versions")
    class FrameworkVersionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    PARENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    DATASET_SNAPSHOT_ID_FIELD_NUMBER: _ClassVar[int]
    DATASET_SHA256_FIELD_NUMBER: _ClassVar[int]
    TRAINING_RUN_ID_FIELD_NUMBER: _ClassVar[int]
    CODE_VERSION_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    RETRAIN_REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    FRAMEWORK_VERSIONS_FIELD_NUMBER: _ClassVar[int]
    parent_version: str
    dataset_snapshot_id: str
    dataset_sha256: str
    training_run_id: str
    code_version: str
    seed: int
    retrain_request_id: str
    framework_versions: _containers.ScalarMap[str, str]
    def __init__(self, parent_version: _Optional[str] = ..., dataset_snapshot_id: _Optional[str] = ..., dataset_sha256: _Optional[str] = ..., training_run_id: _Optional[str] = ..., code_version: _Optional[str] = ..., seed: _Optional[int] = ..., retrain_request_id: _Optional[str] = ..., framework_versions: _Optional[_Mapping[str, str]] = ...) -> None: ...

class ClassEvidence(_message.Message):
    __slots__ = ("class_name", "examples", "detected", "recall_lower_bound")
    CLASS_NAME_FIELD_NUMBER: _ClassVar[int]
    EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    DETECTED_FIELD_NUMBER: _ClassVar[int]
    RECALL_LOWER_BOUND_FIELD_NUMBER: _ClassVar[int]
    class_name: str
    examples: int
    detected: int
    recall_lower_bound: float
    def __init__(self, class_name: _Optional[str] = ..., examples: _Optional[int] = ..., detected: _Optional[int] = ..., recall_lower_bound: _Optional[float] = ...) -> None: ...

class ModelVersion(_message.Message):
    __slots__ = ("name", "version", "stage", "metrics", "class_metrics", "gate_results", "rejection_reasons", "artifacts", "lineage", "created_at", "classes", "input_width", "input_height", "scope", "updated_at", "class_evidence", "required_recall_lower_bound", "open_evidence_classes")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    CLASS_METRICS_FIELD_NUMBER: _ClassVar[int]
    GATE_RESULTS_FIELD_NUMBER: _ClassVar[int]
    REJECTION_REASONS_FIELD_NUMBER: _ClassVar[int]
    ARTIFACTS_FIELD_NUMBER: _ClassVar[int]
    LINEAGE_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    CLASSES_FIELD_NUMBER: _ClassVar[int]
    INPUT_WIDTH_FIELD_NUMBER: _ClassVar[int]
    INPUT_HEIGHT_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    CLASS_EVIDENCE_FIELD_NUMBER: _ClassVar[int]
    REQUIRED_RECALL_LOWER_BOUND_FIELD_NUMBER: _ClassVar[int]
    OPEN_EVIDENCE_CLASSES_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    stage: ModelStage
    metrics: _containers.ScalarMap[str, float]
    class_metrics: _containers.RepeatedCompositeFieldContainer[ClassMetrics]
    gate_results: _containers.RepeatedCompositeFieldContainer[GateResult]
    rejection_reasons: _containers.RepeatedScalarFieldContainer[str]
    artifacts: _containers.RepeatedCompositeFieldContainer[ModelArtifact]
    lineage: ModelLineage
    created_at: _timestamp_pb2.Timestamp
    classes: _containers.RepeatedScalarFieldContainer[str]
    input_width: int
    input_height: int
    scope: _common_pb2.Scope
    updated_at: _timestamp_pb2.Timestamp
    class_evidence: _containers.RepeatedCompositeFieldContainer[ClassEvidence]
    required_recall_lower_bound: float
    open_evidence_classes: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., stage: _Optional[_Union[ModelStage, str]] = ..., metrics: _Optional[_Mapping[str, float]] = ..., class_metrics: _Optional[_Iterable[_Union[ClassMetrics, _Mapping]]] = ..., gate_results: _Optional[_Iterable[_Union[GateResult, _Mapping]]] = ..., rejection_reasons: _Optional[_Iterable[str]] = ..., artifacts: _Optional[_Iterable[_Union[ModelArtifact, _Mapping]]] = ..., lineage: _Optional[_Union[ModelLineage, _Mapping]] = ..., created_at: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., classes: _Optional[_Iterable[str]] = ..., input_width: _Optional[int] = ..., input_height: _Optional[int] = ..., scope: _Optional[_Union[_common_pb2.Scope, _Mapping]] = ..., updated_at: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., class_evidence: _Optional[_Iterable[_Union[ClassEvidence, _Mapping]]] = ..., required_recall_lower_bound: _Optional[float] = ..., open_evidence_classes: _Optional[_Iterable[str]] = ...) -> None: ...
