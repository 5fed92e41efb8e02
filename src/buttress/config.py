"""Settings: ``buttress.toml``, overridden by ``BUTTRESS_*`` environment variables.

Built once in the app factory and passed down; there is no module-level settings object, so
two services with different settings can live in one process. An invalid value stops the
server at start with the offending key named.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from buttress.backends import parse_backend_url
from buttress.observability.alert_rules import AlertRule
from buttress.observability.insights import BUILTIN_QUERIES
from buttress.resilience.durations import seconds

DEFAULT_CONFIG_FILE = "buttress.toml"


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the key."""


class InsightsSettings(BaseModel):
    """``[insights]``: named SQL queries over the events (``buttress insights --saved NAME``),
    under ``[insights.queries]``; they add to (or replace) the built-in ones."""

    model_config = ConfigDict(extra="forbid")

    queries: dict[str, str] = Field(default_factory=dict)


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
    # rotation and retention: 0 turns each limit off (TOML has no null)
    events_rotate_bytes: int | None = Field(
        64 * 1024 * 1024, description="Start a new event file past this size ('64MiB').")
    events_rotate_interval: float | None = Field(
        3600.0, description="Start a new event file this often ('1h').")
    events_keep_days: float | None = Field(
        7.0, description="Delete event files older than this many days.")
    events_keep_bytes: int | None = Field(
        None, description="Delete the oldest event files past this total ('1GiB').")
    events_stdout: bool = Field(False, description="Also write each event as a JSON line "
                                "to stdout, for a log collector.")
    log_sample_rate: float = Field(
        1.0, ge=0.0, le=1.0, description="Share of clean successes whose prediction summary "
        "is logged; fallbacks and errors always are.")
    model_threads: int = Field(2, ge=1, le=64)
    model_native_threads: int = Field(
        1, ge=1, le=256, description="Threads one model call may use in native code (OpenMP, "
        "BLAS). More than one oversubscribes the cores the event loop needs.")
    max_concurrency: str = Field(
        "auto", description="Requests in flight at once: 'auto' (learned: adaptive admission), "
        "a number (a fixed cap), or 'off'. The excess is answered at once (overload_response).")
    admission_target: float | None = Field(
        None, description="Mean time in the server above which max_concurrency='auto' counts "
        "admitted requests as unhealthy (so does a stage's own timeout firing); default: half "
        "the deadline.")
    overload_response: Literal["fallback", "503"] = Field(
        "fallback", description="What a request beyond max_concurrency gets: every stage's "
        "fallback (category 'overloaded'), or 503 with Retry-After.")
    drain_timeout: float = Field(30.0, description="Seconds to finish in-flight work on SIGTERM.")
    read_timeout: float = Field(
        10.0, gt=0, description="Time a client has to send a whole request (headers and body) "
        "from its first byte or from connecting; then 408 or the connection is closed.")
    max_connections: int = Field(
        1000, ge=1, description="Open connections per process; one more is closed at once. "
        "Keep it below the process's open-file limit.")
    admin_token: str | None = Field(None, description="Bearer token for /admin; unset = off.")
    metrics_dir: str = "var/prometheus"
    registry_url: str = Field("sqlite:///var/registry.db", description="Model registry URL: "
                              "sqlite:///path.db on one machine, redis://host:port/db shared.")
    models_dir: str = Field("var/models", description="Where registered model artifacts live.")
    log_level: str = "info"
    insights: InsightsSettings = Field(default_factory=InsightsSettings)
    alerts: list[AlertRule] = Field(default_factory=list, description="Alert rules "
                                    "([[alerts]] tables; docs/observability.md).")
    alerts_interval: float = Field(15.0, description="Seconds between two evaluations of "
                                   "the alert rules ('15s').")
    dashboard: bool = Field(True, description="Serve the live dashboard at /dashboard (its "
                            "data at /dashboard/data); false: both are 404.")
    dashboard_queries: list[str] | None = Field(
        None, description="Saved insight queries the dashboard draws; default: every "
        "[insights.queries] one, mean_discount_by_model_version and p99_latency_by_stage.")

    @field_validator("deadline", "max_deadline", "drain_timeout", "alerts_interval",
                     "read_timeout", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> float:
        return duration_setting(value)

    @field_validator("events_rotate_interval", mode="before")
    @classmethod
    def _optional_duration(cls, value: Any) -> float | None:
        if value is None or value in ("", "0", 0):
            return None
        return duration_setting(value)

    @field_validator("admission_target", mode="before")
    @classmethod
    def _admission_target(cls, value: Any) -> float | None:
        return None if value is None else duration_setting(value)

    @field_validator("events_keep_days", mode="before")
    @classmethod
    def _days(cls, value: Any) -> float | None:
        if value is None or value in ("", "0", 0):
            return None
        days = float(value)
        if days < 0:
            raise ValueError("must not be negative")
        return days

    @field_validator("events_rotate_bytes", "events_keep_bytes", mode="before")
    @classmethod
    def _size(cls, value: Any) -> int | None:
        if value is None or value in ("", "0", 0):
            return None
        result = byte_size(value)
        if result < 1024:
            raise ValueError("must be at least 1KiB (or 0: no limit)")
        return result

    @field_validator("backend", "features_url", "cache_url", "guardrails_url")
    @classmethod
    def _backend_url(cls, value: str | None) -> str | None:
        if value is not None:
            parse_backend_url(value)
        return value

    @field_validator("max_concurrency", mode="before")
    @classmethod
    def _concurrency(cls, value: Any) -> str:
        text = str(value).strip().lower()
        if text in ("auto", "off") or (text.isdigit() and int(text) >= 1):
            return text
        raise ValueError("must be 'auto', 'off' or a whole number >= 1")

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


    @field_validator("registry_url")
    @classmethod
    def _registry_url(cls, value: str) -> str:
        url = parse_backend_url(value)
        if not (url.is_sqlite or url.is_redis):
            raise ValueError("the registry lives in sqlite:///path.db or redis://host:port/db")
        return value
    @field_validator("alerts")
    @classmethod
    def _unique_alerts(cls, rules: list[AlertRule]) -> list[AlertRule]:
        names = [rule.name for rule in rules]
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise ValueError(f"alert names must be unique: {', '.join(duplicated)}")
        return rules

    @field_validator("dashboard_queries")
    @classmethod
    def _known_queries(cls, names: list[str] | None, info: ValidationInfo) -> list[str] | None:
        insights = info.data.get("insights")
        known = {*BUILTIN_QUERIES, *(insights.queries if insights is not None else {})}
        unknown = [name for name in names or () if name not in known]
        if unknown:
            raise ValueError(f"unknown saved queries {unknown}; known: {', '.join(sorted(known))}")
        return names

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


def duration_setting(value: Any) -> float:
    """A duration setting in seconds. Environment values are strings: a bare number there
    ("0.25", as `serve --workers` hands settings to its workers) means seconds, as it does in
    the TOML file."""
    if isinstance(value, str) and value.strip().replace(".", "", 1).isdigit():
        value = float(value)
    return seconds(value)


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B|B)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"b": 1, "kb": 1000, "mb": 1000**2, "gb": 1000**3, "tb": 1000**4,
               "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4}


def byte_size(value: Any) -> int:
    """``"64MiB"``, ``"1GB"``, ``"500"`` or a number: a size in bytes."""
    if isinstance(value, bool):
        raise ValueError("expected a size like '64MiB', got a bool")
    if isinstance(value, int | float):
        return int(value)
    match = _SIZE.match(str(value))
    if match is None:
        raise ValueError(f"{value!r} is not a size like '64MiB', '1GB' or 1048576")
    return int(float(match.group(1)) * _SIZE_UNITS[(match.group(2) or "b").lower()])


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
