"""What the root callback hands to every command: where settings come from, loaded on demand."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    from barfinex_cli.runtime.settings import Settings


@dataclass
class State:
    """The global options; `settings()` reads and validates them once."""

    config: Path | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    _settings: Settings | None = None

    def settings(self) -> Settings:
        if self._settings is None:
            from barfinex_cli.runtime.settings import find_config, load_settings

            check_flags(self.overrides)
            settings = load_settings(self.config, **self.overrides)
            if settings.redis_url is not None:
                if self.overrides.get("redis_url") is not None:
                    where = "--redis-url (BFX_REDIS_URL)"
                else:
                    where = f"redis_url in {find_config(self.config) or 'the settings'}"
                check_redis_url(settings.redis_url, where)
            self._settings = settings
        return self._settings


FLAGS = {
    "home": "--data-dir",
    "redis_url": "--redis-url",
    "namespace": "--namespace",
    "bus": "--bus",
    "log_json": "--log-json",
}
"""The global option (and its environment variable) behind each settings key it sets."""


def check_flags(overrides: dict[str, Any]) -> None:
    """Validate each global option against its settings field, naming the option if it fails.

    Settings would refuse the same values, but as a config error (exit 1) about a key; a value
    typed on the command line (or in its BFX_* variable) is wrong usage: exit 2, the flag named.

    Raises:
        UsageError: a value the settings field rejects.
    """
    from typing import Annotated

    from pydantic import TypeAdapter, ValidationError

    from barfinex_cli.errors import UsageError
    from barfinex_cli.runtime.settings import Settings

    for key, value in overrides.items():
        field = Settings.model_fields.get(key)
        if value is None or field is None:
            continue
        annotation: Any = field.annotation
        if field.metadata:
            annotation = Annotated[(annotation, *field.metadata)]
        try:
            TypeAdapter(annotation).validate_python(value)
        except ValidationError as exc:
            flag = FLAGS.get(key, "--" + key.replace("_", "-"))
            raise UsageError(f"{flag} {value!r}: {exc.errors()[0]['msg']}") from None


def check_redis_url(url: str, where: str) -> None:
    """Refuse a Redis URL that redis-py cannot use, in one line naming where it came from.

    Raises:
        UsageError: the URL came from the command line (or its environment variable).
        ConfigError: it came from the settings file.
    """
    from urllib.parse import urlsplit

    from barfinex_cli.errors import ConfigError, UsageError, mask_url

    reason = ""
    try:
        parts = urlsplit(url)
        port = parts.port  # raises ValueError when it is not a number in 0..65535
        if parts.scheme in ("redis", "rediss"):
            if not parts.hostname:
                reason = "no host"
            elif port == 0:
                reason = "port 0"
            elif parts.path.strip("/") and not parts.path.strip("/").isdigit():
                reason = f"the database {parts.path.strip('/')!r} is not a number"
        elif parts.scheme == "unix":
            reason = "" if parts.path else "no socket path"
        else:
            reason = "it must start with redis://, rediss:// or unix://"
    except ValueError as exc:
        reason = str(exc)
    if reason:
        error = UsageError if where.startswith("--") else ConfigError
        raise error(
            f"{where}: {mask_url(url)!r} is not a Redis URL ({reason}); e.g. "
            "redis://127.0.0.1:6379/0 or redis://:PASSWORD@host:6379/0"
        )


def state_of(ctx: typer.Context) -> State:
    """Return the `State` of this invocation (a default one when a command runs alone)."""
    root = ctx.find_root()
    if not isinstance(root.obj, State):
        root.obj = State()
    return root.obj
