"""Content-addressed blob store: images and artifacts stored under the SHA-256 of their bytes.

Events carry a :class:`BlobRef` instead of the bytes (claim check). Because the name is the
hash, a blob never changes once written: writing the same bytes twice is a no-op, readers can
verify what they got, and any number of writers may race on the same blob safely.

:func:`build_blob_store` is the one place that picks the adapter from settings.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Protocol, assert_never, runtime_checkable

from inspectloop.core.errors import BackendUnavailableError, ConfigError, PermanentError
from inspectloop.core.settings import BlobStoreSettings

__all__ = [
    "BlobCorruptError",
    "BlobNotFoundError",
    "BlobRef",
    "BlobStore",
    "FilesystemBlobStore",
    "build_blob_store",
    "validate_sha256",
]

logger = logging.getLogger(__name__)

_SHA256_HEX: Final = re.compile(r"[0-9a-f]{64}")
# Blobs are immutable by construction; read-only files guard against an accidental in-place
# edit (os.replace over them still works, since that needs only the directory's permission).
_BLOB_MODE: Final = 0o444


class BlobNotFoundError(PermanentError):
    """No blob has this hash: the reference points at nothing, retrying will not create it."""


class BlobCorruptError(PermanentError):
    """The stored bytes no longer hash to their name (disk fault or tampering)."""


@dataclass(frozen=True, slots=True)
class BlobRef:
    """A reference to a stored blob, small enough to travel inside an event."""

    sha256: str
    size_bytes: int
    uri: str
    content_type: str


@runtime_checkable
class BlobStore(Protocol):
    """Where blobs live. Every adapter verifies the hash on read."""

    def put(self, data: bytes, content_type: str = "application/octet-stream") -> BlobRef:
        """Store ``data`` (idempotent) and return its reference.

        PermanentError if the blob is too large; BackendUnavailableError if the store cannot
        be written (disk full, storage down).
        """
        ...

    def get(self, sha256: str) -> bytes:
        """The blob's bytes; BlobNotFoundError if absent, BlobCorruptError if they do not match."""
        ...

    def exists(self, sha256: str) -> bool:
        """Whether a blob with this hash is stored (its content is not verified)."""
        ...

    def uri(self, sha256: str) -> str:
        """Where the blob lives, as a URI another process of the deployment can use."""
        ...


def validate_sha256(sha256: str) -> str:
    """Return ``sha256`` if it is 64 lowercase hex digits, else raise PermanentError.

    The hash becomes a file path, so anything else (``..``, ``/``, upper case aliases) is
    refused before it gets near the filesystem.
    """
    if not isinstance(sha256, str) or not _SHA256_HEX.fullmatch(sha256):
        shown = repr(sha256)[:80]
        raise PermanentError(f"invalid blob sha256 {shown}: expected 64 lowercase hex digits")
    return sha256


