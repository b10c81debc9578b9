"""Bodies of the registry's dataset endpoints: challenge sets and label artwork.

A *challenge set* is a plant's qualification material: real units of one label design with
defects seeded on purpose, photographed on the line and labelled by class; acceptance of a model
version is computed on it. *Artwork* is the image of a new label design from the packaging
department. Both are versioned per dataset name (1, 2, ...), their items are blobs uploaded
with ``PUT /v1/artifacts/{sha256}``, and each creation is an audit record.

This module imports only pydantic and the standard library, so that the registry client
(:mod:`inspectloop.core.registry_client`, used on edge nodes that have neither FastAPI nor
SQLAlchemy) shares these models with the API; :mod:`inspectloop.registry.schemas` re-exports
them.
"""

from __future__ import annotations

import re
from collections import Counter
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Final, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from inspectloop.core.taxonomy import INSPECTION_CLASSES

__all__ = [
    "DATASET_NAME_PATTERN",
    "DEFAULT_CHALLENGE_CLASSES",
    "IMAGE_MEDIA_TYPES",
    "LABEL_PATTERN",
    "UNLABELLED_DIRECTORY",
    "DatasetCreate",
    "DatasetItemIn",
    "DatasetItemOut",
    "DatasetKind",
    "DatasetList",
    "DatasetOut",
    "DatasetScope",
    "DatasetUploadResult",
    "DatasetVersionList",
    "DatasetVersionOut",
    "DatasetVersionSummary",
    "ImageMediaType",
    "extension_for",
    "sniff_image_type",
]

DATASET_NAME_PATTERN: Final = r"^[a-z0-9][a-z0-9._-]{0,127}$"
#: Class names and SKUs: they become directory names when a version is downloaded, so no
#: separators, no leading dot (and "_" first is kept for :data:`UNLABELLED_DIRECTORY`).
LABEL_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"
_LABEL = re.compile(LABEL_PATTERN)
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_FILENAME_FORBIDDEN = re.compile(r"[/\\\x00-\x1f\x7f]")

#: The defect classes of a challenge set unless the request names its own.
DEFAULT_CHALLENGE_CLASSES: Final = INSPECTION_CLASSES

ImageMediaType = Literal["image/png", "image/jpeg"]
IMAGE_MEDIA_TYPES: Final[tuple[ImageMediaType, ...]] = ("image/png", "image/jpeg")
_EXTENSIONS: Final[dict[str, str]] = {"image/png": "png", "image/jpeg": "jpg"}
#: Directory of items without a label (artwork for no single SKU) in a downloaded version.
UNLABELLED_DIRECTORY: Final = "_unlabelled"

_PNG_SIGNATURE: Final = b"\x89PNG\r\n\x1a\n"
_JPEG_SIGNATURE: Final = b"\xff\xd8\xff"


def sniff_image_type(head: bytes) -> ImageMediaType | None:
    """The media type the first bytes of a file announce (PNG or JPEG), or None."""
    if head.startswith(_PNG_SIGNATURE):
        return "image/png"
    if head.startswith(_JPEG_SIGNATURE):
        return "image/jpeg"
    return None


def extension_for(media_type: str) -> str:
    """File extension (without the dot) for an item's media type."""
    return _EXTENSIONS.get(media_type, "bin")


def _check_sha256(value: str) -> str:
    if not _SHA256.fullmatch(value):
        raise ValueError("must be a SHA-256 as 64 lowercase hexadecimal digits")
    return value


def _check_label(value: str) -> str:
    if value and not _LABEL.fullmatch(value):
        raise ValueError(
            "must be empty or start with a letter or digit, then up to 99 letters, digits, "
            "'.', '_' or '-'"
        )
    return value


def _check_class(value: str) -> str:
    if not _LABEL.fullmatch(value):
        raise ValueError(
            "a class name starts with a letter or digit, then up to 99 letters, digits, "
            "'.', '_' or '-'"
        )
    return value


def _check_filename(value: str) -> str:
    if _FILENAME_FORBIDDEN.search(value) or value in (".", ".."):
        raise ValueError("must be a bare file name: no '/', '\\' or control characters")
    return value


Sha256 = Annotated[
    str,
    AfterValidator(_check_sha256),
    Field(description="Lowercase hex SHA-256 (64 digits) of the uploaded bytes."),
]
Label = Annotated[str, Field(max_length=100), AfterValidator(_check_label)]
ClassName = Annotated[str, Field(min_length=1, max_length=100), AfterValidator(_check_class)]
ShortText = Annotated[str, Field(min_length=1, max_length=200)]


class DatasetKind(StrEnum):
    """What a dataset holds."""

    CHALLENGE = "challenge"
    ARTWORK = "artwork"


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class DatasetScope(_In):
    lines: list[ShortText] = Field(
        default_factory=list, description="Line ids the dataset was made on; empty: any."
    )
    skus: list[ShortText] = Field(
        default_factory=list, description="Product SKUs it covers; empty: any."
    )


