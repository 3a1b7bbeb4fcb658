"""Market screen redraw figures: 500 candles at 200x50, headless, against textual-plotext.

- Screen frames/s: the real `MarketScreen` in the real `StudioApp` (headless, 200x50, no live
  workers), 500 candles of history; each step adds one candle (the live path the feed takes)
  and waits for the screen to process the refresh (`pilot.pause()`); `redraws` of the chart
  confirms every step drew. The baseline: a `PlotextPlot` (textual-plotext 1.0.1, plotext 5)
  filling the same 200x50 screen with the same 500 candles, rebuilt per step.
- Chart draws/s: the widget's own work per frame (the cell grid, then 50 styled strips) beside
  plotext's (`PlotextPlot.render`: its canvas, then Rich parsing its ANSI output).
- The harness's ceiling: the same step changing one short label instead of the chart, so the
  frames/s figure can be read against what Textual's headless loop allows on this machine.

History comes from the generated candles in memory (the app's `candles` source overridden, no
provider: the benchmark measures drawing, not HTTP).

Usage: python benchmarks/studio_chart.py [--candles 500] [--steps 200]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
from datetime import UTC, datetime, timedelta

from rich.console import Console
from rich.table import Table
from textual.app import App, ComposeResult
from textual.widgets import Static

from barfinex_cli.contracts.rest import Candle, CandlesResponse, SeriesInfo
from barfinex_cli.studio.app import StudioApp
from barfinex_cli.studio.chart_model import Bar
from barfinex_cli.studio.screens.market import MarketScreen
from barfinex_cli.studio.widgets.candles import CandleChart

SIZE = (200, 50)
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def walk(n: int, seed: int = 7) -> list[Bar]:
    """Return `n` one-minute bars of a seeded random walk."""
    rnd = random.Random(seed)
    price, out = 30_000.0, []
    for i in range(n):
        close = price * (1 + rnd.gauss(0, 0.001))
        high = max(price, close) * (1 + abs(rnd.gauss(0, 0.0005)))
        low = min(price, close) * (1 - abs(rnd.gauss(0, 0.0005)))
        out.append(Bar(T0 + timedelta(minutes=i), price, high, low, close, rnd.uniform(1, 9)))
        price = close
    return out


class BenchStudio(StudioApp):
    """The studio whose Market screen reads history from bars in memory, not a provider."""

    def __init__(self, bars: list[Bar]) -> None:
        super().__init__("http://127.0.0.1:9", None, connect=False)
        self.bars = bars

    async def candles(
        self, exchange: str, symbol: str, timeframe: str, *, limit: int = 500,
        since_ms: int | None = None, until_ms: int | None = None,
    ) -> CandlesResponse:  # fmt: skip
        rows = [Candle(time=b.time, open_ms=int(b.time.timestamp() * 1000), open=b.open,
                       high=b.high, low=b.low, close=b.close, volume=b.volume)
                for b in self.bars[-limit:]]  # fmt: skip
        return CandlesResponse(exchange=exchange, symbol=symbol, timeframe=timeframe, candles=rows)


async def studio_frames(bars: list[Bar], steps: int) -> tuple[float, float, float, int]:
    """Return (frames/s, chart draws/s, harness frames/s, redraws) for the real Market screen."""
    app = BenchStudio(bars)
    async with app.run_test(size=SIZE, headless=True) as pilot:
        app.state.series = [SeriesInfo(exchange="x", symbol="BTC/USDT", timeframe="1m",
                                       rows=len(bars), first_ms=0, last_ms=0)]  # fmt: skip
        app.state.versions["apps"] += 1
        screen = app.screen
        assert isinstance(screen, MarketScreen)
        screen.state_changed(())
        chart = screen.query_one(CandleChart)
        while chart.series is None or len(chart.series.bars) < len(bars):
            await pilot.pause(0.01)
        await pilot.pause()
        start_redraws = chart.redraws
        last = bars[-1]
        started = time.perf_counter()
        for i in range(1, steps + 1):
            price = last.close * (1 + 0.001 * ((i % 7) - 3))
            chart.add_bar(Bar(last.time + timedelta(minutes=i), last.close, max(price, last.close),
                              min(price, last.close), price, 5.0))  # fmt: skip
            await pilot.pause()
        frames = steps / (time.perf_counter() - started)
        redraws = chart.redraws - start_redraws
        started = time.perf_counter()
        for _ in range(steps):
            chart.invalidate()
            for y in range(chart.size.height):
                chart.render_line(y)
        draws = steps / (time.perf_counter() - started)
        status = screen.query_one("#market-status", Static)
        started = time.perf_counter()
        for i in range(steps):  # the same loop changing one short label: the harness's ceiling
            status.update(f"step {i}")
            await pilot.pause()
        ceiling = steps / (time.perf_counter() - started)
    return frames, draws, ceiling, redraws


async def plotext_frames(bars: list[Bar], steps: int) -> tuple[float, float]:
    """Return (screen frames/s, plot renders/s) for a PlotextPlot of the same candles."""
    from textual_plotext import PlotextPlot

    class PlotApp(App[None]):
        def compose(self) -> ComposeResult:
            yield PlotextPlot()

    def draw(plot: PlotextPlot, shown: list[Bar]) -> None:
        plt = plot.plt
        plt.clear_data()
        plt.date_form("Y-m-d H:M")  # plotext 5 rejects "Y-m-dTH:M"
        dates = [b.time.strftime("%Y-%m-%d %H:%M") for b in shown]
        prices = {"Open": [b.open for b in shown], "Close": [b.close for b in shown],
                  "High": [b.high for b in shown], "Low": [b.low for b in shown]}  # fmt: skip
        plt.candlestick(dates, prices)
        plot.refresh()

    app = PlotApp()
    async with app.run_test(size=SIZE, headless=True) as pilot:
        plot = app.query_one(PlotextPlot)
        shown = list(bars)
        started = time.perf_counter()
        for i in range(1, steps + 1):
            last = shown[-1]
            close = last.close * (1 + 0.0005 * (i % 3 - 1))
            shown.append(Bar(last.time + timedelta(minutes=1), last.close, max(close, last.close),
                             min(close, last.close), close, 5.0))  # fmt: skip
            draw(plot, shown[-len(bars) :])
            await pilot.pause()
        frames = steps / (time.perf_counter() - started)
        started = time.perf_counter()
        for _ in range(steps):
            plot.render()
        renders = steps / (time.perf_counter() - started)
    return frames, renders


def main() -> None:
    """Measure and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candles", type=int, default=500)
    parser.add_argument("--steps", type=int, default=200)
    args = parser.parse_args()
    bars = walk(args.candles)
    frames, draws, ceiling, redraws = asyncio.run(studio_frames(bars, args.steps))
    # plotext takes about a second a frame at this size: a tenth of the steps measures it enough
    base_frames, base_renders = asyncio.run(plotext_frames(bars, max(args.steps // 10, 5)))
    table = Table(title=f"Market screen, {args.candles} candles at {SIZE[0]}x{SIZE[1]}, headless")
    for column in ("figure", "studio chart", "textual-plotext", "ratio"):
        table.add_column(column, justify="right" if column != "figure" else "left")
    table.add_row("screen frames/s (new candle -> processed)", f"{frames:,.0f}",
                  f"{base_frames:,.0f}", f"{frames / base_frames:.2f}")  # fmt: skip
    table.add_row("draws/s (widget's own work per frame)", f"{draws:,.0f}",
                  f"{base_renders:,.0f}", f"{draws / base_renders:.2f}")  # fmt: skip
    table.add_row(
        "frames/s changing one label instead (harness ceiling)", f"{ceiling:,.0f}", "", ""
    )
    Console().print(table)
    print(f"chart redraws during the frames run: {redraws} of {args.steps} steps")


if __name__ == "__main__":
    main()
