"""Users, roles, API tokens and signature passwords.

* API tokens are random (``ilr_`` + 43 URL-safe characters, 256 bits) and stored only as their
  SHA-256: a leaked database does not leak usable tokens, and a lookup by hash needs no
  secret comparison (the hash of a guess reveals nothing about stored hashes).
* Passwords exist only for electronic signatures; they are stored as salted scrypt hashes
  (``hashlib.scrypt``, n=2**14, r=8, p=1, 16-byte salt) and checked in constant time.

Roles and what they may do (enforced in :mod:`inspectloop.registry.api`):

============ =======================================================================
operator     read models, versions, lineage, artifacts, datasets
quality      + stage transitions, electronic signatures (approvals), create datasets
             (challenge sets, label artwork) and upload their files
service      + register versions, upload artifacts, stage transitions (machine accounts:
             trainer, rollout controller); cannot sign
admin        everything, incl. users, tokens, the audit log and its verification
============ =======================================================================
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

__all__ = [
    "MIN_PASSWORD_LENGTH",
    "Permission",
    "Principal",
    "Role",
    "allowed_roles",
    "hash_password",
    "hash_token",
    "new_token",
    "valid_user_name",
    "verify_password",
]

TOKEN_PREFIX: Final = "ilr_"  # noqa: S105 - a prefix, not a secret
MIN_PASSWORD_LENGTH: Final = 8
_SCRYPT_N: Final = 2**14
_SCRYPT_R: Final = 8
_SCRYPT_P: Final = 1
_SCRYPT_DKLEN: Final = 32
_SALT_BYTES: Final = 16
_NAME = re.compile(r"^[a-z][a-z0-9._-]{0,63}$")


class Role(StrEnum):
    OPERATOR = "operator"
    QUALITY = "quality"
    SERVICE = "service"
    ADMIN = "admin"


class Permission(StrEnum):
    READ = "read"
    REGISTER = "register"
    UPLOAD = "upload"
    TRANSITION = "transition"
    SIGN = "sign"
    AUDIT = "audit"
    MANAGE_USERS = "manage-users"
    CREATE_DATASET = "create-dataset"


_GRANTS: Final[dict[Role, frozenset[Permission]]] = {
    Role.OPERATOR: frozenset({Permission.READ}),
    Role.QUALITY: frozenset(
        {Permission.READ, Permission.TRANSITION, Permission.SIGN, Permission.CREATE_DATASET}
    ),
    Role.SERVICE: frozenset(
        {Permission.READ, Permission.REGISTER, Permission.UPLOAD, Permission.TRANSITION}
    ),
    Role.ADMIN: frozenset(Permission),
}


def allowed_roles(permission: Permission) -> list[Role]:
    """The roles that hold ``permission``, in a stable order (for error messages)."""
    return [role for role in Role if permission in _GRANTS[role]]


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated caller of one request."""

    user_id: int
    name: str
    role: Role
    token_id: int

    def can(self, permission: Permission) -> bool:
        return permission in _GRANTS[self.role]


def valid_user_name(name: str) -> bool:
    return bool(_NAME.fullmatch(name))


def new_token() -> str:
    """A new random API token; show it once, store :func:`hash_token` of it."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def hash_password(password: str) -> str:
    """``scrypt$n$r$p$salt$hash`` for ``password`` with a fresh random salt."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ValueError(f"a password needs at least {MIN_PASSWORD_LENGTH} characters")
    salt = secrets.token_bytes(_SALT_BYTES)
    digest = hashlib.scrypt(
        password.encode("utf-8"),
        salt=salt,
        n=_SCRYPT_N,
        r=_SCRYPT_R,
        p=_SCRYPT_P,
        dklen=_SCRYPT_DKLEN,
    )
    return f"scrypt${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, stored: str | None) -> bool:
    """Whether ``password`` matches ``stored`` (constant-time compare); False if none is set."""
    if not stored:
        return False
    try:
        scheme, n, r, p, salt_b64, digest_b64 = stored.split("$")
        if scheme != "scrypt":
            return False
        salt = base64.b64decode(salt_b64, validate=True)
        expected = base64.b64decode(digest_b64, validate=True)
        actual = hashlib.scrypt(
            password.encode("utf-8"),
            salt=salt,
            n=int(n),
            r=int(r),
            p=int(p),
            dklen=len(expected),
            maxmem=256 * 1024 * 1024,
        )
    except ValueError:
        return False
    return hmac.compare_digest(actual, expected)
