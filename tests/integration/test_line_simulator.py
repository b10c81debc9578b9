"""The line and operator simulators against the Inspect gRPC contract and the event bus.

Until the gateway lands, a minimal servicer of the same ``Inspect`` service stands in for it
here: it decides by a fixed rule and publishes the InspectionEvent as the gateway will. What is
under test is the simulators: what they send over real gRPC, and what the operators publish.
"""

from __future__ import annotations

import io
import threading
import uuid
from collections.abc import Callable
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from PIL import Image
from prometheus_client import CollectorRegistry

from inspectloop.core.bus import build_bus
from inspectloop.core.events import Event
from inspectloop.core.settings import BusSettings, LocalBusSettings
from inspectloop.core.topics import CHANGEOVERS, FEEDBACK, INSPECTIONS
from inspectloop.simulator.line import LineSimulator
from inspectloop.simulator.operators import OperatorSimulator
from inspectloop.simulator.scenario import Scenario, load_scenario
from inspectloop.simulator.traffic import GroundTruthStore, GrpcInspectClient
from inspectloop.v1 import inspect_service_pb2_grpc
from inspectloop.v1.common_pb2 import DECISION_PASS, DECISION_REJECT
from inspectloop.v1.feedback_pb2 import (
    FEEDBACK_VERDICT_CONFIRMED_DEFECT,
    FEEDBACK_VERDICT_ESCAPE_REPORTED,
    FEEDBACK_VERDICT_FALSE_REJECT,
    FEEDBACK_VERDICT_GOOD_CONFIRMED,
    OperatorFeedback,
)
from inspectloop.v1.inspect_service_pb2 import InspectRequest, InspectResponse
from inspectloop.v1.inspection_pb2 import InspectionEvent

pytestmark = pytest.mark.integration

SCENARIOS = Path(__file__).resolve().parents[2] / "services/inspectloop/simulator/scenarios"


class RuleServicer(inspect_service_pb2_grpc.InspectServicer):
    """Rejects every third request and asks for review on every fifth."""

    def __init__(self, publish: Callable[[InspectionEvent], object]) -> None:
        self.requests: list[InspectRequest] = []
        self._publish = publish
        self._lock = threading.Lock()

    def Inspect(self, request: InspectRequest, context: grpc.ServicerContext) -> InspectResponse:  # noqa: N802
        with self._lock:
            n = len(self.requests)
            self.requests.append(request)
        decision = DECISION_REJECT if n % 3 == 0 else DECISION_PASS
        response = InspectResponse(
            decision=decision,
            human_review_required=n % 5 == 0,
            inspection_id=str(uuid.uuid4()),
        )
        self._publish(
            InspectionEvent(
                inspection_id=response.inspection_id,
                request_id=request.request_id,
                line=request.line,
                sku=request.sku,
                decision=decision,
                human_review_required=response.human_review_required,
            )
        )
        return response


def short(scenario: Scenario, duration_s: float) -> Scenario:
    events = tuple(e for e in scenario.events if e.at_s <= duration_s)
    return scenario.model_copy(update={"duration_s": duration_s, "events": events})


