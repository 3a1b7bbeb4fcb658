"""Outbound webhooks: chosen bus events POSTed as signed JSON to the URLs the operator configured.

Each target names a URL and the event type globs it wants. The body is the event envelope, exactly
as it travels on the bus; the header `X-Bfx-Signature: sha256=<hex>` is the HMAC-SHA256 of the body
under the target's secret (or the shared one), so a receiver can check who sent it with `verify`.

Delivery is at-least-once per target and in order: one reader tails the bus and never waits on a
receiver; each target has a bounded queue and one worker. A delivery that fails (connection error,
timeout, 408, 429 or 5xx) is retried with exponential backoff up to `attempts` times; another 4xx is
not retried. What could not be delivered, or did not fit in a full queue, or was still queued at
shutdown, is written as one JSON line to the dead-letter file (`<home>/webhooks-dead.jsonl`) with
the URL, the error, the number of attempts and the whole event, so it can be inspected and resent.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx

from barfinex_cli import backoff
from barfinex_cli.bus.base import Bus, Delivery, matches
from barfinex_cli.bus.tail import from_now, tail_forever
from barfinex_cli.contracts.codec import encode
from barfinex_cli.runtime.config import WebhooksConfig, WebhookTarget

log = logging.getLogger("bfx.provider.webhooks")

DEAD_LETTER_FILE = "webhooks-dead.jsonl"
SIGNATURE_HEADER = "X-Bfx-Signature"
_RETRYABLE = {408, 429}


def sign(secret: bytes, body: bytes) -> str:
    """Return the `X-Bfx-Signature` value of a body: `sha256=<hex HMAC-SHA256>`."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def verify(secret: bytes, body: bytes, signature: str | None) -> bool:
    """Tell, in constant time, whether `signature` is the header value `sign` gives for `body`."""
    return signature is not None and hmac.compare_digest(sign(secret, body), signature)


@dataclass(slots=True, frozen=True)
class _Job:
    event_id: str
    event_type: str
    body: bytes


class WebhookSender:
    """Tail the bus and deliver matching events to every configured target."""

    def __init__(
        self,
        bus: Bus,
        config: WebhooksConfig,
        dead_letter_path: Path,
        *,
        client: httpx.AsyncClient | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.bus = bus
        self.config = config
        self.dead_letter_path = dead_letter_path
        self.ready = asyncio.Event()
        """Set once the sender reads the bus: events published after this are delivered."""
        self.counts = {"delivered": 0, "retried": 0, "dead_lettered": 0}
        self._client = client
        self._sleep = sleep
        self._queues = [asyncio.Queue[_Job](config.queue_size) for _ in config.targets]
        self._current: list[_Job | None] = [None] * len(config.targets)

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until `stop` is set, then drain for up to `drain_s` and dead-letter the rest."""
        since = from_now()  # read from before the workers start: nothing published is missed
        patterns = sorted({p for t in self.config.targets for p in t.types})
        client = self._client or httpx.AsyncClient(timeout=self.config.timeout_s)
        reader = asyncio.create_task(self._read(patterns, since))
        workers = [
            asyncio.create_task(self._work(i, client)) for i in range(len(self.config.targets))
        ]
        self.ready.set()
        try:
            await stop.wait()
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            drained = asyncio.gather(*(q.join() for q in self._queues))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(drained, self.config.drain_s)
            for worker in workers:
                worker.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            self._dead_letter_leftovers()
            if self._client is None:
                await client.aclose()

    async def _read(self, patterns: list[str], since: str) -> None:
        if not patterns:
            return
        async for delivery in tail_forever(self.bus, patterns, since=since, block_ms=500):
            self._enqueue(delivery)

    def _enqueue(self, delivery: Delivery) -> None:
        job: _Job | None = None
        for i, target in enumerate(self.config.targets):
            if not matches(delivery.type, target.types):
                continue
            job = job or _job(delivery)
            try:
                self._queues[i].put_nowait(job)
            except asyncio.QueueFull:
                self._dead_letter(target, job, 0, f"queue full ({self.config.queue_size})")

    async def _work(self, index: int, client: httpx.AsyncClient) -> None:
        queue = self._queues[index]
        target = self.config.targets[index]
        while True:
            job = await queue.get()
            self._current[index] = job
            try:
                await self._deliver(client, target, job)
            except asyncio.CancelledError:
                queue.task_done()  # `_current` keeps the job: shutdown dead-letters it
                raise
            except Exception as exc:  # a bug here must not stop the worker or lose the event
                log.exception("webhook worker failed", extra={"url": str(target.url)})
                self._dead_letter(target, job, 0, f"internal error: {exc!r}")
            self._current[index] = None
            queue.task_done()

    async def _deliver(self, client: httpx.AsyncClient, target: WebhookTarget, job: _Job) -> None:
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "bfx-webhooks",
            SIGNATURE_HEADER: sign(self.config.secret_of(target), job.body),
            "X-Bfx-Event": job.event_type,
            "X-Bfx-Delivery": job.event_id,
        }
        error = ""
        attempt = 0
        for attempt in range(1, self.config.attempts + 1):
            try:
                response = await client.post(str(target.url), content=job.body, headers=headers)
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}".rstrip(": ")
            else:
                if response.is_success:
                    self.counts["delivered"] += 1
                    return
                error = f"HTTP {response.status_code}"
                if response.is_client_error and response.status_code not in _RETRYABLE:
                    break  # the receiver refuses this body; sending it again will not help
            if attempt < self.config.attempts:
                self.counts["retried"] += 1
                wait = backoff.delay(attempt, self.config.backoff_s, self.config.max_backoff_s)
                await self._sleep(wait)
        self._dead_letter(target, job, attempt, error)

    def _dead_letter_leftovers(self) -> None:
        for index, target in enumerate(self.config.targets):
            current = self._current[index]
            if current is not None:
                self._dead_letter(target, current, 0, "shutdown while delivering")
            queue = self._queues[index]
            while not queue.empty():
                self._dead_letter(target, queue.get_nowait(), 0, "shutdown before delivery")

    def _dead_letter(self, target: WebhookTarget, job: _Job, attempts: int, error: str) -> None:
        self.counts["dead_lettered"] += 1
        record = {
            "ts": datetime.now(UTC).isoformat(),
            "url": str(target.url),
            "event_id": job.event_id,
            "type": job.event_type,
            "attempts": attempts,
            "error": error,
            "event": json.loads(job.body),
        }
        log.warning(
            "webhook not delivered",
            extra={"url": str(target.url), "event_id": job.event_id, "error": error},
        )
        self.dead_letter_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        # owner-only like the stores (store.private): the events may carry balances and orders
        fd = os.open(self.dead_letter_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        with os.fdopen(fd, "a") as fh:
            fh.write(json.dumps(record, separators=(",", ":")) + "\n")


def _job(delivery: Delivery) -> _Job:
    body = delivery.raw if delivery.raw is not None else encode(delivery.event)
    return _Job(delivery.event.id, delivery.type, body)
