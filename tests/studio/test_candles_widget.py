"""The chart widget under a Pilot: it redraws on a new candle, zooms and scrolls with its keys."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from textual.app import App, ComposeResult

from barfinex_cli.studio.chart_model import DEFAULT_ZOOM, ZOOMS, CandleSeries, Level, Marker
from barfinex_cli.studio.widgets.candles import CandleChart
from studio.chart_data import walk


class ChartApp(App[None]):
    """One chart filling the screen."""

    def __init__(self, bars: int = 300) -> None:
        super().__init__()
        self.bars = walk(bars)
        self.views: list[CandleChart.ViewChanged] = []

    def compose(self) -> ComposeResult:
        yield CandleChart()

    def on_mount(self) -> None:
        chart = self.query_one(CandleChart)
        chart.show(CandleSeries("15m", self.bars), "binance BTC/USDT 15m")
        chart.focus()

    def on_candle_chart_view_changed(self, message: CandleChart.ViewChanged) -> None:
        self.views.append(message)


async def test_a_new_candle_redraws_the_chart_with_it_at_the_right_edge() -> None:
    app = ChartApp()
    async with app.run_test(size=(100, 30)) as pilot:
        chart = app.query_one(CandleChart)
        await pilot.pause()
        before = chart.redraws
        last = app.bars[-1]
        assert f"{last.time:%Y-%m-%d %H:%M}" in chart.text_lines()[0]
        new = replace(last, time=last.time + timedelta(minutes=15), open=100.0, close=105.0,
                      high=106.0, low=99.0)  # fmt: skip
        chart.add_bar(new)
        await pilot.pause()
        assert chart.redraws == before + 1
        lines = chart.text_lines()
        assert f"{new.time:%Y-%m-%d %H:%M}" in lines[0] and "+5.00%" in lines[0]
        assert any(line.rstrip().endswith("105.00") for line in lines)  # the last-price tag


async def test_zoom_keys_change_the_candles_per_column_and_clamp() -> None:
    app = ChartApp()
    async with app.run_test(size=(100, 30)) as pilot:
        chart = app.query_one(CandleChart)
        assert chart.view.zoom == DEFAULT_ZOOM
        await pilot.press("minus", "minus")
        assert chart.view.level == ZOOMS[DEFAULT_ZOOM - 2]
        assert "bar = 2 candles" in chart.text_lines()[0]
        for _ in range(len(ZOOMS) + 2):
            await pilot.press("plus")
        assert chart.view.zoom == len(ZOOMS) - 1
        assert len(app.views) == len(ZOOMS) - 1 - (DEFAULT_ZOOM - 2) + 2  # none once clamped


async def test_scroll_keys_move_back_in_time_and_end_follows_the_live_edge_again() -> None:
    app = ChartApp()
    async with app.run_test(size=(100, 30)) as pilot:
        chart = app.query_one(CandleChart)
        await pilot.press("left", "left", "left")
        assert chart.view.offset == 3 and not chart.view.following
        assert app.bars[-4].time.strftime("%Y-%m-%d %H:%M") in chart.text_lines()[0]
        new = replace(app.bars[-1], time=app.bars[-1].time + timedelta(minutes=15))
        chart.add_bar(new)
        assert chart.view.offset == 4  # a scrolled view holds still while candles arrive
        await pilot.press("pageup")
        assert chart.view.offset > 4 + 30
        await pilot.press("home")
        assert chart.text_lines()[-1].lstrip().startswith("╵11-20 09:00")  # the oldest, at the left
        await pilot.press("end")
        assert chart.view.following and f"{new.time:%H:%M}" in chart.text_lines()[0]


async def test_jump_to_centres_and_points_at_a_candle_and_overlays_draw() -> None:
    app = ChartApp()
    async with app.run_test(size=(120, 30)) as pilot:
        chart = app.query_one(CandleChart)
        target = app.bars[100]
        chart.set_overlays(
            [Marker(target.time, "long")], [Level(app.bars[-1].close * 0.97, "stop")]
        )
        assert chart.jump_to(target.time + timedelta(minutes=3))
        await pilot.pause()
        lines = chart.text_lines()
        assert target.time.strftime("%Y-%m-%d %H:%M") in lines[0]
        guide = [line.index("┊") for line in lines if "┊" in line]
        assert guide and abs(guide[0] - (120 - 11) // 2) <= 3
        assert "▲" in "".join(lines)
        await pilot.press("end")
        assert "SL " in "".join(chart.text_lines())


async def test_a_tiny_terminal_gets_a_clear_message_instead_of_a_chart() -> None:
    app = ChartApp()
    async with app.run_test(size=(18, 5)) as pilot:
        await pilot.pause()
        assert app.query_one(CandleChart).text_lines()[0].startswith("chart needs")
