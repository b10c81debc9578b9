"""The gateway keeps the real Triton's model repository in step with routing, from the registry
(its own process, behind a proxy the test takes offline): a version that could not be fetched
while the registry was away is fetched when it is back, a version Triton refuses is never
fetched again (the refused canary gets no traffic and the stable version answers), a version
routed before it is registered is served once it is, and a Triton killed and restarted under
traffic serves the line again with no one acting."""

from __future__ import annotations

import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from inspectloop.core.blobstore import FilesystemBlobStore
from inspectloop.core.bus import EventBus
from inspectloop.core.bus.base import DLQ_REASON
from inspectloop.core.errors import BackendUnavailableError
from inspectloop.core.events import H_ID, header
from inspectloop.core.onnx_contract import sha256_file
from inspectloop.core.readiness import poll_until
from inspectloop.core.registry_client import RegistryClient
from inspectloop.core.topics import ROUTING
from inspectloop.devtools.harness import TritonServer
from inspectloop.devtools.registry_process import RegistryUser, registry_process, registry_proxy
from inspectloop.devtools.tiny_models import SPEC, png, tiny_model
from inspectloop.gateway.metrics import GatewayMetrics
from inspectloop.gateway.repository import RepositorySync
from inspectloop.gateway.service import InspectionGateway
from inspectloop.gateway.settings import GatewaySection, ModelSyncSettings
from inspectloop.inspection.settings import TritonSettings
from inspectloop.inspection.triton import TritonScorer
from inspectloop.trainer.packaging import (
    deterministic_tarball,
    export_onnx,
    write_triton_python_entry,
)
from inspectloop.v1.common_pb2 import MODEL_ROLE_CANARY, MODEL_ROLE_STABLE, ModelRef
from inspectloop.v1.inspect_service_pb2 import InspectRequest
from inspectloop.v1.rollout_pb2 import Routing

pytestmark = pytest.mark.integration

MODEL = "gateway_synced"
TOKEN = "ilr_" + "g" * 40
ARTIFACT = "triton-python.tar.gz"


@pytest.fixture
def registry_url(tmp_path: Path) -> Iterator[str]:
    with registry_process(tmp_path / "registry", [RegistryUser("gw", "service", TOKEN)]) as url:
        yield url


def register(client: RegistryClient, version: int, work: Path, *, loadable: bool) -> None:
    """Version ``version`` of MODEL with its Triton entry (the Python backend); when not
    ``loadable``, its model file is not ONNX, which Triton finds out only when loading it."""
    repo = work / f"v{version}"
    onnx_path = export_onnx(tiny_model(1), SPEC, work / f"v{version}.onnx")
    write_triton_python_entry(repo, MODEL, version, onnx_path, SPEC, max_batch_size=8)
    if not loadable:
        (repo / MODEL / str(version) / "model.onnx").write_bytes(b"this is not an ONNX model")
    tarball = deterministic_tarball(repo / MODEL, work / f"v{version}-{ARTIFACT}", arcname=MODEL)
    sha = sha256_file(tarball)
    client.upload_artifact(tarball, sha)
    record = client.register_version(
        MODEL,
        {
            "stage": "candidate",
            "artifacts": [
                {
                    "kind": "triton_repo",
                    "sha256": sha,
                    "size_bytes": tarball.stat().st_size,
                    "filename": ARTIFACT,
                }
            ],
            "lineage": {
                "dataset_snapshot_id": "snap-sync",
                "dataset_sha256": "d" * 64,
                "code_version": "test",
            },
            "classes": list(SPEC.classes),
            "input_width": SPEC.input_size,
            "input_height": SPEC.input_size,
        },
    )
    assert record["version"] == version


