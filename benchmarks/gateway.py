"""Gateway latency and throughput against Triton straight and onnxruntime in-process (issue 5).

One model of the production architecture (``InspectionCNN`` at 128 px; random weights, which
cost the same as trained ones), packaged as the trainer packages it (ONNX in Triton's Python
backend, the backend this machine's Triton has). In the same run, on the same images:

(a) our gateway: the gRPC ``Inspect`` call a line PC makes, through Ray Serve's proxy to the
    gateway replica, which decodes the PNG, calls Triton, computes the image statistics, stores
    the image in the blob store and publishes the InspectionEvent on the embedded bus;
(a'') the same call straight to the replica's own gRPC server (``gateway.direct_ingress``: Ray
    Serve's direct ingress, user code on the replica's event loop; the whole stack runs so);
(a') the same through the HTTP API (JSON, base64 image);
(a0) the gateway's core in this process, without Ray Serve (where the time goes);
(b) tritonclient's gRPC ``infer`` straight to Triton, with decoded pixels;
(c) onnxruntime in this process (one session, one intra-op thread per call);

at concurrency 1 and 8 (client threads), then Triton with its dynamic batcher against the same
model without it, at concurrency 8. Prints p50/p99 latency and requests/s, and the ratios.
Goals: the gateway adds <= 2 ms at p50 over (b); batching gives >= 2x throughput at
concurrency 8. Everything (clients, proxy, replica, Triton) shares this machine's 2 cores.

    python benchmarks/gateway.py             # about 3 min
    python benchmarks/gateway.py --quick     # fewer requests, for CI
"""

from __future__ import annotations

import argparse
import base64
import io
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import requests
import tritonclient.grpc as triton_grpc
from PIL import Image
from prometheus_client import CollectorRegistry

from inspectloop.core.blobstore import FilesystemBlobStore
from inspectloop.core.bus import build_bus
from inspectloop.core.onnx_contract import (
    INPUT_NAME,
    OUTPUT_FEATURES,
    OUTPUT_PROBABILITIES,
    ort_session,
)
from inspectloop.core.settings import BusSettings, LocalBusSettings
from inspectloop.devtools.gateway_stack import Stack, gateway_stack
from inspectloop.gateway.metrics import GatewayMetrics
from inspectloop.gateway.service import FOLLOWED, PRODUCED, InspectionGateway
from inspectloop.inspection.triton import TritonScorer
from inspectloop.simulator.products import default_catalogue
from inspectloop.simulator.render import render_label
from inspectloop.simulator.traffic import GrpcInspectClient
from inspectloop.trainer.model import ModelSpec
from inspectloop.v1.inspect_service_pb2 import InspectRequest

SPEC = ModelSpec()  # the production model: 128 px
GATEWAY_GRPC = "(a) gateway, gRPC through Serve's proxy"
GATEWAY_DIRECT = "(a'') gateway, gRPC, Serve direct ingress"
GATEWAY_CORE = "(a0) gateway core in-process, no Serve"
TRITON = "(b) Triton, tritonclient gRPC"
TRITON_UNBATCHED = "(b') Triton without dynamic batching"
ORT = "(c) onnxruntime in-process"
BATCHED, UNBATCHED = "bench", "bench_nobatch"
GOAL_ADDED_MS = 2.0
GOAL_BATCHING = 2.0


@dataclass(frozen=True)
class Result:
    p50_ms: float
    p99_ms: float
    per_s: float


def measure(call: Callable[[int], object], n: int, concurrency: int) -> Result:
    """``call(i)`` for i in 0..n-1 from ``concurrency`` threads; latency of each, and the rate."""
    latencies: list[float] = []

    def worker(k: int) -> None:
        for i in range(k, n, concurrency):
            started = time.perf_counter()
            call(i)
            latencies.append(time.perf_counter() - started)

    began = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(worker, range(concurrency)))
    wall = time.perf_counter() - began
    ms = sorted(x * 1000 for x in latencies)
    return Result(statistics.median(ms), ms[min(len(ms) - 1, int(0.99 * len(ms)))], n / wall)


def label_images(count: int) -> tuple[list[npt.NDArray[np.uint8]], list[bytes]]:
    """Rendered labels at the model's size, as pixels and as the PNGs a camera sends."""
    rng = np.random.default_rng(0)
    sku = default_catalogue()[0].sku_id
    pixels, pngs = [], []
    for _ in range(count):
        image, _ = render_label(sku, "A", "gs1-dm", rng=rng, size=SPEC.input_size)
        out = io.BytesIO()
        Image.fromarray(image).save(out, format="PNG")
        pixels.append(image)
        pngs.append(out.getvalue())
    return pixels, pngs


def triton_call(
    client: triton_grpc.InferenceServerClient, model: str, images: list[npt.NDArray[np.uint8]]
) -> Callable[[int], object]:
    outputs = [triton_grpc.InferRequestedOutput(n) for n in (OUTPUT_PROBABILITIES, OUTPUT_FEATURES)]

    def call(i: int) -> object:
        batch = images[i % len(images)][None]
        request = triton_grpc.InferInput(INPUT_NAME, list(batch.shape), "UINT8")
        request.set_data_from_numpy(batch)
        return client.infer(model, [request], model_version="1", outputs=outputs)

    return call


def inspect_request(pngs: list[bytes], i: int) -> InspectRequest:
    return InspectRequest(
        line="line-1",
        request_id=f"bench-{i}-{time.perf_counter_ns()}",
        image=pngs[i % len(pngs)],
        content_type="image/png",
    )


