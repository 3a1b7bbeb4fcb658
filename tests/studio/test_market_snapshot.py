"""The Market screen's looks, pinned: a snapshot at 120x36 with fixed candles and overlays.

The candles are a seeded walk stored in a real `MarketStore` behind the real gateway; the
gateway runs in a thread of its own (pytest-textual-snapshot drives the app synchronously, in
its own event loop). The app does not connect its live workers (`connect=False`): the state it
draws (the series, one signal, one fill, an open position with its stop and take-profit) is
filled in before the screenshot, and the header's wall clock is fixed. Refresh the picture with
`pytest tests/studio/test_market_snapshot.py --snapshot-update` after a deliberate change,
and look at it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot

from barfinex_cli.bus.memory import MemoryBus
from barfinex_cli.contracts.detector import SignalGenerated
from barfinex_cli.contracts.envelope import make_event
from barfinex_cli.contracts.orders import Fill, OrderFilled, OrderState, PositionChanged
from barfinex_cli.contracts.rest import SeriesInfo
from barfinex_cli.provider.gateway.app import create_app
from barfinex_cli.store.market import CandleRow, SeriesKey
from barfinex_cli.studio.app import StudioApp
from barfinex_cli.studio.header import StudioHeader
from barfinex_cli.studio.screens.market import MarketScreen
from barfinex_cli.studio.widgets.candles import CandleChart
from provider.gateway_server import TOKEN, make_context, serving
from studio.chart_data import walk
from studio.stack import until

BARS = walk(240)
WALL = datetime(2026, 11, 23, 21, 0, 5, tzinfo=UTC)


@pytest.fixture
def gateway_url(tmp_path: Path) -> Iterator[str]:
    """Serve the real gateway over a store holding `BARS` from a thread; yield its URL."""
    ready: list[str] = []
    started, stop = threading.Event(), threading.Event()

    async def main() -> None:
        ctx = make_context(tmp_path, MemoryBus("snap"))
        rows = [CandleRow(int(b.time.timestamp() * 1000), b.open, b.high, b.low, b.close,
                          b.volume, 10) for b in BARS]  # fmt: skip
        ctx.market.upsert_candles(SeriesKey("binance", "BTC/USDT", "15m"), rows)
        try:
            async with serving(create_app(ctx), ready_path="/api/v1/health") as base:
                ready.append(base)
                started.set()
                await asyncio.to_thread(stop.wait)
        finally:
            ctx.market.close()
            started.set()

    thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
    thread.start()
    started.wait(30)
    assert ready, "the gateway thread did not start"
    yield ready[0]
    stop.set()
    thread.join(30)


def _fill_state(app: StudioApp) -> None:
    state = app.state
    last = BARS[-1]
    state.series = [SeriesInfo(exchange="binance", symbol="BTC/USDT", timeframe="15m",
                               rows=len(BARS), first_ms=0, last_ms=0)]  # fmt: skip
    state.versions["apps"] += 1
    signal = SignalGenerated(
        strategy="demo", instance="demo-1", exchange="binance", symbol="BTC/USDT",
        timeframe="15m", candle_time=BARS[-30].time, direction="long", score=2.0,
        threshold=1.5, attribution=[],
    )  # fmt: skip
    order = OrderState(
        client_order_id="o-1", account="paper", exchange="paper", symbol="BTC/USDT",
        side="buy", type="market", amount=Decimal("0.1"), filled=Decimal("0.1"),
        average_price=Decimal(str(round(BARS[-29].open, 2))), status="filled",
    )  # fmt: skip
    fill = Fill(price=order.average_price or Decimal(0), amount=Decimal("0.1"),
                fee=Decimal("0.01"), fee_currency="USDT", time=BARS[-29].time)  # fmt: skip
    position = PositionChanged(
        account="paper", exchange="paper", symbol="BTC/USDT", side="long", size=Decimal("0.1"),
        entry_price=fill.price, unrealised_pnl=Decimal(0), realised_pnl=Decimal(0),
        pnl_currency="USDT",
    )  # fmt: skip
    for payload in (signal, OrderFilled(order=order, fill=fill), position):
        state.apply(make_event(payload, source="test"))
    protective: list[dict[str, Any]] = [
        {"client_order_id": "o-sl", "type": "stop_market", "stop_price": round(last.low * 0.99, 2)},
        {"client_order_id": "o-tp", "type": "limit", "price": round(last.high * 1.01, 2)},
    ]
    for extra in protective:
        state.orders[extra["client_order_id"]] = OrderState.model_validate({
            "account": "paper", "exchange": "paper", "symbol": "BTC/USDT", "side": "sell",
            "amount": "0.1", "reduce_only": True, "status": "open",
            **{k: str(v) for k, v in extra.items()},
        })  # fmt: skip
    state.versions["orders"] += 1


def test_the_market_screen_looks_as_pinned(snap_compare: Any, gateway_url: str) -> None:
    app = StudioApp(gateway_url, TOKEN, connect=False, clock=lambda: WALL)

    async def run_before(pilot: Pilot[None]) -> None:
        screen = app.screen
        assert isinstance(screen, MarketScreen)
        _fill_state(app)
        screen.state_changed(())
        chart = screen.query_one(CandleChart)
        await until(lambda: chart.series is not None and len(chart.series.bars) == len(BARS))
        screen.query_one(StudioHeader).show(app.state, WALL, "market")
        await pilot.pause()

    assert snap_compare(app, terminal_size=(120, 36), run_before=run_before)
