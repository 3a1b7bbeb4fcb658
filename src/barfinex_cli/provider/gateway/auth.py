"""The gateway's one bearer token: where it comes from, and how every door checks it.

One token guards REST, WebSocket and MCP alike (health and readiness stay open so that probes need
no secret). A request without a token gets 401 and a `WWW-Authenticate: Bearer` challenge; a request
with a wrong token gets 403. Tokens are compared in constant time.

The token is, in order: `settings.token` (from `BFX_TOKEN` or `bfx.toml`), the file
`<home>/token`, or a new random one written to that file with mode 0600. The caller learns through
`on_created` that a token was generated, so it can print it once.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import os
import secrets
import stat
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Literal

from barfinex_cli.errors import ConfigError
from barfinex_cli.runtime.settings import Settings

log = logging.getLogger("bfx.provider.auth")

TOKEN_FILE = "token"
QUERY_PARAM = "token"

Verdict = Literal["ok", "missing", "wrong"]


def token_path(settings: Settings) -> Path:
    """Return the file that holds the generated gateway token."""
    return settings.home / TOKEN_FILE


def ensure_token(
    settings: Settings, *, on_created: Callable[[str, Path], None] | None = None
) -> str:
    """Return the gateway token, generating and saving one if none is configured.

    Args:
        settings: The effective settings; `token` wins, then `<home>/token`.
        on_created: Called with the new token and its file when one was generated, so the caller
            can show it once.

    Raises:
        ConfigError: The token file exists but is empty or unreadable.
    """
    if settings.token is not None and settings.token.get_secret_value():
        return settings.token.get_secret_value()
    path = token_path(settings)
    existing = _read_token(path)
    if existing is not None:
        return existing
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process created it between our read and our create
        raced = _read_token(path)
        if raced is None:
            raise ConfigError(f"token file {path} is empty — delete it or set BFX_TOKEN") from None
        return raced
    with os.fdopen(fd, "w") as fh:
        fh.write(token + "\n")
    if on_created is not None:
        on_created(token, path)
    return token


def _read_token(path: Path) -> str | None:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"token file {path}: cannot read it ({exc.strerror})") from None
    token = text.strip()
    if not token:
        raise ConfigError(f"token file {path} is empty — delete it to generate a new one")
    with contextlib.suppress(OSError):
        if path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            log.warning("token file readable by others; chmod 600 it", extra={"path": str(path)})
    return token


def bearer_from_header(value: str | None) -> str | None:
    """Return the token of an `Authorization: Bearer TOKEN` header value, or None."""
    if not value:
        return None
    scheme, _, credentials = value.partition(" ")
    if scheme.lower() != "bearer" or not credentials.strip():
        return None
    return credentials.strip()


def check(presented: str | None, expected: str) -> Verdict:
    """Compare a presented token with the expected one in constant time."""
    if not presented:
        return "missing"
    if hmac.compare_digest(presented.encode(), expected.encode()):
        return "ok"
    return "wrong"


def check_scope(
    headers: Iterable[tuple[bytes, bytes]], query: dict[str, str], expected: str
) -> Verdict:
    """Check an ASGI request's `Authorization` header, else its `?token=` query parameter."""
    header = next((v.decode("latin-1") for k, v in headers if k == b"authorization"), None)
    presented = bearer_from_header(header)
    if presented is None:
        presented = query.get(QUERY_PARAM) or None
    return check(presented, expected)


def status_of(verdict: Verdict) -> int:
    """Return the HTTP status for a refused verdict: 401 without a token, 403 with a wrong one."""
    return 401 if verdict == "missing" else 403


def reason_of(verdict: Verdict) -> str:
    """Return the one-line message a refused request gets."""
    if verdict == "missing":
        return (
            "missing bearer token: send 'Authorization: Bearer TOKEN' "
            "(the token is BFX_TOKEN or the file <home>/token)"
        )
    return "wrong bearer token"
