"""Alerts an operator should see: `inspector.alert` on the bus, and Telegram when configured.

Telegram is used when `BFX_TELEGRAM_TOKEN` and `BFX_TELEGRAM_CHAT` are set: each alert is one
`sendMessage` call to the Bot API (`{base}/bot{token}/sendMessage`, the base configurable so a
self-hosted Bot API server, or a test's loopback server, can stand in). A failed delivery is
logged and counted, never raised: an alert must not take the inspector down. The token is never
logged.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable

import httpx

from barfinex_cli.contracts.inspector import AlertRaised, Severity

log = logging.getLogger("bfx.inspector")

Publish = Callable[[AlertRaised], Awaitable[None]]


class Telegram:
    """Send text to one chat through the Telegram Bot API."""

    def __init__(
        self, token: str, chat: str, *, base_url: str = "https://api.telegram.org",
        timeout_s: float = 5.0,
    ) -> None:  # fmt: skip
        self.chat = chat
        self._url = f"{base_url.rstrip('/')}/bot{token}/sendMessage"
        self._http = httpx.AsyncClient(timeout=timeout_s)
        self._redact = _Redact(token)  # httpx logs each request's URL, which holds the token
        logging.getLogger("httpx").addFilter(self._redact)
        self.sent = 0
        self.failed = 0

    @classmethod
    def from_env(cls, base_url: str) -> Telegram | None:
        """Return a sender if BFX_TELEGRAM_TOKEN and BFX_TELEGRAM_CHAT are both set, else None."""
        token = os.environ.get("BFX_TELEGRAM_TOKEN", "").strip()
        chat = os.environ.get("BFX_TELEGRAM_CHAT", "").strip()
        return cls(token, chat, base_url=base_url) if token and chat else None

    async def send(self, text: str) -> bool:
        """Send one message; return whether the Bot API took it."""
        try:
            response = await self._http.post(self._url, json={"chat_id": self.chat, "text": text})
            ok = response.is_success and bool(response.json().get("ok", False))
        except (httpx.HTTPError, ValueError) as exc:
            log.warning("telegram alert not delivered", extra={"error": type(exc).__name__})
            ok = False
        if ok:
            self.sent += 1
        else:
            self.failed += 1
        return ok

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self._http.aclose()
        logging.getLogger("httpx").removeFilter(self._redact)


class _Redact(logging.Filter):
    """Replace a secret in log records with `***` (the Bot API puts the token in the URL)."""

    def __init__(self, secret: str) -> None:
        super().__init__()
        self.secret = secret

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if self.secret in message:
            record.msg, record.args = message.replace(self.secret, "***"), ()
        return True


class Alerts:
    """Raise alerts on the bus (through `publish`) and to Telegram if one is configured."""

    def __init__(self, publish: Publish, telegram: Telegram | None = None) -> None:
        self._publish = publish
        self.telegram = telegram
        self.raised = 0

    async def raise_(
        self, severity: Severity, message: str, *, policy: str | None = None,
        subject: str | None = None,
    ) -> AlertRaised:  # fmt: skip
        """Publish an alert, and send it to Telegram when configured; return it."""
        alert = AlertRaised(severity=severity, message=message, policy=policy, subject=subject)
        log.warning("alert", extra={"severity": severity, "alert": message})
        await self._publish(alert)
        self.raised += 1
        if self.telegram is not None:
            await self.telegram.send(f"[bfx {severity}] {message}")
        return alert

    async def aclose(self) -> None:
        """Close the Telegram client, if any."""
        if self.telegram is not None:
            await self.telegram.aclose()
