"""The studio's live feed: the provider's `/ws`, batched, reconnecting, never trusting a frame.

`LiveFeed.run` connects, subscribes to the channels the screens draw, and hands events to
`on_batch` in batches (at most `batch_s` old or `max_batch` long), so a burst of events costs
the UI one message per batch, not one per event. A frame that is not a valid envelope is logged
and skipped (`skipped` counts them). When the socket drops, `on_status` hears `disconnected`
with the wait before the next try, and the feed reconnects with capped, jittered backoff
(`backoff.delay`); a refused token (401/403 at the handshake) is `refused` and ends the run,
since trying the same token again cannot help.

Headless: no Textual (the app runs this in a worker and turns the callbacks into messages).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from barfinex_cli.backoff import delay
from barfinex_cli.contracts.codec import MalformedEvent, decode
from barfinex_cli.contracts.envelope import Envelope
from barfinex_cli.runtime.logs import mask_websocket_credentials
from barfinex_cli.studio.state import Connection

log = logging.getLogger("bfx.studio.feed")

CHANNELS: tuple[str, ...] = (
    "market.candle", "market.gap", "detector.signal", "advisor.decision",
    "advisor.decision.rejected", "inspector.*", "order.*", "position.changed",
    "provider.health", "provider.incident.*", "registry.*",
)  # fmt: skip
"""What the screens draw; trades and books stay off the socket (the studio needs neither)."""


def ws_url(base_url: str) -> str:
    """Return the `/ws` address of a gateway at `base_url` (http -> ws, https -> wss)."""
    base = base_url.rstrip("/")
    if base.startswith("https://"):
        return "wss://" + base.removeprefix("https://") + "/ws"
    return "ws://" + base.removeprefix("http://") + "/ws"


class TokenRejected(Exception):
    """The gateway refused the token at the WebSocket handshake."""


class LiveFeed:
    """One reconnecting subscription to the gateway's `/ws`."""

    def __init__(
        self,
        base_url: str,
        token: str | None,
        on_batch: Callable[[list[Envelope[Any]]], object],
        on_status: Callable[[Connection], object],
        *,
        channels: Sequence[str] = CHANNELS,
        batch_s: float = 0.05,
        max_batch: int = 500,
        backoff_s: float = 0.5,
        max_backoff_s: float = 10.0,
    ) -> None:
        self.url = ws_url(base_url)
        self.token = token
        self.on_batch = on_batch
        self.on_status = on_status
        self.channels = list(channels)
        self.batch_s = batch_s
        self.max_batch = max_batch
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.skipped = 0
        self.received = 0
        self.connects = 0

    async def run(self) -> None:
        """Stream until cancelled; reconnect after every drop; return if the token is refused."""
        failures = 0
        while True:
            try:
                await self._session()
                reason = "the provider closed the socket"
                failures = 0
            except TokenRejected:
                refused = f"the provider at {self.url} refused the token"
                self.on_status(Connection("refused", refused))
                return
            except (OSError, ConnectionClosed, InvalidStatus, TimeoutError) as exc:
                reason = str(exc) or type(exc).__name__
            failures += 1
            wait = delay(failures, self.backoff_s, self.max_backoff_s)
            log.warning("studio feed: %s; retrying in %.1fs", reason, wait)
            self.on_status(Connection("disconnected", reason, wait))
            await asyncio.sleep(wait)
            self.on_status(Connection("connecting", f"reconnecting to {self.url}"))

    async def _session(self) -> None:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else None
        mask_websocket_credentials()  # websockets logs each header at DEBUG, the token among them
        try:
            ws = await connect(self.url, additional_headers=headers, open_timeout=5)
        except InvalidStatus as exc:
            if exc.response.status_code in (401, 403):
                raise TokenRejected from None
            raise
        async with ws:
            await ws.send(json.dumps({"subscribe": self.channels}))
            self.connects += 1
            self.on_status(Connection("connected", self.url))
            await self._pump(ws)

    async def _pump(self, ws: ClientConnection) -> None:
        pending: list[Envelope[Any]] = []
        first_at = 0.0
        while True:
            try:
                if pending:
                    left = self.batch_s - (time.monotonic() - first_at)
                    # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancel
                    async with asyncio.timeout(max(left, 0.0)):
                        frame = await ws.recv()
                else:
                    frame = await ws.recv()
            except TimeoutError:
                frame = None
            except ConnectionClosed:
                if pending:
                    self.on_batch(pending)
                raise
            if frame is not None:
                event = self._parse(frame)
                if event is not None:
                    if not pending:
                        first_at = time.monotonic()
                    pending.append(event)
            if pending and (
                frame is None
                or len(pending) >= self.max_batch
                or time.monotonic() - first_at >= self.batch_s
            ):
                self.on_batch(pending)
                pending = []

    def _parse(self, frame: str | bytes) -> Envelope[Any] | None:
        """Return the envelope in a frame; None for control frames and for malformed ones."""
        text = frame.decode(errors="replace") if isinstance(frame, bytes) else frame
        try:
            head = json.loads(text)
        except ValueError:
            head = None
        if isinstance(head, dict) and "type" not in head:
            if "error" in head:
                log.warning("studio feed: the provider says %s", head["error"])
            return None  # {"subscribed": ...}, {"pong": ...}
        try:
            event = decode(text)
        except MalformedEvent as exc:
            self.skipped += 1
            log.warning("studio feed: skipped a malformed event (%s): %.120s", exc.reason, text)
            return None
        self.received += 1
        return event
