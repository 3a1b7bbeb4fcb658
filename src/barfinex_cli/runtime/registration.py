"""Register a role with the provider's app registry and keep it alive with heartbeats.

The registry lives in the provider's memory, so a heartbeat answered 404 (the provider
restarted) registers again. A provider that does not answer, or refuses, is logged once per
outage and retried at the next interval; the role's own work never waits on it, and stopping
never waits for a heartbeat in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Sequence
from typing import TypeVar

from barfinex_cli.contracts.apps import Role
from barfinex_cli.contracts.rest import AppTool
from barfinex_cli.errors import BfxError, NotFound
from barfinex_cli.runtime.client import GatewayClient

log = logging.getLogger("bfx.registration")

T = TypeVar("T")


class Registration:
    """One role's membership in the provider's registry, over the process's gateway client."""

    def __init__(
        self,
        client: GatewayClient,
        *,
        name: str,
        role: Role,
        url: str | None = None,
        interval_s: float = 5.0,
        tools: Sequence[AppTool] = (),
    ) -> None:
        """Prepare the membership; nothing is sent until `register`, `heartbeat` or `run`.

        Args:
            client: The process's gateway client; its owner closes it.
            name: The app's unique name in the registry.
            role: The app's role.
            url: Where the app serves HTTP, if it does.
            interval_s: Seconds between heartbeats.
            tools: Routes of the app's API offered to assistants through the gateway's `/mcp`.
        """
        self.client = client
        self.name = name
        self.role = role
        self.url = url
        self.interval_s = interval_s
        self.tools = tuple(tools)
        self.app_id: str | None = None
        self.failures = 0

    async def register(self) -> str | None:
        """Register; return the app id, or None if the provider did not take it."""
        try:
            info = await self.client.register_app(
                self.name, self.role, url=self.url, tools=self.tools
            )
        except BfxError as exc:
            self._failed("cannot register with the provider", exc)
            return None
        self.app_id = info.id
        self.failures = 0
        return self.app_id

    async def heartbeat(self) -> bool:
        """Send one heartbeat, registering first (or again after a provider restart)."""
        if self.app_id is None and await self.register() is None:
            return False
        assert self.app_id is not None
        try:
            await self.client.heartbeat(self.app_id)
        except NotFound:  # the provider restarted and forgot us
            self.app_id = None
            return await self.register() is not None
        except BfxError as exc:
            self._failed("heartbeat failed", exc)
            return False
        self.failures = 0
        return True

    async def run(self, stop: asyncio.Event) -> None:
        """Heartbeat every `interval_s` until `stop` is set."""
        while not stop.is_set():
            await _unless_stopped(stop, self.heartbeat())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.interval_s)

    def _failed(self, what: str, exc: BfxError) -> None:
        self.failures += 1
        if self.failures == 1:  # once per outage, not once per interval
            log.warning(what, extra={"error": str(exc), "provider": self.client.base_url})


async def _unless_stopped(stop: asyncio.Event, work: Awaitable[T]) -> None:
    """Run `work` until it ends or `stop` is set, whichever comes first."""
    task = asyncio.ensure_future(work)
    stopper = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for pending in (task, stopper):
            pending.cancel()
        await asyncio.gather(task, stopper, return_exceptions=True)
    if task.done() and not task.cancelled() and task.exception() is not None:
        # a bug, not an outage: say so loudly, but the role keeps running
        log.error("registration failed unexpectedly", exc_info=task.exception())
