"""The line simulator: N packaging lines sending every unit's image to the inspect API.

Each line produces units at its rate, a share of them defective; every unit's label is rendered
as the scenario says the line looks at that moment (design, SKU, serialization, light, focus).
The truth about the unit is recorded first, then the image goes to the gateway through the
``InspectClient``, as a line PC would send it, and the answer is recorded next to the truth.

Time is simulated: ``time_scale`` simulated seconds pass per wall second (0 = as fast as the
gateway answers). Request ids are derived from the seed, so a rerun sends the same requests.
"""

from __future__ import annotations

import hashlib
import heapq
import logging
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
import numpy.typing as npt
from google.protobuf.timestamp_pb2 import Timestamp

from inspectloop.core.bus import EventBus
from inspectloop.core.bus.dedupe import derived_event_id
from inspectloop.core.errors import InspectloopError
from inspectloop.core.topics import CHANGEOVERS
from inspectloop.simulator.conditions import ConditionsDistribution
from inspectloop.simulator.defects import DEFECT_CLASSES
from inspectloop.simulator.render import encode_png, render_label
from inspectloop.simulator.scenario import LineConditions, Scenario, ScenarioEvent, conditions_at
from inspectloop.simulator.traffic import GroundTruthStore, InspectClient, UnitTruth
from inspectloop.v1.inspect_service_pb2 import InspectRequest
from inspectloop.v1.monitor_pb2 import ChangeoverAnnounced

log = logging.getLogger(__name__)

_NAMESPACE = uuid.UUID("6c1f3a8e-3b7d-4d55-9a51-0c2b8f6e7a11")


def line_distribution(state: LineConditions) -> ConditionsDistribution:
    """The per-image conditions of a line in ``state``: nominal variation around its light
    level, colour temperature and focus."""
    nominal = ConditionsDistribution()
    low, high = nominal.light_level
    return replace(
        nominal,
        light_level=(low * state.lighting_level, high * state.lighting_level),
        colour_temperature_k=(state.color_temperature_k - 500, state.color_temperature_k + 500),
        blur_sigma=(
            nominal.blur_sigma[0] + state.blur_sigma,
            nominal.blur_sigma[1] + state.blur_sigma,
        ),
    )


@dataclass(frozen=True)
class Unit:
    """One unit as the line's camera sees it, and the truth about it."""

    image: npt.NDArray[np.uint8]
    state: LineConditions
    defect_class: str  # "good" when the unit is not defective
    severity: float


def render_unit(
    scenario: Scenario, line_index: int, unit_index: int, t: float, size: int | None = None
) -> Unit:
    """The ``unit_index``-th unit of a line, at ``t`` seconds into the scenario. Deterministic:
    its randomness comes from the scenario's seed and the unit's place, so any unit can be
    rendered again, alone, in any process. ``size`` overrides the scenario's image size."""
    spec = scenario.lines[line_index]
    state = conditions_at(scenario, spec.id, t)
    rng = np.random.default_rng(
        np.random.SeedSequence(scenario.seed, spawn_key=(line_index, unit_index))
    )
    defective = rng.random() < scenario.defect_prevalence
    defect = DEFECT_CLASSES[int(rng.integers(0, len(DEFECT_CLASSES)))] if defective else None
    severity = float(rng.random()) if defective else 0.0
    image, _ = render_label(
        state.sku,
        state.design,
        state.serialization,
        rng=rng,
        defect=defect,
        severity=severity,
        distribution=line_distribution(state),
        size=size or scenario.image_size,
    )
    return Unit(image, state, defect or "good", severity)


@dataclass
class RunReport:
    sent: int = 0
    failed: int = 0
    defects: int = 0
    announced: int = 0
    by_line: Counter[str] = field(default_factory=Counter)
    decisions: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)


