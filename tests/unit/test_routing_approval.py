"""Which routings the registry approved: the role's stage reached at some point of the version's
history (so a routing read again after its versions were archived or rolled back still passes)."""

from __future__ import annotations

from typing import Any

from inspectloop.core.registry_client import RegistryNotFoundError
from inspectloop.inspection.approval import unapproved
from inspectloop.v1.common_pb2 import ModelRef
from inspectloop.v1.rollout_pb2 import Routing

HISTORY = {
    # v1: production once, archived since; v2: canary, then rolled back; v3: only validated.
    1: ("archived", ["validated", "shadow", "canary", "production", "archived"]),
    2: ("rolled_back", ["validated", "shadow", "canary", "rolled_back"]),
    3: ("validated", ["validated"]),
}


def lookup(name: str, version: int) -> dict[str, Any]:
    if version not in HISTORY:
        raise RegistryNotFoundError(f"no {name} v{version}")
    stage, history = HISTORY[version]
    return {"stage": stage, "stage_history": [{"to_stage": s} for s in history]}


def routing(stable: str, canary: str = "", shadows: tuple[str, ...] = ()) -> Routing:
    message = Routing(line="line-1", generation=1)
    message.stable.CopyFrom(ModelRef(name="m", version=stable))
    if canary:
        message.canary.CopyFrom(ModelRef(name="m", version=canary))
    message.shadows.extend(ModelRef(name="m", version=v) for v in shadows)
    return message


def test_versions_approved_once_for_their_role_pass() -> None:
    assert unapproved(routing("1", canary="2"), lookup) == []
    assert unapproved(routing("1", shadows=("2",)), lookup) == []


def test_a_version_never_approved_for_its_role_or_unknown_is_named() -> None:
    assert unapproved(routing("2"), lookup) == [
        "stable m v2 was never approved for production (stage rolled_back)"
    ]
    assert unapproved(routing("1", canary="3", shadows=("3", "7", "x")), lookup) == [
        "canary m v3 was never approved for canary (stage validated)",
        "shadow m v3 was never approved for shadow (stage validated)",
        "shadow m v7 is not in the registry",
        "shadow m vx is not in the registry",
    ]
