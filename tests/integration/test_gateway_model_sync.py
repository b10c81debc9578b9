"""The gateway keeps the real Triton's model repository in step with routing, from the registry
(its own process, behind a proxy the test takes offline): a version that could not be fetched
while the registry was away is fetched when it is back, a version Triton refuses is never
fetched again (the refused canary gets no traffic and the stable version answers), and a version
routed before it is registered is served once it is."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from inspectloop.core.blobstore import FilesystemBlobStore
from inspectloop.core.bus import EventBus
from inspectloop.core.errors import BackendUnavailableError
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
        settings = GatewaySection(
            model_name=MODEL,
            triton=TritonSettings(url=triton_server.grpc_url, timeout_s=10, readiness_ttl_s=0),
            models=ModelSyncSettings(
                repository=triton_model_repository, registry_url=proxy.url, retry_s=0.5
            ),
        )
        exported = CollectorRegistry()
        metrics = GatewayMetrics(exported)
        triton = TritonScorer(settings.triton)
        sync = RepositorySync(
            triton_model_repository,
            RegistryClient(proxy.url, TOKEN, timeout_s=10),
            triton,
            metrics,
            ARTIFACT,
        )
        gateway = InspectionGateway(
            settings,
            bus=bus,
            blobs=FilesystemBlobStore(tmp_path / "blobs", 1 << 20),
            triton=triton,
            metrics=metrics,
            sync=sync,
        )
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
