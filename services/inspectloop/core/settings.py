"""Settings: one pydantic-settings class per service, built once in ``main`` and passed down.

Environment variables use the prefix ``INSPECTLOOP_`` and ``__`` between nested sections, e.g.
``INSPECTLOOP_BUS__BACKEND=kafka`` or ``INSPECTLOOP_BUS__KAFKA__BOOTSTRAP_SERVERS=10.0.0.5:9092``.
Nothing here reads the environment at import time; :func:`load_settings` does, once, and turns a
validation failure into a :class:`ConfigError` that names every offending setting.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from inspectloop.core.errors import ConfigError

ENV_PREFIX = "INSPECTLOOP_"
# Read by the developer harness and scripts, never by a service: not settings, not typos.
TOOL_VARIABLES = frozenset(
    {"INSPECTLOOP_CACHE_DIR", "INSPECTLOOP_HARNESS_STATE_DIR", "INSPECTLOOP_VENV"}
)


def absolute(path: str | os.PathLike[str]) -> Path:
    """``path`` made absolute against the working directory of the moment (``~`` expanded,
    symlinks kept). Every path a user gives is made absolute once, where it enters (settings,
    CLI options, the harness), so that a relative path means the same thing to a process
    started in another directory (Triton runs in its data directory, for one)."""
    return Path(os.path.abspath(Path(path).expanduser()))


AbsolutePath = Annotated[Path, AfterValidator(absolute)]
"""A settings path, absolute once validated (see :func:`absolute`)."""


class Section(BaseModel):
    """A nested settings section: unknown keys are an error, not silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class KafkaSettings(Section):
    bootstrap_servers: str = Field(
        default="127.0.0.1:9092", description="Comma-separated host:port list of Kafka brokers."
    )
    client_id: str = Field(default="inspectloop", description="Client id reported to the brokers.")
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        default="PLAINTEXT", description="Protocol used to talk to the brokers."
    )
    request_timeout_ms: int = Field(default=30_000, gt=0, description="Broker request timeout.")
    delivery_timeout_s: float = Field(
        default=120.0,
        gt=0,
        description="How long a publish may wait for the broker's acknowledgement.",
    )
    session_timeout_ms: int = Field(
        default=10_000,
        gt=0,
        description="Consumer group session timeout: a silent member is evicted.",
    )
    max_poll_interval_ms: int = Field(
        default=300_000, gt=0, description="Longest time a consumer may spend handling one batch."
    )
    replication_factor: int = Field(
        default=1, ge=1, description="Replication factor of topics that inspectloop creates."
    )

    @property
    def servers(self) -> list[str]:
        return [s.strip() for s in self.bootstrap_servers.split(",") if s.strip()]


class LocalBusSettings(Section):
    directory: AbsolutePath | None = Field(
        default=None, description="Directory of the embedded event log; defaults to <data_dir>/bus."
    )
    poll_interval_s: float = Field(
        default=0.05, gt=0, description="How often an idle embedded consumer looks for new records."
    )
    session_timeout_s: float = Field(
        default=10.0, gt=0, description="An embedded group member silent for longer is evicted."
    )


class BusSettings(Section):
    backend: Literal["local", "kafka"] = Field(
        default="local", description="Event bus: 'local' (embedded, one machine) or 'kafka'."
    )
    partitions: int = Field(
        default=6,
        ge=1,
        description="Partitions of each topic inspectloop creates (its parallelism).",
    )
    max_record_bytes: int = Field(
        default=1_000_000,
        ge=1024,
        description="Largest record (key + value + headers) accepted at publish; leaves room "
        "for Kafka's batch framing under the broker's default message.max.bytes (1048588).",
    )
    max_attempts: int = Field(
        default=3,
        ge=1,
        description="Attempts for a handler that raises a transient error before DLQ.",
    )
    retry_backoff_s: float = Field(
        default=0.2,
        ge=0,
        description="First back-off between handler attempts; doubles each retry.",
    )
    keep_alive_s: float = Field(
        default=2.0,
        gt=0,
        description="A long-running consumer's handler (the trainer's) runs on a worker "
        "thread; while it runs, the consumer pauses its partitions and polls this often, so it "
        "stays in its group past max_poll_interval_ms.",
    )
    max_batch: int = Field(
        default=500, ge=1, description="Most records handled between two commits."
    )
    kafka: KafkaSettings = Field(
        default_factory=KafkaSettings, description="Kafka backend settings."
    )
    local: LocalBusSettings = Field(
        default_factory=LocalBusSettings, description="Embedded backend settings."
    )


