"""The edge node's model store (verification, atomic swap, rollback from disk) and which
version a node of a wave runs under a routing."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from inspectloop.core.errors import BackendUnavailableError, ConfigError
from inspectloop.edge.agent import wanted_model
from inspectloop.edge.models import (
    SIGNATURE_MEDIA_TYPE,
    ArtifactRejectedError,
    ModelStore,
    load_public_key,
)
from inspectloop.v1.common_pb2 import MODEL_ROLE_CANARY, MODEL_ROLE_STABLE, ModelRef
from inspectloop.v1.rollout_pb2 import Routing

MODEL = "label-inspector"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class FakeRegistry:
    """Versions and blobs in memory; ``tamper`` serves other bytes than the manifest's."""

    blobs: dict[str, bytes] = field(default_factory=dict)
    versions: dict[int, dict[str, Any]] = field(default_factory=dict)
    tamper: set[str] = field(default_factory=set)
    offline: bool = False
    downloads: int = 0

    def add(self, version: int, data: bytes, signature: bytes | None = None) -> None:
        artifacts = [
            {"kind": "onnx", "sha256": sha(b"fp32" + data), "filename": "model.onnx"},
            {"kind": "onnx_int8", "sha256": sha(data), "filename": "model.int8.onnx"},
        ]
        self.blobs[sha(data)] = data
        if signature is not None:
            self.blobs[sha(signature)] = signature
            artifacts.append(
                {
                    "kind": "onnx_int8",
                    "sha256": sha(signature),
                    "filename": "model.int8.onnx.sig",
                    "media_type": SIGNATURE_MEDIA_TYPE,
                }
            )
        self.versions[version] = {"version": version, "artifacts": artifacts}

    def version(self, model_name: str, version: int) -> dict[str, Any]:
        if self.offline:
            raise BackendUnavailableError("registry unreachable")
        assert model_name == MODEL
        return self.versions[version]

    def download_artifact(self, sha256: str, target: Path) -> Path:
        if self.offline:
            raise BackendUnavailableError("registry unreachable")
        self.downloads += 1
        data = self.blobs[sha256]
        target.write_bytes(data + b"\x00" if sha256 in self.tamper else data)
        return target


def install(store: ModelStore, version: str) -> None:
    model, _ = store.prepare(MODEL, version)
    store.activate(model)


def current_version(store: ModelStore) -> str | None:
    current = store.current()
    return current.version if current else None


def test_a_verified_version_is_swapped_in_and_the_previous_kept(tmp_path: Path) -> None:
    registry = FakeRegistry()
    registry.add(1, b"model one")
    registry.add(2, b"model two")
    store = ModelStore(tmp_path / "store", registry)
    assert store.current() is None
    install(store, "1")
    assert current_version(store) == "1" and store.previous() is None
    current = store.current()
    assert current is not None and current.model_path.read_bytes() == b"model one"
    assert current.sha256 == sha(b"model one")
    install(store, "2")
    previous = store.previous()
    assert current_version(store) == "2"
    assert previous is not None and previous.version == "1"
    # The links are symlinks replaced in one rename: never a moment without a current model.
    assert (tmp_path / "store" / "current").is_symlink()


def test_rollback_to_the_previous_version_needs_no_network(tmp_path: Path) -> None:
    registry = FakeRegistry()
    registry.add(1, b"model one")
    registry.add(2, b"model two")
    store = ModelStore(tmp_path / "store", registry)
    install(store, "1")
    install(store, "2")
    registry.offline = True
    model, downloaded = store.prepare(MODEL, "1")
    assert not downloaded
    store.activate(model)
    assert current_version(store) == "1"
    previous = store.previous()
    assert previous is not None and previous.version == "2"
    # A reopened store (agent restart) finds the same state on disk.
    reopened = ModelStore(tmp_path / "store", None)
    assert current_version(reopened) == "1"


def test_only_current_and_previous_stay_on_disk(tmp_path: Path) -> None:
    registry = FakeRegistry()
    for number in (1, 2, 3):
        registry.add(number, f"model {number}".encode())
    store = ModelStore(tmp_path / "store", registry)
    for version in ("1", "2", "3"):
        install(store, version)
    kept = sorted(p.name.split("-v")[1][0] for p in (tmp_path / "store" / "versions").iterdir())
    assert kept == ["2", "3"]


def test_a_tampered_download_is_refused_and_nothing_changes(tmp_path: Path) -> None:
    registry = FakeRegistry()
    registry.add(1, b"model one")
    registry.add(2, b"model two")
    store = ModelStore(tmp_path / "store", registry)
    install(store, "1")
    registry.tamper.add(sha(b"model two"))
    with pytest.raises(ArtifactRejectedError) as refused:
        store.prepare(MODEL, "2")
    assert refused.value.reason == "sha256"
    assert current_version(store) == "1" and store.previous() is None
    assert store.find(MODEL, "2") is None
    assert [p.name for p in (tmp_path / "store" / "versions").iterdir()] == [
        store.current().path.name  # type: ignore[union-attr]
    ]


