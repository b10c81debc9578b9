"""The gateway as it is deployed: a Ray Serve application with its HTTP and gRPC front ends,
on the real Triton and the real Kafka broker."""

from __future__ import annotations

import base64
import http.client
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from prometheus_client import CollectorRegistry

from inspectloop.core.bus import build_bus
from inspectloop.core.errors import PermanentError, TransientError
from inspectloop.core.settings import BusSettings, KafkaSettings
from inspectloop.core.topics import INSPECTIONS
from inspectloop.devtools.gateway_stack import wait_healthy
from inspectloop.devtools.harness import KafkaBroker
from inspectloop.devtools.harness.process import pick_free_ports
from inspectloop.devtools.tiny_models import NAME, png
from inspectloop.gateway.settings import GatewaySection, GatewaySettings
from inspectloop.inspection.settings import TritonSettings
from inspectloop.simulator.traffic import GrpcInspectClient
from inspectloop.v1.common_pb2 import DECISION_PASS, MODEL_ROLE_STABLE
from inspectloop.v1.inspect_service_pb2 import InspectRequest
from inspectloop.v1.inspection_pb2 import InspectionEvent

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def served(
    served_models: str, kafka_broker: KafkaBroker, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewaySettings]:
    import ray  # noqa: PLC0415
    from ray import serve  # noqa: PLC0415

    from inspectloop.gateway.app import init_local_ray, start  # noqa: PLC0415

    http_port, grpc_port, direct_http_port, direct_grpc_port = pick_free_ports(4)
    settings = GatewaySettings(
        service="gateway",
        data_dir=tmp_path_factory.mktemp("gateway"),
        bus=BusSettings(
            backend="kafka", kafka=KafkaSettings(bootstrap_servers=kafka_broker.bootstrap_servers)
        ),
        gateway=GatewaySection(
            model_name=NAME,
            http_port=http_port,
            grpc_port=grpc_port,
            # The replica answers on ports of its own too, past Serve's proxy.
            direct_ingress=True,
            direct_http_port=direct_http_port,
            direct_grpc_port=direct_grpc_port,
            triton=TritonSettings(url=served_models),
        ),
    )
    init_local_ray(settings.gateway, num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        start(settings)
        wait_healthy(f"http://127.0.0.1:{settings.gateway.http_port}/healthz", 120)
        yield settings
    finally:
        serve.shutdown()
        ray.shutdown()


def api(settings: GatewaySettings, path: str, entry: str = "proxy") -> str:
    port = settings.gateway.http_port if entry == "proxy" else settings.gateway.direct_http_port
    return f"http://127.0.0.1:{port}{path}"


@pytest.mark.parametrize("entry", ["proxy", "direct"])
def test_http_json_multipart_and_grpc_answer_and_publish(
    served: GatewaySettings, entry: str
) -> None:
    """Through Serve's proxy, and straight to the replica (direct ingress)."""
    gateway = served.gateway
    grpc_port = gateway.grpc_port if entry == "proxy" else gateway.direct_grpc_port
    body = {
        "line": "serve-line-1",
        "request_id": f"{entry}-json-1",
        "content_type": "image/png",
        "image_base64": base64.b64encode(png(1)).decode(),
    }
    answer = requests.post(api(served, "/v1/inspect", entry), json=body, timeout=30)
    assert answer.status_code == 200, answer.text
    json_answer = answer.json()
    assert json_answer["decision"] == "DECISION_PASS"
    assert json_answer["model"] == {"name": NAME, "version": "1", "role": "MODEL_ROLE_STABLE"}

    upload = requests.post(
        api(served, "/v1/inspect/upload", entry),
        files={"image": ("unit.png", png(2), "image/png")},
        data={"line": "serve-line-1", "request_id": f"{entry}-upload-1", "sku": "SKU-01"},
        timeout=30,
    )
    assert upload.status_code == 200, upload.text

    client = GrpcInspectClient(f"127.0.0.1:{grpc_port}")
    try:
        grpc_answer = client.inspect(
            InspectRequest(line="serve-line-1", request_id=f"{entry}-grpc-1", image=png(3)), 30
        )
        assert grpc_answer.decision == DECISION_PASS
        assert grpc_answer.model.role == MODEL_ROLE_STABLE
        with pytest.raises(PermanentError, match=r"INVALID_ARGUMENT.*not a PNG or JPEG"):
            client.inspect(InspectRequest(line="serve-line-1", image=b"junk"), 30)
    finally:
        client.close()

    ids = {json_answer["inspection_id"], upload.json()["inspection_id"], grpc_answer.inspection_id}
    bus = build_bus(served.bus, "check", CollectorRegistry())
    seen: dict[str, InspectionEvent] = {}
    consumer = bus.consumer(
        f"check-{uuid.uuid4().hex[:6]}",
        [INSPECTIONS],
        lambda e: seen.__setitem__(e.message.inspection_id, e.message),
    )
    try:
        deadline = time.monotonic() + 60
        while not ids <= set(seen):
            assert time.monotonic() < deadline, f"published: {set(seen) & ids} of {ids}"
            consumer.poll_once(0.5)
    finally:
        consumer.close()
        bus.close()
    assert seen[upload.json()["inspection_id"]].sku == "SKU-01"
    assert seen[grpc_answer.inspection_id].request_id == f"{entry}-grpc-1"


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"line": "serve-line-1", "image_base64": "%%%"}, 400, "not valid base64"),
        (
            {"line": "serve-line-1", "image_base64": base64.b64encode(b"junk").decode()},
            400,
            "not a PNG or JPEG",
        ),
        (
            {
                "line": "serve-line-1",
                "content_type": "image/gif",
                "image_base64": base64.b64encode(png(0)).decode(),
            },
            415,
            "image/gif",
        ),
        ({"image_base64": ""}, 422, "line"),
    ],
)
def test_bad_requests_get_4xx_with_the_reason(
    served: GatewaySettings, body: dict[str, str], status: int, words: str
) -> None:
    answer = requests.post(api(served, "/v1/inspect"), json=body, timeout=30)
    assert answer.status_code == status, answer.text
    assert words in answer.text