class DatasetItemIn(_In):
    sha256: Sha256
    label: Label = Field(
        default="",
        description="challenge: the item's class (one of 'classes'); artwork: the SKU, or ''.",
    )
    filename: str = Field(
        default="",
        max_length=255,
        description="Original file name (informational).",
    )
    media_type: ImageMediaType = Field(description="image/png or image/jpeg.")

    @model_validator(mode="after")
    def _bare_filename(self) -> DatasetItemIn:
        _check_filename(self.filename)
        return self


class DatasetCreate(_In):
    """A new version of a dataset; its items' bytes must have been uploaded first."""

    name: str = Field(
        pattern=DATASET_NAME_PATTERN,
        description="Dataset name: lowercase letters, digits, '.', '_', '-' (up to 128). "
        "Versions are numbered per name.",
    )
    kind: DatasetKind = Field(description="challenge (seeded-defect units) or artwork.")
    label_design: ShortText = Field(description="The label design the dataset is for.")
    scope: DatasetScope = Field(default_factory=DatasetScope, description="Where it applies.")
    description: str = Field(
        default="",
        max_length=2000,
        description="Why this version exists (recorded in the audit log), e.g. the kit and "
        "the change it qualifies.",
    )
    classes: list[ClassName] = Field(
        default_factory=lambda: list(DEFAULT_CHALLENGE_CLASSES),
        min_length=1,
        description="challenge: the classes every item's label must be one of (default: the "
        "standard defect classes); ignored for artwork.",
    )
    items: list[DatasetItemIn] = Field(min_length=1, description="The dataset's files.")
    idempotency_key: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="Makes a retried upload safe (like the Idempotency-Key header): the same "
        "key and body return the version created the first time.",
    )

    @model_validator(mode="after")
    def _consistent(self) -> DatasetCreate:
        duplicates = sorted(s for s, n in Counter(i.sha256 for i in self.items).items() if n > 1)
        if duplicates:
            raise ValueError(f"items repeat the same bytes: {', '.join(duplicates)}")
        if self.kind is DatasetKind.CHALLENGE:
            repeated = sorted(c for c, n in Counter(self.classes).items() if n > 1)
            if repeated:
                raise ValueError(f"classes repeat: {', '.join(repeated)}")
            unlabelled = [i.filename or i.sha256 for i in self.items if not i.label]
            if unlabelled:
                raise ValueError(
                    f"challenge items need a class label; unlabelled: {', '.join(unlabelled[:10])}"
                )
            known = set(self.classes)
            unknown = sorted({i.label for i in self.items} - known)
            if unknown:
                raise ValueError(
                    f"unknown class(es) {', '.join(unknown)}; allowed: {', '.join(self.classes)}"
                )
        elif self.scope.skus:
            outside = sorted({i.label for i in self.items if i.label} - set(self.scope.skus))
            if outside:
                raise ValueError(
                    f"artwork labels must be a SKU of scope.skus or '': {', '.join(outside)} "
                    f"not in {', '.join(self.scope.skus)}"
                )
        return self


# --- responses ---------------------------------------------------------------------------------


class DatasetItemOut(BaseModel):
    sha256: str
    label: str
    filename: str
    media_type: str
    size_bytes: int | None = Field(description="Size of the stored bytes; null if not stored.")
    download_path: str = Field(description="Path of GET /v1/artifacts/{sha256} on this registry.")


class DatasetVersionSummary(BaseModel):
    name: str
    version: int
    kind: DatasetKind
    label_design: str
    item_count: int
    counts: dict[str, int] = Field(
        description="Items per label (challenge: every class, 0 where none)."
    )
    description: str
    manifest_sha256: str = Field(description="SHA-256 of the version's canonical manifest.")
    created_by: str
    created_at: datetime
    audit_seq: int = Field(description="Seq of the audit record of its creation.")


class DatasetVersionOut(DatasetVersionSummary):
    manifest_intact: bool = Field(
        description="False when the stored manifest no longer hashes to manifest_sha256 "
        "(changed outside the registry)."
    )
    scope: DatasetScope
    classes: list[str] = Field(description="challenge: the declared classes; artwork: [].")
    items: list[DatasetItemOut]


class DatasetVersionList(BaseModel):
    name: str
    kind: DatasetKind
    label_design: str
    versions: list[DatasetVersionSummary]


class DatasetOut(BaseModel):
    name: str
    kind: DatasetKind
    label_design: str
    created_at: datetime
    created_by: str
    latest_version: int
    versions: int


class DatasetList(BaseModel):
    datasets: list[DatasetOut]


class DatasetUploadResult(BaseModel):
    """What :meth:`RegistryClient.upload_dataset` did (not an API body)."""

    version: DatasetVersionOut
    created: bool = Field(description="False: the idempotency key's earlier version came back.")
    idempotency_key: str | None
    files_uploaded: int = Field(description="Files whose bytes were sent.")
    files_present: int = Field(description="Files the registry had already.")
