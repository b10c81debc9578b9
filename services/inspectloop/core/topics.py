"""Every topic of the loop: one per event kind, named ``inspectloop.<kind>.v1``.

The key decides order: records with one key stay in one partition. Inspections, feedback, line
modes, drift alerts and routing are keyed by line (a line's story must be read in order);
model versions and rollouts by model name, heartbeats by edge node, changeovers and retrain
requests by their own id.

Routing and line modes are state, not history: each record is a line's whole routing or mode,
and their topics are compacted (see ``Topic.compacted``) so that a replica starting in a year
still finds every line's current state.
"""

from __future__ import annotations

from typing import Any

from inspectloop.core.events import Topic
from inspectloop.v1.edge_pb2 import EdgeHeartbeat
from inspectloop.v1.feedback_pb2 import OperatorFeedback
from inspectloop.v1.inspection_pb2 import InspectionEvent
from inspectloop.v1.models_pb2 import ModelVersion
from inspectloop.v1.monitor_pb2 import (
    ChangeoverAnnounced,
    DriftAlert,
    LineModeChanged,
    RetrainRequest,
)
from inspectloop.v1.rollout_pb2 import RolloutEvent, Routing

INSPECTIONS = Topic("inspectloop.inspections.v1", InspectionEvent, key=lambda m: m.line)
FEEDBACK = Topic("inspectloop.feedback.v1", OperatorFeedback, key=lambda m: m.line)
LINE_MODES = Topic(
    "inspectloop.line-modes.v1", LineModeChanged, key=lambda m: m.line, compacted=True
)
DRIFT_ALERTS = Topic("inspectloop.drift-alerts.v1", DriftAlert, key=lambda m: m.line)
CHANGEOVERS = Topic(
    "inspectloop.changeovers.v1", ChangeoverAnnounced, key=lambda m: m.changeover_id
)
RETRAIN_REQUESTS = Topic(
    "inspectloop.retrain-requests.v1", RetrainRequest, key=lambda m: m.request_id
)
MODELS = Topic("inspectloop.models.v1", ModelVersion, key=lambda m: m.name)
ROLLOUTS = Topic("inspectloop.rollouts.v1", RolloutEvent, key=lambda m: m.model_name)
ROUTING = Topic("inspectloop.routing.v1", Routing, key=lambda m: m.line, compacted=True)
EDGE_HEARTBEATS = Topic("inspectloop.edge-heartbeats.v1", EdgeHeartbeat, key=lambda m: m.node_id)

ALL_TOPICS: tuple[Topic[Any], ...] = (
    INSPECTIONS,
    FEEDBACK,
    LINE_MODES,
    DRIFT_ALERTS,
    CHANGEOVERS,
    RETRAIN_REQUESTS,
    MODELS,
    ROLLOUTS,
    ROUTING,
    EDGE_HEARTBEATS,
)
