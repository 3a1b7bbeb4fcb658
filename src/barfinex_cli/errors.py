"""The one error hierarchy, grouped by what the caller should do about it.

The CLI catches `BfxError` at a single exit point, prints its one-line message (which names the fix)
and exits with its code; anything else is a bug and keeps its traceback.

    BfxError                    exit 1  -- something the user can fix, described with the fix
    ├── UsageError              exit 2  -- wrong arguments, unknown names
    │   └── UnknownEventType            -- names the known types
    ├── ConfigError             exit 1  -- bad settings: fatal at start, names file, key and reason
    │   └── DataDirUnusable             -- the data directory cannot be created, read or written
    ├── NotFound                exit 1  -- an id or a file that does not exist
    ├── ServiceUnreachable      exit 3  -- a service (Redis, the provider) does not answer
    │   └── RedisUnreachable
    ├── Refused                 exit 4  -- a service answers but refuses our credentials
    │   └── TokenRefused                -- the provider refuses (or we lack) the bearer token
    ├── TransientError          exit 1  -- retry with backoff
    ├── StrategyError           exit 1  -- disable that strategy, keep the service running
    └── RiskViolation           exit 1  -- always recorded as an event as well
"""

from __future__ import annotations

import re

_USERINFO = re.compile(
    r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^:@/]*):(?P<secret>[^@/]*)@"
)


def mask_url(url: str) -> str:
    """Return `url` with the password of its user part replaced by `****` (shown, never leaked).

    `redis://:hunter2@host:6379/0` becomes `redis://:****@host:6379/0`; a URL without a
    password is returned unchanged. Every URL a message or a listing shows goes through this.
    """
    return _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:****@", url)


class BfxError(Exception):
    """An error the user can act on; `str()` is the one line the CLI prints."""

    exit_code: int = 1


class UsageError(BfxError):
    """Wrong arguments or an unknown name on the command line."""

    exit_code = 2


class UnknownEventType(UsageError):
    """An event type that the catalogue does not hold."""

    def __init__(self, name: str, known: list[str]) -> None:
        self.name = name
        self.known = known
        super().__init__(f"unknown event type {name!r}; known types: {', '.join(known)}")


class ConfigError(BfxError):
    """Settings that cannot be used: names the file, the key and the reason."""


class DataDirUnusable(ConfigError):
    """The data directory (`--data-dir` / `BFX_HOME`) cannot be created, read or written."""

    def __init__(self, home: object, reason: str, *, write: bool = True) -> None:
        self.home = home
        need = "a writable folder" if write else "a folder that holds the data"
        super().__init__(
            f"cannot use {home} as the data directory ({reason}) — pass --data-dir or set "
            f"BFX_HOME to {need}"
        )


class NotFound(BfxError):
    """Something asked for by id or path does not exist."""


class ServiceUnreachable(BfxError):
    """A service the command needs does not answer."""

    exit_code = 3


class RedisUnreachable(ServiceUnreachable):
    """The Redis server named in the settings does not answer."""

    def __init__(self, url: str, reason: str = "") -> None:
        self.url = url
        detail = f" ({reason})" if reason else ""
        super().__init__(
            f"Redis not reachable at {mask_url(url)}{detail} — start it with "
            "`redis-server --daemonize yes --port 6379`, point BFX_REDIS_URL at a running one, "
            "or use the in-process bus (--bus memory)"
        )


class Refused(BfxError):
    """A service answers but refuses the credentials we sent (or that we have none)."""

    exit_code = 4


class TokenRefused(Refused):
    """The provider's gateway refused the bearer token, or there is no token to send."""

    def __init__(self, url: str, *, missing: bool = False) -> None:
        self.url = url
        what = "needs a token and none is set" if missing else "refused the token"
        super().__init__(
            f"the provider at {mask_url(url)} {what} — set BFX_TOKEN to the provider's token "
            "(DATA_DIR/token), or run with the provider's --data-dir"
        )


class TransientError(BfxError):
    """A failure that may pass: retry with backoff."""


class StrategyError(BfxError):
    """User strategy code failed; the strategy is disabled, the service keeps running."""


class RiskViolation(BfxError):
    """An action the risk governor refuses."""
