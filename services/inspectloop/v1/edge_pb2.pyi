from google.protobuf import timestamp_pb2 as _timestamp_pb2
from inspectloop.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EdgeNodeState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EDGE_NODE_STATE_UNSPECIFIED: _ClassVar[EdgeNodeState]
    EDGE_NODE_STATE_READY: _ClassVar[EdgeNodeState]
    EDGE_NODE_STATE_SYNCING: _ClassVar[EdgeNodeState]
    EDGE_NODE_STATE_DEGRADED: _ClassVar[EdgeNodeState]
    EDGE_NODE_STATE_FALLBACK: _ClassVar[EdgeNodeState]
EDGE_NODE_STATE_UNSPECIFIED: EdgeNodeState
EDGE_NODE_STATE_READY: EdgeNodeState
EDGE_NODE_STATE_SYNCING: EdgeNodeState
EDGE_NODE_STATE_DEGRADED: EdgeNodeState
EDGE_NODE_STATE_FALLBACK: EdgeNodeState

class EdgeHeartbeat(_message.Message):
    __slots__ = ("node_id", "line", "station", "wave", "loaded_model", "loaded_model_sha256", "previous_model", "outbox_depth", "oldest_outbox_at", "last_sync_at", "routing_generation", "state", "last_error", "agent_version", "sent_at")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    LINE_FIELD_NUMBER: _ClassVar[int]
    STATION_FIELD_NUMBER: _ClassVar[int]
    WAVE_FIELD_NUMBER: _ClassVar[int]
    LOADED_MODEL_FIELD_NUMBER: _ClassVar[int]
    LOADED_MODEL_SHA256_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_MODEL_FIELD_NUMBER: _ClassVar[int]
    OUTBOX_DEPTH_FIELD_NUMBER: _ClassVar[int]
    OLDEST_OUTBOX_AT_FIELD_NUMBER: _ClassVar[int]
    LAST_SYNC_AT_FIELD_NUMBER: _ClassVar[int]
    ROUTING_GENERATION_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    AGENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    SENT_AT_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    line: str
    station: str
    wave: int
    loaded_model: _common_pb2.ModelRef
    loaded_model_sha256: str
    previous_model: _common_pb2.ModelRef
    outbox_depth: int
    oldest_outbox_at: _timestamp_pb2.Timestamp
    last_sync_at: _timestamp_pb2.Timestamp
    routing_generation: int
    state: EdgeNodeState
    last_error: str
    agent_version: str
    sent_at: _timestamp_pb2.Timestamp
    def __init__(self, node_id: _Optional[str] = ..., line: _Optional[str] = ..., station: _Optional[str] = ..., wave: _Optional[int] = ..., loaded_model: _Optional[_Union[_common_pb2.ModelRef, _Mapping]] = ..., loaded_model_sha256: _Optional[str] = ..., previous_model: _Optional[_Union[_common_pb2.ModelRef, _Mapping]] = ..., outbox_depth: _Optional[int] = ..., oldest_outbox_at: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., last_sync_at: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., routing_generation: _Optional[int] = ..., state: _Optional[_Union[EdgeNodeState, str]] = ..., last_error: _Optional[str] = ..., agent_version: _Optional[str] = ..., sent_at: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...