def in_process_gateway(stack: Stack, tmp: Path) -> InspectionGateway:
    """The gateway's core without Ray Serve, on the same Triton: what the proxy hop costs."""
    bus = build_bus(
        BusSettings(backend="local", local=LocalBusSettings(directory=tmp / "core-bus")),
        "bench",
        CollectorRegistry(),
    )
    bus.ensure_topics([*FOLLOWED, *PRODUCED])
    section = stack.settings.gateway
    gateway = InspectionGateway(
        section,
        bus=bus,
        blobs=FilesystemBlobStore(tmp / "core-blobs", 1 << 24),
        triton=TritonScorer(section.triton),
        metrics=GatewayMetrics(CollectorRegistry()),
    )
    gateway.follow()  # a replica decides nothing before it has read the lines' state
    return gateway


def mean_batch(client: triton_grpc.InferenceServerClient, model: str) -> float:
    """Images per model execution over the run, from Triton's statistics."""
    stats = client.get_inference_statistics(model, as_json=True)["model_stats"]
    images = sum(int(s.get("inference_count", 0)) for s in stats)
    executions = sum(int(s.get("execution_count", 0)) for s in stats)
    return images / executions if executions else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=400, help="per measurement")
    parser.add_argument("--quick", action="store_true", help="100 requests per measurement")
    args = parser.parse_args()
    n = 100 if args.quick else args.requests
    pixels, pngs = label_images(64)
    b64 = [base64.b64encode(p).decode() for p in pngs]
    rows: dict[tuple[str, int], Result] = {}

    with (
        tempfile.TemporaryDirectory() as tmp,
        gateway_stack(
            Path(tmp),
            spec=SPEC,
            names=(BATCHED, UNBATCHED),
            batching={UNBATCHED: False},
            max_queue_delay_us=0,
            direct_ingress=True,
        ) as stack,
    ):
        gateway = GrpcInspectClient(stack.grpc_target)
        direct = GrpcInspectClient(stack.direct_grpc_target)
        core = in_process_gateway(stack, Path(tmp))
        triton = triton_grpc.InferenceServerClient(stack.triton.grpc_url)
        session = ort_session(stack.onnx_dir / f"{BATCHED}-1.onnx", threads=1)
        sessions = threading.local()

        def http(i: int) -> object:
            if not hasattr(sessions, "http"):
                sessions.http = requests.Session()
            body = {"line": "line-1", "image_base64": b64[i % len(b64)]}
            answer = sessions.http.post(f"{stack.http_url}/v1/inspect", json=body, timeout=30)
            answer.raise_for_status()
            return answer

        calls: dict[str, Callable[[int], object]] = {
            GATEWAY_GRPC: lambda i: gateway.inspect(inspect_request(pngs, i), 30),
            GATEWAY_DIRECT: lambda i: direct.inspect(inspect_request(pngs, i), 30),
            "(a') gateway, HTTP JSON": http,
            GATEWAY_CORE: lambda i: core.inspect(inspect_request(pngs, i)),
            TRITON: triton_call(triton, BATCHED, pixels),
            ORT: lambda i: session.run(None, {INPUT_NAME: pixels[i % len(pixels)][None]}),
        }
        for name, call in calls.items():
            measure(call, 20, 2)  # warm-up: connections, the replica, the model's first run
            for concurrency in (1, 8):
                rows[(name, concurrency)] = measure(call, n, concurrency)
        unbatched = triton_call(triton, UNBATCHED, pixels)
        measure(unbatched, 20, 2)
        rows[(TRITON_UNBATCHED, 8)] = measure(unbatched, n, 8)
        batch_sizes = {name: mean_batch(triton, name) for name in (BATCHED, UNBATCHED)}
        gateway.close()
        direct.close()
        core.close()
        triton.close()

    gw, tr, tr_alone, ort = GATEWAY_GRPC, TRITON, TRITON_UNBATCHED, ORT
    print(f"{n} requests per row; 128 px labels; this machine's 2 cores shared by all parts")
    print("| path | concurrency | p50 ms | p99 ms | requests/s |")
    print("|---|---|---|---|---|")
    for (name, concurrency), r in rows.items():
        print(f"| {name} | {concurrency} | {r.p50_ms:.2f} | {r.p99_ms:.2f} | {r.per_s:.0f} |")
    added = rows[(gw, 1)].p50_ms - rows[(tr, 1)].p50_ms
    added_direct = rows[(GATEWAY_DIRECT, 1)].p50_ms - rows[(tr, 1)].p50_ms
    batching = rows[(tr, 8)].per_s / rows[(tr_alone, 8)].per_s
    print(
        f"gateway adds {added_direct:.2f} ms at p50 over Triton with Serve's direct ingress, "
        f"{added:.2f} ms through Serve's proxy (goal <= {GOAL_ADDED_MS:g}); "
        f"Triton adds {rows[(tr, 1)].p50_ms - rows[(ort, 1)].p50_ms:.2f} ms over onnxruntime; "
        f"dynamic batching: {batching:.2f}x requests/s at concurrency 8 "
        f"(goal >= {GOAL_BATCHING:g}x)"
    )
    core_added = rows[(GATEWAY_CORE, 1)].p50_ms - rows[(tr, 1)].p50_ms
    hop = rows[(gw, 1)].p50_ms - rows[(GATEWAY_CORE, 1)].p50_ms
    hop_direct = rows[(GATEWAY_DIRECT, 1)].p50_ms - rows[(GATEWAY_CORE, 1)].p50_ms
    print(
        f"the gateway's own work in-process adds {core_added:.2f} ms at p50; Ray Serve's proxy "
        f"and replica hop {hop:.2f} ms, the replica's own server (direct ingress) "
        f"{hop_direct:.2f} ms. Mean batch Triton ran (all rows): "
        f"{batch_sizes[BATCHED]:.2f} with its dynamic batcher, {batch_sizes[UNBATCHED]:.2f} "
        "without"
    )


if __name__ == "__main__":
    main()
