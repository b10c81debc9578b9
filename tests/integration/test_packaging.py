"""Packaging against real runtimes: ONNX Runtime parity, int8, and the real Triton server.

A tiny ``InspectionCNN`` (32 x 32 input, width 0.25) trained a few steps on random images (so
that batch norm statistics are not the identity) is exported, checked, quantized and served by
the session's Triton 2.51 through its Python backend; Triton's answers must equal torch's.

NVIDIA's ONNX Runtime backend is not in the ``nvidia-pytriton`` wheel, so its ``config.pbtxt``
is checked by parsing it with Triton's own ``ModelConfig`` schema (``model_config_pb2`` ships in
``tritonclient``): a misspelt field or a wrong enum fails the parse.
"""

from __future__ import annotations

import functools
import json
import queue
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnx
import pytest
import torch
import tritonclient.grpc as triton_grpc
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from inspectloop.core.onnx_contract import (
    INPUT_NAME,
    OUTPUT_ANOMALY_SCORE,
    OUTPUT_NAMES,
    ort_session,
    read_metadata,
    run_onnx,
    sha256_file,
)
from inspectloop.devtools.harness import TritonServer
from inspectloop.trainer.gates import measure_latency
from inspectloop.trainer.model import InspectionCNN, ModelSpec, build_model
from inspectloop.trainer.packaging import (
    ArtifactType,
    ParityError,
    check_parity,
    export_onnx,
    package_model,
    reference_outputs,
    triton_config,
    write_triton_onnx_entry,
    write_triton_python_entry,
)

pytestmark = pytest.mark.integration

SPEC = ModelSpec(input_size=32, width_multiplier=0.25, embedding_dim=16)
ATOL = 1e-4


@dataclass(frozen=True)
class Trained:
    model: InspectionCNN
    images: npt.NDArray[np.uint8]
    labels: npt.NDArray[np.int64]


