"""A RetrainRequest on the bus, end to end on real components: the trainer service trains on
Ray Train with two workers, fits the anomaly detector, judges the production gates on held-out
images, registers the version with its artifacts in the real registry service (over HTTP),
announces it on the models topic; routed to it, the gateway fetches its Triton entry from the
registry, loads it into the real Triton server, and answers like the packaged model: the
classifier's scores and the anomaly score, combined into one decision."""

from __future__ import annotations

import json
import shutil
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from inspectloop.core.blobstore import FilesystemBlobStore
from inspectloop.core.events import Event
from inspectloop.core.onnx_contract import (
    OUTPUT_ANOMALY_SCORE,
    OUTPUT_PROBABILITIES,
    run_onnx,
    sha256_file,
)
from inspectloop.core.registry_client import RegistryClient
from inspectloop.core.topics import (
    FEEDBACK,
    MODELS,
    RETRAIN_REQUESTS,
    ROUTING,
)
from inspectloop.devtools.harness import TritonServer
from inspectloop.devtools.registry_process import RegistryUser, registry_process
from inspectloop.gateway.metrics import GatewayMetrics
from inspectloop.gateway.repository import RepositorySync
from inspectloop.gateway.service import InspectionGateway
from inspectloop.gateway.settings import GatewaySection, ModelSyncSettings
from inspectloop.inspection.settings import TritonSettings
from inspectloop.inspection.triton import TritonScorer
from inspectloop.simulator.dataset import DatasetSpec, write_dataset
from inspectloop.simulator.render import encode_png
from inspectloop.trainer.data import load_split
from inspectloop.trainer.gates import GateSettings
from inspectloop.trainer.model import ModelSpec
from inspectloop.trainer.packaging import deterministic_tarball
from inspectloop.trainer.settings import TrainerSection
from inspectloop.v1.common_pb2 import (
    DECISION_PASS,
    DECISION_REJECT,
    MODEL_ROLE_STABLE,
    ModelRef,
    Scope,
)
from inspectloop.v1.inspect_service_pb2 import InspectRequest
from inspectloop.v1.models_pb2 import MODEL_STAGE_REJECTED, MODEL_STAGE_VALIDATED, ModelVersion
from inspectloop.v1.monitor_pb2 import RETRAIN_REASON_DRIFT, RetrainRequest
from inspectloop.v1.rollout_pb2 import Routing
from tests.conftest import TrainerFactory

pytestmark = pytest.mark.integration

SIZE = 64
TOKEN = "ilr_" + "t" * 40


