"""Settings: `bfx.toml` (or `--config`), overridden by `BFX_*` variables, overridden by CLI flags.

Global keys sit at the top of the file (or in a `[bfx]` table); each role has its own typed
section (`[provider]`, `[detector]`, `[webhooks]`, see `runtime.config`), validated at load. A
nested key is set from the environment with a double underscore: `BFX_PROVIDER__PORT=9000`.
The file is read by pydantic-settings' own TOML source.

Secrets (the gateway token, exchange and LLM keys) are `SecretStr`: they are never printed, only
reported as set or not. Validation errors become one `ConfigError` naming the file or variable,
the key and the reason.
"""

from __future__ import annotations

import contextlib
import os
import tomllib
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from barfinex_cli.errors import ConfigError
from barfinex_cli.market.calendars import CalendarName
from barfinex_cli.runtime.config import (
    AdvisorConfig,
    DetectorConfig,
    GatewayConfig,
    InspectorConfig,
    ProviderConfig,
    WebhooksConfig,
)

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
ENV_PREFIX = "BFX_"

_toml_file: ContextVar[Path | None] = ContextVar("bfx_toml_file", default=None)


def default_home() -> Path:
    """Return the data directory used when neither `--data-dir` nor `BFX_HOME` is given."""
    return Path.home() / ".bfx"


class Settings(BaseSettings):
    """Every setting of bfx, with its default; see `bfx config show`."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
        validate_default=True,
    )

    home: Path = Field(default_factory=default_home, description="data directory")
    bus: Literal["redis", "memory"] = Field("redis", description="event bus transport")
    redis_url: str | None = Field(
        None, description="Redis URL; unset means 127.0.0.1:6379 if it answers"
    )
    namespace: str = Field("default", pattern=r"^[A-Za-z0-9_.-]+$", description="bus key prefix")
    bus_maxlen: int = Field(100_000, ge=1_000, description="approximate length cap per stream")
    redis_outage_s: float = Field(
        60.0, gt=0, description="how long roles wait out an unreachable Redis before exiting"
    )
    max_event_bytes: int = Field(
        256 * 1024, ge=1024, description="largest event a consumer decodes; larger: dead letter"
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_json: bool = Field(False, description="JSON-lines logs even in a terminal")
    token: SecretStr | None = Field(None, description="gateway bearer token")
    provider_url: str = Field("http://127.0.0.1:8081", description="provider gateway URL")
    webhook_secret: SecretStr | None = Field(None, description="signs webhook bodies (env only)")
    provider: ProviderConfig = Field(default_factory=ProviderConfig, description="[provider]")
    detector: DetectorConfig = Field(default_factory=DetectorConfig, description="[detector]")
    advisor: AdvisorConfig = Field(default_factory=AdvisorConfig, description="[advisor]")
    inspector: InspectorConfig = Field(default_factory=InspectorConfig, description="[inspector]")
    gateway: GatewayConfig = Field(default_factory=GatewayConfig, description="[gateway]")
    calendars: dict[str, CalendarName] = Field(
        default_factory=dict,
        description="[calendars]: `exchange:symbol` glob -> 24/7 | 24/5 | weekdays | nyse",
    )
    webhooks: WebhooksConfig | None = Field(
        None, description="[webhooks] table: targets (url, types), attempts, backoff_s, ..."
    )

    @model_validator(mode="before")
    @classmethod
    def _shared_webhook_secret(cls, data: Any) -> Any:
        """Give the `[webhooks]` table the secret from BFX_WEBHOOK_SECRET unless it has one."""
        if not isinstance(data, dict):
            return data
        table, secret = data.get("webhooks"), data.get("webhook_secret")
        if isinstance(table, dict) and secret and "secret" not in table:
            value = secret.get_secret_value() if isinstance(secret, SecretStr) else secret
            data = {**data, "webhooks": {**table, "secret": value}}
        return data

    @property
    def audit_path(self) -> Path:
        """Return the SQLite file of the audit store."""
        return self.home / "audit.db"

    @property
    def paper_path(self) -> Path:
        """Return the SQLite file of the paper broker's account (orders, fills, balances)."""
        return self.home / "paper.db"

    @property
    def inspector_path(self) -> Path:
        """Return the SQLite file of the inspector's state (orders, positions, counters)."""
        return self.home / "inspector.db"

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
        return (init_settings, env_settings, _TomlSource(settings_cls, _toml_file.get()))


