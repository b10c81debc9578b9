from google.protobuf import timestamp_pb2 as _timestamp_pb2
from inspectloop.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class InspectionEvent(_message.Message):
    __slots__ = ("inspection_id", "request_id", "line", "station", "camera", "sku", "label_design", "image", "model", "prediction", "decision", "human_review_required", "review_reason", "review_detail", "line_mode", "feature_vector", "image_stats", "latency_ms", "inference_latency_ms", "shadow_results", "captured_at", "decided_at", "review_threshold", "routing_generation", "edge_node_id")
    INSPECTION_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    LINE_FIELD_NUMBER: _ClassVar[int]
    STATION_FIELD_NUMBER: _ClassVar[int]
    CAMERA_FIELD_NUMBER: _ClassVar[int]
    SKU_FIELD_NUMBER: _ClassVar[int]
    LABEL_DESIGN_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PREDICTION_FIELD_NUMBER: _ClassVar[int]
    DECISION_FIELD_NUMBER: _ClassVar[int]
    HUMAN_REVIEW_REQUIRED_FIELD_NUMBER: _ClassVar[int]
    REVIEW_REASON_FIELD_NUMBER: _ClassVar[int]
    REVIEW_DETAIL_FIELD_NUMBER: _ClassVar[int]
    LINE_MODE_FIELD_NUMBER: _ClassVar[int]
    FEATURE_VECTOR_FIELD_NUMBER: _ClassVar[int]
    IMAGE_STATS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    INFERENCE_LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    SHADOW_RESULTS_FIELD_NUMBER: _ClassVar[int]
    CAPTURED_AT_FIELD_NUMBER: _ClassVar[int]
    DECIDED_AT_FIELD_NUMBER: _ClassVar[int]
    REVIEW_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    ROUTING_GENERATION_FIELD_NUMBER: _ClassVar[int]
    EDGE_NODE_ID_FIELD_NUMBER: _ClassVar[int]
    inspection_id: str
    request_id: str
    line: str
    station: str
    camera: str
    sku: str
    label_design: str
    image: _common_pb2.ImageRef
    model: _common_pb2.ModelRef
    prediction: _common_pb2.Prediction
    decision: _common_pb2.Decision
    human_review_required: bool
    review_reason: _common_pb2.ReviewReason
    review_detail: str
    line_mode: _common_pb2.LineMode
    feature_vector: _containers.RepeatedScalarFieldContainer[float]
    image_stats: _common_pb2.ImageStats
    latency_ms: float
    inference_latency_ms: float
    shadow_results: _containers.RepeatedCompositeFieldContainer[ShadowResult]
    captured_at: _timestamp_pb2.Timestamp
    decided_at: _timestamp_pb2.Timestamp
    review_threshold: float
    routing_generation: int
    edge_node_id: str
    def __init__(self, inspection_id: _Optional[str] = ..., request_id: _Optional[str] = ..., line: _Optional[str] = ..., station: _Optional[str] = ..., camera: _Optional[str] = ..., sku: _Optional[str] = ..., label_design: _Optional[str] = ..., image: _Optional[_Union[_common_pb2.ImageRef, _Mapping]] = ..., model: _Optional[_Union[_common_pb2.ModelRef, _Mapping]] = ..., prediction: _Optional[_Union[_common_pb2.Prediction, _Mapping]] = ..., decision: _Optional[_Union[_common_pb2.Decision, str]] = ..., human_review_required: bool = ..., review_reason: _Optional[_Union[_common_pb2.ReviewReason, str]] = ..., review_detail: _Optional[str] = ..., line_mode: _Optional[_Union[_common_pb2.LineMode, str]] = ..., feature_vector: _Optional[_Iterable[float]] = ..., image_stats: _Optional[_Union[_common_pb2.ImageStats, _Mapping]] = ..., latency_ms: _Optional[float] = ..., inference_latency_ms: _Optional[float] = ..., shadow_results: _Optional[_Iterable[_Union[ShadowResult, _Mapping]]] = ..., captured_at: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., decided_at: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., review_threshold: _Optional[float] = ..., routing_generation: _Optional[int] = ..., edge_node_id: _Optional[str] = ...) -> None: ...

class ShadowResult(_message.Message):
    __slots__ = ("model", "prediction", "would_decide", "latency_ms")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PREDICTION_FIELD_NUMBER: _ClassVar[int]
    WOULD_DECIDE_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    model: _common_pb2.ModelRef
    prediction: _common_pb2.Prediction
    would_decide: _common_pb2.Decision
    latency_ms: float
    def __init__(self, model: _Optional[_Union[_common_pb2.ModelRef, _Mapping]] = ..., prediction: _Optional[_Union[_common_pb2.Prediction, _Mapping]] = ..., would_decide: _Optional[_Union[_common_pb2.Decision, str]] = ..., latency_ms: _Optional[float] = ...) -> None: ...
