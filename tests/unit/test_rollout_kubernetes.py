"""The ModelRollout record of a rollout: manifests and statuses valid for the CRD's schema, and
the recorder's requests through the real ``kubernetes`` client to a tiny API server on loopback
that records them (create if missing, then patch the status subresource)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from kubernetes.client import ApiClient, Configuration, CustomObjectsApi

from inspectloop.rollout.kubernetes import (
    PHASES,
    ModelRolloutRecorder,
    model_rollout_manifest,
    model_rollout_status,
    resource_name,
)
from inspectloop.rollout.machine import Phase, Policy, RolloutStatus

ROOT = Path(__file__).resolve().parents[2]
CRD = ROOT / "k8s/crds/modelrollouts.inspectloop.io.yaml"
NAMESPACE = "inspect"
COLLECTION = f"/apis/inspectloop.io/v1alpha1/namespaces/{NAMESPACE}/modelrollouts"
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"


def crd_schema() -> dict[str, Any]:
    crd = yaml.safe_load(CRD.read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v["storage"]]
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return schema


def validate(resource: dict[str, Any]) -> None:
    jsonschema.validate(resource, crd_schema(), format_checker=jsonschema.FormatChecker())


BASE = RolloutStatus(
    rollout_id="label-inspector-v8",
    model="label-inspector",
    version="8",
    lines=("line-1", "line-2"),
    stable_version="7",
    policy=Policy(step_weights_bps=(1000, 2500, 5000)),
    started_at=1_760_000_000.0,
    updated_at=1_760_000_000.0,
    reason="validated: waiting to start",
)

STATUSES = {
    "pending": replace(BASE, stable_version=None),
    "shadow": replace(BASE, phase=Phase.SHADOW, sequence=1, reason="shadowing the stable version"),
    "canary": replace(
        BASE,
        phase=Phase.CANARY,
        step_index=1,
        canary_weight_bps=2500,
        passed_intervals=1,
        failed_checks=1,
        sequence=4,
        updated_at=BASE.updated_at + 300,
        reason="analysis failed: error_rate fail: 0.02 > 0.005",
    ),
    "held": replace(
        BASE,
        phase=Phase.CANARY,
        canary_weight_bps=1000,
        waiting_for="metrics",
        reason="held: metrics source unavailable (connection refused)",
    ),
    "paused": replace(
        BASE,
        phase=Phase.PAUSED,
        waiting_for="approve-production",
        resume_phase=Phase.PRODUCTION_WATCH,
        reason="waiting for a signature 'approve-production'",
    ),
    "production_watch": replace(BASE, phase=Phase.PRODUCTION_WATCH, canary_weight_bps=10_000),
    "production": replace(BASE, phase=Phase.PRODUCTION, canary_weight_bps=10_000),
    "rolled_back": replace(
        BASE,
        phase=Phase.ROLLED_BACK,
        failed_checks=2,
        reason="rolled back after 2 failed analysis intervals: " + "x" * 5000,
    ),
    "failed": replace(BASE, phase=Phase.FAILED, reason="cannot proceed: registry refused"),
    "first_version": replace(
        BASE,
        rollout_id="Line_7.Model-v1",
        model="line_7.model",
        version="1",
        stable_version=None,
        phase=Phase.PRODUCTION,
        policy=Policy(step_weights_bps=(10_000,), shadow_intervals=0),
    ),
}


# --- pure functions against the CRD ------------------------------------------------------------


def test_every_phase_has_a_crd_phase() -> None:
    enum = crd_schema()["properties"]["status"]["properties"]["phase"]["enum"]
    assert set(PHASES) == set(Phase)
    assert sorted(PHASES.values()) == sorted(enum)


@pytest.mark.parametrize("key", STATUSES)
def test_manifest_and_status_validate_against_the_crd(key: str) -> None:
    status = STATUSES[key]
    manifest = model_rollout_manifest(status)
    validate(manifest)
    assert manifest["metadata"]["name"] == resource_name(status.rollout_id)
    assert manifest["spec"]["version"] == int(status.version)
    assert [s["weightBps"] for s in manifest["spec"]["steps"]] == list(
        status.policy.step_weights_bps
    )
    full = {**manifest, "status": model_rollout_status(status, generation=1)}
    validate(full)
    assert full["status"]["phase"] == PHASES[status.phase]
    assert full["status"]["canaryWeightBps"] == status.canary_weight_bps
    for label in manifest["metadata"]["labels"].values():
        assert len(label) <= 63


def test_an_invalid_status_is_refused_by_the_schema() -> None:
    """The schema really constrains what the recorder writes."""
    manifest = model_rollout_manifest(BASE)
    for broken in (
        {"phase": "Promoted"},
        {"canaryWeightBps": 20_000},
        {"conditions": [{"type": "Progressing", "status": "True"}]},
        {
            "conditions": [
                {
                    "type": "Progressing",
                    "status": "True",
                    "lastTransitionTime": "2025-01-01T00:00:00Z",
                    "reason": "not a reason",
                    "message": "",
                }
            ]
        },
    ):
        with pytest.raises(jsonschema.ValidationError):
            validate({**manifest, "status": {**model_rollout_status(BASE), **broken}})


def test_conditions_follow_the_phase() -> None:
    def conditions(status: RolloutStatus) -> dict[str, tuple[str, str]]:
        return {
            c["type"]: (c["status"], c["reason"])
            for c in model_rollout_status(status)["conditions"]
        }

    assert conditions(STATUSES["canary"]) == {
        "Progressing": ("True", "Canary"),
        "Paused": ("False", "Canary"),
        "Promoted": ("False", "Canary"),
    }
    assert conditions(STATUSES["held"])["Paused"] == ("True", "MetricsSourceUnavailable")
    assert conditions(STATUSES["paused"])["Progressing"] == ("False", "AwaitingSignature")
    assert conditions(STATUSES["production_watch"])["Promoted"] == ("True", "ProductionWatch")
    assert conditions(STATUSES["rolled_back"]) == {
        "Progressing": ("False", "RolledBack"),
        "Paused": ("False", "RolledBack"),
        "Promoted": ("False", "RolledBack"),
    }
    message = model_rollout_status(STATUSES["canary"])["conditions"][0]["message"]
    assert message == STATUSES["canary"].reason


def test_unchanged_conditions_keep_their_transition_time() -> None:
    first = model_rollout_status(STATUSES["shadow"])
    later = replace(
        STATUSES["shadow"],
        phase=Phase.CANARY,
        canary_weight_bps=1000,
        updated_at=BASE.updated_at + 600,
    )
    second = {c["type"]: c for c in model_rollout_status(later, first)["conditions"]}
    assert second["Progressing"]["lastTransitionTime"] == "2025-10-09T08:53:20Z"
    assert second["Progressing"]["reason"] == "Canary"
    promoted = replace(later, phase=Phase.PRODUCTION_WATCH, updated_at=BASE.updated_at + 900)
    third = {c["type"]: c for c in model_rollout_status(promoted, first)["conditions"]}
    assert third["Promoted"]["lastTransitionTime"] == "2025-10-09T09:08:20Z"
    assert third["Paused"]["lastTransitionTime"] == "2025-10-09T08:53:20Z"


@pytest.mark.parametrize(
    "rollout_id",
    ["label-inspector-v8", "Line_7.Model-v1", "a" * 80 + "-v3", "--", "ünïcode-v2"],
)
def test_resource_names_are_dns_labels(rollout_id: str) -> None:
    name = resource_name(rollout_id)
    assert len(name) <= 63
    jsonschema.validate(name, {"type": "string", "pattern": DNS_LABEL})
    if rollout_id == "label-inspector-v8":
        assert name == rollout_id
    assert resource_name(rollout_id.upper()) != name or rollout_id == rollout_id.upper()


# --- the recorder through the real client ----------------------------------------------------


@dataclass
class FakeApiServer:
    """The ModelRollout endpoints of an API server, in memory, recording every request."""

    objects: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[tuple[str, str, str, Any]] = field(default_factory=list)
    # Status codes to answer the next requests of a method with, before handling normally.
    fail_next: dict[str, list[int]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def handle(self, method: str, path: str, content_type: str, body: Any) -> tuple[int, Any]:
        path = path.split("?", maxsplit=1)[0]
        with self.lock:
            self.requests.append((method, path, content_type, body))
            queued = self.fail_next.get(method)
            if queued:
                code = queued.pop(0)
                return code, _status_body(code)
            return self._answer(method, path, body)

    def _answer(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        if method == "POST" and path == COLLECTION:
            name = body["metadata"]["name"]
            if name in self.objects:
                return 409, _status_body(409)
            created = {**body, "metadata": {**body["metadata"], "generation": 1}}
            self.objects[name] = created
            return 201, created
        name, _, sub = path.removeprefix(COLLECTION + "/").partition("/")
        if name not in self.objects:
            return 404, _status_body(404)
        if method == "GET" and not sub:
            return 200, self.objects[name]
        if method == "PATCH" and sub == "status":
            # JSON merge patch of the status subresource (lists replaced whole).
            current = self.objects[name]
            current["status"] = {**current.get("status", {}), **body["status"]}
            return 200, current
        return 405, _status_body(405)


def _status_body(code: int) -> dict[str, Any]:
    return {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code}


@pytest.fixture
def api_server() -> Iterator[tuple[FakeApiServer, str]]:
    fake = FakeApiServer()

    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            body = json.loads(raw) if raw else None
            code, answer = fake.handle(
                self.command, self.path, self.headers.get("Content-Type", ""), body
            )
            data = json.dumps(answer).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PATCH = _serve  # noqa: N815

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def custom_objects_api(host: str) -> CustomObjectsApi:
    configuration = Configuration(host=host)
    configuration.retries = 0
    return CustomObjectsApi(ApiClient(configuration))


def test_recorder_creates_if_missing_then_patches_the_status(
    api_server: tuple[FakeApiServer, str],
) -> None:
    fake, host = api_server
    recorder = ModelRolloutRecorder(NAMESPACE, custom_objects_api(host))
    name = "label-inspector-v8"
    recorder.record(STATUSES["shadow"])
    assert [(m, p) for m, p, _, _ in fake.requests] == [
        ("GET", f"{COLLECTION}/{name}"),
        ("POST", COLLECTION),
        ("PATCH", f"{COLLECTION}/{name}/status"),
    ]
    _, _, content_type, posted = fake.requests[1]
    assert posted == model_rollout_manifest(STATUSES["shadow"])
    _, _, content_type, patch = fake.requests[2]
    assert content_type == "application/merge-patch+json"
    assert set(patch) == {"status"}
    assert patch["status"]["phase"] == "Shadow"
    assert patch["status"]["observedGeneration"] == 1
    validate(fake.objects[name])

    # Known now: the next change is one status patch; unchanged conditions keep their time.
    fake.requests.clear()
    recorder.record(STATUSES["canary"])
    assert [(m, p) for m, p, _, _ in fake.requests] == [("PATCH", f"{COLLECTION}/{name}/status")]
    stored = fake.objects[name]
    validate(stored)
    assert stored["status"]["phase"] == "Canary"
    assert stored["status"]["canaryWeightBps"] == 2500
    progressing = next(c for c in stored["status"]["conditions"] if c["type"] == "Progressing")
    assert progressing["lastTransitionTime"] == "2025-10-09T08:53:20Z"
    assert progressing["message"] == STATUSES["canary"].reason
    assert recorder.pending == 0


def test_recorder_uses_an_existing_resource_and_a_conflict_on_create(
    api_server: tuple[FakeApiServer, str],
) -> None:
    fake, host = api_server
    # A resource left by a previous controller: no create, its conditions' times kept.
    existing = model_rollout_manifest(STATUSES["shadow"])
    existing["metadata"]["generation"] = 3
    existing["status"] = model_rollout_status(STATUSES["shadow"])
    fake.objects["label-inspector-v8"] = existing
    recorder = ModelRolloutRecorder(NAMESPACE, custom_objects_api(host))
    recorder.record(STATUSES["canary"])
    assert [m for m, _, _, _ in fake.requests] == ["GET", "PATCH"]
    assert fake.objects["label-inspector-v8"]["status"]["observedGeneration"] == 3

    # Created by someone else between our GET and POST: 409, then read it and patch.
    fake.requests.clear()
    other = STATUSES["first_version"]
    name = resource_name(other.rollout_id)
    fake.fail_next["GET"] = [404]
    fake.objects[name] = model_rollout_manifest(other)
    recorder.record(other)
    assert [(m, p.removeprefix(COLLECTION)) for m, p, _, _ in fake.requests] == [
        ("GET", f"/{name}"),
        ("POST", ""),
        ("GET", f"/{name}"),
        ("PATCH", f"/{name}/status"),
    ]
    assert fake.objects[name]["status"]["phase"] == "Production"
    validate(fake.objects[name])


def test_recorder_keeps_a_status_the_api_server_refused_and_sends_it_later(
    api_server: tuple[FakeApiServer, str],
) -> None:
    fake, host = api_server
    recorder = ModelRolloutRecorder(NAMESPACE, custom_objects_api(host))
    fake.fail_next["GET"] = [503]
    recorder.record(STATUSES["shadow"])  # logged, not raised: the rollout goes on
    assert recorder.pending == 1
    assert not fake.objects
    # The next record (another rollout) sends both.
    other = replace(STATUSES["canary"], rollout_id="label-inspector-v9", version="9")
    recorder.record(other)
    assert recorder.pending == 0
    assert fake.objects["label-inspector-v8"]["status"]["phase"] == "Shadow"
    assert fake.objects["label-inspector-v9"]["status"]["phase"] == "Canary"
    # Deleted behind the controller's back: the patch gets 404, the resource is created again.
    del fake.objects["label-inspector-v9"]
    fake.requests.clear()
    recorder.record(replace(other, step_index=2, canary_weight_bps=5000))
    assert [m for m, _, _, _ in fake.requests] == ["PATCH", "GET", "POST", "PATCH"]
    assert fake.objects["label-inspector-v9"]["status"]["canaryWeightBps"] == 5000


def test_recorder_survives_an_unreachable_api_server() -> None:
    recorder = ModelRolloutRecorder(NAMESPACE, custom_objects_api("http://127.0.0.1:9"))
    recorder.record(STATUSES["shadow"])
    assert recorder.pending == 1
