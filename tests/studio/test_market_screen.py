"""The Market screen against a real provider replaying on loopback, driven by a Pilot.

The studio app connects to the provider's gateway (REST + /ws) as it would in use: the chart
shows the store's candles, redraws when a live candle arrives on the bus, switches timeframe
from the picker, draws paper fills and the stop / take-profit of an open position, and jumps
to a signal's candle.
"""

from __future__ import annotations

import asyncio
import re
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

from textual.widgets import Select

from barfinex_cli.contracts.detector import SignalGenerated
from barfinex_cli.contracts.market import CandleClosed, TradeExecuted
from barfinex_cli.contracts.rest import PlaceOrderRequest
from barfinex_cli.runtime.client import GatewayClient
from barfinex_cli.studio.app import StudioApp
from barfinex_cli.studio.screens.market import MarketScreen
from barfinex_cli.studio.widgets.candles import CandleChart
from studio.stack import TOKEN, running_provider, until

SIZE = (140, 40)


def _chart(app: StudioApp) -> CandleChart:
    return app.screen.query_one(CandleChart)


def _loaded(app: StudioApp) -> bool:
    screen = app.screen
    if not isinstance(screen, MarketScreen) or not screen.is_mounted:
        return False
    series = screen.query_one(CandleChart).series
    return series is not None and len(series.bars) > 10


async def test_the_chart_shows_the_stores_candles_and_redraws_on_a_live_one(
    tmp_path: Path, namespace: str
) -> None:
    async with running_provider(tmp_path, namespace) as running:
        async with GatewayClient(running.url, TOKEN) as client:
            held = (await client.candles("synthetic", "BTC/USDT", "1m", limit=1000)).candles
        app = StudioApp(running.url, TOKEN, poll_s=0.2)
        async with app.run_test(size=SIZE) as pilot:
            await until(lambda: _loaded(app))
            chart = _chart(app)
            assert chart.title == "synthetic BTC/USDT 1m"
            assert [b.close for b in chart.series.bars[-5:]] == [c.close for c in held[-5:]]
            last = held[-1]
            assert f"{last.time:%Y-%m-%d %H:%M}" in chart.text_lines()[0]
            assert "bfx studio" in str(app.screen.query_one("StudioHeader").render())

            before = chart.redraws
            new_time = last.time + timedelta(minutes=1)
            await running.publish(
                CandleClosed(
                    exchange="synthetic", symbol="BTC/USDT", timeframe="1m", open_time=new_time,
                    open=Decimal(str(last.close)), high=Decimal(str(last.close * 1.02)),
                    low=Decimal(str(last.close * 0.99)), close=Decimal(str(last.close * 1.01)),
                    volume=Decimal(3),
                )
            )  # fmt: skip
            await until(lambda: f"{new_time:%Y-%m-%d %H:%M}" in chart.text_lines()[0])
            assert chart.redraws > before and "+1.00%" in chart.text_lines()[0]
            zoom = chart.view.zoom
            await pilot.press("minus", "left")  # the chart has the keys when the screen shows
            assert chart.view.zoom == zoom - 1 and chart.view.offset > 0
            app.screen.query_one("#market-symbol", Select).focus()
            await pilot.press("plus", "end")  # the chart's keys work while a picker has focus
            assert chart.view.zoom == zoom and chart.view.following
            await pilot.press("q")


async def test_the_timeframe_picker_loads_the_other_series(tmp_path: Path, namespace: str) -> None:
    async with running_provider(tmp_path, namespace) as running:
        app = StudioApp(running.url, TOKEN, poll_s=0.2)
        async with app.run_test(size=SIZE) as pilot:
            await until(lambda: _loaded(app))
            picker = app.screen.query_one("#market-timeframe", Select)
            assert [o[1] for o in picker._options if isinstance(o[1], str)] == ["1m", "5m"]
            await pilot.press("t")
            await until(lambda: picker.expanded)
            await pilot.press("down", "enter")
            await until(lambda: _chart(app).title == "synthetic BTC/USDT 5m" and _loaded(app))
            bars = _chart(app).series.bars
            assert all((b.time.minute % 5) == 0 for b in bars)


