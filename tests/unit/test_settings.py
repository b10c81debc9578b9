"""Settings come from INSPECTLOOP_* variables, nested with "__", and fail loudly when wrong."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import BaseModel, SecretStr, ValidationError
from pydantic.fields import FieldInfo

from inspectloop.core.errors import ConfigError
from inspectloop.core.settings import CommonSettings, Section, load_settings, settings_env
from inspectloop.gateway.settings import GatewaySection, GatewaySettings, ModelSyncSettings
from inspectloop.rollout.settings import AnalysisSettings, RolloutSection, RolloutSettings
from inspectloop.trainer.gates import GateSettings
from inspectloop.trainer.settings import TrainerSection, TrainerSettings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # The developer's or CI's own INSPECTLOOP_* variables must not leak into these tests.
    for name in list(os.environ):
        if name.upper().startswith("INSPECTLOOP_"):
            monkeypatch.delenv(name)


def test_defaults_without_environment() -> None:
    s = load_settings(CommonSettings)
    assert s.bus.backend == "local"
    assert s.data_dir == Path.cwd() / ".inspectloop"
    assert s.bus.kafka.servers == ["127.0.0.1:9092"]
    assert s.metrics.port == 0


def test_nested_env_vars_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INSPECTLOOP_BUS__BACKEND", "kafka")
    monkeypatch.setenv("INSPECTLOOP_BUS__KAFKA__BOOTSTRAP_SERVERS", "a:1,b:2")
    monkeypatch.setenv("INSPECTLOOP_BUS__PARTITIONS", "12")
    monkeypatch.setenv("INSPECTLOOP_LOGGING__JSON_FORMAT", "false")
    s = load_settings(CommonSettings)
    assert s.bus.backend == "kafka"
    assert s.bus.kafka.servers == ["a:1", "b:2"]
    assert s.bus.partitions == 12
    assert s.logging.json_format is False


def test_servers_list_ignores_blanks_and_spaces(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INSPECTLOOP_BUS__KAFKA__BOOTSTRAP_SERVERS", " a:1 , ,b:2,")
    assert load_settings(CommonSettings).bus.kafka.servers == ["a:1", "b:2"]


def test_environment_is_read_when_loading_not_before(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings(CommonSettings).service == "inspectloop"
    monkeypatch.setenv("INSPECTLOOP_SERVICE", "monitor")
    assert load_settings(CommonSettings).service == "monitor"


def test_explicit_overrides_beat_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INSPECTLOOP_SERVICE", "monitor")
    assert load_settings(CommonSettings, service="gateway").service == "gateway"


def test_invalid_value_names_the_env_var(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INSPECTLOOP_BUS__BACKEND", "rabbit")
    with pytest.raises(ConfigError, match="INSPECTLOOP_BUS__BACKEND") as info:
        load_settings(CommonSettings)
    assert "'local' or 'kafka'" in str(info.value)  # says what would be valid
    assert isinstance(info.value.__cause__, ValidationError)


def test_every_invalid_setting_is_named_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INSPECTLOOP_BUS__BACKEND", "rabbit")
    monkeypatch.setenv("INSPECTLOOP_METRICS__PORT", "70000")
    monkeypatch.setenv("INSPECTLOOP_BUS__LOCAL__POLL_INTERVAL_S", "0")
    with pytest.raises(ConfigError) as info:
        load_settings(CommonSettings)
    message = str(info.value)
    for name in (
        "INSPECTLOOP_BUS__BACKEND",
        "INSPECTLOOP_METRICS__PORT",
        "INSPECTLOOP_BUS__LOCAL__POLL_INTERVAL_S",
    ):
        assert name in message


@pytest.mark.parametrize(
    "name", ["INSPECTLOOP_BUS__BOGUS", "INSPECTLOOP_BUS__KAFKA__BOGUS", "INSPECTLOOP_LOGGING__LVL"]
)
def test_unknown_nested_env_var_is_rejected(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    monkeypatch.setenv(name, "1")
    with pytest.raises(ConfigError, match=name):
        load_settings(CommonSettings)


def test_unknown_top_level_env_var_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INSPECTLOOP_DATADIR", "/typo")  # meant INSPECTLOOP_DATA_DIR
    with pytest.raises(ConfigError, match="INSPECTLOOP_DATADIR"):
        load_settings(CommonSettings)


def test_unknown_override_is_rejected() -> None:
    with pytest.raises(ConfigError, match="INSPECTLOOP_BOGUS"):
        load_settings(CommonSettings, bogus=1)


def test_paths_derive_from_data_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("INSPECTLOOP_DATA_DIR", str(tmp_path))
    s = load_settings(CommonSettings)
    assert s.data_dir == tmp_path
    assert s.bus.local.directory == tmp_path / "bus"
    assert s.blob_store.root == tmp_path / "blobs"


def test_explicit_path_is_not_overridden_by_derivation(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("INSPECTLOOP_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("INSPECTLOOP_BLOB_STORE__ROOT", str(tmp_path / "elsewhere"))
    s = load_settings(CommonSettings)
    assert s.blob_store.root == tmp_path / "elsewhere"
    assert s.bus.local.directory == tmp_path / "bus"


def test_settings_are_frozen() -> None:
    s = load_settings(CommonSettings)
    with pytest.raises(ValidationError):
        s.service = "other"
    with pytest.raises(ValidationError):
        s.bus.backend = "kafka"


def _fields(model: type[BaseModel], prefix: str = "") -> list[tuple[str, FieldInfo, bool]]:
    """(dotted name, field, is_section) for every field, recursing into sections."""
    found: list[tuple[str, FieldInfo, bool]] = []
    for name, info in model.model_fields.items():
        annotation = info.annotation
        is_section = isinstance(annotation, type) and issubclass(annotation, Section)
        found.append((prefix + name, info, is_section))
        if is_section:
            assert isinstance(annotation, type)
            found.extend(_fields(annotation, prefix + name + "."))
    return found


def test_every_setting_has_a_description() -> None:
    missing = [
        n for n, info, section in _fields(CommonSettings) if not section and not info.description
    ]
    assert missing == []


def test_every_section_has_a_description() -> None:
    missing = [
        n for n, info, section in _fields(CommonSettings) if section and not info.description
    ]
    assert missing == []


def test_harness_variables_are_not_mistaken_for_typos(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INSPECTLOOP_CACHE_DIR", "/var/cache/inspectloop")
    assert load_settings(CommonSettings).service == "inspectloop"


def test_null_unsets_an_optional_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings(RolloutSettings).rollout.analysis.max_disagreement_rate == 0.05
    monkeypatch.setenv("INSPECTLOOP_ROLLOUT__ANALYSIS__MAX_DISAGREEMENT_RATE", "null")
    assert load_settings(RolloutSettings).rollout.analysis.max_disagreement_rate is None


def test_settings_env_round_trips_every_kind_of_value(monkeypatch: pytest.MonkeyPatch) -> None:
    """What a supervisor hands to a service's process is read back as the same section:
    secrets revealed, nested sections, lists, tuples of paths, None and booleans."""
    trainer = TrainerSection(
        reference_datasets=(Path("/data/a"), Path("/data/b")),
        registry_token=SecretStr("ilr_secret"),
        ray_address=None,
        use_gpu=True,
        work_dir=Path("/work/trainer"),
        gates=GateSettings(min_accuracy=0.9, recall_overrides={"smudge": 0.5}),
    )
    rollout = RolloutSection(
        registry_token=SecretStr("ilr_other"),
        step_weights_bps=[2500, 5000],
        require_signature_for=[],
        state_path=Path("/work/rollout.sqlite"),
        analysis=AnalysisSettings(max_disagreement_rate=None, interval_s=3),
    )
    gateway = GatewaySection(
        http_port=9100,
        models=ModelSyncSettings(repository=Path("/repo"), registry_token=SecretStr("ilr_gw")),
    )
    for name, section, cls in (
        ("trainer", trainer, TrainerSettings),
        ("rollout", rollout, RolloutSettings),
        ("gateway", gateway, GatewaySettings),
    ):
        with monkeypatch.context() as env:
            for key, value in settings_env(name, section).items():
                env.setenv(key, value)
            loaded = getattr(load_settings(cls), name)
        assert loaded == section
    # SecretStr compares by value; the revealed text is what the process reads.
    assert settings_env("trainer", trainer)["INSPECTLOOP_TRAINER__REGISTRY_TOKEN"] == "ilr_secret"
    assert "ilr_gw" in settings_env("gateway", gateway)["INSPECTLOOP_GATEWAY__MODELS"]


def test_relative_paths_are_made_absolute_once(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # A process started elsewhere (Triton runs in its own directory) must see the same paths.
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("INSPECTLOOP_DATA_DIR", "state")
    monkeypatch.setenv("INSPECTLOOP_TRAINER__REFERENCE_DATASETS", '["data/a", "~/b"]')
    from inspectloop.trainer.settings import TrainerSettings  # noqa: PLC0415

    s = load_settings(TrainerSettings)
    assert s.data_dir == tmp_path / "state"
    assert s.bus.local.directory == tmp_path / "state" / "bus"
    assert s.trainer.work_dir == tmp_path / "state" / "trainer"
    assert s.trainer.reference_datasets == (tmp_path / "data" / "a", Path.home() / "b")
    monkeypatch.chdir("/")
    assert s.trainer.reference_datasets[0] == tmp_path / "data" / "a"  # fixed at load


def test_a_relative_sqlite_url_is_pinned_to_the_working_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    from inspectloop.registry.settings import RegistrySettings  # noqa: PLC0415

    monkeypatch.setenv("INSPECTLOOP_REGISTRY__DATABASE_URL", "sqlite:///db/r.sqlite3")
    assert load_settings(RegistrySettings).database_url == f"sqlite:///{tmp_path}/db/r.sqlite3"
    monkeypatch.setenv("INSPECTLOOP_REGISTRY__DATABASE_URL", "sqlite:////abs/r.sqlite3")
    assert load_settings(RegistrySettings).database_url == "sqlite:////abs/r.sqlite3"
