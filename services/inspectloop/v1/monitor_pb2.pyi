from google.protobuf import timestamp_pb2 as _timestamp_pb2
from inspectloop.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AlertSeverity(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ALERT_SEVERITY_UNSPECIFIED: _ClassVar[AlertSeverity]
    ALERT_SEVERITY_INFO: _ClassVar[AlertSeverity]
    ALERT_SEVERITY_WARNING: _ClassVar[AlertSeverity]
    ALERT_SEVERITY_CRITICAL: _ClassVar[AlertSeverity]

class DriftKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DRIFT_KIND_UNSPECIFIED: _ClassVar[DriftKind]
    DRIFT_KIND_FEATURE: _ClassVar[DriftKind]
    DRIFT_KIND_PREDICTION: _ClassVar[DriftKind]
    DRIFT_KIND_IMAGE_STATISTICS: _ClassVar[DriftKind]
    DRIFT_KIND_FALSE_REJECTS: _ClassVar[DriftKind]
    DRIFT_KIND_ESCAPES: _ClassVar[DriftKind]

class RetrainReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RETRAIN_REASON_UNSPECIFIED: _ClassVar[RetrainReason]
    RETRAIN_REASON_DRIFT: _ClassVar[RetrainReason]
    RETRAIN_REASON_FALSE_REJECTS: _ClassVar[RetrainReason]
    RETRAIN_REASON_ESCAPES: _ClassVar[RetrainReason]
    RETRAIN_REASON_CHANGEOVER: _ClassVar[RetrainReason]
    RETRAIN_REASON_MANUAL: _ClassVar[RetrainReason]
    RETRAIN_REASON_SCHEDULED: _ClassVar[RetrainReason]
ALERT_SEVERITY_UNSPECIFIED: AlertSeverity
ALERT_SEVERITY_INFO: AlertSeverity
ALERT_SEVERITY_WARNING: AlertSeverity
ALERT_SEVERITY_CRITICAL: AlertSeverity
DRIFT_KIND_UNSPECIFIED: DriftKind
DRIFT_KIND_FEATURE: DriftKind
DRIFT_KIND_PREDICTION: DriftKind
DRIFT_KIND_IMAGE_STATISTICS: DriftKind
DRIFT_KIND_FALSE_REJECTS: DriftKind
DRIFT_KIND_ESCAPES: DriftKind
RETRAIN_REASON_UNSPECIFIED: RetrainReason
RETRAIN_REASON_DRIFT: RetrainReason
RETRAIN_REASON_FALSE_REJECTS: RetrainReason
RETRAIN_REASON_ESCAPES: RetrainReason
RETRAIN_REASON_CHANGEOVER: RetrainReason
RETRAIN_REASON_MANUAL: RetrainReason
RETRAIN_REASON_SCHEDULED: RetrainReason

class SampleWindow(_message.Message):
    __slots__ = ("size", "start", "end")
    SIZE_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    size: int
    start: _timestamp_pb2.Timestamp
    end: _timestamp_pb2.Timestamp
    def __init__(self, size: _Optional[int] = ..., start: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., end: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class LineModeChanged(_message.Message):
    __slots__ = ("change_id", "line", "previous_mode", "new_mode", "reason", "triggering_alert_ids", "changed_by", "changed_at", "generation")
    CHANGE_ID_FIELD_NUMBER: _ClassVar[int]
    LINE_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_MODE_FIELD_NUMBER: _ClassVar[int]
    NEW_MODE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    TRIGGERING_ALERT_IDS_FIELD_NUMBER: _ClassVar[int]
    CHANGED_BY_FIELD_NUMBER: _ClassVar[int]
    CHANGED_AT_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    change_id: str
    line: str
    previous_mode: _common_pb2.LineMode
    new_mode: _common_pb2.LineMode
    reason: str
    triggering_alert_ids: _containers.RepeatedScalarFieldContainer[str]
    changed_by: str
    changed_at: _timestamp_pb2.Timestamp
    generation: int
    def __init__(self, change_id: _Optional[str] = ..., line: _Optional[str] = ..., previous_mode: _Optional[_Union[_common_pb2.LineMode, str]] = ..., new_mode: _Optional[_Union[_common_pb2.LineMode, str]] = ..., reason: _Optional[str] = ..., triggering_alert_ids: _Optional[_Iterable[str]] = ..., changed_by: _Optional[str] = ..., changed_at: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., generation: _Optional[int] = ...) -> None: ...

class DriftAlert(_message.Message):
    __slots__ = ("alert_id", "line", "sku", "label_design", "detector", "kind", "statistic", "threshold", "p_value", "window", "severity", "sample_images", "nuisance", "nuisance_explanation", "model", "reference_id", "detected_at")
    ALERT_ID_FIELD_NUMBER: _ClassVar[int]
    LINE_FIELD_NUMBER: _ClassVar[int]
    SKU_FIELD_NUMBER: _ClassVar[int]
    LABEL_DESIGN_FIELD_NUMBER: _ClassVar[int]
    DETECTOR_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    STATISTIC_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    P_VALUE_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    SEVERITY_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_IMAGES_FIELD_NUMBER: _ClassVar[int]
    NUISANCE_FIELD_NUMBER: _ClassVar[int]
    NUISANCE_EXPLANATION_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_ID_FIELD_NUMBER: _ClassVar[int]
    DETECTED_AT_FIELD_NUMBER: _ClassVar[int]
    alert_id: str
    line: str
    sku: str
    label_design: str
    detector: str
    kind: DriftKind
    statistic: float
    threshold: float
    p_value: float
    window: SampleWindow
    severity: AlertSeverity
    sample_images: _containers.RepeatedCompositeFieldContainer[_common_pb2.ImageRef]
    nuisance: bool
    nuisance_explanation: str
    model: _common_pb2.ModelRef
    reference_id: str
    detected_at: _timestamp_pb2.Timestamp
    def __init__(self, alert_id: _Optional[str] = ..., line: _Optional[str] = ..., sku: _Optional[str] = ..., label_design: _Optional[str] = ..., detector: _Optional[str] = ..., kind: _Optional[_Union[DriftKind, str]] = ..., statistic: _Optional[float] = ..., threshold: _Optional[float] = ..., p_value: _Optional[float] = ..., window: _Optional[_Union[SampleWindow, _Mapping]] = ..., severity: _Optional[_Union[AlertSeverity, str]] = ..., sample_images: _Optional[_Iterable[_Union[_common_pb2.ImageRef, _Mapping]]] = ..., nuisance: bool = ..., nuisance_explanation: _Optional[str] = ..., model: _Optional[_Union[_common_pb2.ModelRef, _Mapping]] = ..., reference_id: _Optional[str] = ..., detected_at: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class RetrainEvidence(_message.Message):
    __slots__ = ("alert_id", "detector", "statistic", "threshold", "window", "sample_images")
    ALERT_ID_FIELD_NUMBER: _ClassVar[int]
    DETECTOR_FIELD_NUMBER: _ClassVar[int]
    STATISTIC_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_IMAGES_FIELD_NUMBER: _ClassVar[int]
    alert_id: str
    detector: str
    statistic: float
    threshold: float
    window: SampleWindow
    sample_images: _containers.RepeatedCompositeFieldContainer[_common_pb2.ImageRef]
    def __init__(self, alert_id: _Optional[str] = ..., detector: _Optional[str] = ..., statistic: _Optional[float] = ..., threshold: _Optional[float] = ..., window: _Optional[_Union[SampleWindow, _Mapping]] = ..., sample_images: _Optional[_Iterable[_Union[_common_pb2.ImageRef, _Mapping]]] = ...) -> None: ...

class RetrainRequest(_message.Message):
    __slots__ = ("request_id", "reason", "reason_detail", "evidence", "scope", "parent_model", "requested_by", "requested_at", "min_labelled_images", "changeover_id")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    REASON_DETAIL_FIELD_NUMBER: _ClassVar[int]
    EVIDENCE_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    PARENT_MODEL_FIELD_NUMBER: _ClassVar[int]
    REQUESTED_BY_FIELD_NUMBER: _ClassVar[int]
    REQUESTED_AT_FIELD_NUMBER: _ClassVar[int]
    MIN_LABELLED_IMAGES_FIELD_NUMBER: _ClassVar[int]
    CHANGEOVER_ID_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    reason: RetrainReason
    reason_detail: str
    evidence: _containers.RepeatedCompositeFieldContainer[RetrainEvidence]
    scope: _common_pb2.Scope
    parent_model: _common_pb2.ModelRef
    requested_by: str
    requested_at: _timestamp_pb2.Timestamp
    min_labelled_images: int
    changeover_id: str
    def __init__(self, request_id: _Optional[str] = ..., reason: _Optional[_Union[RetrainReason, str]] = ..., reason_detail: _Optional[str] = ..., evidence: _Optional[_Iterable[_Union[RetrainEvidence, _Mapping]]] = ..., scope: _Optional[_Union[_common_pb2.Scope, _Mapping]] = ..., parent_model: _Optional[_Union[_common_pb2.ModelRef, _Mapping]] = ..., requested_by: _Optional[str] = ..., requested_at: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., min_labelled_images: _Optional[int] = ..., changeover_id: _Optional[str] = ...) -> None: ...

class ChangeoverAnnounced(_message.Message):
    __slots__ = ("changeover_id", "lines", "sku", "label_design", "previous_sku", "previous_label_design", "effective_at", "reference_images", "announced_by", "announced_at", "note")
    CHANGEOVER_ID_FIELD_NUMBER: _ClassVar[int]
    LINES_FIELD_NUMBER: _ClassVar[int]
    SKU_FIELD_NUMBER: _ClassVar[int]
    LABEL_DESIGN_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_SKU_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_LABEL_DESIGN_FIELD_NUMBER: _ClassVar[int]
    EFFECTIVE_AT_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_IMAGES_FIELD_NUMBER: _ClassVar[int]
    ANNOUNCED_BY_FIELD_NUMBER: _ClassVar[int]
    ANNOUNCED_AT_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    changeover_id: str
    lines: _containers.RepeatedScalarFieldContainer[str]
    sku: str
    label_design: str
    previous_sku: str
    previous_label_design: str
    effective_at: _timestamp_pb2.Timestamp
    reference_images: _containers.RepeatedCompositeFieldContainer[_common_pb2.ImageRef]
    announced_by: str
    announced_at: _timestamp_pb2.Timestamp
    note: str
    def __init__(self, changeover_id: _Optional[str] = ..., lines: _Optional[_Iterable[str]] = ..., sku: _Optional[str] = ..., label_design: _Optional[str] = ..., previous_sku: _Optional[str] = ..., previous_label_design: _Optional[str] = ..., effective_at: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., reference_images: _Optional[_Iterable[_Union[_common_pb2.ImageRef, _Mapping]]] = ..., announced_by: _Optional[str] = ..., announced_at: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., note: _Optional[str] = ...) -> None: ...
