"""Line traffic for the gateway's HTTP API: each Locust user is one line PC.

Every user is a packaging line sending one label image per unit at its line rate (constant
throughput, ``INSPECTLOOP_LOAD_RATE`` units/s, default 4 as in the scenario files), rendered by
the simulator (design A, its SKUs, nominal light; 3% defects), as multipart uploads to
``/v1/inspect/upload`` with a unique request id. Any answer other than 200 is a failure.

    locust -f load-tests/locustfile.py --host http://127.0.0.1:8700     # or: load-tests/run.py
"""

from __future__ import annotations

import io
import itertools
import os
import uuid

import numpy as np
from locust import HttpUser, constant_throughput, task
from PIL import Image

from inspectloop.simulator.defects import DEFECT_CLASSES
from inspectloop.simulator.products import default_catalogue
from inspectloop.simulator.render import render_label

RATE = float(os.environ.get("INSPECTLOOP_LOAD_RATE", "4"))
IMAGES = 48
_lines = itertools.count(1)


def _render_pool() -> list[tuple[str, bytes]]:
    rng = np.random.default_rng(0)
    skus = [s.sku_id for s in default_catalogue()]
    pool = []
    for i in range(IMAGES):
        sku = skus[i % len(skus)]
        defect = DEFECT_CLASSES[i % len(DEFECT_CLASSES)] if rng.random() < 0.03 else None
        image, _ = render_label(sku, "A", "gs1-dm", rng=rng, defect=defect)
        out = io.BytesIO()
        Image.fromarray(image).save(out, format="PNG")
        pool.append((sku, out.getvalue()))
    return pool


POOL = _render_pool()


class LinePC(HttpUser):
    wait_time = constant_throughput(RATE)

    def on_start(self) -> None:
        self.line = f"line-{next(_lines)}"
        self.unit = 0

    @task
    def inspect(self) -> None:
        sku, image = POOL[self.unit % len(POOL)]
        self.unit += 1
        self.client.post(
            "/v1/inspect/upload",
            files={"image": ("unit.png", image, "image/png")},
            data={"line": self.line, "sku": sku, "request_id": str(uuid.uuid4())},
            name="/v1/inspect/upload",
        )
