"""Whether the registry approved the versions a Routing names, for the roles it names them in.

Routing reaches the gateway over the bus, and whoever can write that topic could otherwise send a
line to a version that never passed the registry's stage gates (and their electronic signatures,
``requireSignatureFor``). A version is approved for a role once the registry moved it to that
role's stage (stable: production, canary: canary, shadow: shadow) at some point of its history:
a routing read again from the start of the topic names versions that have since been archived or
rolled back, and those were approved when it was published; later generations supersede them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from inspectloop.core.registry_client import RegistryNotFoundError
from inspectloop.v1.rollout_pb2 import Routing

VersionLookup = Callable[[str, int], dict[str, Any]]  # RegistryClient.version fits


def reached(record: dict[str, Any], stage: str) -> bool:
    """Whether the registry's ``record`` of a version was ever in ``stage``."""
    return record.get("stage") == stage or any(
        change.get("to_stage") == stage for change in record.get("stage_history", [])
    )


def unapproved(routing: Routing, lookup: VersionLookup) -> list[str]:
    """What in ``routing`` the registry did not approve (empty when all of it is). Raises what
    ``lookup`` raises when the registry cannot be asked (BackendUnavailableError)."""
    named = [("stable", "production", routing.stable)]
    if routing.canary.name:
        named.append(("canary", "canary", routing.canary))
    named += [("shadow", "shadow", ref) for ref in routing.shadows]
    problems = []
    records: dict[tuple[str, str], dict[str, Any] | None] = {}
    for role, stage, ref in named:
        key = (ref.name, ref.version)
        if key not in records:
            try:
                records[key] = lookup(ref.name, int(ref.version))
            except (ValueError, RegistryNotFoundError):  # not a version number, or unknown
                records[key] = None
        record = records[key]
        if record is None:
            problems.append(f"{role} {ref.name} v{ref.version} is not in the registry")
        elif not reached(record, stage):
            problems.append(
                f"{role} {ref.name} v{ref.version} was never approved for {stage} "
                f"(stage {record.get('stage')})"
            )
    return problems
