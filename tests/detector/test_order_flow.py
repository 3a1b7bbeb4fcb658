"""Order flow live: candles the provider builds from sided trades carry taker buy/sell volume,
and a flow rule fires on them exactly as a scan of the stored series says it would."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime
from pathlib import Path

from barfinex_cli.bus.redis_streams import RedisStreamsBus
from barfinex_cli.detector.engine import VectorEngine
from barfinex_cli.detector.loader import load_strategy
from barfinex_cli.detector.service import DetectorOptions
from barfinex_cli.provider.service import ProviderOptions
from barfinex_cli.runtime.settings import load_settings
from barfinex_cli.store.audit import AuditStore
from barfinex_cli.store.market import MarketStore, SeriesKey
from conftest import REDIS_URL, Kernels
from polling import until

STRATEGY = """
from barfinex_cli.detector import indicators as ta
from barfinex_cli.detector.strategy import Rule, Strategy

strategy = Strategy(
    name="flow_test", symbols=["BTC/USDT"], timeframe="1m", threshold=1.0,
    rules=[
        Rule("buyers", ta.flow_imbalance() > 0.3, weight=1.0, direction="long"),
        Rule("sellers", ta.flow_imbalance() < -0.3, weight=1.0, direction="short"),
    ],
)
"""
T0 = 1_704_067_200_000


def _trades(path: Path, minutes: int) -> None:
    rnd = random.Random(5)
    lines = ["timestamp,price,amount,side"]
    price = 100.0
    for minute in range(minutes):
        for k in range(rnd.randint(3, 8)):
            price = round(price * (1 + rnd.gauss(0, 0.001)), 2)
            side = rnd.choice(["buy", "sell"])
            lines.append(
                f"{T0 + minute * 60_000 + k * 5_000},{price},{rnd.uniform(0.1, 2):.4f},{side}"
            )
        # a final trade late in the minute, so every minute closes on the next one's trades
    path.write_text("\n".join(lines) + "\n")


async def test_flow_rules_fire_live_on_candles_built_from_sided_trades(
    tmp_path: Path, namespace: str, kernels: Kernels
) -> None:
    data = tmp_path / "BTCUSDT-trades.csv"
    _trades(data, 300)
    strategy = tmp_path / "flow.py"
    strategy.write_text(STRATEGY)
    settings = load_settings(home=tmp_path, namespace=namespace, redis_url=REDIS_URL, token="t")
    provider = await (await kernels(settings)).provider(ProviderOptions(
        replay=data, symbols=("BTC/USDT",), timeframes=("1m",), speed=3000, history=60, port=0,
        exit_at_end=True,
    ))  # fmt: skip
    provider_stop = asyncio.Event()
    provider_task = asyncio.create_task(provider.run(provider_stop))
    await asyncio.wait_for(provider.ready.wait(), 30)
    detector = await (await kernels(settings)).detector(DetectorOptions(
        strategy=strategy, instance="flow-1", provider_url=provider.gateway_url, port=0,
        join_registry=False,
    ))  # fmt: skip
    stop = asyncio.Event()
    detector_task = asyncio.create_task(detector.run(stop))
    try:
        await asyncio.wait_for(detector.ready.wait(), 30)
        rt = provider.runtime
        assert rt is not None
        await until(
            lambda: rt.pipeline.candles > 110 and detector.signals > 5,
            60, what="over 100 live candles and 5 signals",
        )  # fmt: skip
    finally:
        stop.set()
        await asyncio.wait_for(detector_task, 30)
        provider_stop.set()
        await asyncio.wait_for(provider_task, 60)
        bus = RedisStreamsBus(REDIS_URL, namespace)
        await bus.delete_namespace()
        await bus.close()

    key = SeriesKey(provider.runtime.connector.exchange, "BTC/USDT", "1m")  # type: ignore[union-attr]
    with MarketStore(settings.market_path) as market:
        rows = market.candles(key)
        frame = market.candles_frame(key)
    flowing = [r for r in rows if r.buy_volume is not None]
    assert len(flowing) > 100  # the live part, built from the trades with their sides
    assert all(abs(r.buy_volume + r.sell_volume - r.volume) < 1e-9 for r in flowing)  # type: ignore[operator]
    with AuditStore(settings.audit_path) as audit:
        live = audit.query(["detector.signal"], limit=None)
    assert len(live) > 5
    scanned = VectorEngine(load_strategy(strategy)).evaluate(frame, "BTC/USDT")
    first, last = live[0].payload.candle_time, live[-1].payload.candle_time
    want = [(datetime.fromtimestamp(r.open_ms / 1000, UTC), r.direction, r.score)
            for r in scanned
            if first <= datetime.fromtimestamp(r.open_ms / 1000, UTC) <= last]  # fmt: skip
    got = [(e.payload.candle_time, e.payload.direction, e.payload.score) for e in live]
    assert got == want
