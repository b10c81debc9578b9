"""The model registry on SQLite and on a real PostgreSQL: versions, lineage, artifacts, the
lifecycle, electronic signatures, roles, the audit chain (tampering detected by the CLI), the
bus consumer, and the real service process under uvicorn."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry
from sqlalchemy import Engine, text
from typer.testing import CliRunner

from inspectloop.core.blobstore import build_blob_store
from inspectloop.core.bus import build_bus
from inspectloop.core.readiness import poll_until
from inspectloop.core.settings import BlobStoreSettings, BusSettings, LocalBusSettings
from inspectloop.core.topics import LINE_MODES, MODELS, ROLLOUTS, ROUTING
from inspectloop.devtools.harness import ManagedProcess, PostgresServer, pick_free_port
from inspectloop.registry.api import create_app
from inspectloop.registry.auth import Role
from inspectloop.registry.cli import registry_app
from inspectloop.registry.db import create_registry_engine, ensure_schema
from inspectloop.registry.lifecycle import Stage
from inspectloop.registry.schemas import VersionCreate, VersionOut, version_to_proto
from inspectloop.registry.service import AUDITED_TOPICS, BusAuditRecorder
from inspectloop.registry.settings import RegistrySection, RegistrySettings
from inspectloop.registry.store import RegistryStore
from inspectloop.v1.common_pb2 import LineMode, ModelRef
from inspectloop.v1.models_pb2 import ModelStage, ModelVersion
from inspectloop.v1.monitor_pb2 import LineModeChanged
from inspectloop.v1.rollout_pb2 import RolloutEvent, RolloutPhase, Routing

pytestmark = pytest.mark.integration

MODEL = "label-inspector"
PASSWORDS = {"admin": "admin-secret-1", "quality": "quality-secret-1"}
READY_TIMEOUT_S = 60.0


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty registry database on each backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'registry.sqlite3'}"
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    name = f"registry_{uuid.uuid4().hex[:12]}"
    yield server.create_database(name)
    server.drop_database(name)


@dataclass
class Registry:
    client: TestClient
    store: RegistryStore
    engine: Engine
    settings: RegistrySettings
    tokens: dict[str, str]
    metrics: CollectorRegistry

    def auth(self, user: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[user]}"}

    def upload(self, data: bytes, user: str = "trainer") -> str:
        sha = hashlib.sha256(data).hexdigest()
        reply = self.client.put(f"/v1/artifacts/{sha}", content=data, headers=self.auth(user))
        assert reply.status_code in (200, 201), reply.text
        return sha

    def register(
        self, body: dict[str, Any], user: str = "trainer", key: str | None = None
    ) -> httpx.Response:
        headers = self.auth(user) | ({"Idempotency-Key": key} if key else {})
        reply: httpx.Response = self.client.post(
            f"/v1/models/{MODEL}/versions", json=body, headers=headers
        )
        return reply

    def move(self, version: int, to: str, user: str = "quality", **extra: Any) -> httpx.Response:
        reply: httpx.Response = self.client.post(
            f"/v1/models/{MODEL}/versions/{version}/transitions",
            json={"to_stage": to, "reason": f"test moves it to {to}", **extra},
            headers=self.auth(user),
        )
        return reply

    def sign(
        self, version: int, meaning: str, user: str = "quality", password: str | None = None
    ) -> httpx.Response:
        reply: httpx.Response = self.client.post(
            f"/v1/models/{MODEL}/versions/{version}/approvals",
            json={"meaning": meaning, "password": password or PASSWORDS[user]},
            headers=self.auth(user),
        )
        return reply


@pytest.fixture
def registry(database_url: str, tmp_path: Path) -> Iterator[Registry]:
    with open_registry(database_url, tmp_path) as reg:
        yield reg


@contextlib.contextmanager
def open_registry(database_url: str, tmp_path: Path) -> Iterator[Registry]:
    """The registry app over ``database_url`` with one user of each role."""
    settings = RegistrySettings(
        data_dir=tmp_path / "data",
        registry=RegistrySection(database_url=database_url, consume_events=False),
        blob_store=BlobStoreSettings(max_blob_bytes=1024 * 1024),
    )
    engine = create_registry_engine(settings.database_url)
    ensure_schema(engine)
    metrics = CollectorRegistry()
    blob_store = build_blob_store(settings.blob_store)
    app = create_app(settings, engine, blob_store, metrics_registry=metrics)
    store: RegistryStore = app.state.ctx.store
    tokens = {
        "admin": store.create_user(
            "admin", Role.ADMIN, password=PASSWORDS["admin"], actor="test"
        ).token,
        "quality": store.create_user(
            "quality", Role.QUALITY, password=PASSWORDS["quality"], actor="test"
        ).token,
        "operator": store.create_user("operator", Role.OPERATOR, password=None, actor="test").token,
        "trainer": store.create_user("trainer", Role.SERVICE, password=None, actor="test").token,
    }
    with TestClient(app) as client:
        yield Registry(client, store, engine, settings, tokens, metrics)
    engine.dispose()


def version_body(
    reg: Registry,
    *,
    parent: int | None = None,
    stage: str = "validated",
    payload: bytes = b"onnx model bytes",
) -> dict[str, Any]:
    onnx = reg.upload(payload)
    report = reg.upload(b"<html>report</html>")
    return {
        "stage": stage,
        "metrics": {"accuracy": 0.9981, "false_reject_rate": 0.004},
        "class_metrics": [
            {"class_name": "good", "precision": 0.99, "recall": 0.998, "f1": 0.994, "support": 900},
            {
                "class_name": "scratch",
                "precision": 0.97,
                "recall": 0.99,
                "f1": 0.98,
                "support": 100,
            },
        ],
        "gate_results": [
            {
                "gate": "accuracy",
                "passed": True,
                "value": 0.9981,
                "threshold": 0.997,
                "higher_is_better": True,
                "detail": "",
            },
        ],
        "artifacts": [
            {"kind": "onnx", "sha256": onnx, "size_bytes": len(payload), "filename": "model.onnx"},
            {
                "kind": "report",
                "sha256": report,
                "size_bytes": 19,
                "filename": "report.html",
                "media_type": "text/html",
            },
        ],
        "lineage": {
            "parent_version": parent,
            "dataset_snapshot_id": "snap-2025-03-01",
            "dataset_sha256": "d" * 64,
            "code_version": "git:1a2b3c4",
            "training_run_id": "run-1",
            "seed": 7,
            "framework_versions": {"torch": "2.5.1"},
            "training_config": {"epochs": 8, "lr": 0.004, "num_workers": 2},
        },
        "classes": ["good", "scratch"],
        "input_width": 128,
        "input_height": 128,
        "scope": {"lines": ["line-07"], "skus": [], "label_designs": ["B"]},
    }


def to_shadow(reg: Registry, **kw: Any) -> int:
    reply = reg.register(version_body(reg, **kw))
    assert reply.status_code == 201, reply.text
    version: int = reply.json()["version"]
    assert reg.move(version, "shadow").status_code == 200
    return version


# --- versions, lineage, artifacts ----------------------------------------------------------------


def test_versions_are_numbered_and_lineage_is_walked(registry: Registry) -> None:
    reg = registry
    first = reg.register(version_body(reg, stage="candidate"))
    assert first.status_code == 201, first.text
    assert first.headers["location"] == f"/v1/models/{MODEL}/versions/1"
    second = reg.register(version_body(reg, parent=1, payload=b"v2"))
    third = reg.register(version_body(reg, parent=2, payload=b"v3"))
    assert [r.json()["version"] for r in (first, second, third)] == [1, 2, 3]

    record = reg.client.get(f"/v1/models/{MODEL}/versions/3", headers=reg.auth("operator")).json()
    assert record["stage"] == "validated"
    assert record["created_by"] == "trainer"
    assert record["lineage"]["parent_version"] == 2
    assert record["lineage"]["training_config"]["epochs"] == 8
    assert record["metrics"]["accuracy"] == pytest.approx(0.9981)
    assert record["manifest_intact"] is True
    assert record["artifacts"][0]["uri"].startswith("file://")
    assert (
        record["artifacts"][0]["download_path"]
        == f"/v1/artifacts/{record['artifacts'][0]['sha256']}"
    )
    assert [h["to_stage"] for h in record["stage_history"]] == ["validated"]
    proto = version_to_proto(VersionOut.model_validate(record))
    assert proto.version == "3" and proto.stage == ModelStage.MODEL_STAGE_VALIDATED

    lineage = reg.client.get(
        f"/v1/models/{MODEL}/versions/3/lineage", headers=reg.auth("operator")
    ).json()
    assert [node["version"] for node in lineage["chain"]] == [3, 2, 1]
    assert lineage["chain"][-1]["lineage"]["parent_version"] is None

    listed = reg.client.get(f"/v1/models/{MODEL}/versions", headers=reg.auth("operator")).json()
    assert [v["version"] for v in listed["versions"]] == [1, 2, 3]
    only = reg.client.get(
        f"/v1/models/{MODEL}/versions", params={"stage": "candidate"}, headers=reg.auth("operator")
    ).json()
    assert [v["version"] for v in only["versions"]] == [1]
    models = reg.client.get("/v1/models", headers=reg.auth("operator")).json()["models"]
    assert models == [
        {
            "name": MODEL,
            "created_at": models[0]["created_at"],
            "latest_version": 3,
            "versions": 3,
            "stages": {"candidate": [1], "validated": [2, 3]},
        }
    ]

    unknown_parent = reg.register(version_body(reg, parent=9))
    assert unknown_parent.status_code == 422
    assert "parent_version 9 does not exist" in unknown_parent.json()["detail"]
    missing = reg.client.get(f"/v1/models/{MODEL}/versions/42", headers=reg.auth("operator"))
    assert missing.status_code == 404
    assert "version 42" in missing.json()["detail"]
    no_model = reg.client.get("/v1/models/nope/versions/1", headers=reg.auth("operator"))
    assert no_model.status_code == 404
    assert "model 'nope' not found" in no_model.json()["detail"]


def test_artifacts_are_verified_stored_and_served(registry: Registry) -> None:
    reg = registry
    data = os.urandom(200_000)
    sha = hashlib.sha256(data).hexdigest()
    put = reg.client.put(f"/v1/artifacts/{sha}", content=data, headers=reg.auth("trainer"))
    assert put.status_code == 201
    assert put.json() == {
        "sha256": sha,
        "size_bytes": len(data),
        "uri": put.json()["uri"],
        "created": True,
    }
    again = reg.client.put(f"/v1/artifacts/{sha}", content=data, headers=reg.auth("trainer"))
    assert again.status_code == 200 and again.json()["created"] is False

    got = reg.client.get(f"/v1/artifacts/{sha}", headers=reg.auth("operator"))
    assert got.status_code == 200
    assert got.content == data
    assert got.headers["etag"] == f'"{sha}"'
    assert got.headers["content-type"] == "application/octet-stream"
    cached = reg.client.get(
        f"/v1/artifacts/{sha}", headers={**reg.auth("operator"), "If-None-Match": f'"{sha}"'}
    )
    assert cached.status_code == 304
    assert reg.client.head(f"/v1/artifacts/{sha}", headers=reg.auth("trainer")).status_code == 200

    wrong = reg.client.put(f"/v1/artifacts/{'0' * 64}", content=data, headers=reg.auth("trainer"))
    assert wrong.status_code == 400
    assert f"SHA-256 is {sha}" in wrong.json()["detail"]
    assert (
        reg.client.get(f"/v1/artifacts/{'0' * 64}", headers=reg.auth("operator")).status_code == 404
    )
    bad_name = reg.client.get("/v1/artifacts/not-a-hash", headers=reg.auth("operator"))
    assert bad_name.status_code == 422
    too_big = reg.client.put(
        f"/v1/artifacts/{'1' * 64}", content=b"x" * (1024 * 1024 + 1), headers=reg.auth("trainer")
    )
    assert too_big.status_code == 413

    body = version_body(reg)
    never_uploaded = hashlib.sha256(b"never uploaded").hexdigest()
    body["artifacts"].append({"kind": "onnx_int8", "sha256": never_uploaded, "size_bytes": 14})
    refused = reg.register(body)
    assert refused.status_code == 422
    assert f"{never_uploaded} is not stored" in refused.json()["detail"]
    body = version_body(reg)
    body["artifacts"][0]["size_bytes"] += 1
    assert "size_bytes" in reg.register(body).json()["detail"]


# --- lifecycle and signatures ---------------------------------------------------------------------


def test_stage_transitions_follow_the_lifecycle(registry: Registry) -> None:
    reg = registry
    assert reg.register(version_body(reg, stage="candidate")).status_code == 201
    jump = reg.move(1, "production")
    assert jump.status_code == 409
    assert "invalid stage transition candidate → production" in jump.json()["detail"]
    assert "validated, rejected" in jump.json()["detail"]

    ok = reg.move(1, "validated", user="trainer")
    assert ok.status_code == 200 and ok.json()["stage"] == "validated"
    same = reg.move(1, "validated")
    assert same.status_code == 409 and "already in stage validated" in same.json()["detail"]
    lost_race = reg.move(1, "shadow", from_stage="candidate")
    assert lost_race.status_code == 409 and "not candidate" in lost_race.json()["detail"]
    assert reg.move(1, "shadow", from_stage="validated").status_code == 200
    rolled_back = reg.move(1, "rolled_back", user="trainer")
    assert rolled_back.status_code == 200
    assert reg.move(1, "archived").status_code == 200
    final = reg.move(1, "shadow")
    assert final.status_code == 409 and "archived is a final stage" in final.json()["detail"]

    history = rolled_back.json()["stage_history"]
    assert [(h["from_stage"], h["to_stage"]) for h in history] == [
        (None, "candidate"),
        ("candidate", "validated"),
        ("validated", "shadow"),
        ("shadow", "rolled_back"),
    ]
    assert history[-1]["actor"] == "trainer"
    assert history[-1]["reason"] == "test moves it to rolled_back"


def test_canary_and_production_need_valid_signatures(registry: Registry) -> None:
    reg = registry
    version = to_shadow(reg)

    unsigned = reg.move(version, "canary")
    assert unsigned.status_code == 409
    assert (
        "requires an electronic signature with meaning 'approve-canary'"
        in unsigned.json()["detail"]
    )

    wrong = reg.sign(version, "approve-canary", password="not-my-password")
    assert wrong.status_code == 401
    assert "wrong password" in wrong.json()["detail"]
    assert reg.sign(version, "approve-canary", user="operator", password="x").status_code == 403
    assert reg.sign(version, "approve-canary", user="trainer", password="x").status_code == 403

    signed = reg.sign(version, "approve-canary")
    assert signed.status_code == 201, signed.text
    signature = signed.json()
    assert signature["signer"] == "quality" and signature["signer_role"] == "quality"
    assert signature["meaning"] == "approve-canary" and signature["valid"] is True
    assert signature["stage_at_signing"] == "shadow"

    canary = reg.move(version, "canary", user="trainer")
    assert canary.status_code == 200, canary.text
    assert canary.json()["stage_history"][-1]["approval_id"] == signature["id"]
    assert canary.json()["approvals"][0]["id"] == signature["id"]

    # A canary signature does not authorise production.
    assert "approve-production" in reg.move(version, "production").json()["detail"]
    assert reg.sign(version, "approve-production", user="admin").status_code == 201
    assert reg.move(version, "production").json()["stage"] == "production"

    actions = [
        r["action"]
        for r in reg.client.get(
            "/v1/audit", params={"limit": 1000}, headers=reg.auth("admin")
        ).json()["records"]
    ]
    assert actions.count("signature.failed") == 1
    assert actions.count("signature.applied") == 2
    failed = next(
        r
        for r in reg.client.get("/v1/audit", headers=reg.auth("admin")).json()["records"]
        if r["action"] == "signature.failed"
    )
    assert failed["actor"] == "quality" and failed["details"]["reason"] == "wrong password"

    metrics = reg.client.get("/metrics").text
    assert 'inspectloop_registry_signature_attempts_total{outcome="wrong_password"} 1.0' in metrics
    assert (
        'inspectloop_registry_stage_transitions_total{outcome="ok",phase="canary"} 1.0' in metrics
    )


def test_failed_signatures_in_a_row_lock_the_signer_until_an_admin_unlocks(
    registry: Registry,
) -> None:
    reg = registry
    limit = reg.settings.registry.max_failed_signatures
    version = to_shadow(reg)
    assert reg.sign(version, "approve-canary", password="wrong-password").status_code == 401
    assert reg.sign(version, "approve-canary").status_code == 201  # a success starts afresh
    replies = [reg.sign(version, "approve-canary", password=f"guess-{i}") for i in range(limit)]
    assert [r.status_code for r in replies] == [401] * limit
    assert "signing is now locked" in replies[-1].json()["detail"]
    assert "locked" not in replies[-2].json()["detail"]
    locked = reg.sign(version, "approve-canary")  # the right password no longer helps
    assert locked.status_code == 403
    assert "after 5 failed signatures in a row" in locked.json()["detail"]
    assert reg.sign(version, "approve-canary", user="admin").status_code == 201  # others sign
    unlock = "/v1/users/quality/signature-unlock"
    assert reg.client.post(unlock, headers=reg.auth("quality")).status_code == 403
    assert (
        reg.client.post("/v1/users/nobody/signature-unlock", headers=reg.auth("admin")).status_code
        == 404
    )
    assert reg.client.post(unlock, headers=reg.auth("admin")).status_code == 204
    assert reg.sign(version, "approve-canary").status_code == 201
    records = reg.client.get("/v1/audit", params={"limit": 1000}, headers=reg.auth("admin")).json()[
        "records"
    ]
    actions = [r["action"] for r in records]
    assert actions.count("signature.failed") == limit + 1
    assert actions.count("signature.refused") == 1
    assert actions.count("user.signature-unlocked") == 1
    metrics = reg.client.get("/metrics").text
    assert 'inspectloop_registry_signature_attempts_total{outcome="locked"} 1.0' in metrics


def test_changing_a_signed_version_voids_its_signature(registry: Registry) -> None:
    reg = registry
    version = to_shadow(reg)
    assert reg.sign(version, "approve-canary").status_code == 201
    extra = reg.upload(b"int8 model")
    changed = reg.client.post(
        f"/v1/models/{MODEL}/versions/{version}/artifacts",
        json={"artifacts": [{"kind": "onnx_int8", "sha256": extra, "size_bytes": 10}]},
        headers=reg.auth("trainer"),
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["approvals"][0]["valid"] is False
    refused = reg.move(version, "canary")
    assert refused.status_code == 409
    assert "changed after it was signed" in refused.json()["detail"]
    assert reg.sign(version, "approve-canary").status_code == 201
    assert reg.move(version, "canary").status_code == 200


# --- authentication, roles, validation ------------------------------------------------------------


def test_tokens_and_roles(registry: Registry) -> None:
    reg = registry
    anonymous = reg.client.get("/v1/models")
    assert anonymous.status_code == 401
    assert anonymous.headers["www-authenticate"].startswith("Bearer")
    assert "missing API token" in anonymous.json()["detail"]
    bad = reg.client.get("/v1/models", headers={"Authorization": "Bearer ilr_forged"})
    assert bad.status_code == 401 and "invalid or revoked" in bad.json()["detail"]

    assert reg.client.get("/v1/models", headers=reg.auth("operator")).status_code == 200
    forbidden = reg.register(version_body(reg), user="operator")
    assert forbidden.status_code == 403
    assert (
        "role operator may not register; allowed roles: service, admin"
        in forbidden.json()["detail"]
    )
    assert reg.register(version_body(reg), user="quality").status_code == 403
    assert reg.move(1, "shadow", user="operator").status_code == 403
    data = b"operator upload"
    put = reg.client.put(
        f"/v1/artifacts/{hashlib.sha256(data).hexdigest()}",
        content=data,
        headers=reg.auth("operator"),
    )
    assert put.status_code == 403
    assert reg.client.get("/v1/audit", headers=reg.auth("quality")).status_code == 403
    assert reg.client.get("/v1/audit/verify", headers=reg.auth("trainer")).status_code == 403
    who = reg.client.get("/v1/whoami", headers=reg.auth("trainer")).json()
    assert who == {
        "name": "trainer",
        "role": "service",
        "permissions": ["read", "register", "upload", "transition"],
    }

    created = reg.client.post(
        "/v1/users",
        json={"name": "line-lead", "role": "operator"},
        headers=reg.auth("admin"),
    )
    assert created.status_code == 201
    token = created.json()["token"]
    assert (
        reg.client.get("/v1/models", headers={"Authorization": f"Bearer {token}"}).status_code
        == 200
    )
    duplicate = reg.client.post(
        "/v1/users", json={"name": "line-lead", "role": "operator"}, headers=reg.auth("admin")
    )
    assert duplicate.status_code == 409
    assert (
        reg.client.post(
            "/v1/users", json={"name": "x", "role": "admin"}, headers=reg.auth("quality")
        ).status_code
        == 403
    )
    revoked = reg.client.delete(
        f"/v1/tokens/{created.json()['token_id']}", headers=reg.auth("admin")
    )
    assert revoked.status_code == 204
    assert (
        reg.client.get("/v1/models", headers={"Authorization": f"Bearer {token}"}).status_code
        == 401
    )


def test_invalid_requests_get_422_with_reasons(registry: Registry) -> None:
    reg = registry

    def problems(reply: httpx.Response) -> str:
        assert reply.status_code == 422, reply.text
        return json.dumps(reply.json()["detail"])

    body = version_body(reg)
    del body["lineage"]
    assert '"lineage"' in problems(reg.register(body))
    body = version_body(reg)
    body["lineage"]["dataset_sha256"] = "ABC"
    assert "64 lowercase hexadecimal digits" in problems(reg.register(body))
    body = version_body(reg, stage="production")
    assert "cannot start in stage production" in problems(reg.register(body))
    body = version_body(reg, stage="rejected")
    assert "needs rejection_reasons" in problems(reg.register(body))
    body = version_body(reg)
    body["gate_results"][0]["passed"] = False
    assert "gate(s) failed: accuracy" in problems(reg.register(body))
    body = version_body(reg)
    body["class_metrics"][0]["recall"] = 1.5
    assert "less than or equal to 1" in problems(reg.register(body))
    body = version_body(reg)
    body["colour"] = "blue"
    assert "colour" in problems(reg.register(body))
    assert "pattern" in problems(
        reg.client.post(
            "/v1/models/Bad Name/versions", json=version_body(reg), headers=reg.auth("trainer")
        )
    )
    assert reg.register(version_body(reg)).status_code == 201
    assert "to_stage" in problems(reg.move(1, "sideways"))
    empty_reason = reg.client.post(
        f"/v1/models/{MODEL}/versions/1/transitions",
        json={"to_stage": "shadow", "reason": ""},
        headers=reg.auth("quality"),
    )
    assert "reason" in problems(empty_reason)
    assert "meaning" in problems(reg.sign(1, "approve-everything"))


def test_idempotency_key_makes_registration_retry_safe(registry: Registry) -> None:
    reg = registry
    body = version_body(reg)
    first = reg.register(body, key="run-1")
    retry = reg.register(body, key="run-1")
    assert (first.status_code, retry.status_code) == (201, 200)
    assert retry.json()["version"] == first.json()["version"] == 1
    body["metrics"]["accuracy"] = 0.5
    clash = reg.register(body, key="run-1")
    assert clash.status_code == 409 and "different body" in clash.json()["detail"]


# --- audit ----------------------------------------------------------------------------------------


def run_cli(*args: str, input: str | None = None, data_dir: Path) -> Any:
    env = {"INSPECTLOOP_DATA_DIR": str(data_dir)}
    return CliRunner().invoke(registry_app, list(args), input=input, env=env)


def test_tampering_with_the_audit_table_is_detected(registry: Registry, tmp_path: Path) -> None:
    reg = registry
    version = to_shadow(reg)
    reg.sign(version, "approve-canary")
    reg.move(version, "canary")
    url = reg.settings.database_url

    clean = run_cli("verify-audit", "--database-url", url, data_dir=tmp_path)
    assert clean.exit_code == 0, clean.output
    assert "OK:" in clean.output
    verdict = reg.client.get("/v1/audit/verify", headers=reg.auth("admin")).json()
    assert verdict["ok"] is True and verdict["problems"] == []
    head = f"{verdict['head']['seq']}:{verdict['head']['hash']}"

    records = reg.client.get("/v1/audit", headers=reg.auth("admin")).json()["records"]
    target = next(r["seq"] for r in records if r["action"] == "stage.changed")
    with reg.engine.begin() as connection:
        connection.execute(
            text("UPDATE registry_audit SET details = :d WHERE seq = :s"),
            {
                "d": json.dumps({"from": "validated", "to": "shadow", "reason": "nothing to see"}),
                "s": target,
            },
        )
    tampered = run_cli("verify-audit", "--database-url", url, data_dir=tmp_path)
    assert tampered.exit_code == 1, tampered.output
    assert "FAILED" in tampered.output
    assert f"seq {target}: edited" in tampered.output
    verdict = reg.client.get("/v1/audit/verify", headers=reg.auth("admin")).json()
    assert verdict["ok"] is False
    assert verdict["problems"][0]["seq"] == target and verdict["problems"][0]["kind"] == "edited"

    # Removing a record (and the tail) is detected as well.
    with reg.engine.begin() as connection:
        connection.execute(text("DELETE FROM registry_audit WHERE seq = 2"))
        last = connection.execute(text("SELECT max(seq) FROM registry_audit")).scalar_one()
        connection.execute(text("DELETE FROM registry_audit WHERE seq = :s"), {"s": last})
    removed = run_cli(
        "verify-audit", "--database-url", url, "--expect-head", head, data_dir=tmp_path
    )
    assert removed.exit_code == 1
    assert "seq 2: removed" in removed.output
    assert f"seq {last}: truncated" in removed.output
    assert f"seq {last}: anchor" in removed.output


def test_cli_creates_users_that_can_sign(registry: Registry, tmp_path: Path) -> None:
    reg = registry
    url = reg.settings.database_url
    result = run_cli(
        "create-user",
        "--name",
        "qa-lead",
        "--role",
        "quality",
        "--password-stdin",
        "--database-url",
        url,
        input="qa-lead-secret\n",
        data_dir=tmp_path,
    )
    assert result.exit_code == 0, result.output
    token = result.stdout.strip().splitlines()[-1]
    assert token.startswith("ilr_")
    headers = {"Authorization": f"Bearer {token}"}
    assert reg.client.get("/v1/whoami", headers=headers).json()["role"] == "quality"
    version = to_shadow(reg)
    signed = reg.client.post(
        f"/v1/models/{MODEL}/versions/{version}/approvals",
        json={"meaning": "approve-canary", "password": "qa-lead-secret"},
        headers=headers,
    )
    assert signed.status_code == 201 and signed.json()["signer"] == "qa-lead"
    again = run_cli(
        "create-user",
        "--name",
        "qa-lead",
        "--role",
        "quality",
        "--database-url",
        url,
        data_dir=tmp_path,
    )
    assert again.exit_code == 1 and "exists already" in again.output
    short = run_cli(
        "create-user",
        "--name",
        "x",
        "--role",
        "admin",
        "--password-stdin",
        "--database-url",
        url,
        input="short\n",
        data_dir=tmp_path,
    )
    assert short.exit_code == 2 and "at least 8" in short.output
    missing = run_cli(
        "verify-audit",
        "--database-url",
        f"sqlite:///{tmp_path / 'none.sqlite3'}",
        data_dir=tmp_path,
    )
    assert missing.exit_code == 2 and "no registry database" in missing.output


def test_openapi_documents_every_endpoint(registry: Registry) -> None:
    document = registry.client.get("/openapi.json").json()
    paths = document["paths"]
    expected = {
        "/v1/models": {"get"},
        "/v1/models/{name}/versions": {"get", "post"},
        "/v1/models/{name}/versions/{version}": {"get"},
        "/v1/models/{name}/versions/{version}/lineage": {"get"},
        "/v1/models/{name}/versions/{version}/artifacts": {"post"},
        "/v1/models/{name}/versions/{version}/transitions": {"post"},
        "/v1/models/{name}/versions/{version}/approvals": {"post"},
        "/v1/artifacts/{sha256}": {"get", "put"},
        "/v1/audit": {"get"},
        "/v1/audit/verify": {"get"},
        "/v1/users": {"get", "post"},
        "/healthz": {"get"},
        "/readyz": {"get"},
    }
    for path, methods in expected.items():
        assert methods <= set(paths[path]), path
        for method in methods:
            operation = paths[path][method]
            assert operation.get("description"), f"{method} {path} has no description"
    transition = paths["/v1/models/{name}/versions/{version}/transitions"]["post"]
    assert {"200", "401", "403", "404", "409", "422"} <= set(transition["responses"])
    assert "HTTPBearer" in document["components"]["securitySchemes"]
    schemas = document["components"]["schemas"]
    assert schemas["VersionCreate"]["properties"]["lineage"]
    assert "description" in schemas["LineageIn"]["properties"]["dataset_sha256"]


# --- bus consumer and the real service ------------------------------------------------------------


def test_bus_events_are_recorded_once(registry: Registry, tmp_path: Path) -> None:
    reg = registry
    version = to_shadow(reg)
    bus = build_bus(
        BusSettings(local=LocalBusSettings(directory=tmp_path / "bus")),
        "rollout",
        CollectorRegistry(),
    )
    with bus:
        bus.ensure_topics(AUDITED_TOPICS)
        event = RolloutEvent(
            event_id="e-1",
            rollout_id="r-1",
            model_name=MODEL,
            version=str(version),
            phase=RolloutPhase.ROLLOUT_PHASE_CANARY,
            previous_phase=RolloutPhase.ROLLOUT_PHASE_SHADOW,
            canary_weight_bps=500,
            reason="analysis passed",
            actor="rollout-controller",
        )
        bus.publish(ROLLOUTS, event, event_id="e-1").result(10)
        bus.publish(ROLLOUTS, event, event_id="e-1").result(10)  # redelivered duplicate
        announced = ModelVersion(
            name=MODEL, version=str(version), stage=ModelStage.MODEL_STAGE_VALIDATED
        )
        bus.publish(MODELS, announced, event_id="e-2").result(10)
        routing = Routing(
            line="line-1",
            generation=7,
            stable=ModelRef(name=MODEL, version="999"),  # no such version: it stands out
            canary=ModelRef(name=MODEL, version=str(version)),
            canary_weight_bps=500,
            rollout_id="r-1",
        )
        bus.publish(ROUTING, routing, event_id="e-3").result(10)
        mode = LineModeChanged(
            change_id="m-1",
            line="line-1",
            previous_mode=LineMode.LINE_MODE_AUTO,
            new_mode=LineMode.LINE_MODE_MANUAL,
            reason="feature drift",
            changed_by="monitor",
            generation=3,
        )
        bus.publish(LINE_MODES, mode, event_id="m-1").result(10)
        recorder = BusAuditRecorder(reg.store)
        consumer = bus.consumer("registry-audit", AUDITED_TOPICS, recorder.handle)
        with consumer:
            poll_until(
                lambda: (consumer.poll_once(0.2) == 0 and consumer.assignment()) or None,
                timeout=30,
                what="consumer drained",
            )
    records = reg.client.get("/v1/audit", params={"limit": 1000}, headers=reg.auth("admin")).json()
    bus_records = [r for r in records["records"] if r["action"].startswith("bus.")]
    assert [r["action"] for r in bus_records].count("bus.rollout-event") == 1
    rollout = next(r for r in bus_records if r["action"] == "bus.rollout-event")
    assert rollout["actor"] == "rollout-controller"
    assert rollout["subject"] == f"model/{MODEL}/{version}"
    assert rollout["details"]["phase"] == "ROLLOUT_PHASE_CANARY"
    assert rollout["details"]["registry_stage"] == "shadow"
    model = next(r for r in bus_records if r["action"] == "bus.model-version")
    assert model["details"]["announced_stage"] == "validated"
    route = next(r for r in bus_records if r["action"] == "bus.routing")
    assert route["subject"] == "line/line-1" and route["actor"] == "rollout"
    assert route["details"]["generation"] == 7
    assert route["details"]["canary"]["registry_stage"] == "shadow"
    assert route["details"]["stable"] == {"model": MODEL, "version": "999", "registry_stage": None}
    line_mode = next(r for r in bus_records if r["action"] == "bus.line-mode")
    assert line_mode["actor"] == "monitor" and line_mode["subject"] == "line/line-1"
    assert (line_mode["details"]["previous_mode"], line_mode["details"]["new_mode"]) == (
        "LINE_MODE_AUTO",
        "LINE_MODE_MANUAL",
    )
    assert reg.client.get("/v1/audit/verify", headers=reg.auth("admin")).json()["ok"] is True
    # The consumer records only: the stage is still the registry's own.
    assert reg.store.current_stage(MODEL, version) == Stage.SHADOW


def test_real_service_under_uvicorn(database_url: str, tmp_path: Path) -> None:
    admin_token = "ilr_" + "a" * 40
    trainer_token = "ilr_" + "t" * 40
    port = pick_free_port()
    data_dir = tmp_path / "service"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("INSPECTLOOP_")},
        "INSPECTLOOP_DATA_DIR": str(data_dir),
        "INSPECTLOOP_LOGGING__JSON_FORMAT": "false",
        "INSPECTLOOP_REGISTRY__DATABASE_URL": database_url,
        "INSPECTLOOP_REGISTRY__PORT": str(port),
        "INSPECTLOOP_REGISTRY__BOOTSTRAP_USERS": json.dumps(
            [
                {
                    "name": "admin",
                    "role": "admin",
                    "token": admin_token,
                    "password": "admin-secret-1",
                },
                {"name": "trainer", "role": "service", "token": trainer_token},
            ]
        ),
    }
    process = ManagedProcess(
        "registry",
        [sys.executable, "-m", "inspectloop.registry.service"],
        tmp_path / "registry.log",
        env=env,
    )
    base = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        return httpx.get(f"{base}/readyz", timeout=2).status_code == 200

    process.start()
    try:
        process.wait_ready(ready, READY_TIMEOUT_S)
        trainer = {"Authorization": f"Bearer {trainer_token}"}
        with httpx.Client(base_url=base, timeout=10) as http:
            data = b"served by uvicorn"
            sha = hashlib.sha256(data).hexdigest()
            assert (
                http.put(f"/v1/artifacts/{sha}", content=data, headers=trainer).status_code == 201
            )
            body = {
                "stage": "validated",
                "artifacts": [{"kind": "onnx", "sha256": sha, "size_bytes": len(data)}],
                "lineage": {
                    "dataset_snapshot_id": "s",
                    "dataset_sha256": "e" * 64,
                    "code_version": "c",
                },
                "classes": ["good", "defect"],
                "input_width": 96,
                "input_height": 96,
            }
            created = http.post(f"/v1/models/{MODEL}/versions", json=body, headers=trainer)
            assert created.status_code == 201, created.text
            assert http.get(f"/v1/artifacts/{sha}", headers=trainer).content == data

            # The service's bus consumer records a rollout event published by another process.
            bus = build_bus(
                BusSettings(local=LocalBusSettings(directory=data_dir / "bus")),
                "rollout",
                CollectorRegistry(),
            )
            with bus:
                bus.publish(
                    ROLLOUTS,
                    RolloutEvent(
                        event_id="e-9",
                        model_name=MODEL,
                        version="1",
                        phase=RolloutPhase.ROLLOUT_PHASE_SHADOW,
                        actor="rollout-controller",
                    ),
                    event_id="e-9",
                ).result(10)
            admin = {"Authorization": f"Bearer {admin_token}"}

            def recorded() -> bool:
                records = http.get("/v1/audit", headers=admin).json()["records"]
                return any(r["action"] == "bus.rollout-event" for r in records)

            poll_until(recorded, timeout=30, what="rollout event in the audit log")
            assert http.get("/v1/audit/verify", headers=admin).json()["ok"] is True
            metrics = http.get("/metrics").text
            assert "inspectloop_registry_versions_registered_total" in metrics
            assert "inspectloop_bus_consumed_events_total" in metrics
    finally:
        code = process.stop(grace=20)
    assert code == 0, process.log_tail()


def test_concurrent_writers_never_fork_the_chain(registry: Registry) -> None:
    reg = registry
    body = VersionCreate.model_validate(version_body(reg))
    trainer = reg.store.authenticate(reg.tokens["trainer"])
    assert trainer is not None

    def work(i: int) -> int:
        if i % 2:
            reg.store.record_event(
                f"event-{i}", actor="t", action="bus.test", subject="s", details={"i": i}
            )
            return 0
        version, _ = reg.store.register_version(MODEL, body, actor=trainer)
        return version.version

    with ThreadPoolExecutor(max_workers=6) as pool:
        versions = [v for v in pool.map(work, range(24)) if v]
    assert sorted(versions) == list(range(1, 13))
    report = reg.store.verify_audit()
    assert report.ok, report.problems
    assert report.head.seq == report.records


def test_registry_rides_out_a_postgres_crash(
    postgres_server: PostgresServer, tmp_path: Path
) -> None:
    name = f"registry_{uuid.uuid4().hex[:12]}"
    with open_registry(postgres_server.create_database(name), tmp_path) as reg:
        assert reg.register(version_body(reg)).status_code == 201
        postgres_server.kill()
        try:
            assert reg.client.get("/readyz").status_code == 503
            down = reg.client.get(f"/v1/models/{MODEL}/versions/1", headers=reg.auth("operator"))
            assert down.status_code == 503
            assert down.headers["retry-after"]
            assert "unavailable" in down.json()["detail"]
        finally:
            postgres_server.start()
        assert reg.client.get("/readyz").status_code == 200
        back = reg.client.get(f"/v1/models/{MODEL}/versions/1", headers=reg.auth("operator"))
        assert back.status_code == 200 and back.json()["stage"] == "validated"
        assert reg.register(version_body(reg, payload=b"after")).json()["version"] == 2
        assert reg.client.get("/v1/audit/verify", headers=reg.auth("admin")).json()["ok"] is True
    postgres_server.drop_database(name)
