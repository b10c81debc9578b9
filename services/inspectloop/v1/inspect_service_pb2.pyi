from google.protobuf import timestamp_pb2 as _timestamp_pb2
from inspectloop.v1 import common_pb2 as _common_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class InspectRequest(_message.Message):
    __slots__ = ("line", "station", "camera", "sku", "label_design", "request_id", "image", "content_type", "captured_at")
    LINE_FIELD_NUMBER: _ClassVar[int]
    STATION_FIELD_NUMBER: _ClassVar[int]
    CAMERA_FIELD_NUMBER: _ClassVar[int]
    SKU_FIELD_NUMBER: _ClassVar[int]
    LABEL_DESIGN_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    CAPTURED_AT_FIELD_NUMBER: _ClassVar[int]
    line: str
    station: str
    camera: str
    sku: str
    label_design: str
    request_id: str
    image: bytes
    content_type: str
    captured_at: _timestamp_pb2.Timestamp
    def __init__(self, line: _Optional[str] = ..., station: _Optional[str] = ..., camera: _Optional[str] = ..., sku: _Optional[str] = ..., label_design: _Optional[str] = ..., request_id: _Optional[str] = ..., image: _Optional[bytes] = ..., content_type: _Optional[str] = ..., captured_at: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class InspectResponse(_message.Message):
    __slots__ = ("decision", "prediction", "model", "human_review_required", "review_reason", "review_detail", "inspection_id", "latency_ms", "line_mode")
    DECISION_FIELD_NUMBER: _ClassVar[int]
    PREDICTION_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    HUMAN_REVIEW_REQUIRED_FIELD_NUMBER: _ClassVar[int]
    REVIEW_REASON_FIELD_NUMBER: _ClassVar[int]
    REVIEW_DETAIL_FIELD_NUMBER: _ClassVar[int]
    INSPECTION_ID_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    LINE_MODE_FIELD_NUMBER: _ClassVar[int]
    decision: _common_pb2.Decision
    prediction: _common_pb2.Prediction
    model: _common_pb2.ModelRef
    human_review_required: bool
    review_reason: _common_pb2.ReviewReason
    review_detail: str
    inspection_id: str
    latency_ms: float
    line_mode: _common_pb2.LineMode
    def __init__(self, decision: _Optional[_Union[_common_pb2.Decision, str]] = ..., prediction: _Optional[_Union[_common_pb2.Prediction, _Mapping]] = ..., model: _Optional[_Union[_common_pb2.ModelRef, _Mapping]] = ..., human_review_required: bool = ..., review_reason: _Optional[_Union[_common_pb2.ReviewReason, str]] = ..., review_detail: _Optional[str] = ..., inspection_id: _Optional[str] = ..., latency_ms: _Optional[float] = ..., line_mode: _Optional[_Union[_common_pb2.LineMode, str]] = ...) -> None: ...
