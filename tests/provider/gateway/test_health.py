"""The gateway's health says `degraded` while the bus waits out a Redis outage."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from barfinex_cli.bus.redis_streams import RedisStreamsBus
from barfinex_cli.provider.gateway.app import create_app
from bus.redis_faults import RedisServer
from bus.test_reconnect import candle, until
from provider.gateway_server import make_context


async def test_health_is_degraded_while_redis_is_away_and_ok_once_it_answers(
    tmp_path: Path,
) -> None:
    server = RedisServer(tmp_path, persistent=False)
    await server.start()
    bus = RedisStreamsBus(server.url, "health", outage_s=30)
    ctx = make_context(tmp_path, bus)
    transport = httpx.ASGITransport(app=create_app(ctx))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            assert (await client.get("/api/v1/health")).json()["status"] == "ok"
            server.stop(kill=True)
            held = asyncio.create_task(bus.publish(candle(1)))  # waits for Redis to return
            await until(lambda: bus.degraded)
            assert (await client.get("/api/v1/health")).json()["status"] == "degraded"
            await server.start()
            await asyncio.wait_for(held, 20)
            assert (await client.get("/api/v1/health")).json()["status"] == "ok"
    finally:
        ctx.market.close()
        await bus.close()
        server.stop()