def test_line_and_operators_drive_the_inspect_api_and_publish_true_feedback(tmp_path: Path) -> None:
    bus = build_bus(
        BusSettings(backend="local", local=LocalBusSettings(directory=tmp_path / "bus")),
        "test",
        CollectorRegistry(),
    )
    bus.ensure_topics([INSPECTIONS, FEEDBACK, CHANGEOVERS])
    servicer = RuleServicer(lambda event: bus.publish(INSPECTIONS, event).result(10))
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    inspect_service_pb2_grpc.add_InspectServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    truth = GroundTruthStore(tmp_path / "truth.sqlite3")
    try:
        # The redesign at 120 s, compressed: 4 units/s on two lines for 130 s.
        scenario = load_scenario(SCENARIOS / "label-redesign.yaml")
        scenario = scenario.model_copy(update={"defect_prevalence": 0.3})
        client = GrpcInspectClient(f"127.0.0.1:{port}")
        report = LineSimulator(short(scenario, 130), client, truth, time_scale=0).run()
        client.close()
        units = 2 * 4 * 130 + 2  # both lines, t = 0 .. 130 inclusive
        assert report.sent == units and report.failed == 0
        assert len(servicer.requests) == units
        assert len({r.request_id for r in servicer.requests}) == units

        first = servicer.requests[0]
        image = Image.open(io.BytesIO(first.image))
        assert (image.format, image.size, first.content_type) == ("PNG", (128, 128), "image/png")
        assert truth.count(line="line-1", design="B") == 4 * 10 + 1  # 120 s .. 130 s
        assert truth.count(line="line-2", design="B") == 0
        defective = units - truth.count(defect_class="good")
        assert 0.2 * units < defective < 0.4 * units

        operators = OperatorSimulator(
            bus,
            truth,
            scenario.operators.model_copy(update={"error_rate": 0.0, "escape_report_rate": 1.0}),
            seed=scenario.seed,
            time_scale=1e9,
        )
        with bus.consumer("simulated-operators", [INSPECTIONS], operators.handle) as consumer:
            while consumer.poll_once(0.2):
                operators.publish_due()
        operators.publish_due()

        feedback: list[OperatorFeedback] = []

        def collect(event: Event[OperatorFeedback]) -> None:
            feedback.append(event.message)

        with bus.consumer("check", [FEEDBACK], collect) as consumer:
            while consumer.poll_once(0.5):
                pass
        assert len(feedback) == operators.published > 0
        by_request = {r.request_id: n for n, r in enumerate(servicer.requests)}
        inspections: dict[str, InspectionEvent] = {}

        def remember(event: Event[InspectionEvent]) -> None:
            inspections[event.message.inspection_id] = event.message

        with bus.consumer("inspections", [INSPECTIONS], remember) as consumer:
            while consumer.poll_once(0.5):
                pass
        checked = 0
        for item in feedback:
            inspection = inspections[item.inspection_id]
            unit = truth.get(inspection.request_id)
            assert unit is not None
            n = by_request[inspection.request_id]
            if n % 3 == 0:  # rejected: judged in the reject bin
                expected = (
                    FEEDBACK_VERDICT_CONFIRMED_DEFECT
                    if unit.is_defective
                    else FEEDBACK_VERDICT_FALSE_REJECT
                )
            elif unit.is_defective:
                expected = FEEDBACK_VERDICT_ESCAPE_REPORTED
            else:
                expected = FEEDBACK_VERDICT_GOOD_CONFIRMED
            assert item.verdict == expected
            assert item.defect_class == (unit.defect_class if unit.is_defective else "")
            checked += 1
        rejects = sum(1 for n in range(units) if n % 3 == 0)
        reviewed_passes = sum(1 for n in range(units) if n % 3 and n % 5 == 0)
        escapes = sum(
            1
            for r in servicer.requests
            if by_request[r.request_id] % 3
            and by_request[r.request_id] % 5
            and (u := truth.get(r.request_id)) is not None
            and u.is_defective
        )
        assert checked == rejects + reviewed_passes + escapes
    finally:
        server.stop(grace=None)
        truth.close()
        bus.close()


@pytest.mark.parametrize("path", sorted(SCENARIOS.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_scenario_runs_and_its_change_shows_in_the_truth(tmp_path: Path, path: Path) -> None:
    scenario = load_scenario(path)
    last_change = max(e.at_s for e in scenario.events)
    truth = GroundTruthStore(tmp_path / "truth.sqlite3")
    # Dry run (no gateway): render every unit the scenario makes up to just after its change.
    scenario = short(scenario, last_change + 2).model_copy(
        update={
            "lines": tuple(line.model_copy(update={"rate_per_s": 0.5}) for line in scenario.lines)
        }
    )
    report = LineSimulator(scenario, None, truth, time_scale=0).run()
    assert report.sent == sum(report.by_line.values()) > 0
    assert report.announced == sum(1 for e in scenario.events if e.announce)
    changed = scenario.events[-1]
    if changed.change.design:
        assert truth.count(line=changed.line, design=changed.change.design) >= 1
    if changed.change.sku:
        assert truth.count(line=changed.line, sku=changed.change.sku) >= 1
    if changed.change.serialization:
        assert truth.count(line=changed.line, serialization=changed.change.serialization) >= 1
    truth.close()
