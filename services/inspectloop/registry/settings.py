"""Settings of the registry service (``INSPECTLOOP_REGISTRY__...``)."""

from __future__ import annotations

from pydantic import Field, SecretStr, field_validator, model_validator

from inspectloop.core.settings import CommonSettings, Section, absolute
from inspectloop.registry.auth import Role, valid_user_name
from inspectloop.registry.lifecycle import SIGNABLE_STAGES, Stage

__all__ = ["BootstrapUser", "RegistrySection", "RegistrySettings"]

MIN_TOKEN_LENGTH = 32


class BootstrapUser(Section):
    """An account that must exist with this token (and password) whenever the registry starts."""

    name: str = Field(description="User name: lowercase letters, digits, '.', '_' or '-'.")
    role: Role = Field(description="Role: operator, quality, service or admin.")
    token: SecretStr = Field(
        description=f"API token (at least {MIN_TOKEN_LENGTH} characters); only its SHA-256 is "
        "stored."
    )
    password: SecretStr | None = Field(
        default=None,
        description="Password for electronic signatures (quality and admin); stored as a salted "
        "scrypt hash. Empty keeps an existing password.",
    )

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not valid_user_name(value):
            raise ValueError(
                "must start with a lowercase letter, then up to 63 lowercase letters, digits, "
                "'.', '_' or '-'"
            )
        return value

    @field_validator("token")
    @classmethod
    def _check_token(cls, value: SecretStr) -> SecretStr:
        if len(value.get_secret_value()) < MIN_TOKEN_LENGTH:
            raise ValueError(f"must be at least {MIN_TOKEN_LENGTH} characters long")
        return value


class RegistrySection(Section):
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the registry database: sqlite:///PATH (default "
        "sqlite:///<data_dir>/registry.sqlite3) or postgresql://user:password@host:port/db "
        "(driver psycopg 3).",
    )
    host: str = Field(default="127.0.0.1", description="Address the HTTP API listens on.")
    port: int = Field(default=8600, ge=0, le=65535, description="Port of the HTTP API.")
    max_failed_signatures: int = Field(
        default=5,
        ge=0,
        description="Failed electronic signatures in a row after which a user may not sign "
        "until an admin unlocks it (POST /v1/users/NAME/signature-unlock, or setting its "
        "password); 0 never locks.",
    )
    require_signature_for: tuple[Stage, ...] = Field(
        default=(Stage.CANARY, Stage.PRODUCTION),
        description="Stages a version may only enter with a valid electronic signature of the "
        "matching meaning (approve-<stage>): any of shadow, canary, production; empty for none.",
    )
    require_artifacts_present: bool = Field(
        default=True,
        description="Refuse to register a version whose artifacts are not in the blob store "
        "(upload them first with PUT /v1/artifacts/{sha256}).",
    )
    bootstrap_users: tuple[BootstrapUser, ...] = Field(
        default=(),
        description="Accounts created (or whose tokens are added) at start, as JSON: "
        '[{"name": "admin", "role": "admin", "token": "..."}]; for deployments that provision '
        "tokens from secrets.",
    )
    consume_events: bool = Field(
        default=True,
        description="Record model and rollout events from the bus (models and rollouts topics) in "
        "the audit log.",
    )
    consumer_group: str = Field(
        default="registry-audit", description="Consumer group of the registry's bus consumer."
    )
    pool_size: int = Field(
        default=5, ge=1, description="Database connections kept open (PostgreSQL)."
    )

    @field_validator("require_signature_for")
    @classmethod
    def _signable(cls, value: tuple[Stage, ...]) -> tuple[Stage, ...]:
        wrong = [s.value for s in value if s not in SIGNABLE_STAGES]
        if wrong:
            allowed = ", ".join(s.value for s in SIGNABLE_STAGES)
            raise ValueError(f"{', '.join(wrong)} cannot require a signature; allowed: {allowed}")
        return tuple(dict.fromkeys(value))

    @field_validator("database_url")
    @classmethod
    def _known_backend(cls, value: str | None) -> str | None:
        if value is None:
            return None
        scheme = value.split(":", 1)[0].split("+", 1)[0]
        if scheme not in ("sqlite", "postgresql", "postgres"):
            raise ValueError("must be a sqlite:/// or postgresql:// URL")
        # sqlite:///relative/path is relative to the working directory: pin it now.
        prefix, _, path = value.partition(":///")
        if scheme == "sqlite" and path and not path.startswith("/") and path != ":memory:":
            return f"{prefix}:///{absolute(path)}"
        return value

    @field_validator("bootstrap_users")
    @classmethod
    def _unique_users(cls, value: tuple[BootstrapUser, ...]) -> tuple[BootstrapUser, ...]:
        names = [u.name for u in value]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"user(s) listed twice: {', '.join(duplicates)}")
        return value


class RegistrySettings(CommonSettings):
    service: str = Field(default="registry", description="Service name used in logs and sources.")
    registry: RegistrySection = Field(
        default_factory=RegistrySection, description="The model registry service."
    )

    @model_validator(mode="after")
    def _derive_database_url(self) -> RegistrySettings:
        if self.registry.database_url is None:
            path = self.data_dir / "registry.sqlite3"
            section = self.registry.model_copy(update={"database_url": f"sqlite:///{path}"})
            object.__setattr__(self, "registry", section)
        return self

    @property
    def database_url(self) -> str:
        """The database URL, derived from data_dir when not set."""
        url = self.registry.database_url
        assert url is not None  # set by _derive_database_url
        return url
