"""The rollout controller: validated versions in, routing and rollout events out.

It consumes the models topic; each version the trainer registers as ``validated`` becomes a
rollout over the lines of its scope (one rollout per line at a time: later ones wait). Every
``tick_s`` it looks at its rollouts; a rollout in an analysed phase, or paused for a signature
with its candidate still routed (``RolloutStatus.analysed_as``), is judged every
``analysis.interval_s`` (a paused one is also checked for its signature every tick);
``machine.step`` decides, this module carries out the actions (registry stage, routing per line,
RolloutEvent, Kubernetes record) and then persists the status, so a controller killed at any
point resumes where it stopped (see ``machine``).
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

from google.protobuf.timestamp_pb2 import Timestamp

from inspectloop.core.bus import Delivery, EventBus
from inspectloop.core.errors import (
    BackendUnavailableError,
    PermanentError,
    TransientError,
)
from inspectloop.core.events import Event
from inspectloop.core.registry_client import RegistryClient
from inspectloop.core.topics import EDGE_HEARTBEATS, MODELS, ROLLOUTS, ROUTING
from inspectloop.rollout.analysis import Analyzer
from inspectloop.rollout.fleet import EdgeFleet
from inspectloop.rollout.machine import (
    Action,
    Analysis,
    Announce,
    Phase,
    Policy,
    RolloutStatus,
    SetRouting,
    SetStage,
    Verdict,
    fail,
    step,
)
from inspectloop.rollout.metrics import RolloutMetrics
from inspectloop.v1.common_pb2 import (
    MODEL_ROLE_CANARY,
    MODEL_ROLE_SHADOW,
    MODEL_ROLE_STABLE,
    ModelRef,
    ModelRole,
)
from inspectloop.v1.models_pb2 import MODEL_STAGE_VALIDATED, ModelVersion
from inspectloop.v1.rollout_pb2 import (
    AnalysisCheck,
    AnalysisResult,
    RolloutEvent,
    Routing,
)

log = logging.getLogger(__name__)

CONSUMED = (MODELS, EDGE_HEARTBEATS)
PRODUCED = (ROUTING, ROLLOUTS)
GROUP = "rollout"
ACTOR = "rollout-controller"


class RolloutRecorder(Protocol):
    """Mirrors a rollout's status somewhere operators look (a ModelRollout resource)."""

    def record(self, status: RolloutStatus) -> None: ...


