"""A detector's /health says degraded while its bus waits out a Redis outage, and what was lost.

What a group lost to the stream cap is listed under `bus_trimmed` (the advisor's and the
inspector's /health say it the same way, from the same `Bus.trimmed`).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from barfinex_cli.bus.memory import MemoryBus
from barfinex_cli.bus.redis_streams import RedisStreamsBus
from barfinex_cli.detector.loader import load_strategy
from barfinex_cli.detector.service import Detector
from barfinex_cli.runtime.client import GatewayClient
from barfinex_cli.runtime.clock import SimClock
from barfinex_cli.runtime.config import DetectorConfig
from barfinex_cli.runtime.health import render_metrics
from bus.redis_faults import RedisServer
from bus.test_reconnect import candle, until

STRATEGY = Path(__file__).resolve().parents[2] / "strategies" / "trend_ema_adx.py"


async def test_health_is_degraded_while_redis_is_away_and_ok_again_after(tmp_path: Path) -> None:
    server = RedisServer(tmp_path, persistent=False)
    await server.start()
    bus = RedisStreamsBus(server.url, "detector-health", outage_s=30)
    async with GatewayClient("http://127.0.0.1:1", None) as client:
        detector = Detector(
            DetectorConfig(strategy=STRATEGY), strategy=load_strategy(STRATEGY), bus=bus,
            clock=SimClock(), client=client,
        )  # fmt: skip
        try:
            assert detector.status()["status"] == "ok"
            server.stop(kill=True)
            held = asyncio.create_task(bus.publish(candle(1)))
            await until(lambda: bus.degraded)
            health = detector.status()
            assert (health["status"], health["bus"]) == ("degraded", "waiting for Redis")
            await server.start()
            await asyncio.wait_for(held, 20)
            assert detector.status()["status"] == "ok"
        finally:
            await bus.close()
            server.stop()


async def test_health_lists_the_entries_a_group_on_its_bus_lost_to_the_stream_cap() -> None:
    bus = MemoryBus("detector-trimmed", maxlen=50)
    async with GatewayClient("http://127.0.0.1:1", None) as client:
        detector = Detector(
            DetectorConfig(strategy=STRATEGY), strategy=load_strategy(STRATEGY), bus=bus,
            clock=SimClock(), client=client,
        )  # fmt: skip
        assert detector.status()["bus_trimmed"] == []
        await bus.publish(candle(0))
        slow = await bus.consumer("slow", "c1", ["market.candle"], start="$")
        await bus.publish_many([candle(i) for i in range(1, 201)])  # four times the cap
        kept = len(bus._streams["market.candle"].entries)
        assert len(await slow.fetch(1000, 50)) == kept
        assert detector.status()["bus_trimmed"] == [
            {"group": "slow", "type": "market.candle", "entries": 200 - kept, "uncounted": 0}
        ]
        metrics, _ = render_metrics(detector.prometheus())
        assert (
            f'bfx_bus_trimmed_total{{group="slow",type="market.candle"}} {200 - kept}.0'
            in metrics.decode()
        )
        await bus.close()