def _fsync_dir(directory: Path) -> None:
    # A rename or a new entry is durable only once its directory is flushed too.
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FilesystemBlobStore:
    """Blobs as files ``<root>/sha256/ab/cd/<hex>``, written atomically and durably.

    Safe for concurrent writers in several processes: each writer fills its own uniquely named
    temporary file (mkstemp opens it with O_EXCL) in the blob's final directory, then
    ``os.replace`` renames it onto the final name. A rename within one filesystem is atomic, so a
    reader sees either no file or a complete one, never a partial write; when two writers race,
    both rename identical bytes, so whichever lands last leaves the same content.
    """

    def __init__(self, root: Path, max_blob_bytes: int) -> None:
        if max_blob_bytes <= 0:
            raise ConfigError(f"max_blob_bytes must be positive, got {max_blob_bytes}")
        # Absolute once, so that URIs stay valid if the process changes directory later.
        self.root = Path(os.path.abspath(root))
        self.max_blob_bytes = max_blob_bytes

    def path(self, sha256: str) -> Path:
        """The file that holds (or would hold) the blob; filesystem adapter only."""
        digest = validate_sha256(sha256)
        # Two levels of 256 fan-out keep directories small with millions of images.
        return self.root / "sha256" / digest[:2] / digest[2:4] / digest

    def uri(self, sha256: str) -> str:
        return self.path(sha256).as_uri()

    def exists(self, sha256: str) -> bool:
        return self.path(sha256).is_file()

    def put(self, data: bytes, content_type: str = "application/octet-stream") -> BlobRef:
        size = len(data)
        if size > self.max_blob_bytes:
            raise PermanentError(
                f"blob of {size} bytes exceeds the limit of {self.max_blob_bytes} bytes "
                "(blob_store.max_blob_bytes)"
            )
        if not content_type:
            raise PermanentError("content_type must not be empty")
        digest = hashlib.sha256(data).hexdigest()
        final = self.path(digest)
        ref = BlobRef(digest, size, final.as_uri(), content_type)
        try:
            existing_size: int | None = final.stat().st_size
        except FileNotFoundError:
            existing_size = None
        except OSError as exc:
            raise BackendUnavailableError(f"cannot inspect blob {digest}: {exc}") from exc
        if existing_size == size:
            # Same name means same bytes: nothing to write. (get() still verifies the hash.)
            return ref
        if existing_size is not None:
            logger.warning(
                "blob %s has %d bytes on disk, expected %d: rewriting it",
                digest,
                existing_size,
                size,
            )
        try:
            self._makedirs(final.parent)
            self._write_atomically(final, data)
        except OSError as exc:
            # Disk full, permissions, I/O errors: the store is unusable, not the blob wrong, so
            # the work pauses and is retried instead of dead-lettering good events.
            raise BackendUnavailableError(
                f"cannot write blob {digest} under {self.root}: {exc}"
            ) from exc
        return ref

    def get(self, sha256: str) -> bytes:
        path = self.path(sha256)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise BlobNotFoundError(f"blob {sha256} not found under {self.root}") from None
        except OSError as exc:
            raise BackendUnavailableError(f"cannot read blob {sha256} at {path}: {exc}") from exc
        actual = hashlib.sha256(data).hexdigest()
        if actual != sha256:
            raise BlobCorruptError(
                f"blob {sha256} at {path} is corrupt: its bytes hash to {actual}"
            )
        return data

    def _makedirs(self, directory: Path) -> None:
        missing: list[Path] = []
        current = directory
        while not current.is_dir():
            missing.append(current)
            current = current.parent
        for new in reversed(missing):
            # Flush the parent even when another writer won the race to create the directory:
            # its flush may not have happened yet, and our blob's durability depends on it.
            with contextlib.suppress(FileExistsError):
                new.mkdir()
            _fsync_dir(new.parent)

    def _write_atomically(self, final: Path, data: bytes) -> None:
        fd, tmp_name = tempfile.mkstemp(
            dir=final.parent, prefix=f".{final.name[:12]}.", suffix=".tmp"
        )
        try:
            with os.fdopen(fd, "wb") as tmp:
                tmp.write(data)
                tmp.flush()
                os.fchmod(tmp.fileno(), _BLOB_MODE)
                os.fsync(tmp.fileno())  # the bytes are on disk before the name points at them
            os.replace(tmp_name, final)
        except BaseException:
            # Whatever failed (disk full, interrupt), no partial blob and no temp file remain.
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp_name)
            raise
        _fsync_dir(final.parent)


def build_blob_store(settings: BlobStoreSettings) -> BlobStore:
    """The blob store the settings ask for. ``settings.root`` is derived by CommonSettings."""
    if settings.backend == "filesystem":
        if settings.root is None:
            raise ConfigError(
                "blob_store.root is not set (INSPECTLOOP_BLOB_STORE__ROOT); build the settings "
                "through CommonSettings, which defaults it to <data_dir>/blobs"
            )
        return FilesystemBlobStore(settings.root, settings.max_blob_bytes)
    assert_never(settings.backend)