class RolloutStore:
    """Rollouts and each line's last routing generation, in SQLite: the controller's memory
    across restarts."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(path, check_same_thread=False)
        self._lock = threading.Lock()
        with self._conn:
            self._conn.execute(
                "CREATE TABLE IF NOT EXISTS rollouts (rollout_id TEXT PRIMARY KEY, "
                "created_seq INTEGER NOT NULL, status TEXT NOT NULL)"
            )
            self._conn.execute(
                "CREATE TABLE IF NOT EXISTS line_routing (line TEXT PRIMARY KEY, "
                "generation INTEGER NOT NULL)"
            )

    def add(self, status: RolloutStatus) -> bool:
        """Store a new rollout; False when one with its id exists (a replayed model event)."""
        with self._lock, self._conn:
            cursor = self._conn.execute(
                "INSERT OR IGNORE INTO rollouts (rollout_id, created_seq, status) VALUES "
                "(?, (SELECT COALESCE(MAX(created_seq), 0) + 1 FROM rollouts), ?)",
                (status.rollout_id, json.dumps(status.to_dict())),
            )
            return cursor.rowcount == 1

    def save(self, status: RolloutStatus) -> None:
        with self._lock, self._conn:
            self._conn.execute(
                "UPDATE rollouts SET status = ? WHERE rollout_id = ?",
                (json.dumps(status.to_dict()), status.rollout_id),
            )

    def all(self) -> list[RolloutStatus]:
        """Every rollout, oldest first."""
        with self._lock:
            rows = self._conn.execute("SELECT status FROM rollouts ORDER BY created_seq").fetchall()
        return [RolloutStatus.from_dict(json.loads(row[0])) for row in rows]

    def get(self, rollout_id: str) -> RolloutStatus | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT status FROM rollouts WHERE rollout_id = ?", (rollout_id,)
            ).fetchone()
        return RolloutStatus.from_dict(json.loads(row[0])) if row else None

    def next_generation(self, line: str, now: float) -> int:
        """Greater than any generation published for the line, and than the clock in ms, so
        that even a controller that lost this file publishes routing consumers accept."""
        with self._lock, self._conn:
            row = self._conn.execute(
                "SELECT generation FROM line_routing WHERE line = ?", (line,)
            ).fetchone()
            generation = max((row[0] if row else 0) + 1, int(now * 1000))
            self._conn.execute(
                "INSERT INTO line_routing (line, generation) VALUES (?, ?) "
                "ON CONFLICT(line) DO UPDATE SET generation = excluded.generation",
                (line, generation),
            )
            return generation

    def close(self) -> None:
        self._conn.close()


class RolloutController:
    def __init__(
        self,
        *,
        policy: Policy,
        analysis_interval_s: float,
        bus: EventBus,
        registry: RegistryClient,
        analyzer: Analyzer,
        store: RolloutStore,
        metrics: RolloutMetrics,
        recorder: RolloutRecorder | None = None,
        fleet: EdgeFleet | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.policy = policy
        self.interval_s = analysis_interval_s
        self._bus = bus
        self._registry = registry
        self._analyzer = analyzer
        self._store = store
        self._metrics = metrics
        self._recorder = recorder
        self._fleet = fleet
        self._clock = clock
        # A restarted controller judges its first interval afresh, one interval from now.
        self._last_analysis: dict[str, float] = {}

    # --- the models topic ------------------------------------------------------------------

    def handle(self, event: Event[Any]) -> None:
        if event.topic == EDGE_HEARTBEATS.name:
            if self._fleet is not None:
                self._fleet.observe(event.message)
            return
        version: ModelVersion = event.message
        if version.stage != MODEL_STAGE_VALIDATED:
            return
        lines = tuple(dict.fromkeys(version.scope.lines))
        if not lines:
            raise PermanentError(f"model {version.name} v{version.version} names no line")
        now = self._clock()
        status = RolloutStatus(
            rollout_id=f"{version.name}-v{version.version}",
            model=version.name,
            version=version.version,
            lines=lines,
            stable_version=None,
            policy=self.policy,
            started_at=now,
            updated_at=now,
            reason="validated: waiting to start",
        )
        if self._store.add(status):
            log.info("rollout %s accepted for %s", status.rollout_id, ", ".join(lines))

    # --- the loop ---------------------------------------------------------------------------

    def tick(self) -> None:
        """Advance every rollout that is due; one at a time per line."""
        busy: set[str] = set()
        active = 0
        for stored in self._store.all():
            if stored.terminal:
                continue
            if stored.phase is Phase.PENDING and busy & set(stored.lines):
                active += 1
                continue  # another rollout holds one of its lines
            busy |= set(stored.lines)
            current = stored
            try:
                current = self._advance(stored)
            except (BackendUnavailableError, TransientError) as exc:
                # Nothing persisted: the same step is tried again at the next tick.
                log.warning("rollout %s: %s; retrying", stored.rollout_id, exc)
            active += not current.terminal
        self._metrics.active.set(active)

    def _advance(self, status: RolloutStatus) -> RolloutStatus:
        """The rollout after this tick (the status passed in when nothing was due)."""
        now = self._clock()
        if status.phase is Phase.PENDING:
            status = replace(status, stable_version=self._production_version(status))
        due = False
        if status.analysed_as is not None:
            last = self._last_analysis.setdefault(status.rollout_id, now)
            due = now - last >= self.interval_s
            if not due and status.phase is not Phase.PAUSED:
                return status
            # Between its analyses a paused rollout is still looked at every tick, with no
            # checks, for its signature: that wait is a person's, not the analysis interval's.
        analysis = self._analyse(status, now) if due else self._unanalysed(status, now)
        new, actions = step(status, analysis)
        if new == status and not actions:
            if due:
                self._last_analysis[status.rollout_id] = now
            return status
        try:
            self._execute(new, actions)
        except PermanentError as exc:
            log.error("rollout %s failed: %s", status.rollout_id, exc)
            new, actions = fail(status, now, f"cannot proceed: {exc}")
            self._execute(new, actions)
        self._store.save(new)
        # Counted as analysed only once its step is saved: a step that failed (a routing not
        # acknowledged) is analysed and tried again at the next tick, not an interval later.
        if due:
            self._last_analysis[status.rollout_id] = now
        if status.phase is Phase.PAUSED and new.phase is not Phase.PAUSED:
            # Resumed: the phase it enters gets a whole interval before it is first judged.
            self._last_analysis[status.rollout_id] = now
        if new.phase is not status.phase:
            self._metrics.transitions.labels(model=new.model, phase=new.phase.value).inc()
            log.warning(
                "rollout %s: %s -> %s: %s", new.rollout_id, status.phase, new.phase, new.reason
            )
        self._metrics.canary_weight.labels(model=new.model, version=new.version).set(
            new.canary_weight_bps / 10_000
        )
        if self._recorder is not None:
            self._recorder.record(new)
        return new

    def _unanalysed(self, status: RolloutStatus, now: float) -> Analysis:
        """No checks, only the signatures (a pending or paused rollout between analyses)."""
        return Analysis(now=now, approvals=frozenset(self._approvals(status)))

    def _analyse(self, status: RolloutStatus, now: float) -> Analysis:
        """The interval's checks, measured as the phase the rollout is analysed as."""
        phase = status.analysed_as
        assert phase is not None
        approvals = frozenset(self._approvals(status))
        try:
            # A paused rollout gets the checks of the phase it paused in (the canary's include
            # the label-delayed quality and the edge waves of its last step).
            checks = self._analyzer.checks(replace(status, phase=phase))
        except BackendUnavailableError as exc:
            self._metrics.source_up.set(0)
            return Analysis(now=now, approvals=approvals, source_error=str(exc))
        self._metrics.source_up.set(1)
        for check in checks:
            self._metrics.checks.labels(metric=check.metric, outcome=check.verdict.value).inc()
        verdict = Analysis(now=now, checks=checks).verdict
        log.info("rollout %s analysis: %s", status.rollout_id, verdict.value)
        return Analysis(now=now, checks=checks, approvals=approvals)

    # --- the registry ----------------------------------------------------------------------

    def _production_version(self, status: RolloutStatus) -> str | None:
        """The newest production version of the model other than the candidate."""
        versions = [
            int(v["version"])
            for v in self._registry.versions(status.model)
            if v["stage"] == "production" and str(v["version"]) != status.version
        ]
        return str(max(versions)) if versions else None

    def _approvals(self, status: RolloutStatus) -> dict[str, str]:
        """Valid signatures on the candidate: meaning -> approval id."""
        if not status.policy.approvals_required:
            return {}
        record = self._registry.version(status.model, int(status.version))
        return {a["meaning"]: a["id"] for a in record["approvals"] if a["valid"]}

    # --- actions ---------------------------------------------------------------------------

    def _execute(self, status: RolloutStatus, actions: list[Action]) -> None:
        signed = [a.approval for a in actions if isinstance(a, SetStage) and a.approval]
        approval_id = self._approvals(status).get(signed[0], "") if signed else ""
        # The new state is saved only once what it published is acknowledged: a rollback saved
        # as done while its Routing never reached the bus would leave the lines on the canary.
        deliveries: list[Delivery] = []
        for action in actions:
            if isinstance(action, SetStage):
                self._registry.transition(
                    status.model,
                    int(action.version),
                    action.stage,
                    f"{action.reason} (rollout {status.rollout_id})",
                )
            elif isinstance(action, SetRouting):
                deliveries += self._publish_routing(status, action)
            elif isinstance(action, Announce):
                deliveries.append(self._announce(status, action, approval_id))
        for delivery in deliveries:
            delivery.result(self._bus.settings.kafka.delivery_timeout_s)

    def _publish_routing(self, status: RolloutStatus, routing: SetRouting) -> list[Delivery]:
        now = self._clock()
        deliveries = []

        def ref(version: str, role: ModelRole) -> ModelRef:
            return ModelRef(name=status.model, version=version, role=role)

        for line in status.lines:
            message = Routing(
                line=line,
                generation=self._store.next_generation(line, now),
                stable=ref(routing.stable, MODEL_ROLE_STABLE),
                canary_weight_bps=routing.canary_weight_bps,
                shadows=[ref(v, MODEL_ROLE_SHADOW) for v in routing.shadows],
                edge_wave=routing.edge_wave,
                rollout_id=status.rollout_id,
                updated_at=_timestamp(now),
            )
            if routing.canary is not None:
                message.canary.CopyFrom(ref(routing.canary, MODEL_ROLE_CANARY))
            deliveries.append(self._bus.publish(ROUTING, message))
        return deliveries

    def _announce(self, status: RolloutStatus, announce: Announce, approval_id: str) -> Delivery:
        event = RolloutEvent(
            event_id=announce.event_id,
            rollout_id=status.rollout_id,
            model_name=status.model,
            version=status.version,
            lines=status.lines,
            phase=status.phase.proto_name,
            previous_phase=announce.previous_phase.proto_name,
            step_index=status.step_index,
            canary_weight_bps=status.canary_weight_bps,
            analysis=[
                AnalysisCheck(
                    metric=c.metric,
                    result=_RESULTS[c.verdict],
                    value=c.value,
                    threshold=c.threshold,
                    query=c.query,
                    sample_count=c.samples,
                    detail=c.detail,
                )
                for c in announce.checks
            ],
            failed_checks=status.failed_checks,
            reason=status.reason,
            actor=ACTOR,
            occurred_at=_timestamp(status.updated_at),
            stable_version=status.stable_version or "",
            approval_id=approval_id,
        )
        return self._bus.publish(ROLLOUTS, event, event_id=announce.event_id)

    # --- running -------------------------------------------------------------------------------

    def run(self, stop: threading.Event, tick_s: float) -> None:
        consumer = self._bus.consumer(GROUP, CONSUMED, self.handle)
        thread = threading.Thread(target=consumer.run, args=(stop,), name="models-consumer")
        thread.start()
        try:
            while not stop.is_set():
                self.tick()
                stop.wait(tick_s)
        finally:
            stop.set()
            thread.join()
            consumer.close()