def syncing_gateway(
    bus: EventBus,
    *,
    registry_url: str,
    triton_server: TritonServer,
    repository: Path,
    tmp_path: Path,
    exported: CollectorRegistry,
    verify_routing: bool = False,
    default_version: str = "1",
) -> InspectionGateway:
    """A gateway that fills the session Triton's repository from the registry at
    ``registry_url``, retrying every half second. Routing is not checked against the registry's
    stages unless ``verify_routing`` (these tests route candidates)."""
    settings = GatewaySection(
        model_name=MODEL,
        default_version=default_version,
        triton=TritonSettings(url=triton_server.grpc_url, timeout_s=10, readiness_ttl_s=0),
        models=ModelSyncSettings(
            repository=repository,
            registry_url=registry_url,
            retry_s=0.5,
            verify_routing=verify_routing,
        ),
    )
    metrics = GatewayMetrics(exported)
    triton = TritonScorer(settings.triton)
    sync = RepositorySync(
        repository, RegistryClient(registry_url, TOKEN, timeout_s=10), triton, metrics, ARTIFACT
    )
    return InspectionGateway(
        settings,
        bus=bus,
        blobs=FilesystemBlobStore(tmp_path / "blobs", 1 << 20),
        triton=triton,
        metrics=metrics,
        sync=sync,
    )


def test_an_unreachable_registry_is_retried_and_a_refused_version_is_not(
    bus: EventBus,
    registry_url: str,
    triton_server: TritonServer,
    triton_model_repository: Path,
    tmp_path: Path,
) -> None:
    client = RegistryClient(registry_url, TOKEN)
    register(client, 1, tmp_path / "models", loadable=True)
    register(client, 2, tmp_path / "models", loadable=False)
    client.close()

    with registry_proxy(registry_url) as proxy:
        proxy.offline = True
        exported = CollectorRegistry()
        gateway = syncing_gateway(
            bus,
            registry_url=proxy.url,
            triton_server=triton_server,
            repository=triton_model_repository,
            tmp_path=tmp_path,
            exported=exported,
        )
        metrics, triton, sync = gateway.metrics, gateway.triton, gateway.sync
        assert sync is not None
        routing = Routing(line="line-1", generation=1, canary_weight_bps=10000)
        routing.stable.CopyFrom(ModelRef(name=MODEL, version="1"))
        routing.canary.CopyFrom(ModelRef(name=MODEL, version="2"))
        bus.publish(ROUTING, routing).result(10)

        def failures(version: str) -> float:
            return float(
                metrics.model_load_failures.labels(model=MODEL, version=version)._value.get()
            )

        def inspect(i: int) -> InspectRequest:
            return InspectRequest(line="line-1", request_id=f"sync-{i}", image=png(i))

        gateway.follow()
        try:
            # The registry is away: the routing's first sync fails, and so do the retries.
            poll_until(lambda: failures("1") >= 3, timeout=60, what="retries of version 1")
            assert sync.refused == set()
            assert not (triton_model_repository / MODEL / "1").exists()
            with pytest.raises(BackendUnavailableError, match=MODEL):
                gateway.inspect(inspect(0))

            # Back: version 1 is fetched and loaded; Triton refuses version 2 when it reads it.
            proxy.offline = False
            poll_until(
                lambda: triton.ready(MODEL, "1") and (MODEL, "2") in sync.refused,
                timeout=180,
                what="version 1 served and version 2 refused",
            )
            assert not (triton_model_repository / MODEL / "2").exists()
            assert failures("2") >= 1
            refusals, fetches = failures("2"), proxy.requests
            gateway.sync_models()
            gateway.sync_models()
            assert (failures("2"), proxy.requests) == (refusals, fetches)  # not tried again

            # The canary holds all the weight, but it cannot serve: the stable version answers.
            for i in range(1, 6):
                answer = gateway.inspect(inspect(i))
                assert (answer.model.version, answer.model.role) == ("1", MODEL_ROLE_STABLE)
            ready = metrics.model_ready.labels
            assert ready(model=MODEL, version="1")._value.get() == 1
            assert ready(model=MODEL, version="2")._value.get() == 0

            # Routing names a version the registry does not have yet (as the default version
            # before the first training): asked for again and again, neither refused nor
            # counted as a failure (a fresh plant raises no alert), and served once registered.
            asked = proxy.requests
            routing.generation, routing.canary.version = 2, "3"
            bus.publish(ROUTING, routing).result(10)
            poll_until(lambda: proxy.requests >= asked + 3, timeout=60, what="version 3 retried")
            assert (MODEL, "3") not in sync.refused
            # The refused version 2 is no longer routed: its readiness series is gone (a 0 left
            # behind would keep the not-ready alert firing).
            series = "inspectloop_gateway_model_ready_info"
            assert exported.get_sample_value(series, {"model": MODEL, "version": "2"}) is None
            assert exported.get_sample_value(series, {"model": MODEL, "version": "1"}) == 1
            assert failures("3") == 0
            assert ready(model=MODEL, version="3")._value.get() == 0
            client = RegistryClient(registry_url, TOKEN)
            register(client, 3, tmp_path / "models", loadable=True)
            client.close()
            poll_until(lambda: triton.ready(MODEL, "3"), timeout=120, what="version 3 served")
            answer = gateway.inspect(inspect(6))
            assert (answer.model.version, answer.model.role) == ("3", MODEL_ROLE_CANARY)
        finally:
            gateway.close()
            if triton_server.is_model_ready(MODEL):
                triton_server.unload_model(MODEL)
            shutil.rmtree(triton_model_repository / MODEL, ignore_errors=True)


