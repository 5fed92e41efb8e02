"""Settings: ``buttress.toml``, overridden by ``BUTTRESS_*`` environment variables.

Built once in the app factory and passed down; there is no module-level settings object, so
two services with different settings can live in one process. An invalid value stops the
server at start with the offending key named.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from buttress.backends import parse_backend_url
from buttress.resilience.durations import seconds

DEFAULT_CONFIG_FILE = "buttress.toml"


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the key."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BUTTRESS_", extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    workers: int = Field(1, ge=1, le=64)
    deadline: float = Field(0.25, description="Default per-request deadline ('250ms', 0.25).")
    max_deadline: float = Field(2.0, description="Cap on the deadline, also for X-Deadline-Ms.")
    max_body_bytes: int = Field(1_048_576, ge=64)
    max_json_depth: int = Field(64, ge=2, le=512)
    backend: str = Field("memory://", description="Default backend URL for every component.")
    features_url: str | None = Field(None, description="Feature store URL; default: backend.")
    cache_url: str | None = Field(None, description="Cache URL; default: backend (memory:// "
                                  "when backend is sqlite).")
    guardrails_url: str | None = Field(None, description="Guardrail counters URL; default: "
                                       "backend (memory:// when backend is sqlite).")
    events_dir: str = "var/events"
    events_buffer: int = Field(10_000, ge=100)
    model_threads: int = Field(2, ge=1, le=64)
    model_native_threads: int = Field(
        1, ge=1, le=256, description="Threads one model call may use in native code (OpenMP, "
        "BLAS). More than one oversubscribes the cores the event loop needs.")
    drain_timeout: float = Field(30.0, description="Seconds to finish in-flight work on SIGTERM.")
    read_timeout: float = Field(
        10.0, gt=0, description="Time a client has to send a whole request (headers and body) "
        "from its first byte or from connecting; then 408 or the connection is closed.")
    max_connections: int = Field(
        1000, ge=1, description="Open connections per process; one more is closed at once. "
        "Keep it below the process's open-file limit.")
    admin_token: str | None = Field(None, description="Bearer token for /admin; unset = off.")
    metrics_dir: str = "var/prometheus"
    log_level: str = "info"

    @field_validator("deadline", "max_deadline", "drain_timeout", "read_timeout", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> float:
        # Environment values are strings: a bare number there ("0.25", as `serve --workers`
        # hands settings to its workers) means seconds, as it does in the TOML file.
        if isinstance(value, str) and value.strip().replace(".", "", 1).isdigit():
            value = float(value)
        return seconds(value)

    @field_validator("backend", "features_url", "cache_url", "guardrails_url")
    @classmethod
    def _backend_url(cls, value: str | None) -> str | None:
        if value is not None:
            parse_backend_url(value)
        return value

    @property
    def feature_store_url(self) -> str:
        return self.features_url or self.backend

    @property
    def cache_store_url(self) -> str:
        """Caches live in memory or Redis; a SQLite default backend means memory."""
        return _memory_or_redis(self.cache_url or self.backend)

    @property
    def guardrail_store_url(self) -> str:
        """Guardrail counters live in memory or Redis; a SQLite default backend means memory."""
        return _memory_or_redis(self.guardrails_url or self.backend)


    @field_validator("log_level")
    @classmethod
    def _level(cls, value: str) -> str:
        levels = ("critical", "error", "warning", "info", "debug")
        if value.lower() not in levels:
            raise ValueError(f"must be one of {', '.join(levels)}")
        return value.lower()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_file = init_settings.init_kwargs.pop("_config_file", None)  # type: ignore[attr-defined]
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if toml_file is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_file))
        return tuple(sources)


def _memory_or_redis(url: str) -> str:
    return "memory://" if url.startswith("sqlite") else url


def load_settings(config_file: str | Path | None = None, **overrides: Any) -> Settings:
    """Read ``config_file`` (or ./buttress.toml when present), then the environment.

    ``overrides`` (e.g. CLI flags) win over both. Raises :class:`ConfigError` naming the key.
    """
    path = Path(config_file) if config_file else Path(DEFAULT_CONFIG_FILE)
    if config_file and not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    kwargs: dict[str, Any] = {k: v for k, v in overrides.items() if v is not None}
    if path.is_file():
        kwargs["_config_file"] = path
    try:
        return Settings(**kwargs)
    except ValidationError as error:
        first = error.errors()[0]
        key = ".".join(str(p) for p in first["loc"]) or "(config)"
        message = first["msg"].removeprefix("Value error, ")
        if first["type"] == "extra_forbidden":
            message = "unknown setting"
        raise ConfigError(
            f"invalid config value for {key!r} (BUTTRESS_{key.upper()}): {message}"
        ) from None