def test_openapi_and_metrics(served: GatewaySettings) -> None:
    spec = requests.get(api(served, "/openapi.json"), timeout=30).json()
    assert {"/v1/inspect", "/v1/inspect/upload", "/healthz", "/metrics"} <= set(spec["paths"])
    requests.post(
        api(served, "/v1/inspect"),
        json={"line": "serve-line-5", "image_base64": base64.b64encode(png(5)).decode()},
        timeout=30,
    ).raise_for_status()
    text = requests.get(api(served, "/metrics"), timeout=30).text
    assert 'inspectloop_gateway_inspect_requests_total{decision="pass",line="serve-line-5"' in text
    assert "inspectloop_gateway_request_duration_seconds_bucket" in text


def test_the_data_dir_is_the_gateways(served: GatewaySettings) -> None:
    blobs = Path(served.data_dir) / "blobs"
    assert any(blobs.rglob("*")), "images were not stored in the blob store"


@pytest.mark.parametrize("entry", ["proxy", "direct"])
def test_an_oversized_body_is_refused_before_it_is_sent(
    served: GatewaySettings, entry: str
) -> None:
    """The 413 comes from the declared length alone: the client sends a gigabyte's headers
    and no body, and the answer arrives without the server waiting for the body."""
    url = urllib.parse.urlsplit(api(served, "/v1/inspect/upload", entry))
    connection = http.client.HTTPConnection(url.hostname or "", url.port, timeout=30)
    try:
        connection.putrequest("POST", url.path)
        connection.putheader("Content-Type", "multipart/form-data; boundary=x")
        connection.putheader("Content-Length", str(10**9))
        connection.endheaders()
        answer = connection.getresponse()
        assert answer.status == 413
        assert "over the limit" in answer.read().decode()
    finally:
        connection.close()


@pytest.mark.parametrize("entry", ["proxy", "direct"])
def test_an_oversized_grpc_message_is_refused_by_grpc(served: GatewaySettings, entry: str) -> None:
    """gRPC itself refuses a message over the image limit (Serve's own limit is 2 GiB), so no
    replica receives, let alone decodes, it."""
    section = served.gateway
    grpc_port = section.grpc_port if entry == "proxy" else section.direct_grpc_port
    client = GrpcInspectClient(f"127.0.0.1:{grpc_port}")
    too_big = b"\x89PNG" + b"\0" * (section.images.max_bytes + 128 * 1024)
    with pytest.raises(TransientError, match="RESOURCE_EXHAUSTED") as refused:
        client.inspect(InspectRequest(line="serve-line-1", image=too_big), 30)
    assert "larger than max" in str(refused.value)
