"""The node's local model store: verified versions on disk, swapped atomically.

Layout under ``store_dir``::

    versions/<name>-v<version>-<sha12>/model.onnx  the artifact, exactly as verified
    versions/<name>-v<version>-<sha12>/meta.json   name, version, sha256, kind, signed
    current  -> versions/...                        what the node serves
    previous -> versions/...                        what it served before (rollback, offline)

A new version is downloaded into ``versions/.incoming-*``, verified (SHA-256 against the
registry's manifest, then the Ed25519 signature when a public key is configured), opened with
onnxruntime to prove it loads, and renamed into place; then ``previous`` and ``current`` are
replaced with ``os.replace`` of a fresh symlink, which is atomic on POSIX: a crash leaves either
the old or the new link, never none. A version already on disk (the previous one, after a
rollback) is verified again from its bytes and swapped in without the registry.

Signatures (optional): the release step signs the artifact's bytes with the plant's Ed25519
private key (``openssl pkeyutl -sign -rawin -inkey key.pem -in model.int8.onnx -out sig``, or
:func:`sign_artifact`) and attaches the 64 raw bytes to the same version as an artifact of the
same kind named ``<filename>.sig`` with media type :data:`SIGNATURE_MEDIA_TYPE`. Nodes that are
given the public key refuse an artifact without a valid signature; the registry never holds the
private key, so a registry (or a mirror) that is compromised cannot make nodes run a model.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from inspectloop.core.errors import ConfigError, PermanentError
from inspectloop.core.onnx_contract import sha256_file
from inspectloop.inspection.approval import reached

log = logging.getLogger(__name__)

SIGNATURE_MEDIA_TYPE = "application/vnd.inspectloop.ed25519-signature"
SIGNATURE_SUFFIX = ".sig"
MODEL_FILENAME = "model.onnx"
META_FILENAME = "meta.json"
CURRENT = "current"
PREVIOUS = "previous"


class ArtifactRejectedError(PermanentError):
    """An artifact failed verification; ``reason`` is a bounded metric label."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason  # "sha256", "signature", "missing", "invalid_model"


class ArtifactSource(Protocol):
    """What the store needs of the registry (``RegistryClient`` fits)."""

    def version(self, model_name: str, version: int) -> dict[str, Any]: ...

    def download_artifact(self, sha256: str, target: Path) -> Path: ...


@dataclass(frozen=True)
class InstalledModel:
    name: str
    version: str
    sha256: str
    kind: str
    signed: bool
    path: Path  # the version's directory

    @property
    def model_path(self) -> Path:
        return self.path / MODEL_FILENAME

    @property
    def key(self) -> str:
        return _dir_name(self.name, self.version, self.sha256)


def _dir_name(name: str, version: str, sha256: str) -> str:
    return f"{name}-v{version}-{sha256[:12]}"


def load_public_key(path: Path) -> Ed25519PublicKey:
    """The PEM Ed25519 public key at ``path``, or ConfigError."""
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"edge public key {path}: {exc}") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigError(f"edge public key {path} is not an Ed25519 key")
    return key


def sign_artifact(private_key: Ed25519PrivateKey, path: Path) -> bytes:
    """The detached signature of a file's bytes (what the release step uploads as .sig)."""
    return private_key.sign(path.read_bytes())