# After Triton answers again, the gateway's next sync pass reloads what routing needs: within
# one retry interval plus the model's load time. Stated for the test's 0.5 s interval.
HEAL_AFTER_TRITON_READY_S = 30.0


def test_lines_serve_again_after_triton_is_killed_and_restarted_under_traffic(
    bus: EventBus,
    registry_url: str,
    triton_server: TritonServer,
    triton_model_repository: Path,
    tmp_path: Path,
) -> None:
    client = RegistryClient(registry_url, TOKEN)
    register(client, 1, tmp_path / "models", loadable=True)
    client.close()
    gateway = syncing_gateway(
        bus,
        registry_url=registry_url,
        triton_server=triton_server,
        repository=triton_model_repository,
        tmp_path=tmp_path,
        exported=CollectorRegistry(),
    )
    routing = Routing(line="line-1", generation=1)
    routing.stable.CopyFrom(ModelRef(name=MODEL, version="1"))
    bus.publish(ROUTING, routing).result(10)
    # What other tests of the session loaded: a restarted Triton has none of it, so it is
    # loaded again at the end.
    others = {
        m["name"]
        for m in triton_server.repository_index()
        if m.get("state") == "READY" and m["name"] != MODEL
    }
    answers: list[tuple[float, str]] = []  # (when, version answered or the error's type)
    stop = threading.Event()

    def traffic() -> None:
        i = 0
        while not stop.is_set():
            i += 1
            request = InspectRequest(line="line-1", request_id=f"heal-{i}", image=png(i))
            try:
                answer = gateway.inspect(request)
                answers.append((time.monotonic(), answer.model.version))
            except Exception as exc:
                answers.append((time.monotonic(), type(exc).__name__))
            stop.wait(0.05)

    gateway.follow()
    sender = threading.Thread(target=traffic, daemon=True)
    try:
        poll_until(lambda: gateway.triton.ready(MODEL, "1"), timeout=180, what="version 1 served")
        sender.start()
        poll_until(lambda: len(answers) >= 5, timeout=60, what="traffic before the crash")
        triton_server.kill()
        triton_server.start()  # waits until Triton answers; in explicit mode it loads nothing
        back = time.monotonic()
        poll_until(
            lambda: any(t > back and v == "1" for t, v in answers),
            timeout=HEAL_AFTER_TRITON_READY_S,
            what="the line served again with no one acting",
        )
        healed_s = min(t for t, v in answers if t > back and v == "1") - back
        print(f"served again {healed_s:.1f} s after Triton was back")
        count = len(answers)
        poll_until(lambda: len(answers) >= count + 10, timeout=60, what="traffic after healing")
    finally:
        stop.set()
        if sender.is_alive():
            sender.join(timeout=30)
        gateway.close()
        if not triton_server.is_running():
            triton_server.start()
        for name in sorted(others):
            triton_server.load_model(name)
        if triton_server.is_model_ready(MODEL):
            triton_server.unload_model(MODEL)
        shutil.rmtree(triton_model_repository / MODEL, ignore_errors=True)
    # Every answer was the routed version or a refusal while Triton was away (503 to the line),
    # never a wrong model; and after healing every request was answered.
    assert {v for _, v in answers} <= {"1", "BackendUnavailableError"}
    assert any(v == "BackendUnavailableError" for _, v in answers), "the crash was not seen"
    assert all(v == "1" for _, v in answers[count:]), answers[count:]


