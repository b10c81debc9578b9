"""A whole gateway on this machine: Triton with the tiny models, and the gateway on Ray Serve
over the embedded bus and blob store. For the gateway benchmark and the load test."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests

from inspectloop.devtools.harness import TritonServer
from inspectloop.devtools.harness.process import default_cache_dir, pick_free_ports
from inspectloop.devtools.tiny_models import NAME, SPEC, write_models
from inspectloop.gateway.settings import GatewaySection, GatewaySettings
from inspectloop.inspection.settings import TritonSettings
from inspectloop.trainer.model import ModelSpec


def wait_healthy(url: str, timeout: float) -> None:
    """Wait until ``url`` answers 200, or raise TimeoutError."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} did not answer 200 within {timeout:.0f} s")
        time.sleep(0.2)


@dataclass(frozen=True)
class Stack:
    triton: TritonServer
    settings: GatewaySettings
    onnx_dir: Path  # the models' ONNX files: <name>-<version>.onnx

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.settings.gateway.http_port}"

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.settings.gateway.grpc_port}"

    @property
    def direct_grpc_target(self) -> str:
        """The replica's own gRPC port (direct ingress), past Serve's proxy."""
        return f"127.0.0.1:{self.settings.gateway.direct_grpc_port}"


@contextmanager
def gateway_stack(
    work: Path,
    *,
    spec: ModelSpec = SPEC,
    names: tuple[str, ...] = (NAME,),
    batching: dict[str, bool] | None = None,
    max_queue_delay_us: int = 1000,
    replicas: int = 1,
    direct_ingress: bool = False,
) -> Iterator[Stack]:
    """Triton serving ``names`` (each the three tiny versions; ``batching[name]`` False turns
    its dynamic batcher off) and the gateway routing to the first of them; with
    ``direct_ingress``, its replica also answers on ports of its own (``Stack.direct_*``)."""
    import ray  # noqa: PLC0415 - for shutdown
    from ray import serve  # noqa: PLC0415

    from inspectloop.gateway.app import init_local_ray, start  # noqa: PLC0415

    repository, onnx_dir = work / "models", work / "onnx"
    repository.mkdir(parents=True)
    onnx_dir.mkdir()
    for name in names:
        write_models(
            repository,
            onnx_dir,
            name=name,
            spec=spec,
            max_queue_delay_us=max_queue_delay_us,
            dynamic_batching=(batching or {}).get(name, True),
        )
    triton = TritonServer(repository, default_cache_dir(), work / "triton")
    triton.start()
    try:
        for name in names:
            triton.load_model(name)
        http_port, grpc_port, direct_http_port, direct_grpc_port = pick_free_ports(4)
        settings = GatewaySettings(
            service="gateway",
            data_dir=work / "gateway",
            gateway=GatewaySection(
                model_name=names[0],
                http_port=http_port,
                grpc_port=grpc_port,
                replicas=replicas,
                direct_ingress=direct_ingress,
                direct_http_port=direct_http_port,
                direct_grpc_port=direct_grpc_port,
                triton=TritonSettings(url=triton.grpc_url),
            ),
        )
        init_local_ray(settings.gateway, num_cpus=2, include_dashboard=False, log_to_driver=False)
        try:
            start(settings)
            stack = Stack(triton, settings, onnx_dir)
            wait_healthy(f"{stack.http_url}/healthz", 180)
            yield stack
        finally:
            serve.shutdown()  # type: ignore[no-untyped-call]
            ray.shutdown()
    finally:
        triton.stop()
