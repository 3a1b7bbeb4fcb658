"""The provider on a live exchange: real ccxt against a Binance-shaped server on loopback."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from barfinex_cli.provider.service import ProviderOptions
from barfinex_cli.runtime.settings import load_settings
from barfinex_cli.store.audit import AuditStore
from barfinex_cli.store.market import MarketStore, SeriesKey
from conftest import Kernels
from provider.fake_exchange import FakeBinance, expected, kline_message, trade_message

MINUTE = 60_000


@pytest.fixture
async def fake(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeBinance]:
    server = FakeBinance()
    await server.start()
    for name, value in server.env().items():
        monkeypatch.setenv(name, value)
    yield server
    await server.stop()


async def test_live_candles_from_the_exchange_websocket_are_stored_published_and_recorded(
    fake: FakeBinance, tmp_path: Path, namespace: str, kernels: Kernels
) -> None:
    t0 = int(time.time() * 1000) // MINUTE * MINUTE - 10 * MINUTE
    fake.ws_scripts["btcusdt@kline_1m"] = [
        [kline_message("BTCUSDT", t0 + i * MINUTE, final=True) for i in range(5)]
        + [kline_message("BTCUSDT", t0 + 5 * MINUTE, final=False)]
    ]
    now = int(time.time() * 1000)
    fake.ws_scripts["btcusdt@trade"] = [
        [trade_message("BTCUSDT", 1, "60000.10", "0.5", now - 40, buyer_is_maker=True)]
    ]
    settings = load_settings(home=tmp_path, namespace=namespace, bus="memory", token="t0ken")
    options = ProviderOptions(
        exchange="binance", symbols=("BTC/USDT",), timeframes=("1m", "5m"), port=0,
        health_interval_s=0.2,
    )  # fmt: skip
    provider = await (await kernels(settings)).provider(options)
    stop = asyncio.Event()
    task = asyncio.create_task(provider.run(stop))
    await asyncio.wait_for(provider.ready.wait(), 30)
    assert provider.runtime is not None
    for _ in range(200):
        if provider.runtime.candles >= 5:
            break
        await asyncio.sleep(0.05)
    stop.set()
    await asyncio.wait_for(task, 30)

    key = SeriesKey("binance", "BTC/USDT", "1m")
    with MarketStore(settings.market_path) as market:
        rows = market.candles(key)
    assert [r.open_ms for r in rows] == [t0 + i * MINUTE for i in range(5)]
    first = expected("BTCUSDT", t0)
    assert (rows[0].open, rows[0].high, rows[0].low, rows[0].close) == first[1:5]
    with AuditStore(settings.audit_path) as audit:
        counts = dict(audit.types())
        health = audit.query(["provider.health"], limit=None)
    assert counts["market.candle"] >= 5
    assert counts["market.trade"] == 1
    assert health and health[-1].payload.connected in (True, False)
    assert health[0].payload.exchange == "binance"
