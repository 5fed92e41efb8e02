"""Settings: buttress.toml < BUTTRESS_* environment < explicit overrides; bad values named."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from buttress.config import ConfigError, Settings, load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No BUTTRESS_* variable of the outer shell, and a cwd without a buttress.toml."""
    for key in list(os.environ):
        if key.startswith("BUTTRESS_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_defaults_without_file_or_environment() -> None:
    settings = load_settings()
    assert settings.deadline == 0.25
    assert settings.max_deadline == 2.0
    assert settings.port == 8000
    assert settings.backend == "memory://"
    assert settings.admin_token is None
    assert (settings.read_timeout, settings.max_connections) == (10.0, 1000)


def test_read_timeout_is_a_duration_and_must_be_positive(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BUTTRESS_READ_TIMEOUT", "2500ms")
    assert load_settings().read_timeout == 2.5
    monkeypatch.setenv("BUTTRESS_READ_TIMEOUT", "0")
    with pytest.raises(ConfigError, match="read_timeout"):
        load_settings()


def test_toml_file_is_read(tmp_path: Path) -> None:
    config = write(tmp_path / "service.toml",
                   'deadline = "80ms"\nport = 9001\nbackend = "sqlite:///x.db"\n')
    settings = load_settings(config)
    assert settings.deadline == pytest.approx(0.08)
    assert settings.port == 9001
    assert settings.backend == "sqlite:///x.db"


def test_buttress_toml_in_the_working_directory_is_found(tmp_path: Path) -> None:
    write(tmp_path / "buttress.toml", "workers = 3\n")
    assert load_settings().workers == 3


def test_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = write(tmp_path / "buttress.toml", 'deadline = "80ms"\nport = 9001\n')
    monkeypatch.setenv("BUTTRESS_DEADLINE", "1.5s")
    settings = load_settings(config)
    assert settings.deadline == 1.5
    assert settings.port == 9001  # what the environment does not set still comes from the file


def test_explicit_overrides_beat_environment_and_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = write(tmp_path / "buttress.toml", "port = 9001\nworkers = 2\n")
    monkeypatch.setenv("BUTTRESS_PORT", "9002")
    settings = load_settings(config, port=9003, workers=None)  # None: flag not given
    assert settings.port == 9003
    assert settings.workers == 2


@pytest.mark.parametrize(("raw", "expected"), [
    ("250ms", 0.25), ("2s", 2.0), ("1.5s", 1.5), ("500us", 0.0005), ("1m", 60.0),
    ("0.3", 0.3), ("12", 12.0),  # a bare number in the environment is seconds, as in TOML
])
def test_durations_are_parsed(monkeypatch: pytest.MonkeyPatch, raw: str, expected: float) -> None:
    monkeypatch.setenv("BUTTRESS_DRAIN_TIMEOUT", raw)
    assert load_settings().drain_timeout == pytest.approx(expected)


def test_settings_survive_the_trip_through_the_environment(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """`serve --workers N` exports each setting as BUTTRESS_<KEY>=str(value) to its workers."""
    original = Settings(deadline="300ms", max_deadline="1.5s", drain_timeout="250ms", port=9100)
    for key, value in original.model_dump(exclude_defaults=True).items():
        monkeypatch.setenv(f"BUTTRESS_{key.upper()}", str(value))
    assert load_settings() == original


def test_numbers_in_toml_are_seconds(tmp_path: Path) -> None:
    config = write(tmp_path / "buttress.toml", "deadline = 0.05\nmax_deadline = 3\n")
    settings = load_settings(config)
    assert (settings.deadline, settings.max_deadline) == (0.05, 3.0)


@pytest.mark.parametrize(("variable", "value", "key"), [
    ("BUTTRESS_DEADLINE", "abc", "deadline"),
    ("BUTTRESS_DEADLINE", "1.2.3", "deadline"),
    ("BUTTRESS_DEADLINE", "-1s", "deadline"),
    ("BUTTRESS_PORT", "70000", "port"),
    ("BUTTRESS_WORKERS", "many", "workers"),
    ("BUTTRESS_BACKEND", "mongodb://x", "backend"),
    ("BUTTRESS_LOG_LEVEL", "loud", "log_level"),
    ("BUTTRESS_MAX_JSON_DEPTH", "1", "max_json_depth"),
])
def test_invalid_environment_value_is_named(monkeypatch: pytest.MonkeyPatch, variable: str,
                                            value: str, key: str) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    message = str(caught.value)
    assert f"'{key}'" in message
    assert variable in message
    assert "\n" not in message


def test_invalid_toml_value_is_named(tmp_path: Path) -> None:
    config = write(tmp_path / "buttress.toml", 'max_deadline = "whenever"\n')
    with pytest.raises(ConfigError, match="'max_deadline'"):
        load_settings(config)


def test_unknown_toml_key_is_named(tmp_path: Path) -> None:
    config = write(tmp_path / "buttress.toml", 'deadlin = "1s"\n')
    with pytest.raises(ConfigError, match=r"'deadlin'.*unknown setting"):
        load_settings(config)


def test_missing_config_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.toml")


def test_settings_objects_are_independent() -> None:
    one, two = Settings(deadline="1s"), Settings(deadline="2s")
    assert (one.deadline, two.deadline) == (1.0, 2.0)


def test_the_registry_defaults_to_an_embedded_file_and_must_be_sqlite_or_redis() -> None:
    settings = load_settings()
    assert settings.registry_url == "sqlite:///var/registry.db"
    assert settings.models_dir == "var/models"
    assert load_settings(registry_url="redis://r:6379/2").registry_url == "redis://r:6379/2"
    with pytest.raises(ConfigError, match="BUTTRESS_REGISTRY_URL"):
        load_settings(registry_url="memory://")