def test_a_routing_to_a_version_the_registry_never_approved_is_refused(
    bus: EventBus,
    triton_server: TritonServer,
    triton_model_repository: Path,
    tmp_path: Path,
) -> None:
    # A registry whose stages need no signature, so that the test can approve by transition.
    with registry_process(
        tmp_path / "registry",
        [RegistryUser("gw", "service", TOKEN)],
        settings={"INSPECTLOOP_REGISTRY__REQUIRE_SIGNATURE_FOR": "[]"},
    ) as url:
        client = RegistryClient(url, TOKEN)
        register(client, 1, tmp_path / "models", loadable=True)
        register(client, 2, tmp_path / "models", loadable=True)
        for stage in ("validated", "shadow"):
            client.transition(MODEL, 1, stage, "test")
        client.transition(MODEL, 2, "validated", "test")
        exported = CollectorRegistry()
        gateway = syncing_gateway(
            bus,
            registry_url=url,
            triton_server=triton_server,
            repository=triton_model_repository,
            tmp_path=tmp_path,
            exported=exported,
            verify_routing=True,
            default_version="9",  # not registered: nothing is served until a routing is applied
        )

        def refused() -> float:
            value = exported.get_sample_value(
                "inspectloop_gateway_routing_refused_events_total", {"line": "line-1"}
            )
            return value or 0.0

        def routing(generation: int, stable: str, canary: str = "") -> str:
            message = Routing(line="line-1", generation=generation, canary_weight_bps=1000)
            message.stable.CopyFrom(ModelRef(name=MODEL, version=stable))
            if canary:
                message.canary.CopyFrom(ModelRef(name=MODEL, version=canary))
            event_id = f"routing-{generation}"
            bus.publish(ROUTING, message, event_id=event_id).result(10)
            return event_id

        gateway.follow()
        try:
            # v1 is only a shadow: it may not decide a line.
            forged = routing(1, stable="1")
            poll_until(lambda: refused() == 1, timeout=60, what="the routing refused")
            assert gateway.routing.get("line-1").generation == 0
            # Approved for production: applied.
            for stage in ("canary", "production"):
                client.transition(MODEL, 1, stage, "test")
            routing(2, stable="1")
            poll_until(
                lambda: gateway.routing.get("line-1").generation == 2,
                timeout=60,
                what="the approved routing applied",
            )
            # A canary the registry only validated is refused; the line keeps generation 2.
            routing(3, stable="1", canary="2")
            poll_until(lambda: refused() == 2, timeout=60, what="the canary routing refused")
            assert gateway.routing.get("line-1").generation == 2
            assert (MODEL, "2") not in gateway.routing.models()
        finally:
            gateway.close()
            client.close()
            if triton_server.is_model_ready(MODEL):
                triton_server.unload_model(MODEL)
            shutil.rmtree(triton_model_repository / MODEL, ignore_errors=True)

    # Nothing is lost: the refused events are in the dead-letter topic, with the reason.
    reasons: dict[str | None, str | None] = {}
    source = bus.raw_source(f"dlq-{uuid.uuid4().hex[:6]}", [ROUTING.dlq])
    try:
        deadline = time.monotonic() + 30
        while len(reasons) < 2 and time.monotonic() < deadline:
            for record in source.poll(10, 0.2):
                reasons[header(record.headers, H_ID)] = header(record.headers, DLQ_REASON)
    finally:
        source.close()
    assert "never approved for production" in str(reasons.get(forged))
    assert "canary gateway_synced v2 was never approved for canary" in str(reasons.get("routing-3"))