class _TomlSource(TomlConfigSettingsSource):
    """The lowest-priority source: the TOML file `load_settings` found (keys may sit in `[bfx]`)."""

    def _read_file(self, file_path: Path) -> dict[str, Any]:
        data = super()._read_file(file_path)
        bfx = data.get("bfx")
        return (
            {**{k: v for k, v in data.items() if k != "bfx"}, **bfx}
            if isinstance(bfx, dict)
            else data
        )


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
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"{path}: cannot read it as TOML: {exc}") from None
        except RecursionError:  # tomllib nests arrays and tables by recursion
            raise ConfigError(f"{path}: cannot read it as TOML: nested too deeply") from None
        data = {**data, **data["bfx"]} if isinstance(data.get("bfx"), dict) else data
        _refuse_shared_secrets(path, data)
    cli = {k: v for k, v in overrides.items() if v is not None}
    token = _toml_file.set(path)
    try:
        return Settings(**cli)
    except ValidationError as exc:
        raise ConfigError(_explain(exc, path, data, cli)) from None
    finally:
        _toml_file.reset(token)


SECRET_KEYS = ("token", "webhook_secret", "advisor.llm_api_key", "webhooks.secret")
"""Keys that hold a secret: allowed in a config file only if the file is owner-only."""


def _refuse_shared_secrets(path: Path, data: dict[str, Any]) -> None:
    """Refuse a config file that others may read when it holds a secret (env or 0600 only)."""
    found = [k for k in SECRET_KEYS if _dig(data, k.split(".")) not in (None, "")]
    hooks = data.get("webhooks")
    targets = hooks.get("targets") if isinstance(hooks, dict) else None
    if isinstance(targets, list) and any(isinstance(t, dict) and t.get("secret") for t in targets):
        found.append("webhooks.targets[].secret")
    if not found:
        return
    with contextlib.suppress(OSError):
        if path.stat().st_mode & 0o077:
            raise ConfigError(
                f"{path}: holds a secret ({', '.join(found)}) but others may read the file — "
                f"chmod 600 {path}, or move the secret to its environment variable "
                "(e.g. BFX_TOKEN, BFX_ADVISOR__LLM_API_KEY, BFX_WEBHOOK_SECRET)"
            )


def _dig(data: Any, keys: list[str]) -> Any:
    for key in keys:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data


def _explain(
    exc: ValidationError, path: Path | None, data: dict[str, Any], cli: dict[str, Any]
) -> str:
    err = exc.errors()[0]
    key = str(err["loc"][0]) if err["loc"] else "?"
    dotted = ".".join(str(p) for p in err["loc"]) or "?"
    nested_env = ENV_PREFIX + "__".join(str(p) for p in err["loc"]).upper()
    if key in cli:
        where = "command line"
    elif nested_env in os.environ:
        where = f"environment variable {nested_env}"
    elif ENV_PREFIX + key.upper() in os.environ:
        where = f"environment variable {ENV_PREFIX}{key.upper()}"
    elif path is not None and key in data:
        where = str(path)
    else:
        where = str(path) if path else "settings"
    reason = err["msg"]
    if err["type"] == "extra_forbidden":
        model: type[BaseModel] = Settings
        for part in err["loc"][:-1]:
            annotation = model.model_fields[str(part)].annotation if model else None
            inner = [a for a in getattr(annotation, "__args__", (annotation,)) if a]
            model = next((a for a in inner if isinstance(a, type) and issubclass(a, BaseModel)),
                         Settings)  # fmt: skip
        known = ", ".join(sorted(model.model_fields))
        reason = f"unknown key (known keys: {known})"
    return f"{where}: key {dotted!r}: {reason}"


def describe(settings: Settings) -> dict[str, Any]:
    """Return the effective settings as plain data, secrets masked."""
    return {name: _plain(getattr(settings, name)) for name in Settings.model_fields}


def _plain(value: Any) -> Any:
    if isinstance(value, SecretStr):
        return "********" if value.get_secret_value() else None
    if isinstance(value, BaseModel):
        return {name: _plain(getattr(value, name)) for name in type(value).model_fields}
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)
