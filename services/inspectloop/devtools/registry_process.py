"""The registry service in its own process on SQLite, as it runs in production; for tests and
demos that need its HTTP API (stage transitions, signatures, artifacts)."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

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