def test_a_file_changed_on_disk_is_refused(tmp_path: Path) -> None:
    registry = FakeRegistry()
    registry.add(1, b"model one")
    registry.add(2, b"model two")
    store = ModelStore(tmp_path / "store", registry)
    install(store, "1")
    install(store, "2")
    previous = store.previous()
    assert previous is not None
    previous.model_path.write_bytes(b"edited on the node")
    registry.offline = True
    with pytest.raises(ArtifactRejectedError) as refused:
        store.prepare(MODEL, "1")
    assert refused.value.reason == "sha256"
    assert current_version(store) == "2"


def test_a_version_without_an_edge_artifact_is_refused(tmp_path: Path) -> None:
    registry = FakeRegistry()
    registry.versions[1] = {"artifacts": [{"kind": "onnx", "sha256": sha(b"x")}]}
    store = ModelStore(tmp_path / "store", registry)
    with pytest.raises(ArtifactRejectedError) as refused:
        store.prepare(MODEL, "1")
    assert refused.value.reason == "missing"


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Ed25519PrivateKey, Path]:
    private = Ed25519PrivateKey.generate()
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    path = tmp_path / "edge-signing.pub.pem"
    path.write_bytes(public_pem)
    return private, path


def test_with_a_public_key_only_validly_signed_artifacts_are_installed(
    tmp_path: Path, keys: tuple[Ed25519PrivateKey, Path]
) -> None:
    private, public_path = keys
    other = Ed25519PrivateKey.generate()
    registry = FakeRegistry()
    registry.add(1, b"model one", signature=private.sign(b"model one"))
    registry.add(2, b"model two")  # unsigned
    registry.add(3, b"model three", signature=other.sign(b"model three"))
    registry.add(4, b"model four", signature=private.sign(b"not model four"))
    store = ModelStore(tmp_path / "store", registry, public_key=load_public_key(public_path))
    install(store, "1")
    current = store.current()
    assert current is not None and current.signed
    for version in ("2", "3", "4"):
        with pytest.raises(ArtifactRejectedError) as refused:
            store.prepare(MODEL, version)
        assert refused.value.reason == "signature", version
    assert current_version(store) == "1"


def test_an_unsigned_model_on_disk_is_verified_again_once_a_key_is_set(
    tmp_path: Path, keys: tuple[Ed25519PrivateKey, Path]
) -> None:
    private, public_path = keys
    registry = FakeRegistry()
    registry.add(1, b"model one", signature=private.sign(b"model one"))
    registry.add(2, b"model two", signature=private.sign(b"model two"))
    install(ModelStore(tmp_path / "store", registry), "1")
    install(ModelStore(tmp_path / "store", registry), "2")
    signed = ModelStore(tmp_path / "store", registry, public_key=load_public_key(public_path))
    before = registry.downloads
    model, downloaded = signed.prepare(MODEL, "1")
    assert downloaded and model.signed and registry.downloads == before + 2  # model + .sig


def test_a_public_key_that_is_not_ed25519_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.pem"
    path.write_text("not a key")
    with pytest.raises(ConfigError):
        load_public_key(path)


# --- waves ---------------------------------------------------------------------------------------


def routing(edge_wave: int, canary: str | None = "2") -> Routing:
    r = Routing(line="line-1", generation=5, stable=ModelRef(name=MODEL, version="1"))
    if canary is not None:
        r.canary.CopyFrom(ModelRef(name=MODEL, version=canary))
        r.canary_weight_bps = 1000
    r.edge_wave = edge_wave
    return r


@pytest.mark.parametrize(
    ("edge_wave", "node_wave", "version", "role"),
    [
        (0, 1, "1", MODEL_ROLE_STABLE),  # edge_wave 0 keeps every node on stable
        (1, 1, "2", MODEL_ROLE_CANARY),  # pilot wave reached
        (1, 2, "1", MODEL_ROLE_STABLE),  # the second wave is not yet
        (2, 1, "2", MODEL_ROLE_CANARY),
        (2, 2, "2", MODEL_ROLE_CANARY),
        (2, 3, "1", MODEL_ROLE_STABLE),
    ],
)
def test_a_node_runs_the_canary_once_its_wave_is_reached(
    edge_wave: int, node_wave: int, version: str, role: int
) -> None:
    ref = wanted_model(routing(edge_wave), node_wave)
    assert (ref.name, ref.version, ref.role) == (MODEL, version, role)


def test_without_a_canary_every_wave_runs_stable() -> None:
    ref = wanted_model(routing(edge_wave=3, canary=None), 1)
    assert (ref.version, ref.role) == ("1", MODEL_ROLE_STABLE)
