from google.protobuf import timestamp_pb2 as _timestamp_pb2
from inspectloop.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class FeedbackVerdict(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FEEDBACK_VERDICT_UNSPECIFIED: _ClassVar[FeedbackVerdict]
    FEEDBACK_VERDICT_CONFIRMED_DEFECT: _ClassVar[FeedbackVerdict]
    FEEDBACK_VERDICT_FALSE_REJECT: _ClassVar[FeedbackVerdict]
    FEEDBACK_VERDICT_ESCAPE_REPORTED: _ClassVar[FeedbackVerdict]
    FEEDBACK_VERDICT_GOOD_CONFIRMED: _ClassVar[FeedbackVerdict]
FEEDBACK_VERDICT_UNSPECIFIED: FeedbackVerdict
FEEDBACK_VERDICT_CONFIRMED_DEFECT: FeedbackVerdict
FEEDBACK_VERDICT_FALSE_REJECT: FeedbackVerdict
FEEDBACK_VERDICT_ESCAPE_REPORTED: FeedbackVerdict
FEEDBACK_VERDICT_GOOD_CONFIRMED: FeedbackVerdict

class OperatorFeedback(_message.Message):
    __slots__ = ("feedback_id", "inspection_id", "line", "sku", "image", "verdict", "defect_class", "operator_id", "comment", "reviewed_at", "station", "label_design", "model", "original_decision")
    FEEDBACK_ID_FIELD_NUMBER: _ClassVar[int]
    INSPECTION_ID_FIELD_NUMBER: _ClassVar[int]
    LINE_FIELD_NUMBER: _ClassVar[int]
    SKU_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    VERDICT_FIELD_NUMBER: _ClassVar[int]
    DEFECT_CLASS_FIELD_NUMBER: _ClassVar[int]
    OPERATOR_ID_FIELD_NUMBER: _ClassVar[int]
    COMMENT_FIELD_NUMBER: _ClassVar[int]
    REVIEWED_AT_FIELD_NUMBER: _ClassVar[int]
    STATION_FIELD_NUMBER: _ClassVar[int]
    LABEL_DESIGN_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    ORIGINAL_DECISION_FIELD_NUMBER: _ClassVar[int]
    feedback_id: str
    inspection_id: str
    line: str
    sku: str
    image: _common_pb2.ImageRef
    verdict: FeedbackVerdict
    defect_class: str
    operator_id: str
    comment: str
    reviewed_at: _timestamp_pb2.Timestamp
    station: str
    label_design: str
    model: _common_pb2.ModelRef
    original_decision: _common_pb2.Decision
    def __init__(self, feedback_id: _Optional[str] = ..., inspection_id: _Optional[str] = ..., line: _Optional[str] = ..., sku: _Optional[str] = ..., image: _Optional[_Union[_common_pb2.ImageRef, _Mapping]] = ..., verdict: _Optional[_Union[FeedbackVerdict, str]] = ..., defect_class: _Optional[str] = ..., operator_id: _Optional[str] = ..., comment: _Optional[str] = ..., reviewed_at: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., station: _Optional[str] = ..., label_design: _Optional[str] = ..., model: _Optional[_Union[_common_pb2.ModelRef, _Mapping]] = ..., original_decision: _Optional[_Union[_common_pb2.Decision, str]] = ...) -> None: ...