def _sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class ModelStore:
    """Verified model versions on disk; ``current`` and ``previous`` move atomically."""

    def __init__(
        self,
        root: Path,
        source: ArtifactSource | None,
        *,
        kind: str = "onnx_int8",
        public_key: Ed25519PublicKey | None = None,
    ) -> None:
        self.root = root
        self.versions_dir = root / "versions"
        self.versions_dir.mkdir(parents=True, exist_ok=True)
        self._source = source
        self._kind = kind
        self._public_key = public_key

    # --- what is installed ------------------------------------------------------------------

    def current(self) -> InstalledModel | None:
        return self._read_link(CURRENT)

    def previous(self) -> InstalledModel | None:
        return self._read_link(PREVIOUS)

    def _read_link(self, name: str) -> InstalledModel | None:
        link = self.root / name
        if not link.is_symlink():
            return None
        return self._read_meta(self.root / os.readlink(link))

    def _read_meta(self, directory: Path) -> InstalledModel | None:
        try:
            meta = json.loads((directory / META_FILENAME).read_text())
        except (OSError, ValueError):
            return None
        return InstalledModel(
            name=meta["name"],
            version=meta["version"],
            sha256=meta["sha256"],
            kind=meta["kind"],
            signed=bool(meta["signed"]),
            path=directory,
        )

    def verify_on_disk(self, model: InstalledModel) -> None:
        """Re-hash the stored bytes: a file changed on the node is refused like a download."""
        actual = sha256_file(model.model_path)
        if actual != model.sha256:
            raise ArtifactRejectedError(
                "sha256",
                f"{model.name} v{model.version} on disk hashes to {actual}, not {model.sha256}",
            )

    # --- installing and swapping ------------------------------------------------------------

    def find(self, name: str, version: str) -> InstalledModel | None:
        """A verified copy of ``name`` ``version`` already on disk, if any."""
        for directory in sorted(self.versions_dir.glob(f"{name}-v{version}-*")):
            model = self._read_meta(directory)
            if model is not None and model.name == name and model.version == version:
                return model
        return None

    def prepare(
        self, name: str, version: str, *, approved_for: str | None = None
    ) -> tuple[InstalledModel, bool]:
        """A verified copy of ``name`` ``version``: from disk if it is there (re-hashed), else
        downloaded and verified. Nothing is swapped yet; returns the model and whether it was
        downloaded. ``approved_for``: a stage the registry must have moved the version to before
        it is downloaded (a version on disk was checked when it came). Raises
        ArtifactRejectedError (verification failed), BackendUnavailableError (registry away) or
        PermanentError."""
        current = self.current()
        if current is not None and (current.name, current.version) == (name, version):
            return current, False
        local = self.find(name, version)
        if local is not None:
            self.verify_on_disk(local)
            if self._public_key is None or local.signed:
                return local, False
            # Installed before a key was configured: fetch and verify it again.
        return self._download(name, version, approved_for), True

    def activate(self, model: InstalledModel) -> None:
        """Make ``model`` current; the model it replaces becomes previous."""
        current = self.current()
        if current is not None and current.key == model.key:
            return
        if current is not None:
            self._link(PREVIOUS, current.path)
        self._link(CURRENT, model.path)
        self._prune()
        log.info(
            "now serving %s v%s (previous: %s)",
            model.name,
            model.version,
            f"{current.name} v{current.version}" if current else "none",
        )

    def _download(self, name: str, version: str, approved_for: str | None) -> InstalledModel:
        if self._source is None:
            raise PermanentError(f"{name} v{version} is not on disk and no registry is configured")
        record = self._source.version(name, int(version))
        if approved_for is not None and not reached(record, approved_for):
            raise ArtifactRejectedError(
                "unapproved",
                f"{name} v{version} was never approved for {approved_for} by the registry "
                f"(stage {record.get('stage')}): refused",
            )
        artifact, signature = self._pick(record, name, version)
        expected = str(artifact["sha256"])
        incoming = self.versions_dir / f".incoming-{uuid.uuid4().hex}"
        incoming.mkdir()
        try:
            target = incoming / MODEL_FILENAME
            self._source.download_artifact(expected, target)
            actual = sha256_file(target)
            if actual != expected:
                raise ArtifactRejectedError(
                    "sha256",
                    f"artifact of {name} v{version} hashes to {actual}, the registry's manifest "
                    f"says {expected}: refused",
                )
            signed = False
            if self._public_key is not None:
                self._check_signature(name, version, target, signature, incoming)
                signed = True
            meta = {
                "name": name,
                "version": version,
                "sha256": expected,
                "kind": self._kind,
                "signed": signed,
                "filename": artifact.get("filename", ""),
            }
            (incoming / META_FILENAME).write_text(json.dumps(meta, indent=2))
            _fsync_dir(incoming)
            final = self.versions_dir / _dir_name(name, version, expected)
            if final.exists():  # a copy left by an earlier attempt: the new one is verified
                shutil.rmtree(final)
            incoming.rename(final)
            _fsync_dir(self.versions_dir)
        finally:
            shutil.rmtree(incoming, ignore_errors=True)
        installed = self._read_meta(final)
        assert installed is not None  # just written
        log.info("installed %s v%s (sha256 %s, signed %s)", name, version, expected, signed)
        return installed

    def _pick(
        self, record: dict[str, Any], name: str, version: str
    ) -> tuple[dict[str, Any], dict[str, Any] | None]:
        candidates = [
            a
            for a in record.get("artifacts", [])
            if a.get("kind") == self._kind and a.get("media_type") != SIGNATURE_MEDIA_TYPE
        ]
        if not candidates:
            raise ArtifactRejectedError(
                "missing", f"{name} v{version} has no {self._kind} artifact in the registry"
            )
        artifact = candidates[0]
        wanted = f"{artifact.get('filename') or MODEL_FILENAME}{SIGNATURE_SUFFIX}"
        signature = next(
            (
                a
                for a in record.get("artifacts", [])
                if a.get("media_type") == SIGNATURE_MEDIA_TYPE and a.get("filename") == wanted
            ),
            None,
        )
        return artifact, signature

    def _check_signature(
        self,
        name: str,
        version: str,
        model: Path,
        signature: dict[str, Any] | None,
        incoming: Path,
    ) -> None:
        assert self._public_key is not None and self._source is not None
        if signature is None:
            raise ArtifactRejectedError(
                "signature", f"{name} v{version} carries no signature and a public key is set"
            )
        sig_path = self._source.download_artifact(
            str(signature["sha256"]), incoming / f"{MODEL_FILENAME}{SIGNATURE_SUFFIX}"
        )
        sig = sig_path.read_bytes()
        if _sha256_bytes(sig) != signature["sha256"]:
            raise ArtifactRejectedError("signature", f"signature of {name} v{version} corrupted")
        try:
            self._public_key.verify(sig, model.read_bytes())
        except InvalidSignature:
            raise ArtifactRejectedError(
                "signature",
                f"{name} v{version}: the signature does not match the configured public key",
            ) from None

    def _link(self, name: str, target: Path) -> None:
        tmp = self.root / f".{name}-{uuid.uuid4().hex}"
        # Relative target: the store can be moved or mounted elsewhere as a whole.
        tmp.symlink_to(os.path.relpath(target, self.root))
        os.replace(tmp, self.root / name)
        _fsync_dir(self.root)

    def _prune(self) -> None:
        """Keep current and previous; older versions and failed downloads go."""
        keep = {m.path.name for m in (self.current(), self.previous()) if m is not None}
        for directory in self.versions_dir.iterdir():
            if directory.name not in keep:
                shutil.rmtree(directory, ignore_errors=True)


def _fsync_dir(path: Path) -> None:
    # A rename is durable only once its directory is synced.
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def installed_dict(model: InstalledModel | None) -> dict[str, Any] | None:
    """JSON-ready description (CLI, logs)."""
    if model is None:
        return None
    data = asdict(model)
    data["path"] = str(model.path)
    return data
