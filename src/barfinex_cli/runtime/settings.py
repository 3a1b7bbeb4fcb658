"""Settings: `bfx.toml` (or `--config`), overridden by `BFX_*` variables, overridden by CLI flags.

Secrets (the gateway token, exchange and LLM keys) are `SecretStr`: they are never printed, only
reported as set or not. Validation errors become one `ConfigError` naming the file or variable,
the key and the reason.
"""

from __future__ import annotations

import os
import tomllib
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from barfinex_cli.errors import ConfigError

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
ENV_PREFIX = "BFX_"

_toml_data: ContextVar[dict[str, Any] | None] = ContextVar("bfx_toml_data", default=None)


def default_home() -> Path:
    """Return the data directory used when neither `--data-dir` nor `BFX_HOME` is given."""
    return Path.home() / ".bfx"


class Settings(BaseSettings):
    """Every setting of bfx, with its default; see `bfx config show`."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, extra="forbid", frozen=True, validate_default=True
    )

    home: Path = Field(default_factory=default_home, description="data directory")
    bus: Literal["redis", "memory"] = Field("redis", description="event bus transport")
    redis_url: str | None = Field(
        None, description="Redis URL; unset means 127.0.0.1:6379 if it answers"
    )
    namespace: str = Field("default", pattern=r"^[A-Za-z0-9_.-]+$", description="bus key prefix")
    bus_maxlen: int = Field(100_000, ge=1_000, description="approximate length cap per stream")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_json: bool = Field(False, description="JSON-lines logs even in a terminal")
    token: SecretStr | None = Field(None, description="gateway bearer token")
    provider_url: str = Field("http://127.0.0.1:8081", description="provider gateway URL")
    webhooks: dict[str, Any] | None = Field(
        None, description="[webhooks] table: targets (url, types), attempts, backoff_s, ..."
    )
    webhook_secret: SecretStr | None = Field(None, description="signs webhook bodies (env only)")

    @property
    def audit_path(self) -> Path:
        """Return the SQLite file of the audit store."""
        return self.home / "audit.db"

    @property
    def market_path(self) -> Path:
        """Return the SQLite file of market history (candles and trades)."""
        return self.home / "market.db"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _TomlSource(settings_cls))


class _TomlSource(PydanticBaseSettingsSource):
    """The lowest-priority source: the TOML file `load_settings` read."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return (_toml_data.get() or {}).get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(_toml_data.get() or {})


def find_config(explicit: Path | None) -> Path | None:
    """Return the config file to read: `--config`, `BFX_CONFIG`, or `./bfx.toml` if present."""
    if explicit is not None:
        if not explicit.is_file():
            raise ConfigError(f"config file {explicit} does not exist — check the --config path")
        return explicit
    env = os.environ.get(ENV_PREFIX + "CONFIG")
    if env:
        return find_config(Path(env))
    local = Path.cwd() / "bfx.toml"
    return local if local.is_file() else None


def load_settings(config: Path | None = None, **overrides: Any) -> Settings:
    """Read settings from the config file, the environment and explicit `overrides` (CLI flags)."""
    path = find_config(config)
    data: dict[str, Any] = {}
    if path is not None:
        try:
            data = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"{path}: cannot read it as TOML: {exc}") from None
        data = data.get("bfx", data)  # either top-level keys or a [bfx] table
    cli = {k: v for k, v in overrides.items() if v is not None}
    token = _toml_data.set(data)
    try:
        return Settings(**cli)
    except ValidationError as exc:
        raise ConfigError(_explain(exc, path, data, cli)) from None
    finally:
        _toml_data.reset(token)


def _explain(
    exc: ValidationError, path: Path | None, data: dict[str, Any], cli: dict[str, Any]
) -> str:
    err = exc.errors()[0]
    key = str(err["loc"][0]) if err["loc"] else "?"
    if key in cli:
        where = "command line"
    elif ENV_PREFIX + key.upper() in os.environ:
        where = f"environment variable {ENV_PREFIX}{key.upper()}"
    elif path is not None and key in data:
        where = str(path)
    else:
        where = str(path) if path else "settings"
    reason = err["msg"]
    if err["type"] == "extra_forbidden":
        known = ", ".join(sorted(Settings.model_fields))
        reason = f"unknown key (known keys: {known})"
    return f"{where}: key {key!r}: {reason}"


def describe(settings: Settings) -> dict[str, Any]:
    """Return the effective settings as plain data, secrets masked."""
    out: dict[str, Any] = {}
    for name in Settings.model_fields:
        value = getattr(settings, name)
        if isinstance(value, SecretStr):
            out[name] = "********" if value.get_secret_value() else None
        elif isinstance(value, Path):
            out[name] = str(value)
        else:
            out[name] = value
    return out
