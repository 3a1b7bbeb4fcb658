"""Draw the same candles with textual-plotext and with the studio's chart, side by side, as SVG.

This is how the Market screen's chart was chosen (docs/studio.md): 120 seeded 15-minute candles,
the newest 40 given to plotext (its `candlestick`, dates as "Y-m-d H:M" since plotext 5 rejects
"Y-m-dTH:M") and the whole series to `CandleChart` with a signal, a fill, a stop and a
take-profit, at two terminal sizes. Writes `chart-compare-WxH.svg` (Textual's screenshots; open
them in a browser, which honours their text layout) into docs/img, or `--out DIR`.

Usage: python benchmarks/studio_chart_compare.py [--out DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

from textual.app import App, ComposeResult
from textual.containers import Horizontal

from barfinex_cli.studio.chart_model import Bar, CandleSeries, Level, Marker
from barfinex_cli.studio.widgets.candles import CandleChart

SIZES = ((80, 16), (120, 24), (160, 40))
DOCS_IMG = Path(__file__).resolve().parents[1] / "docs" / "img"


def walk(n: int = 120, seed: int = 7) -> list[Bar]:
    """Return `n` 15-minute bars of a seeded random walk."""
    rnd = random.Random(seed)
    price, t0, out = 100.0, datetime(2026, 11, 20, 9, tzinfo=UTC), []
    for i in range(n):
        close = price * (1 + rnd.gauss(0, 0.006))
        high = max(price, close) * (1 + abs(rnd.gauss(0, 0.003)))
        low = min(price, close) * (1 - abs(rnd.gauss(0, 0.003)))
        out.append(Bar(t0 + timedelta(minutes=15 * i), price, high, low, close,
                       rnd.uniform(5, 50)))  # fmt: skip
        price = close
    return out


class Compare(App[None]):
    """textual-plotext on the left, the studio's chart on the right."""

    CSS = "Horizontal { height: 100%; } #plotext, #studio { width: 1fr; border: solid $primary; }"

    def compose(self) -> ComposeResult:
        from textual_plotext import PlotextPlot

        with Horizontal():
            yield PlotextPlot(id="plotext")
            yield CandleChart(id="studio")

    def on_mount(self) -> None:
        from textual_plotext import PlotextPlot

        bars = walk()
        shown = bars[-40:]
        plt = self.query_one(PlotextPlot).plt
        plt.date_form("Y-m-d H:M")
        plt.candlestick(
            [b.time.strftime("%Y-%m-%d %H:%M") for b in shown],
            {"Open": [b.open for b in shown], "Close": [b.close for b in shown],
             "High": [b.high for b in shown], "Low": [b.low for b in shown]},
        )  # fmt: skip
        plt.title("BTC/USDT 15m (textual-plotext)")
        chart = self.query_one(CandleChart)
        chart.show(CandleSeries("15m", bars), "BTC/USDT 15m")
        chart.set_overlays(
            [Marker(bars[-10].time, "long"), Marker(bars[-5].time, "buy", bars[-5].close),
             Marker(bars[-20].time, "short")],
            [Level(bars[-1].close * 0.98, "stop"), Level(bars[-1].close * 1.02, "take_profit")],
        )  # fmt: skip


async def shoot(out: Path) -> list[Path]:
    """Save one screenshot per size; return their paths."""
    saved = []
    for width, height in SIZES:
        app = Compare()
        async with app.run_test(size=(width, height)) as pilot:
            await pilot.pause()
            path = out / f"chart-compare-{width}x{height}.svg"
            app.save_screenshot(path.name, path=str(out))
            saved.append(path)
    return saved


def main() -> None:
    """Write the comparison screenshots."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DOCS_IMG)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for path in asyncio.run(shoot(args.out)):
        print(path)


if __name__ == "__main__":
    main()