class BlobStoreSettings(Section):
    backend: Literal["filesystem"] = Field(
        default="filesystem", description="Blob store for images and artifacts."
    )
    root: AbsolutePath | None = Field(
        default=None,
        description="Root directory of the filesystem store; defaults to <data_dir>/blobs.",
    )
    max_blob_bytes: int = Field(
        default=64 * 1024 * 1024, gt=0, description="Largest blob accepted by put()."
    )


class LoggingSettings(Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", description="Log level."
    )
    json_format: bool = Field(
        default=True, description="One JSON object a line; false for plain text."
    )


class MetricsSettings(Section):
    host: str = Field(default="127.0.0.1", description="Address the /metrics endpoint listens on.")
    port: int = Field(default=0, ge=0, le=65535, description="Port of /metrics; 0 disables it.")


class CommonSettings(BaseSettings):
    """Sections every service shares. Each service's settings class derives from this one."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        # An optional setting is unset from the environment with "null" (as in JSON).
        env_parse_none_str="null",
        extra="forbid",
        frozen=True,
    )

    service: str = Field(
        default="inspectloop", description="Service name used in logs and sources."
    )
    data_dir: AbsolutePath = Field(
        default=Path(".inspectloop"), description="Where embedded backends keep their state."
    )
    bus: BusSettings = Field(default_factory=BusSettings, description="The event bus.")
    blob_store: BlobStoreSettings = Field(
        default_factory=BlobStoreSettings, description="Where images and artifacts are stored."
    )
    logging: LoggingSettings = Field(default_factory=LoggingSettings, description="Logging.")
    metrics: MetricsSettings = Field(
        default_factory=MetricsSettings, description="The Prometheus /metrics endpoint."
    )

    @model_validator(mode="after")
    def _derive_paths(self) -> CommonSettings:
        # Derived defaults live here so that one data_dir moves every embedded backend.
        if self.bus.local.directory is None:
            local = self.bus.local.model_copy(update={"directory": self.data_dir / "bus"})
            object.__setattr__(self, "bus", self.bus.model_copy(update={"local": local}))
        if self.blob_store.root is None:
            blob = self.blob_store.model_copy(update={"root": self.data_dir / "blobs"})
            object.__setattr__(self, "blob_store", blob)
        return self


SettingsT = TypeVar("SettingsT", bound=BaseSettings)


def load_settings(cls: type[SettingsT], **overrides: Any) -> SettingsT:
    """Build settings from the environment (and explicit overrides), or raise ConfigError.

    The message names every invalid setting as its environment variable, so an operator can
    fix a deployment from the log line alone.
    """
    # pydantic-settings ignores unknown top-level variables even with extra="forbid"; a typo
    # such as INSPECTLOOP_DATADIR must fail the start, not silently fall back to a default.
    known = {name.upper() for name in cls.model_fields}
    unknown = sorted(
        name
        for name in os.environ
        if name.upper().startswith(ENV_PREFIX)
        and name.upper() not in TOOL_VARIABLES
        and name[len(ENV_PREFIX) :].upper().split("__", 1)[0] not in known
    )
    if unknown:
        raise ConfigError(
            "invalid settings:\n  "
            + "\n  ".join(f"{name}: not a setting of {cls.__name__}" for name in unknown)
        )
    try:
        return cls(**overrides)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            path = [str(p) for p in err["loc"]]
            env_name = ENV_PREFIX + "__".join(p.upper() for p in path)
            problems.append(f"{env_name} ({'.'.join(path)}): {err['msg']}")
        raise ConfigError("invalid settings:\n  " + "\n  ".join(problems)) from exc


def settings_env(section: str, values: BaseModel) -> dict[str, str]:
    """The ``INSPECTLOOP_<SECTION>__<FIELD>`` variables that :func:`load_settings` reads back as
    ``values``, secrets included: how a supervisor hands a section to a service's process."""
    env: dict[str, str] = {}
    for name in type(values).model_fields:
        value = _plain(getattr(values, name))
        if value is None:
            text = "null"
        elif isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, list | dict):
            text = json.dumps(value)
        else:
            text = str(value)
        env[f"{ENV_PREFIX}{section.upper()}__{name.upper()}"] = text
    return env


def _plain(value: Any) -> Any:
    """``value`` as JSON-ready data with its secrets revealed (model_dump would mask them)."""
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, BaseModel):
        return {name: _plain(getattr(value, name)) for name in type(value).model_fields}
    if isinstance(value, list | tuple | set | frozenset):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, Path):
        return str(value)
    return value
