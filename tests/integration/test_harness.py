"""The harness starts real components that do their real jobs: Kafka keeps acknowledged records
across a crash, Prometheus scrapes a target, Triton loads, serves and unloads a Python model."""

from __future__ import annotations

import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic
from prometheus_client import CollectorRegistry, Gauge, start_http_server

from inspectloop.core.errors import BackendUnavailableError, ConfigError, PermanentError
from inspectloop.devtools.harness import (
    KafkaBroker,
    ManagedProcess,
    PrometheusServer,
    TritonServer,
    pick_free_port,
)

pytestmark = pytest.mark.integration


# --- Kafka -------------------------------------------------------------------------------------


def _read_all(bootstrap_servers: str, topic: str) -> list[tuple[bytes | None, bytes | None]]:
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap_servers,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        consumer_timeout_ms=10_000,
    )
    try:
        partition = TopicPartition(topic, 0)
        consumer.assign([partition])
        consumer.seek_to_beginning(partition)
        end = consumer.end_offsets([partition])[partition]
        records = []
        for record in consumer:
            records.append((record.key, record.value))
            if record.offset + 1 >= end:
                break
        return records
    finally:
        consumer.close()


def test_kafka_record_survives_broker_crash(kafka_broker: KafkaBroker) -> None:
    topic = f"harness-{uuid.uuid4().hex[:8]}"
    admin = KafkaAdminClient(bootstrap_servers=kafka_broker.bootstrap_servers)
    try:
        admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    finally:
        admin.close()

    producer = KafkaProducer(bootstrap_servers=kafka_broker.bootstrap_servers, acks="all")
    try:
        producer.send(topic, key=b"k1", value=b"hello").get(timeout=30)
    finally:
        producer.close()
    assert _read_all(kafka_broker.bootstrap_servers, topic) == [(b"k1", b"hello")]

    address_before = kafka_broker.bootstrap_servers
    kafka_broker.kill()
    assert not kafka_broker.is_running()
    kafka_broker.start()

    assert kafka_broker.bootstrap_servers == address_before
    assert _read_all(kafka_broker.bootstrap_servers, topic) == [(b"k1", b"hello")]


# --- Prometheus --------------------------------------------------------------------------------


@pytest.fixture
def gauge_target() -> Iterator[tuple[str, Gauge]]:
    registry = CollectorRegistry()
    gauge = Gauge(
        "harness_test_temperature", "A gauge the harness test scrapes.", registry=registry
    )
    port = pick_free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    yield f"127.0.0.1:{port}", gauge
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def test_prometheus_scrapes_a_gauge(
    prometheus_server: PrometheusServer, gauge_target: tuple[str, Gauge]
) -> None:
    target, gauge = gauge_target
    gauge.set(42.5)
    prometheus_server.set_scrape_targets([target])

    result = prometheus_server.wait_for_query(
        f'harness_test_temperature{{instance="{target}"}}', timeout=30
    )

    assert float(result[0]["value"][1]) == 42.5
    up = prometheus_server.query(f'up{{instance="{target}"}}')
    assert float(up[0]["value"][1]) == 1.0


def test_prometheus_rejects_bad_promql(prometheus_server: PrometheusServer) -> None:
    with pytest.raises(ConfigError, match="bad query"):
        prometheus_server.query("sum(")


# --- Triton ------------------------------------------------------------------------------------

DOUBLE_MODEL_CONFIG = """\
name: "{name}"
backend: "python"
max_batch_size: 0
input [ {{ name: "INPUT0", data_type: TYPE_FP32, dims: [ -1 ] }} ]
output [ {{ name: "OUTPUT0", data_type: TYPE_FP32, dims: [ -1 ] }} ]
instance_group [ {{ kind: KIND_CPU, count: 1 }} ]
"""

DOUBLE_MODEL_PY = textwrap.dedent(
    """\
    import numpy as np
    import triton_python_backend_utils as pb_utils


    class TritonPythonModel:
        def execute(self, requests):
            responses = []
            for request in requests:
                values = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
                doubled = pb_utils.Tensor("OUTPUT0", (values * 2).astype(np.float32))
                responses.append(pb_utils.InferenceResponse(output_tensors=[doubled]))
            return responses
    """
)


def _write_python_model(repository: Path, name: str, model_py: str) -> None:
    version_dir = repository / name / "1"
    version_dir.mkdir(parents=True)
    (repository / name / "config.pbtxt").write_text(DOUBLE_MODEL_CONFIG.format(name=name))
    (version_dir / "model.py").write_text(model_py)


def test_triton_serves_a_python_model(triton_server: TritonServer) -> None:
    name = "harness_double"
    _write_python_model(triton_server.model_repository, name, DOUBLE_MODEL_PY)

    triton_server.load_model(name)
    assert triton_server.is_model_ready(name)

    values = np.array([1.0, -2.5, 3.25], dtype=np.float32)
    client = triton_grpc.InferenceServerClient(url=triton_server.grpc_url)
    try:
        model_input = triton_grpc.InferInput("INPUT0", list(values.shape), "FP32")
        model_input.set_data_from_numpy(values)
        result = client.infer(name, [model_input])
    finally:
        client.close()
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), values * 2)

    triton_server.unload_model(name)
    assert not triton_server.is_model_ready(name)


def test_triton_load_failure_is_a_clear_error(triton_server: TritonServer) -> None:
    name = "harness_broken"
    broken = "raise RuntimeError('this model is broken on purpose')\n"
    _write_python_model(triton_server.model_repository, name, broken)

    with pytest.raises(PermanentError, match=name) as failure:
        triton_server.load_model(name)

    assert "broken on purpose" in str(failure.value)
    assert triton_server.is_ready()  # a bad model does not take the server down


# --- the process helper ------------------------------------------------------------------------


def test_a_process_that_exits_early_fails_fast_with_its_log(tmp_path: Path) -> None:
    process = ManagedProcess(
        "doomed", ["sh", "-c", "echo cannot bind port; exit 3"], tmp_path / "doomed.log"
    )
    process.start()

    with pytest.raises(BackendUnavailableError) as failure:
        process.wait_ready(lambda: False, timeout=30)

    message = str(failure.value)
    assert "doomed exited with code 3" in message
    assert "cannot bind port" in message


def test_a_process_that_never_gets_ready_names_the_deadline(tmp_path: Path) -> None:
    process = ManagedProcess("sleepy", ["sleep", "60"], tmp_path / "sleepy.log")
    process.start()
    try:
        with pytest.raises(
            BackendUnavailableError, match=r"sleepy did not become ready within 0.5 s"
        ):
            process.wait_ready(lambda: False, timeout=0.5)
    finally:
        process.stop(grace=5)
    assert not process.is_running()
