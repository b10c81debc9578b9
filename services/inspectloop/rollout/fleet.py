"""The edge fleet as the rollout controller sees it: the last heartbeat of every edge node.

A canary step moves the rollout's edge wave forward (``Routing.edge_wave``); the nodes of the
waves reached then pull, verify and load the candidate. The controller judges that move like a
metric: every live node of a reached wave running the candidate passes; a node still syncing is
inconclusive (the rollout waits for it); a node that is degraded without the candidate (it
refused the artifact, or could not load it) fails. Lines without edge nodes are not judged.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from inspectloop.rollout.machine import Check, Phase, RolloutStatus, Verdict
from inspectloop.v1.edge_pb2 import EDGE_NODE_STATE_DEGRADED, EdgeHeartbeat

EDGE_CHECK = "edge_wave_loaded"


class EdgeFleet:
    """Latest heartbeat per node; nodes silent for ``stale_after_s`` are left out (a PC switched
    off must not hold a rollout forever)."""

    def __init__(self, stale_after_s: float, clock: Callable[[], float] = time.time) -> None:
        self.stale_after_s = stale_after_s
        self._clock = clock
        self._nodes: dict[str, tuple[float, EdgeHeartbeat]] = {}
        self._lock = threading.Lock()

    def observe(self, heartbeat: EdgeHeartbeat) -> None:
        with self._lock:
            self._nodes[heartbeat.node_id] = (self._clock(), heartbeat)

    def live(self, lines: tuple[str, ...]) -> list[EdgeHeartbeat]:
        now = self._clock()
        with self._lock:
            return [
                beat
                for seen, beat in self._nodes.values()
                if beat.line in lines and now - seen <= self.stale_after_s
            ]

    def check(self, status: RolloutStatus) -> Check | None:
        """The edge check of a rollout in canary or production watch; None without nodes."""
        if status.phase not in (Phase.CANARY, Phase.PRODUCTION_WATCH):
            return None
        nodes = self.live(status.lines)
        if not nodes:
            return None
        reached = (
            min(status.step_index + 1, status.policy.edge_waves)
            if status.phase is Phase.CANARY
            else max(n.wave for n in nodes)  # promoted: every wave runs the candidate
        )
        due = [n for n in nodes if n.wave <= reached]
        lagging = [n for n in due if n.loaded_model.version != status.version]
        refused = [n for n in lagging if n.state == EDGE_NODE_STATE_DEGRADED]
        query = f"edge heartbeats on {', '.join(status.lines)}, waves <= {reached}"
        loaded = len(due) - len(lagging)
        if refused:
            detail = "; ".join(f"{n.node_id}: {n.last_error or 'degraded'}" for n in refused)
            verdict = Verdict.FAIL
        elif lagging:
            detail = "waiting for " + ", ".join(sorted(n.node_id for n in lagging))
            verdict = Verdict.INCONCLUSIVE
        else:
            detail = f"{loaded} nodes of waves <= {reached} run v{status.version}"
            verdict = Verdict.PASS
        return Check(
            EDGE_CHECK,
            verdict,
            loaded / len(due) if due else 1.0,
            1.0,
            query,
            len(due),
            detail,
        )