class LineSimulator:
    def __init__(
        self,
        scenario: Scenario,
        client: InspectClient | None,
        truth: GroundTruthStore,
        *,
        bus: EventBus | None = None,
        time_scale: float = 1.0,
        request_timeout_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``client`` None is a dry run: units are rendered and their truth recorded, nothing is
        sent (to check a scenario, or to produce traffic for a load test). ``bus`` receives the
        scenario's announced changeovers."""
        self.scenario = scenario
        self._client = client
        self._truth = truth
        self._bus = bus
        self._time_scale = time_scale
        self._timeout = request_timeout_s
        self._clock = clock
        self.report = RunReport()

    def _request_id(self, line: str, index: int) -> str:
        return str(
            uuid.uuid5(_NAMESPACE, f"{self.scenario.name}/{self.scenario.seed}/{line}/{index}")
        )

    def run(self, stop: threading.Event | None = None, max_units: int | None = None) -> RunReport:
        """Run the scenario to its end (or ``stop``, or ``max_units`` units in all)."""
        stop = stop or threading.Event()
        schedule: list[tuple[float, int, int]] = [
            (0.0, i, 0) for i in range(len(self.scenario.lines))
        ]
        heapq.heapify(schedule)
        announcements = sorted(
            (e for e in self.scenario.events if e.announce), key=lambda e: e.at_s
        )
        started = self._clock()
        while schedule and not stop.is_set():
            t, line_index, unit_index = heapq.heappop(schedule)
            if t > self.scenario.duration_s:
                continue
            if max_units is not None and self.report.sent + self.report.failed >= max_units:
                break
            while announcements and announcements[0].at_s <= t:
                self._announce(announcements.pop(0))
            self._wait_until(started, t, stop)
            self._send_unit(line_index, unit_index, t)
            line = self.scenario.lines[line_index]
            heapq.heappush(schedule, (t + 1.0 / line.rate_per_s, line_index, unit_index + 1))
        return self.report

    def _wait_until(self, started: float, t: float, stop: threading.Event) -> None:
        if self._time_scale <= 0:
            return
        delay = started + t / self._time_scale - self._clock()
        if delay > 0:
            stop.wait(delay)  # pacing the line, not synchronising with anything

    def _send_unit(self, line_index: int, unit_index: int, t: float) -> None:
        spec = self.scenario.lines[line_index]
        unit = render_unit(self.scenario, line_index, unit_index, t)
        state = unit.state
        png = encode_png(unit.image)
        request_id = self._request_id(spec.id, unit_index)
        self._truth.record(
            UnitTruth(
                request_id=request_id,
                line=spec.id,
                sku=state.sku,
                design=state.design,
                serialization=state.serialization,
                defect_class=unit.defect_class,
                severity=unit.severity,
                image_sha256=hashlib.sha256(png).hexdigest(),
                sent_at_s=t,
            )
        )
        self.report.defects += int(unit.defect_class != "good")
        self.report.by_line[spec.id] += 1
        if self._client is None:
            self.report.sent += 1
            return
        captured = Timestamp()
        captured.GetCurrentTime()
        request = InspectRequest(
            line=spec.id,
            station=spec.station,
            camera=spec.camera,
            sku=state.sku,
            # A line PC knows the design only once the plant announced it.
            label_design=state.design if self._announced(spec.id, t) else "",
            request_id=request_id,
            image=png,
            content_type="image/png",
            captured_at=captured,
        )
        try:
            response = self._client.inspect(request, self._timeout)
        except InspectloopError as exc:
            self.report.failed += 1
            self.report.errors[type(exc).__name__] += 1
            log.warning("line %s: %s", spec.id, exc)
            return
        self._truth.record_response(request_id, response)
        self.report.sent += 1
        self.report.decisions[str(response.decision)] += 1

    def _announced(self, line: str, t: float) -> bool:
        return any(e.announce and e.line == line and e.at_s <= t for e in self.scenario.events)

    def _announce(self, event: ScenarioEvent) -> None:
        self.report.announced += 1
        if self._bus is None:
            return
        state = conditions_at(self.scenario, event.line, event.at_s)
        before = conditions_at(self.scenario, event.line, max(0.0, event.at_s - 1e-6))
        changeover_id = derived_event_id(
            f"{self.scenario.name}/{self.scenario.seed}", f"{event.line}/{event.at_s}"
        )
        announcement = ChangeoverAnnounced(
            changeover_id=changeover_id,
            lines=[event.line],
            sku=state.sku,
            label_design=state.design,
            previous_sku=before.sku,
            previous_label_design=before.design,
            announced_by="line-simulator",
            note=f"{event.kind} ({self.scenario.name})",
        )
        announcement.announced_at.GetCurrentTime()
        announcement.effective_at.GetCurrentTime()
        self._bus.publish(CHANGEOVERS, announcement, event_id=changeover_id).result(
            self._bus.settings.kafka.delivery_timeout_s
        )
