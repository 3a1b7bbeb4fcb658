"""`Registration` over the shared `GatewayClient`, against a real gateway on loopback.

A heartbeat registers first; after the provider forgets the app (a restart) it registers again;
a provider that does not answer is retried and never holds up the role or its shutdown.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from barfinex_cli.bus.memory import MemoryBus
from barfinex_cli.provider.gateway.app import bind, create_app
from barfinex_cli.provider.gateway.context import GatewayContext
from barfinex_cli.provider.gateway.registry import AppRegistry
from barfinex_cli.runtime.client import GatewayClient
from barfinex_cli.runtime.registration import Registration
from provider.gateway_server import TOKEN, make_context, serving


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[GatewayContext, GatewayClient]]:
    ctx = make_context(tmp_path, MemoryBus("reg"))
    try:
        async with (
            serving(create_app(ctx), ready_path="/api/v1/health") as base,
            GatewayClient(base, TOKEN, retries=0) as client,
        ):
            yield ctx, client
    finally:
        ctx.market.close()


async def test_a_heartbeat_registers_first_and_then_beats(
    served: tuple[GatewayContext, GatewayClient],
) -> None:
    ctx, client = served
    registration = Registration(client, name="det-1", role="detector", url="http://127.0.0.1:9")
    assert await registration.heartbeat() is True
    assert registration.app_id is not None
    (app,) = ctx.registry.apps()
    assert (app.id, app.name, app.url) == (registration.app_id, "det-1", "http://127.0.0.1:9")
    assert await registration.heartbeat() is True
    assert registration.failures == 0


async def test_after_a_provider_restart_the_404_registers_again(
    served: tuple[GatewayContext, GatewayClient],
) -> None:
    ctx, client = served
    registration = Registration(client, name="det-1", role="detector")
    assert await registration.heartbeat() is True
    first_id = registration.app_id
    ctx.registry = AppRegistry()  # what a restarted provider has: an empty registry
    assert await registration.heartbeat() is True
    assert registration.app_id != first_id
    assert [a.name for a in ctx.registry.apps()] == ["det-1"]


async def test_a_refused_token_is_a_failure_not_a_crash(
    served: tuple[GatewayContext, GatewayClient],
) -> None:
    _, client = served
    async with GatewayClient(client.base_url, "wrong", retries=0) as wrong:
        registration = Registration(wrong, name="det-1", role="detector")
        assert await registration.heartbeat() is False
        assert await registration.heartbeat() is False
    assert registration.failures == 2
    assert registration.app_id is None


class _Counting(httpx.AsyncHTTPTransport):
    def __init__(self) -> None:
        super().__init__()
        self.sent = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.sent += 1
        return await super().handle_async_request(request)


async def test_an_unreachable_provider_never_holds_up_stopping() -> None:
    sock = bind("127.0.0.1", 0)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    sock.close()
    transport = _Counting()
    async with GatewayClient(
        url, TOKEN, retries=1000, transport=transport, backoff_s=1.0, max_backoff_s=5.0
    ) as client:
        registration = Registration(client, name="det-1", role="detector", interval_s=0.05)
        stop = asyncio.Event()
        running = asyncio.create_task(registration.run(stop))
        for _ in range(500):
            if transport.sent >= 1:
                break
            await asyncio.sleep(0.01)
        assert transport.sent >= 1 and not running.done()  # a register is retrying right now
        stop.set()
        await asyncio.wait_for(running, 2)  # the retries in flight do not delay the stop
    assert registration.app_id is None