_RESULTS = {
    Verdict.PASS: AnalysisResult.ANALYSIS_RESULT_PASS,
    Verdict.FAIL: AnalysisResult.ANALYSIS_RESULT_FAIL,
    Verdict.INCONCLUSIVE: AnalysisResult.ANALYSIS_RESULT_INCONCLUSIVE,
}


def _timestamp(seconds: float) -> Timestamp:
    stamp = Timestamp()
    stamp.FromNanoseconds(int(seconds * 1e9))
    return stamp


def main() -> None:
    """``python -m inspectloop.rollout.service``: run rollouts until SIGTERM."""
    import signal  # noqa: PLC0415

    from prometheus_client import CollectorRegistry  # noqa: PLC0415

    from inspectloop.core.bus import build_bus  # noqa: PLC0415
    from inspectloop.core.logging import configure_logging  # noqa: PLC0415
    from inspectloop.core.metrics import serve_metrics  # noqa: PLC0415
    from inspectloop.core.settings import load_settings  # noqa: PLC0415
    from inspectloop.rollout.analysis import MetricsSource, PrometheusSource  # noqa: PLC0415
    from inspectloop.rollout.embedded import EmbeddedSource  # noqa: PLC0415
    from inspectloop.rollout.settings import RolloutSettings  # noqa: PLC0415

    settings = load_settings(RolloutSettings, service="rollout")
    configure_logging(settings.logging, settings.service)
    section = settings.rollout
    assert section.state_path is not None  # derived by RolloutSettings
    registry = CollectorRegistry()
    bus = build_bus(settings.bus, settings.service, registry)
    bus.ensure_topics([*CONSUMED, *PRODUCED])
    source_settings = section.metrics_source
    source: MetricsSource
    if source_settings.kind == "prometheus":
        source = PrometheusSource(source_settings.prometheus_url)
    else:
        source = EmbeddedSource(
            source_settings.scrape_targets, interval_s=source_settings.scrape_interval_s
        ).start()
    recorder: RolloutRecorder | None = None
    if section.kubernetes_namespace:
        from inspectloop.rollout.kubernetes import ModelRolloutRecorder  # noqa: PLC0415

        recorder = ModelRolloutRecorder(section.kubernetes_namespace)
    token = section.registry_token
    fleet = EdgeFleet(section.edge_stale_after_s)
    controller = RolloutController(
        policy=section.policy(),
        analysis_interval_s=section.analysis.interval_s,
        bus=bus,
        registry=RegistryClient(section.registry_url, token.get_secret_value() if token else None),
        analyzer=Analyzer(source, section.analysis.thresholds(), fleet),
        store=RolloutStore(section.state_path),
        metrics=RolloutMetrics(registry),
        recorder=recorder,
        fleet=fleet,
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    server = (
        serve_metrics(registry, settings.metrics.host, settings.metrics.port)
        if settings.metrics.port
        else None
    )
    log.info("rollout controller ready")
    try:
        controller.run(stop, section.tick_s)
    finally:
        if server is not None:
            server.close()
        bus.close()


if __name__ == "__main__":
    main()
