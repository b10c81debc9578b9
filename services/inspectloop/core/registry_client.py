"""A client of the registry's HTTP API: artifacts up and down, versions registered and read,
datasets (challenge sets, label artwork) uploaded, listed and downloaded.

It imports only httpx, pydantic and the standard library (the dataset bodies it shares with the
API need no more), since it runs on edge nodes that have neither FastAPI nor SQLAlchemy.

Failures come as the error kinds of :mod:`inspectloop.core.errors`: a 404 is a
:class:`RegistryNotFoundError` and any other 4xx a :class:`RegistryRefusedError` (both permanent,
with the registry's reason); a 5xx or an unreachable registry is a
:class:`~inspectloop.core.errors.BackendUnavailableError` (transient: retry later).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import httpx
from pydantic import ValidationError

from inspectloop.core.datasets import (
    LABEL_PATTERN,
    UNLABELLED_DIRECTORY,
    DatasetCreate,
    DatasetItemIn,
    DatasetKind,
    DatasetList,
    DatasetOut,
    DatasetScope,
    DatasetUploadResult,
    DatasetVersionList,
    DatasetVersionOut,
    ImageMediaType,
    extension_for,
    sniff_image_type,
)
from inspectloop.core.errors import BackendUnavailableError, PermanentError

__all__ = [
    "DatasetFilesError",
    "RegistryClient",
    "RegistryNotFoundError",
    "RegistryRefusedError",
]

_CHUNK: Final = 1024 * 1024
_SNIFF_BYTES: Final = 16
_LABEL = re.compile(LABEL_PATTERN)
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class RegistryRefusedError(PermanentError):
    """The registry refused the request (4xx); ``reason`` is what it said."""

    def __init__(self, message: str, *, status: int = 400, reason: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


class RegistryNotFoundError(RegistryRefusedError):
    """The registry has no such model, version, dataset or artifact (404)."""

    def __init__(self, message: str, *, status: int = 404, reason: str = "") -> None:
        super().__init__(message, status=status, reason=reason)


class DatasetFilesError(PermanentError):
    """The files given for a dataset cannot make one (not an image, misplaced, unreadable)."""


@dataclass(frozen=True)
class _LocalItem:
    path: Path
    label: str
    sha256: str
    media_type: ImageMediaType


def _reason(response: httpx.Response) -> str:
    """The registry's reason for a refusal: its ``detail`` (each validation problem with where
    it is), else the start of the body."""
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        return response.text[:500] or response.reason_phrase
    if isinstance(detail, str):
        return detail
    if isinstance(detail, list):
        problems = []
        for problem in detail:
            if not isinstance(problem, dict):
                problems.append(str(problem))
                continue
            where = ".".join(str(p) for p in problem.get("loc", ()) if p != "body")
            message = str(problem.get("msg", problem))
            problems.append(f"{where}: {message}" if where else message)
        return "; ".join(problems)
    return response.text[:500]


class RegistryClient:
    def __init__(self, base_url: str, token: str | None, timeout_s: float = 60.0) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=base_url, headers=headers, timeout=timeout_s)

    # --- HTTP ----------------------------------------------------------------------------------

    def _check(self, response: httpx.Response) -> Any:
        status = response.status_code
        if status < 400:
            return response.json() if response.content else None
        reason = _reason(response)
        path = response.url.path
        try:
            method = response.request.method
        except RuntimeError:  # a response built by hand has no request
            method = "request"
        if status >= 500:
            raise BackendUnavailableError(
                f"registry failed {method} {path} ({status}): {reason}; retry later"
            )
        if status == 404:
            raise RegistryNotFoundError(
                f"registry has no {path} (404): {reason}", status=status, reason=reason
            )
        raise RegistryRefusedError(
            f"registry refused {method} {path} ({status}): {reason}", status=status, reason=reason
        )

    def _send(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """The response to a request the registry accepted (2xx or 3xx)."""
        try:
            response = self._http.request(method, url, **kwargs)
        except httpx.TransportError as exc:
            raise BackendUnavailableError(f"registry unreachable: {exc}") from exc
        self._check(response)
        return response

    def _call(self, method: str, url: str, **kwargs: Any) -> Any:
        response = self._send(method, url, **kwargs)
        return response.json() if response.content else None

    # --- artifacts -----------------------------------------------------------------------------

    def upload_artifact(self, path: Path, sha256: str) -> str:
        """Stores the file under its hash (the registry verifies it); returns its URI."""
        with path.open("rb") as body:
            self._call(
                "PUT",
                f"/v1/artifacts/{sha256}",
                content=body.read(),
                headers={"Content-Type": "application/octet-stream"},
            )
        return f"{self._http.base_url}v1/artifacts/{sha256}"

    def artifact_exists(self, sha256: str) -> bool:
        """Whether the registry stores bytes with this SHA-256."""
        try:
            response = self._http.head(f"/v1/artifacts/{sha256}")
        except httpx.TransportError as exc:
            raise BackendUnavailableError(f"registry unreachable: {exc}") from exc
        if response.status_code == 404:
            return False
        self._check(response)
        return True

    def download_artifact(self, sha256: str, target: Path) -> Path:
        try:
            response = self._http.get(f"/v1/artifacts/{sha256}")
        except httpx.TransportError as exc:
            raise BackendUnavailableError(f"registry unreachable: {exc}") from exc
        self._check(response) if response.status_code >= 400 else None
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(response.content)
        return target

    def _download_verified(self, sha256: str, target: Path, what: str = "artifact") -> None:
        """Stream an artifact into ``target`` (flushed to disk); PermanentError (and no file)
        when the bytes do not hash to ``sha256``; ``what`` names it in that error."""
        digest = hashlib.sha256()
        try:
            with self._http.stream("GET", f"/v1/artifacts/{sha256}") as response:
                if response.status_code >= 400:
                    response.read()
                    self._check(response)
                with target.open("wb") as out:
                    for chunk in response.iter_bytes(_CHUNK):
                        digest.update(chunk)
                        out.write(chunk)
                    out.flush()
                    os.fsync(out.fileno())
        except httpx.TransportError as exc:
            target.unlink(missing_ok=True)
            raise BackendUnavailableError(f"registry unreachable: {exc}") from exc
        actual = digest.hexdigest()
        if actual != sha256:
            target.unlink(missing_ok=True)
            raise PermanentError(
                f"{what} {sha256} downloaded from the registry hashes to {actual}: it was "
                "corrupted on the way; refused"
            )

    # --- model versions ------------------------------------------------------------------------

    def register_version(
        self, model_name: str, body: dict[str, Any], idempotency_key: str | None = None
    ) -> dict[str, Any]:
        """Register the next version; a retry with the same key returns the same version."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        result: dict[str, Any] = self._call(
            "POST", f"/v1/models/{model_name}/versions", json=body, headers=headers
        )
        return result

    def versions(self, model_name: str) -> list[dict[str, Any]]:
        try:
            result = self._call("GET", f"/v1/models/{model_name}/versions")
        except RegistryNotFoundError:  # no version of this model yet
            return []
        items: list[dict[str, Any]] = result["versions"] if isinstance(result, dict) else result
        return items

    def version(self, model_name: str, version: int) -> dict[str, Any]:
        """One version in full: artifacts, lineage, gates, approvals."""
        result: dict[str, Any] = self._call("GET", f"/v1/models/{model_name}/versions/{version}")
        return result

    def transition(
        self, model_name: str, version: int, to_stage: str, reason: str
    ) -> dict[str, Any]:
        """Move a version to ``to_stage``; a version already there is left as it is."""
        current = self.version(model_name, version)
        if current["stage"] == to_stage:
            return current
        result: dict[str, Any] = self._call(
            "POST",
            f"/v1/models/{model_name}/versions/{version}/transitions",
            json={"to_stage": to_stage, "reason": reason, "from_stage": current["stage"]},
        )
        return result

    def approve(
        self, model_name: str, version: int, meaning: str, password: str, comment: str = ""
    ) -> dict[str, Any]:
        """Sign the version electronically (the client's token must be a quality or admin
        user's, and ``password`` that user's)."""
        result: dict[str, Any] = self._call(
            "POST",
            f"/v1/models/{model_name}/versions/{version}/approvals",
            json={"meaning": meaning, "password": password, "comment": comment},
        )
        return result

    # --- datasets ------------------------------------------------------------------------------

    def datasets(
        self, *, kind: str | None = None, label_design: str | None = None
    ) -> list[DatasetOut]:
        """Every dataset (of ``kind`` and ``label_design`` when given), by name."""
        params = {
            key: str(value)
            for key, value in (("kind", kind), ("label_design", label_design))
            if value is not None
        }
        return DatasetList.model_validate(self._call("GET", "/v1/datasets", params=params)).datasets

    def dataset_versions(self, name: str) -> DatasetVersionList:
        """The versions of dataset ``name``, oldest first."""
        return DatasetVersionList.model_validate(self._call("GET", f"/v1/datasets/{name}"))

    def dataset_version(self, name: str, version: int | str = "latest") -> DatasetVersionOut:
        """One version of dataset ``name`` with its items; ``"latest"``: the newest."""
        if version != "latest" and not (isinstance(version, int) and version >= 1):
            raise ValueError(f"a dataset version is a number from 1 or 'latest', not {version!r}")
        return DatasetVersionOut.model_validate(
            self._call("GET", f"/v1/datasets/{name}/versions/{version}")
        )

    def download_dataset(self, name: str, version: int, directory: Path) -> Path:
        """Download version ``version`` of dataset ``name`` into ``directory``: each item as
        ``<label or _unlabelled>/<sha256>.<ext>``, its SHA-256 verified.

        The files go to a hidden sibling directory first, which then replaces ``directory`` in
        one rename: ``directory`` is either absent (or as it was) or complete, never half
        written. Returns ``directory``.
        """
        record = self.dataset_version(name, version)
        for item in record.items:
            if not _SHA256.fullmatch(item.sha256) or (
                item.label and not _LABEL.fullmatch(item.label)
            ):
                raise PermanentError(
                    f"dataset {name!r} v{record.version}: item {item.sha256!r} with label "
                    f"{item.label!r} cannot be a file name; refused"
                )
        directory = Path(os.path.abspath(directory))
        directory.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(
            tempfile.mkdtemp(prefix=f".{directory.name}.", suffix=".partial", dir=directory.parent)
        )
        try:
            for item in record.items:
                folder = staging / (item.label or UNLABELLED_DIRECTORY)
                folder.mkdir(exist_ok=True)
                target = folder / f"{item.sha256}.{extension_for(item.media_type)}"
                self._download_verified(
                    item.sha256, target, f"item of dataset {name!r} v{record.version}"
                )
            _replace_directory(staging, directory)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return directory

    def upload_dataset(
        self,
        directory_or_files: Path | str | Sequence[Path | str],
        *,
        name: str,
        kind: DatasetKind | str,
        label_design: str,
        description: str = "",
        scope: DatasetScope | None = None,
        idempotency_key: str | None = None,
        classes: Sequence[str] | None = None,
    ) -> DatasetUploadResult:
        """Upload the image files of a new dataset version and create it.

        A challenge set is a directory with one subdirectory per class (``good/``,
        ``ink_smudge/``, ...) of PNG or JPEG files; ``classes`` are the classes allowed
        (default: the registry's standard defect classes). Artwork is one image file, or a
        directory of them whose subdirectories name SKUs (files at its top: no SKU). Hidden
        files are skipped; anything else that is not a PNG or JPEG is refused, naming it.

        Files the registry has already are not sent again. Without ``idempotency_key`` the key
        is derived from the version's content, so repeating an upload (after a timeout, say)
        returns the version the first one created (``created`` False) instead of a new one.
        """
        kind = DatasetKind(kind)
        local = _collect_files(directory_or_files, kind)
        fields: dict[str, Any] = {
            "name": name,
            "kind": kind,
            "label_design": label_design,
            "scope": scope or DatasetScope(),
            "description": description,
            "items": [
                DatasetItemIn(
                    sha256=i.sha256,
                    label=i.label,
                    filename=i.path.name,
                    media_type=i.media_type,
                )
                for i in local
            ],
        }
        if classes is not None:
            fields["classes"] = list(classes)
        try:
            body = DatasetCreate(**fields)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" if e["loc"] else e["msg"]
                for e in exc.errors()
            )
            raise DatasetFilesError(f"dataset {name!r} is not valid: {problems}") from exc
        key = idempotency_key or _content_key(body)
        body = body.model_copy(update={"idempotency_key": key})
        uploaded = present = 0
        for item in local:
            if self.artifact_exists(item.sha256):
                present += 1
                continue
            self.upload_artifact(item.path, item.sha256)
            uploaded += 1
        response = self._send("POST", "/v1/datasets", json=body.model_dump(mode="json"))
        return DatasetUploadResult(
            version=DatasetVersionOut.model_validate(response.json()),
            created=response.status_code == 201,
            idempotency_key=key,
            files_uploaded=uploaded,
            files_present=present,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- dataset files -------------------------------------------------------------------------------


def _content_key(body: DatasetCreate) -> str:
    """An idempotency key for the content of a dataset version (the same files with the same
    labels, scope, classes and description give the same key)."""
    content = body.model_dump(mode="json", exclude={"idempotency_key"})
    content["items"] = sorted(content["items"], key=lambda i: (i["label"], i["sha256"]))
    text = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "content-sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()


def _visible(path: Path) -> bool:
    return not path.name.startswith(".")


def _files_of(directory: Path, label: str) -> list[tuple[Path, str]]:
    found = []
    for path in sorted(filter(_visible, directory.iterdir())):
        if path.is_dir():
            raise DatasetFilesError(
                f"{path} is a directory inside the label directory {directory}: files of a "
                "label go directly in its directory"
            )
        found.append((path, label))
    return found


def _label_of(directory: Path, kind: DatasetKind) -> str:
    what = "class" if kind is DatasetKind.CHALLENGE else "SKU"
    if not _LABEL.fullmatch(directory.name):
        raise DatasetFilesError(
            f"directory {directory} does not name a {what}: a {what} starts with a letter or "
            "digit, then letters, digits, '.', '_' or '-'"
        )
    return directory.name


def _labelled_paths(root: Path, kind: DatasetKind) -> list[tuple[Path, str]]:
    """The files under ``root`` (a file or a directory) with their labels."""
    challenge = kind is DatasetKind.CHALLENGE
    if root.is_file():
        if challenge:
            raise DatasetFilesError(
                f"{root} is a file: a challenge set is a directory with one subdirectory of "
                "images per class (good/, ink_smudge/, ...)"
            )
        return [(root, "")]
    if not root.is_dir():
        raise DatasetFilesError(f"{root} does not exist")
    pairs: list[tuple[Path, str]] = []
    for path in sorted(filter(_visible, root.iterdir())):
        if path.is_dir():
            pairs.extend(_files_of(path, _label_of(path, kind)))
        elif challenge:
            raise DatasetFilesError(
                f"{path} is not in a class directory: a challenge set has one subdirectory per "
                f"class in {root} (good/, ink_smudge/, ...)"
            )
        else:
            pairs.append((path, ""))
    return pairs


def _collect_files(
    source: Path | str | Sequence[Path | str], kind: DatasetKind
) -> list[_LocalItem]:
    """The files of a dataset with their labels, sniffed and hashed. Given as a list of files,
    a challenge item's class is the name of its file's directory; artwork has no SKU."""
    pairs: list[tuple[Path, str]] = []
    if isinstance(source, str | Path):
        pairs = _labelled_paths(Path(source), kind)
    else:
        for entry in source:
            path = Path(entry)
            if not path.is_file():
                raise DatasetFilesError(f"{path} is not a file")
            label = _label_of(path.parent, kind) if kind is DatasetKind.CHALLENGE else ""
            pairs.append((path, label))
    if not pairs:
        raise DatasetFilesError(f"no image files in {source}")
    items: list[_LocalItem] = []
    seen: dict[str, Path] = {}
    for path, label in pairs:
        media_type, sha256 = _sniff_and_hash(path)
        if sha256 in seen:
            raise DatasetFilesError(
                f"{path} and {seen[sha256]} hold the same bytes: a dataset has each image once"
            )
        seen[sha256] = path
        items.append(_LocalItem(path, label, sha256, media_type))
    return items


def _sniff_and_hash(path: Path) -> tuple[ImageMediaType, str]:
    """The file's media type (PNG or JPEG, else DatasetFilesError) and SHA-256."""
    digest = hashlib.sha256()
    try:
        with path.open("rb") as data:
            head = data.read(_SNIFF_BYTES)
            media_type = sniff_image_type(head)
            if media_type is None:
                raise DatasetFilesError(
                    f"{path} is not a PNG or JPEG image (its first bytes are {head[:8].hex()}): "
                    "a dataset holds only PNG and JPEG files"
                )
            digest.update(head)
            while chunk := data.read(_CHUNK):
                digest.update(chunk)
    except OSError as exc:
        raise DatasetFilesError(f"cannot read {path}: {exc}") from exc
    return media_type, digest.hexdigest()


def _replace_directory(staging: Path, directory: Path) -> None:
    """Put ``staging`` in the place of ``directory`` (renames only, in the same parent)."""
    old: Path | None = None
    if directory.exists():
        old = directory.with_name(f".{directory.name}.{uuid.uuid4().hex[:8]}.old")
        directory.rename(old)
    staging.rename(directory)
    try:
        parent = os.open(directory.parent, os.O_RDONLY)
    except OSError:  # not every platform opens a directory
        parent = -1
    if parent >= 0:
        try:
            os.fsync(parent)
        finally:
            os.close(parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
