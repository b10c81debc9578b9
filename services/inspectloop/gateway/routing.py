"""Which model version decides a request, and which shadow versions score a copy.

Routing arrives per line on the routing topic (``Routing``: stable, canary with a weight in basis
points, shadows, and a generation). A request goes to the canary when the hash of its request id
falls below the canary's weight: the split is exact in the limit, and a retried request (same
id) routes the same way. A version Triton cannot serve never receives traffic: an unready
canary's share goes to stable, unready shadows are skipped, and an unready stable version is a
503 (the line PC retries or falls back), never a silent substitute.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from dataclasses import dataclass

from inspectloop.core.errors import BackendUnavailableError
from inspectloop.v1.common_pb2 import (
    MODEL_ROLE_CANARY,
    MODEL_ROLE_SHADOW,
    MODEL_ROLE_STABLE,
    ModelRef,
    ModelRole,
)
from inspectloop.v1.rollout_pb2 import Routing

BASIS_POINTS = 10_000


def canary_bucket(request_id: str) -> int:
    """The request's bucket in 0..9999, from the SHA-256 of its id."""
    digest = hashlib.sha256(request_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") % BASIS_POINTS


def model_ref(name: str, version: str, role: ModelRole) -> ModelRef:
    return ModelRef(name=name, version=version, role=role)


@dataclass(frozen=True)
class Route:
    decider: ModelRef  # with its role: stable or canary
    shadows: tuple[ModelRef, ...]
    generation: int  # of the Routing applied; 0 for the default


class RoutingTable:
    """The latest routing of every line, thread-safe; lines without one use ``default``."""

    def __init__(self, default_model: str, default_version: str) -> None:
        self._default = Routing(stable=model_ref(default_model, default_version, MODEL_ROLE_STABLE))
        self._lines: dict[str, Routing] = {}
        self._lock = threading.Lock()

    def apply(self, routing: Routing) -> bool:
        """Apply ``routing`` unless a later generation of its line is applied already."""
        if not routing.line or not routing.stable.name:
            raise ValueError("a routing names its line and a stable model")
        if routing.canary_weight_bps > BASIS_POINTS:
            raise ValueError(f"canary weight {routing.canary_weight_bps} bps is over 10000")
        with self._lock:
            current = self._lines.get(routing.line)
            if current is not None and routing.generation <= current.generation:
                return False
            self._lines[routing.line] = routing
            return True

    def get(self, line: str) -> Routing:
        with self._lock:
            return self._lines.get(line, self._default)

    def models(self) -> set[tuple[str, str]]:
        """Every (model, version) some line routes to: what Triton must have loaded."""
        with self._lock:
            routings = [self._default, *self._lines.values()]
        found = set()
        for r in routings:
            for ref in (r.stable, r.canary, *r.shadows):
                if ref.name:
                    found.add((ref.name, ref.version))
        return found

    def route(self, line: str, request_id: str, ready: Callable[[str, str], bool]) -> Route:
        """The route of one request; ``ready(name, version)`` says whether Triton serves it."""
        routing = self.get(line)
        stable = routing.stable
        if not ready(stable.name, stable.version):
            raise BackendUnavailableError(
                f"model {stable.name} v{stable.version} (stable on line {line}) is not ready "
                "on Triton"
            )
        decider = model_ref(stable.name, stable.version, MODEL_ROLE_STABLE)
        canary = routing.canary
        if (
            canary.name
            and routing.canary_weight_bps > 0
            and canary_bucket(request_id) < routing.canary_weight_bps
            and ready(canary.name, canary.version)
        ):
            decider = model_ref(canary.name, canary.version, MODEL_ROLE_CANARY)
        # A shadow that is the decider is skipped: the rollout controller shadows both the
        # stable and the canary during a canary, so that every request compares the two.
        shadows = tuple(
            model_ref(s.name, s.version, MODEL_ROLE_SHADOW)
            for s in routing.shadows
            if s.name
            and (s.name, s.version) != (decider.name, decider.version)
            and ready(s.name, s.version)
        )
        return Route(decider, shadows, routing.generation)
