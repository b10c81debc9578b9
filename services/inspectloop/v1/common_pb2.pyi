from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ModelRole(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MODEL_ROLE_UNSPECIFIED: _ClassVar[ModelRole]
    MODEL_ROLE_STABLE: _ClassVar[ModelRole]
    MODEL_ROLE_CANARY: _ClassVar[ModelRole]
    MODEL_ROLE_SHADOW: _ClassVar[ModelRole]
    MODEL_ROLE_EDGE: _ClassVar[ModelRole]

class Decision(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DECISION_UNSPECIFIED: _ClassVar[Decision]
    DECISION_PASS: _ClassVar[Decision]
    DECISION_REJECT: _ClassVar[Decision]

class LineMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LINE_MODE_UNSPECIFIED: _ClassVar[LineMode]
    LINE_MODE_AUTO: _ClassVar[LineMode]
    LINE_MODE_GUARDED: _ClassVar[LineMode]
    LINE_MODE_MANUAL: _ClassVar[LineMode]

class ReviewReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REVIEW_REASON_UNSPECIFIED: _ClassVar[ReviewReason]
    REVIEW_REASON_MANUAL_MODE: _ClassVar[ReviewReason]
    REVIEW_REASON_GUARDED_REJECT: _ClassVar[ReviewReason]
    REVIEW_REASON_GUARDED_LOW_CONFIDENCE: _ClassVar[ReviewReason]
    REVIEW_REASON_LOW_CONFIDENCE: _ClassVar[ReviewReason]
    REVIEW_REASON_MODEL_UNAVAILABLE: _ClassVar[ReviewReason]
    REVIEW_REASON_UNKNOWN_VARIANT: _ClassVar[ReviewReason]
    REVIEW_REASON_AUDIT_SAMPLE: _ClassVar[ReviewReason]
    REVIEW_REASON_ANOMALY: _ClassVar[ReviewReason]
MODEL_ROLE_UNSPECIFIED: ModelRole
MODEL_ROLE_STABLE: ModelRole
MODEL_ROLE_CANARY: ModelRole
MODEL_ROLE_SHADOW: ModelRole
MODEL_ROLE_EDGE: ModelRole
DECISION_UNSPECIFIED: Decision
DECISION_PASS: Decision
DECISION_REJECT: Decision
LINE_MODE_UNSPECIFIED: LineMode
LINE_MODE_AUTO: LineMode
LINE_MODE_GUARDED: LineMode
LINE_MODE_MANUAL: LineMode
REVIEW_REASON_UNSPECIFIED: ReviewReason
REVIEW_REASON_MANUAL_MODE: ReviewReason
REVIEW_REASON_GUARDED_REJECT: ReviewReason
REVIEW_REASON_GUARDED_LOW_CONFIDENCE: ReviewReason
REVIEW_REASON_LOW_CONFIDENCE: ReviewReason
REVIEW_REASON_MODEL_UNAVAILABLE: ReviewReason
REVIEW_REASON_UNKNOWN_VARIANT: ReviewReason
REVIEW_REASON_AUDIT_SAMPLE: ReviewReason
REVIEW_REASON_ANOMALY: ReviewReason

class ImageRef(_message.Message):
    __slots__ = ("uri", "sha256", "size_bytes", "width", "height", "content_type")
    URI_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    uri: str
    sha256: str
    size_bytes: int
    width: int
    height: int
    content_type: str
    def __init__(self, uri: _Optional[str] = ..., sha256: _Optional[str] = ..., size_bytes: _Optional[int] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., content_type: _Optional[str] = ...) -> None: ...

class ModelRef(_message.Message):
    __slots__ = ("name", "version", "role")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    role: ModelRole
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., role: _Optional[_Union[ModelRole, str]] = ...) -> None: ...

class ClassScore(_message.Message):
    __slots__ = ("class_name", "score")
    CLASS_NAME_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    class_name: str
    score: float
    def __init__(self, class_name: _Optional[str] = ..., score: _Optional[float] = ...) -> None: ...

class Prediction(_message.Message):
    __slots__ = ("scores", "top_class", "confidence", "anomaly_score")
    SCORES_FIELD_NUMBER: _ClassVar[int]
    TOP_CLASS_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    ANOMALY_SCORE_FIELD_NUMBER: _ClassVar[int]
    scores: _containers.RepeatedCompositeFieldContainer[ClassScore]
    top_class: str
    confidence: float
    anomaly_score: float
    def __init__(self, scores: _Optional[_Iterable[_Union[ClassScore, _Mapping]]] = ..., top_class: _Optional[str] = ..., confidence: _Optional[float] = ..., anomaly_score: _Optional[float] = ...) -> None: ...

class ImageStats(_message.Message):
    __slots__ = ("brightness", "contrast", "sharpness", "mean_r", "mean_g", "mean_b")
    BRIGHTNESS_FIELD_NUMBER: _ClassVar[int]
    CONTRAST_FIELD_NUMBER: _ClassVar[int]
    SHARPNESS_FIELD_NUMBER: _ClassVar[int]
    MEAN_R_FIELD_NUMBER: _ClassVar[int]
    MEAN_G_FIELD_NUMBER: _ClassVar[int]
    MEAN_B_FIELD_NUMBER: _ClassVar[int]
    brightness: float
    contrast: float
    sharpness: float
    mean_r: float
    mean_g: float
    mean_b: float
    def __init__(self, brightness: _Optional[float] = ..., contrast: _Optional[float] = ..., sharpness: _Optional[float] = ..., mean_r: _Optional[float] = ..., mean_g: _Optional[float] = ..., mean_b: _Optional[float] = ...) -> None: ...

class Scope(_message.Message):
    __slots__ = ("lines", "skus", "label_designs")
    LINES_FIELD_NUMBER: _ClassVar[int]
    SKUS_FIELD_NUMBER: _ClassVar[int]
    LABEL_DESIGNS_FIELD_NUMBER: _ClassVar[int]
    lines: _containers.RepeatedScalarFieldContainer[str]
    skus: _containers.RepeatedScalarFieldContainer[str]
    label_designs: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, lines: _Optional[_Iterable[str]] = ..., skus: _Optional[_Iterable[str]] = ..., label_designs: _Optional[_Iterable[str]] = ...) -> None: ...