@pytest.fixture(scope="module")
def registry_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The registry service as it runs in production: its own process, on SQLite."""
    users = [RegistryUser("trainer", "service", TOKEN)]
    with registry_process(tmp_path_factory.mktemp("registry"), users) as url:
        yield url


def test_retrain_request_to_registered_version_served_by_triton(
    make_trainer: TrainerFactory,
    registry_url: str,
    triton_server: TritonServer,
    triton_model_repository: Path,
    tmp_path: Path,
) -> None:
    reference = tmp_path / "reference"
    write_dataset(DatasetSpec(n=360, seed=9, size=SIZE, golden_per_class=1), reference)
    settings = TrainerSection(
        model_name="e2e-inspector",
        num_workers=2,
        epochs=3,
        batch_size=32,
        image_size=SIZE,
        width_multiplier=0.5,
        reference_datasets=(reference,),
        golden_dataset=reference,
        registry_url=registry_url,
        work_dir=tmp_path / "trainer",
        gates=GateSettings(latency_runs=20),
    )
    registry = RegistryClient(registry_url, TOKEN)
    trainer = make_trainer(settings, registry)
    service, bus, trainer_metrics = trainer.service, trainer.bus, trainer.metrics
    bus.ensure_topics([RETRAIN_REQUESTS, FEEDBACK, MODELS])
    request = RetrainRequest(
        request_id="req-1",
        reason=RETRAIN_REASON_DRIFT,
        requested_by="test",
        scope=Scope(lines=["line-1"], label_designs=["A"]),
    )
    bus.publish(RETRAIN_REQUESTS, request, event_id="req-1").result(10)

    trained = []
    with bus.consumer(
        "trainer", [RETRAIN_REQUESTS], lambda e: trained.append(service.answer(e.message))
    ) as consumer:
        deadline = time.monotonic() + 600
        while not trained and time.monotonic() < deadline:
            consumer.poll_once(1.0)
    assert trained, "the retrain request was not handled (see the log: dead-lettered?)"
    result = trained[0]

    # The registry holds the version, with every artifact stored and verifiable.
    versions = registry.versions("e2e-inspector")
    assert [v["version"] for v in versions] == [result.version] == [1]
    record = registry.version("e2e-inspector", 1)
    kinds = sorted(a["kind"] for a in record["artifacts"])
    assert kinds == ["checkpoint", "onnx", "onnx_int8", "report", "triton_repo", "triton_repo"]
    assert record["lineage"]["retrain_request_id"] == "req-1"
    # The architecture is recorded: the next retraining fine-tunes only weights that fit.
    training = record["lineage"]["training_config"]
    assert ModelSpec.from_dict(training["model_spec"]) == ModelSpec(
        input_size=SIZE, width_multiplier=0.5
    )
    assert training["fine_tuned"] is False  # no parent yet
    # Design A is the reference's: nothing synthesised; its test split is held out for the gates.
    snapshot = tmp_path / "trainer" / "snapshots" / record["lineage"]["dataset_snapshot_id"]
    manifest = [json.loads(line) for line in (snapshot / "manifest.jsonl").open()]
    assert not [r for r in manifest if r["source"].startswith("synthetic:")]
    assert len(manifest) == sum(1 for _ in (reference / "manifest.jsonl").open())
    assert {"accuracy", "escape_rate", "false_reject_rate", "A/accuracy"} <= set(record["metrics"])
    gates = {g["gate"]: g for g in record["gate_results"]}
    assert gates["accuracy"]["threshold"] == 0.997
    # Three short epochs on 64-pixel images cannot reach 99.7%: the gates must say so.
    assert (
        record["stage"]
        == result.stage
        == ("validated" if gates["accuracy"]["passed"] else "rejected")
    )
    # The trainer's metrics count the request once, under the stage it ended in.
    assert (
        trainer_metrics.get_sample_value(
            "inspectloop_trainer_retrains_requests_total", {"outcome": result.stage}
        )
        == 1
    )
    assert (
        trainer_metrics.get_sample_value(
            "inspectloop_trainer_retrain_duration_seconds_count", {"outcome": result.stage}
        )
        == 1
    )
    assert trainer_metrics.get_sample_value("inspectloop_trainer_retrains_running_requests") == 0
    for artifact in record["artifacts"]:
        body = httpx.get(
            f"{registry_url}/v1/artifacts/{artifact['sha256']}",
            headers={"Authorization": f"Bearer {TOKEN}"},
        ).content
        assert len(body) == artifact["size_bytes"]

    announced: list[ModelVersion] = []

    def collect(event: Event[ModelVersion]) -> None:
        announced.append(event.message)

    with bus.consumer("check", [MODELS], collect) as consumer:
        deadline = time.monotonic() + 60
        while not announced and time.monotonic() < deadline:
            consumer.poll_once(1.0)
    assert announced[0].version == "1"
    assert list(announced[0].scope.lines) == ["line-1"]  # where the rollout will take it
    assert announced[0].stage == (
        MODEL_STAGE_VALIDATED if result.stage == "validated" else MODEL_STAGE_REJECTED
    )

    # The gateway follows routing to the new version: it fetches the version's Triton entry
    # from the registry (hash verified), loads it, and answers like the torch model. A canary
    # whose entry cannot load (a broken version 2) gets no traffic and is counted.
    register_broken_version(registry, record, tmp_path)
    gateway_metrics = GatewayMetrics(CollectorRegistry())
    triton = TritonScorer(TritonSettings(url=triton_server.grpc_url, readiness_ttl_s=0))
    gateway = InspectionGateway(
        # Routes the registered (validated) and broken versions directly, with no rollout to
        # approve them: the registry's stage check is not what this test is about.
        GatewaySection(model_name="e2e-inspector", models=ModelSyncSettings(verify_routing=False)),
        bus=bus,
        blobs=FilesystemBlobStore(tmp_path / "gateway-blobs", 1 << 24),
        triton=triton,
        metrics=gateway_metrics,
        sync=RepositorySync(
            triton_model_repository, registry, triton, gateway_metrics, "triton-python.tar.gz"
        ),
    )
    routing = Routing(line="line-1", generation=1, canary_weight_bps=5000)
    routing.stable.CopyFrom(ModelRef(name="e2e-inspector", version="1"))
    routing.canary.CopyFrom(ModelRef(name="e2e-inspector", version="2"))
    bus.publish(ROUTING, routing).result(10)
    gateway.follow()
    failures = gateway_metrics.model_load_failures.labels(model="e2e-inspector", version="2")
    try:
        deadline = time.monotonic() + 300
        while failures._value.get() < 1 or not triton.ready("e2e-inspector", "1"):
            assert time.monotonic() < deadline, "the gateway did not sync the routed versions"
            time.sleep(0.1)
        assert (triton_model_repository / "e2e-inspector" / "1" / "model.onnx").is_file()
        assert not (triton_model_repository / "e2e-inspector" / "2").exists()
        assert not triton.ready("e2e-inspector", "2")

        # The gateway answers as the packaged model computes, anomaly score included, and
        # the decision is the combined one.
        spec = ModelSpec(input_size=SIZE, width_multiplier=0.5)
        onnx = next(a for a in record["artifacts"] if a["kind"] == "onnx")
        packaged = registry.download_artifact(onnx["sha256"], tmp_path / "model.onnx")
        images = load_split(reference, "test", spec.classes, cache=False).images[:8]
        expected = run_onnx(packaged, images)
        assert float(expected[OUTPUT_ANOMALY_SCORE].max()) > 0  # the detector is in the graph
        for i, image in enumerate(images):
            png = encode_png(image)
            answer = gateway.inspect(
                InspectRequest(line="line-1", request_id=f"after-retrain-{i}", image=png)
            )
            assert (answer.model.version, answer.model.role) == ("1", MODEL_ROLE_STABLE)
            served = np.array([s.score for s in answer.prediction.scores])
            assert np.allclose(served, expected[OUTPUT_PROBABILITIES][i], atol=1e-4)
            anomaly = float(expected[OUTPUT_ANOMALY_SCORE][i])
            assert answer.prediction.anomaly_score == pytest.approx(anomaly, abs=1e-3)
            passes = answer.prediction.top_class == "good" and anomaly < 1.0
            assert answer.decision == (DECISION_PASS if passes else DECISION_REJECT)
            assert [s.class_name for s in answer.prediction.scores] == list(spec.classes)
    finally:
        gateway.close()
        triton_server.unload_model("e2e-inspector")
        shutil.rmtree(triton_model_repository / "e2e-inspector", ignore_errors=True)
        registry.close()


def register_broken_version(
    registry: RegistryClient, first: dict[str, Any], tmp_path: Path
) -> None:
    """Version 2 of the model: version 1's Triton entry with a model file Triton cannot load."""
    tarball = next(
        a for a in first["artifacts"] if a["kind"] == "triton_repo" and "python" in a["filename"]
    )
    unpacked = tmp_path / "broken"
    archive = registry.download_artifact(tarball["sha256"], tmp_path / "v1.tar.gz")
    with tarfile.open(archive) as tar:
        tar.extractall(unpacked, filter="data")
    model_dir = unpacked / "e2e-inspector"
    (model_dir / "1").rename(model_dir / "2")
    (model_dir / "2" / "model.onnx").write_bytes(b"this is not an ONNX model")
    broken = deterministic_tarball(model_dir, tmp_path / "triton-python.tar.gz")
    sha = sha256_file(broken)
    registry.upload_artifact(broken, sha)
    registry.register_version(
        "e2e-inspector",
        {
            "stage": "candidate",
            "artifacts": [
                {
                    "kind": "triton_repo",
                    "sha256": sha,
                    "size_bytes": broken.stat().st_size,
                    "filename": "triton-python.tar.gz",
                }
            ],
            "lineage": {
                "parent_version": 1,
                "dataset_snapshot_id": first["lineage"]["dataset_snapshot_id"],
                "dataset_sha256": first["lineage"]["dataset_sha256"],
                "code_version": "test",
            },
            "classes": first["classes"],
            "input_width": SIZE,
            "input_height": SIZE,
        },
    )
