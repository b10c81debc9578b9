from google.protobuf import timestamp_pb2 as _timestamp_pb2
from inspectloop.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RolloutPhase(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ROLLOUT_PHASE_UNSPECIFIED: _ClassVar[RolloutPhase]
    ROLLOUT_PHASE_PENDING: _ClassVar[RolloutPhase]
    ROLLOUT_PHASE_SHADOW: _ClassVar[RolloutPhase]
    ROLLOUT_PHASE_CANARY: _ClassVar[RolloutPhase]
    ROLLOUT_PHASE_PROMOTING: _ClassVar[RolloutPhase]
    ROLLOUT_PHASE_PRODUCTION_WATCH: _ClassVar[RolloutPhase]
    ROLLOUT_PHASE_PRODUCTION: _ClassVar[RolloutPhase]
    ROLLOUT_PHASE_ROLLED_BACK: _ClassVar[RolloutPhase]
    ROLLOUT_PHASE_PAUSED: _ClassVar[RolloutPhase]
    ROLLOUT_PHASE_FAILED: _ClassVar[RolloutPhase]

class AnalysisResult(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ANALYSIS_RESULT_UNSPECIFIED: _ClassVar[AnalysisResult]
    ANALYSIS_RESULT_PASS: _ClassVar[AnalysisResult]
    ANALYSIS_RESULT_FAIL: _ClassVar[AnalysisResult]
    ANALYSIS_RESULT_INCONCLUSIVE: _ClassVar[AnalysisResult]
ROLLOUT_PHASE_UNSPECIFIED: RolloutPhase
ROLLOUT_PHASE_PENDING: RolloutPhase
ROLLOUT_PHASE_SHADOW: RolloutPhase
ROLLOUT_PHASE_CANARY: RolloutPhase
ROLLOUT_PHASE_PROMOTING: RolloutPhase
ROLLOUT_PHASE_PRODUCTION_WATCH: RolloutPhase
ROLLOUT_PHASE_PRODUCTION: RolloutPhase
ROLLOUT_PHASE_ROLLED_BACK: RolloutPhase
ROLLOUT_PHASE_PAUSED: RolloutPhase
ROLLOUT_PHASE_FAILED: RolloutPhase
ANALYSIS_RESULT_UNSPECIFIED: AnalysisResult
ANALYSIS_RESULT_PASS: AnalysisResult
ANALYSIS_RESULT_FAIL: AnalysisResult
ANALYSIS_RESULT_INCONCLUSIVE: AnalysisResult

class AnalysisCheck(_message.Message):
    __slots__ = ("metric", "result", "value", "threshold", "query", "sample_count", "detail")
    METRIC_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_COUNT_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    metric: str
    result: AnalysisResult
    value: float
    threshold: float
    query: str
    sample_count: int
    detail: str
    def __init__(self, metric: _Optional[str] = ..., result: _Optional[_Union[AnalysisResult, str]] = ..., value: _Optional[float] = ..., threshold: _Optional[float] = ..., query: _Optional[str] = ..., sample_count: _Optional[int] = ..., detail: _Optional[str] = ...) -> None: ...

class RolloutEvent(_message.Message):
    __slots__ = ("event_id", "rollout_id", "model_name", "version", "lines", "phase", "previous_phase", "step_index", "canary_weight_bps", "analysis", "failed_checks", "reason", "actor", "occurred_at", "stable_version", "approval_id")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    ROLLOUT_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    LINES_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_PHASE_FIELD_NUMBER: _ClassVar[int]
    STEP_INDEX_FIELD_NUMBER: _ClassVar[int]
    CANARY_WEIGHT_BPS_FIELD_NUMBER: _ClassVar[int]
    ANALYSIS_FIELD_NUMBER: _ClassVar[int]
    FAILED_CHECKS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    OCCURRED_AT_FIELD_NUMBER: _ClassVar[int]
    STABLE_VERSION_FIELD_NUMBER: _ClassVar[int]
    APPROVAL_ID_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    rollout_id: str
    model_name: str
    version: str
    lines: _containers.RepeatedScalarFieldContainer[str]
    phase: RolloutPhase
    previous_phase: RolloutPhase
    step_index: int
    canary_weight_bps: int
    analysis: _containers.RepeatedCompositeFieldContainer[AnalysisCheck]
    failed_checks: int
    reason: str
    actor: str
    occurred_at: _timestamp_pb2.Timestamp
    stable_version: str
    approval_id: str
    def __init__(self, event_id: _Optional[str] = ..., rollout_id: _Optional[str] = ..., model_name: _Optional[str] = ..., version: _Optional[str] = ..., lines: _Optional[_Iterable[str]] = ..., phase: _Optional[_Union[RolloutPhase, str]] = ..., previous_phase: _Optional[_Union[RolloutPhase, str]] = ..., step_index: _Optional[int] = ..., canary_weight_bps: _Optional[int] = ..., analysis: _Optional[_Iterable[_Union[AnalysisCheck, _Mapping]]] = ..., failed_checks: _Optional[int] = ..., reason: _Optional[str] = ..., actor: _Optional[str] = ..., occurred_at: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., stable_version: _Optional[str] = ..., approval_id: _Optional[str] = ...) -> None: ...

class Routing(_message.Message):
    __slots__ = ("line", "generation", "stable", "canary", "canary_weight_bps", "shadows", "edge_wave", "rollout_id", "updated_at")
    LINE_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    STABLE_FIELD_NUMBER: _ClassVar[int]
    CANARY_FIELD_NUMBER: _ClassVar[int]
    CANARY_WEIGHT_BPS_FIELD_NUMBER: _ClassVar[int]
    SHADOWS_FIELD_NUMBER: _ClassVar[int]
    EDGE_WAVE_FIELD_NUMBER: _ClassVar[int]
    ROLLOUT_ID_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    line: str
    generation: int
    stable: _common_pb2.ModelRef
    canary: _common_pb2.ModelRef
    canary_weight_bps: int
    shadows: _containers.RepeatedCompositeFieldContainer[_common_pb2.ModelRef]
    edge_wave: int
    rollout_id: str
    updated_at: _timestamp_pb2.Timestamp
    def __init__(self, line: _Optional[str] = ..., generation: _Optional[int] = ..., stable: _Optional[_Union[_common_pb2.ModelRef, _Mapping]] = ..., canary: _Optional[_Union[_common_pb2.ModelRef, _Mapping]] = ..., canary_weight_bps: _Optional[int] = ..., shadows: _Optional[_Iterable[_Union[_common_pb2.ModelRef, _Mapping]]] = ..., edge_wave: _Optional[int] = ..., rollout_id: _Optional[str] = ..., updated_at: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...
