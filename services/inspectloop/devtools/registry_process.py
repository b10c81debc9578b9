"""The registry service in its own process on SQLite, as it runs in production; for tests and
demos that need its HTTP API (stage transitions, signatures, artifacts). And a proxy in front
of it that tests turn into a broken network or a corrupting mirror."""

from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

from inspectloop.devtools.harness.process import ManagedProcess, pick_free_port


@dataclass(frozen=True)
class RegistryUser:
    name: str
    role: str  # operator, quality, service or admin
    token: str
    password: str | None = None  # for electronic signatures (quality, admin)


@contextmanager
def registry_process(
    work: Path,
    users: list[RegistryUser],
    *,
    settings: Mapping[str, str] | None = None,
    ready_timeout_s: float = 60,
) -> Iterator[str]:
    """Start the registry with these accounts under ``work``; yields its base URL. ``settings``:
    more ``INSPECTLOOP_REGISTRY__...`` variables."""
    port = pick_free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("INSPECTLOOP_")},
        "INSPECTLOOP_DATA_DIR": str(work / "data"),
        "INSPECTLOOP_REGISTRY__PORT": str(port),
        "INSPECTLOOP_REGISTRY__CONSUME_EVENTS": "false",
        "INSPECTLOOP_REGISTRY__BOOTSTRAP_USERS": json.dumps(
            [{k: v for k, v in u.__dict__.items() if v is not None} for u in users]
        ),
        **(settings or {}),
    }
    process = ManagedProcess(
        "registry", [sys.executable, "-m", "inspectloop.registry.service"], work / "log", env=env
    )
    url = f"http://127.0.0.1:{port}"
    process.start()
    try:
        process.wait_ready(
            lambda: httpx.get(f"{url}/readyz", timeout=2).status_code == 200, ready_timeout_s
        )
        yield url
    finally:
        process.stop()


@dataclass
class RegistryProxy:
    """Between a client and the registry (GET only): flips a byte of chosen artifacts (a
    compromised mirror, a corrupted download) or drops every connection (the network is down)."""

    url: str
    tamper: set[str] = field(default_factory=set)  # artifact SHA-256s to corrupt
    offline: bool = False
    requests: int = 0


@contextmanager
def registry_proxy(registry_url: str) -> Iterator[RegistryProxy]:
    """A proxy to ``registry_url`` on a free local port; yields its state, which the caller
    changes to break it."""
    state = RegistryProxy(url="")
    upstream = httpx.Client(base_url=registry_url, timeout=30)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.requests += 1
            if state.offline:
                self.close_connection = True
                return  # no response at all: the client sees a dropped connection
            auth = self.headers.get("Authorization")
            reply = upstream.get(self.path, headers={"Authorization": auth} if auth else {})
            body = reply.content
            sha = self.path.rsplit("/", 1)[-1]
            if self.path.startswith("/v1/artifacts/") and sha in state.tamper:
                middle = len(body) // 2
                body = body[:middle] + bytes([body[middle] ^ 0xFF]) + body[middle + 1 :]
            self.send_response(reply.status_code)
            self.send_header("Content-Type", reply.headers.get("content-type", "text/plain"))
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        upstream.close()