def _data(n: int, seed: int) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.int64]]:
    """Noise with a class-dependent bright band, so that a few steps learn something."""
    rng = np.random.default_rng(seed)
    size, k = SPEC.input_size, SPEC.num_classes
    labels = rng.integers(0, k, n).astype(np.int64)
    images = rng.integers(0, 200, (n, size, size, 3), dtype=np.uint8)
    for i, label in enumerate(labels):
        images[i, : (label + 1) * size // (k + 1), :, label % 3] = 255
    return images, labels


@pytest.fixture(scope="module")
def trained() -> Trained:
    model = build_model(SPEC, seed=3)
    images, labels = _data(320, seed=0)
    x, y = SPEC.preprocess(images), torch.as_tensor(labels)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(40):
        idx = torch.randint(0, len(y), (64,), generator=generator)
        loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    return Trained(model, images, labels)


@pytest.fixture(scope="module")
def packaged(trained: Trained, tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    out = tmp_path_factory.mktemp("package")
    yield package_model(
        trained.model,
        SPEC,
        out,
        model_name="tiny-inspector",
        triton_version=3,
        parity_images=trained.images[:16],
        calibration_images=trained.images[:256],
        eval_images=trained.images,
        eval_labels=trained.labels,
        parity_atol=ATOL,
    )


def test_onnx_contract_and_parity(trained: Trained, tmp_path: Path) -> None:
    path = export_onnx(trained.model, SPEC, tmp_path / "model.onnx")

    proto = onnx.load(str(path))
    assert [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")] == [17]
    (graph_input,) = proto.graph.input
    assert graph_input.name == INPUT_NAME
    assert graph_input.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    dims = graph_input.type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [32, 32, 3]
    assert tuple(o.name for o in proto.graph.output) == OUTPUT_NAMES
    assert [d.dim_value for d in proto.graph.output[1].type.tensor_type.shape.dim[1:]] == [16]
    assert read_metadata(path)["classes"].startswith('["good"')
    assert ModelSpec.from_dict(json.loads(read_metadata(path)["spec"])) == SPEC

    diff = check_parity(trained.model, path, trained.images[:16], ATOL)
    assert diff < ATOL
    # Any batch size: one image, and an odd batch.
    for batch in (trained.images[:1], trained.images[:7]):
        outputs = run_onnx(path, batch)
        expected = reference_outputs(trained.model, SPEC, batch)
        for name in OUTPUT_NAMES:
            np.testing.assert_allclose(outputs[name], expected[name], atol=ATOL)
    # The export is deterministic: same weights, same bytes.
    again = export_onnx(trained.model, SPEC, tmp_path / "again.onnx")
    assert sha256_file(again) == sha256_file(path)


def test_parity_failure_names_the_difference(trained: Trained, tmp_path: Path) -> None:
    path = export_onnx(trained.model, SPEC, tmp_path / "model.onnx")
    changed = build_model(SPEC, seed=3)
    changed.load_state_dict(trained.model.state_dict())
    changed.eval()
    with torch.no_grad():
        changed.head.bias.add_(0.5)

    with pytest.raises(ParityError, match=r"logits over their tolerance \(atol 0.0001, .*logits"):
        check_parity(changed, path, trained.images[:8], ATOL)


def test_dynamo_exporter_is_an_alternative(trained: Trained, tmp_path: Path) -> None:
    path = export_onnx(trained.model, SPEC, tmp_path / "dynamo.onnx", exporter="dynamo")

    proto = onnx.load(str(path))
    assert [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")] == [18]
    assert check_parity(trained.model, path, trained.images[:8], ATOL) < ATOL


def test_package_model_artifacts(packaged: object, trained: Trained, tmp_path: Path) -> None:
    from inspectloop.trainer.packaging import PackageResult  # noqa: PLC0415

    assert isinstance(packaged, PackageResult)
    kinds = [a.kind for a in packaged.artifacts]
    assert kinds == [
        ArtifactType.ONNX,
        ArtifactType.ONNX_INT8,
        ArtifactType.TRITON_ONNX,
        ArtifactType.TRITON_PYTHON,
    ]
    for artifact in packaged.artifacts:
        assert artifact.sha256 == sha256_file(artifact.path)
        assert artifact.size_bytes == artifact.path.stat().st_size
        assert len(artifact.sha256) == 64
    assert packaged.parity_diff < ATOL
    assert packaged.details == {"exporter": "torchscript", "opset": 17}

    # int8: smaller, same contract, accuracy delta reported.
    fp32 = packaged.artifact(ArtifactType.ONNX)
    int8 = packaged.artifact(ArtifactType.ONNX_INT8)
    assert int8.size_bytes < fp32.size_bytes
    assert read_metadata(int8.path)["quantization"].startswith("int8")
    delta = packaged.int8
    assert delta.count == len(trained.labels)
    assert delta.delta == pytest.approx(delta.int8_accuracy - delta.fp32_accuracy)
    assert delta.agreement > 0.9
    assert abs(delta.delta) < 0.05
    int8_out = run_onnx(int8.path, trained.images[:4])
    assert set(int8_out) == set(OUTPUT_NAMES)
    np.testing.assert_allclose(int8_out["probabilities"].sum(axis=1), 1.0, atol=1e-5)

    # Repository tarballs hold <model>/config.pbtxt and <model>/<version>/...
    with tarfile.open(packaged.artifact(ArtifactType.TRITON_PYTHON).path) as tar:
        names = sorted(tar.getnames())
        assert all(m.mtime == 0 and m.uid == 0 for m in tar.getmembers())
    assert names == [
        "tiny-inspector",
        "tiny-inspector/3",
        "tiny-inspector/3/model.onnx",
        "tiny-inspector/3/model.py",
        "tiny-inspector/config.pbtxt",
    ]

    # Packaging the same weights again gives the same hashes, byte for byte.
    again = package_model(
        trained.model,
        SPEC,
        tmp_path / "again",
        model_name="tiny-inspector",
        triton_version=3,
        parity_images=trained.images[:4],
        calibration_images=trained.images[:256],
        eval_images=trained.images[:32],
        eval_labels=trained.labels[:32],
    )
    assert [a.sha256 for a in again.artifacts] == [a.sha256 for a in packaged.artifacts]


def _parse_config(path: Path) -> model_config_pb2.ModelConfig:
    return text_format.Parse(path.read_text(encoding="utf-8"), model_config_pb2.ModelConfig())


def test_onnxruntime_backend_config_parses_with_tritons_schema(
    trained: Trained, tmp_path: Path
) -> None:
    onnx_path = export_onnx(trained.model, SPEC, tmp_path / "model.onnx")
    model_dir = write_triton_onnx_entry(
        tmp_path / "repo", "tiny-inspector", 2, onnx_path, SPEC, max_batch_size=16, threads=2
    )

    assert (model_dir / "2" / "model.onnx").read_bytes() == onnx_path.read_bytes()
    assert not (model_dir / "2" / "model.py").exists()
    config = _parse_config(model_dir / "config.pbtxt")
    assert config.name == "tiny-inspector"
    assert config.platform == "onnxruntime_onnx"
    assert config.max_batch_size == 16
    assert config.HasField("dynamic_batching")
    assert config.version_policy.HasField("all")
    assert [g.kind for g in config.instance_group] == [model_config_pb2.ModelInstanceGroup.KIND_CPU]
    assert config.parameters["intra_op_thread_count"].string_value == "2"
    (images,) = config.input
    assert (images.name, images.data_type, list(images.dims)) == (
        INPUT_NAME,
        model_config_pb2.TYPE_UINT8,
        [32, 32, 3],
    )
    outputs = {o.name: (o.data_type, list(o.dims)) for o in config.output}
    assert outputs == {
        "probabilities": (model_config_pb2.TYPE_FP32, [9]),
        "features": (model_config_pb2.TYPE_FP32, [16]),
        "logits": (model_config_pb2.TYPE_FP32, [9]),
        # The anomaly detector's score per image (shape [1], reshaped to a scalar) and map.
        "anomaly_score": (model_config_pb2.TYPE_FP32, [1]),
        "anomaly_map": (model_config_pb2.TYPE_FP32, [4, 4]),
    }
    # One generator, the backend a parameter: the two configs differ only in the engine.
    python_config = _parse_config_text(triton_config("tiny-inspector", SPEC, "python"))
    onnx_config = _parse_config_text(triton_config("tiny-inspector", SPEC, "onnxruntime"))
    assert python_config.backend == "python" and not python_config.platform
    python_config.backend = ""
    onnx_config.platform = ""
    onnx_config.default_model_filename = ""
    assert python_config == onnx_config


def _parse_config_text(text: str) -> model_config_pb2.ModelConfig:
    return text_format.Parse(text, model_config_pb2.ModelConfig())


def test_latency_of_the_exported_model(packaged: object) -> None:
    from inspectloop.trainer.packaging import PackageResult  # noqa: PLC0415

    assert isinstance(packaged, PackageResult)
    stats = measure_latency(packaged.onnx_path, runs=30, warmup=5, threads=1)
    assert 0 < stats.p50_ms <= stats.p95_ms
    assert stats.threads == 1 and stats.batch == 1 and stats.runs == 30
    assert stats.clock == "cpu"
    pooled = measure_latency(packaged.onnx_path, runs=30, warmup=5, threads=2)
    assert pooled.threads == 2 and pooled.clock == "wall"


def test_one_thread_latency_is_the_calling_threads_own_work(packaged: object) -> None:
    """The gate's CPU clock only means something if ONNX Runtime computes on the calling
    thread with one intra-op thread: then that thread's CPU time is most of the wall time of
    an inference (were the work on a pool, the caller's CPU time would be near zero)."""
    from inspectloop.trainer.packaging import PackageResult  # noqa: PLC0415

    assert isinstance(packaged, PackageResult)
    session = ort_session(packaged.onnx_path, 1)
    size = int(session.get_inputs()[0].shape[1])
    feed = {INPUT_NAME: np.zeros((1, size, size, 3), np.uint8)}
    session.run(None, feed)
    cpu, wall = [], []
    for _ in range(30):
        cpu_start, wall_start = time.thread_time_ns(), time.perf_counter_ns()
        session.run(None, feed)
        cpu.append(time.thread_time_ns() - cpu_start)
        wall.append(time.perf_counter_ns() - wall_start)
    assert np.median(cpu) >= 0.3 * np.median(wall), (np.median(cpu), np.median(wall))


def _put(
    answers: queue.Queue[tuple[int, object, object]], i: int, result: object, error: object
) -> None:
    answers.put((i, result, error))


def test_triton_serves_the_packaged_model_like_torch(
    trained: Trained,
    packaged: object,
    triton_server: TritonServer,
    triton_model_repository: Path,
) -> None:
    from inspectloop.trainer.packaging import PackageResult  # noqa: PLC0415

    assert isinstance(packaged, PackageResult)
    name = "packaging_tiny_inspector"
    write_triton_python_entry(
        triton_model_repository,
        name,
        1,
        packaged.onnx_path,
        SPEC,
        max_batch_size=8,
        max_queue_delay_us=200_000,  # long enough to batch the concurrent requests below
    )

    triton_server.load_model(name)
    try:
        assert triton_server.is_model_ready(name, "1")
        batch = trained.images[20:25]
        client = triton_grpc.InferenceServerClient(url=triton_server.grpc_url)
        try:
            served = client.get_model_config(name, as_json=True)["config"]
            assert served["backend"] == "python"
            assert [o["name"] for o in served["output"]] == list(OUTPUT_NAMES)
            request = triton_grpc.InferInput(INPUT_NAME, list(batch.shape), "UINT8")
            request.set_data_from_numpy(batch)
            outputs = [triton_grpc.InferRequestedOutput(n) for n in OUTPUT_NAMES]
            result = client.infer(name, [request], outputs=outputs)
            # Concurrent requests of different sizes: the dynamic batcher may hand them to
            # model.py together, which must split the answers back correctly.
            answers: queue.Queue[tuple[int, object, object]] = queue.Queue()
            sizes = (1, 3, 2, 1)
            starts = np.cumsum((0, *sizes))
            for i, n in enumerate(sizes):
                part = triton_grpc.InferInput(INPUT_NAME, [n, 32, 32, 3], "UINT8")
                part.set_data_from_numpy(trained.images[starts[i] : starts[i] + n])
                client.async_infer(name, [part], callback=functools.partial(_put, answers, i))
            concurrent = [answers.get(timeout=60) for _ in sizes]
            stats = client.get_inference_statistics(name, as_json=True)["model_stats"][0]
        finally:
            client.close()

        expected = reference_outputs(trained.model, SPEC, batch)
        for output in OUTPUT_NAMES:
            answer = result.as_numpy(output)
            if output == OUTPUT_ANOMALY_SCORE:
                # The python backend keeps the declared [1] per image (the ONNX backend
                # applies the config's reshape to N): one score per image either way.
                answer = answer.reshape(-1)
            assert answer.dtype == np.float32 and answer.shape == expected[output].shape
            np.testing.assert_allclose(answer, expected[output], atol=ATOL, rtol=0)
        np.testing.assert_array_equal(
            result.as_numpy("probabilities").argmax(axis=1),
            expected["probabilities"].argmax(axis=1),
        )
        # 5 requests, fewer executions: model.py got batched requests and split them back.
        assert int(stats["inference_count"]) == len(batch) + sum(sizes)
        assert int(stats["execution_count"]) < 1 + len(sizes)
        for i, answer, error in concurrent:
            assert error is None, error
            images = trained.images[starts[i] : starts[i] + sizes[i]]
            want = reference_outputs(trained.model, SPEC, images)
            for output in OUTPUT_NAMES:
                got = answer.as_numpy(output)  # type: ignore[attr-defined]
                np.testing.assert_allclose(
                    got.reshape(want[output].shape), want[output], atol=ATOL, rtol=0
                )
    finally:
        triton_server.unload_model(name)
    assert not triton_server.is_model_ready(name)