async def test_fills_and_the_positions_stop_and_take_profit_are_drawn(
    tmp_path: Path, namespace: str
) -> None:
    async with running_provider(tmp_path, namespace) as running:
        app = StudioApp(running.url, TOKEN, poll_s=0.2)
        async with app.run_test(size=SIZE):
            await until(lambda: _loaded(app))
            await until(lambda: app.state.connection.state == "connected")
            last = _chart(app).series.bars[-1].close
            stop, target = round(last * 0.99, 2), round(last * 1.01, 2)
            async with GatewayClient(running.url, TOKEN) as client:
                for n, (kind, side, extra) in enumerate([
                    ("market", "buy", {}),
                    ("stop_market", "sell", {"stop_price": stop, "reduce_only": True}),
                    ("limit", "sell", {"price": target, "reduce_only": True}),
                ]):  # fmt: skip
                    await client.place_order(
                        PlaceOrderRequest.model_validate({
                            "client_order_id": f"studio-{n}", "account": "paper",
                            "symbol": "BTC/USDT", "side": side, "type": kind,
                            "amount": "0.01", **{k: str(v) for k, v in extra.items()},
                        })
                    )  # fmt: skip
            chart = _chart(app)
            await until(lambda: {lv.kind for lv in chart.levels} == {"stop", "take_profit"})
            await until(lambda: any(m.kind == "buy" for m in chart.markers))
            text = "\n".join(chart.text_lines())
            tags = {k: float(v.replace(",", "")) for k, v in re.findall(r"(SL|TP) ([\d,.]+)", text)}
            assert abs(tags["SL"] - stop) <= 1 and abs(tags["TP"] - target) <= 1  # axis rounding
            assert "┄" in text and "●" in text  # the fill, in the forming candle, on the newest


async def test_a_signal_jump_centres_the_chart_on_its_candle(
    tmp_path: Path, namespace: str
) -> None:
    async with running_provider(tmp_path, namespace) as running:
        app = StudioApp(running.url, TOKEN, poll_s=0.2)
        async with app.run_test(size=SIZE):
            await until(lambda: _loaded(app))
            await until(lambda: app.state.connection.state == "connected")
            chart = _chart(app)
            target = (
                chart.series.bars[-300] if len(chart.series.bars) > 300 else chart.series.bars[0]
            )
            await running.publish(
                SignalGenerated(
                    strategy="s", instance="s-1", exchange="synthetic", symbol="BTC/USDT",
                    timeframe="5m", candle_time=target.time, direction="long", score=2.0,
                    threshold=1.0, attribution=[],
                )
            )  # fmt: skip
            await until(lambda: any(m.kind == "long" for m in chart.markers))
            screen = app.screen
            assert isinstance(screen, MarketScreen)
            # a 15m signal: the store holds 1m and 5m, so it shows on the 1m chart on show
            screen.show_signal("synthetic", "BTC/USDT", "15m", target.time)
            await until(lambda: chart.focus_time == target.time and chart.redraws > 0)
            assert chart.title == "synthetic BTC/USDT 1m"
            lines = chart.text_lines()
            assert f"{target.time:%Y-%m-%d %H:%M}" in lines[0]
            assert any("┊" in line for line in lines) and any("▲" in line for line in lines)


async def test_trades_move_the_forming_candle_until_its_close_replaces_it(
    tmp_path: Path, namespace: str
) -> None:
    async with running_provider(tmp_path, namespace) as running:
        app = StudioApp(running.url, TOKEN, poll_s=0.2)
        async with app.run_test(size=SIZE):
            await until(lambda: _loaded(app))
            chart = _chart(app)
            last = chart.series.bars[-1]
            forming = last.time + timedelta(minutes=1)
            held = len(chart.series.bars)

            async def trade(n: int, price: float, second: int) -> None:
                await running.publish(
                    TradeExecuted(
                        exchange="synthetic", symbol="BTC/USDT", trade_id=f"t{n}",
                        price=Decimal(str(price)), amount=Decimal("0.5"), side="buy",
                        time=forming + timedelta(seconds=second),
                    )
                )  # fmt: skip

            # the trade worker subscribes on its own socket; publish until it has seen one
            async def first_seen() -> bool:
                await trade(0, last.close + 10, 1)
                return len(chart.series.bars) == held + 1

            for _ in range(100):
                if await first_seen():
                    break
                await asyncio.sleep(0.05)
            await trade(1, last.close + 50, 20)
            await trade(2, last.close + 30, 40)
            await until(lambda: chart.series.bars[-1].close == last.close + 30)
            bar = chart.series.bars[-1]
            assert (bar.time, bar.open, bar.high) == (forming, last.close + 10, last.close + 50)
            assert "live" in chart.text_lines()[0] and len(chart.series.bars) == held + 1

            await running.publish(
                CandleClosed(
                    exchange="synthetic", symbol="BTC/USDT", timeframe="1m", open_time=forming,
                    open=Decimal(str(last.close)), high=Decimal(str(last.close + 60)),
                    low=Decimal(str(last.close - 5)), close=Decimal(str(last.close + 20)),
                    volume=Decimal(9),
                )
            )  # fmt: skip
            await until(lambda: chart.series.bars[-1].close == last.close + 20)
            assert chart.series.bars[-1].high == last.close + 60  # the closed candle replaced it
            assert len(chart.series.bars) == held + 1 and "live" not in chart.text_lines()[0]
