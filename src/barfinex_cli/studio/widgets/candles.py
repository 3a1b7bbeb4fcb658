"""The candlestick chart widget: shows a `CandleSeries` drawn by `chart_render`, zooms and scrolls.

It holds display state only (the series handed to it, markers, stop and take-profit levels, the
view) and does no IO: the Market screen feeds it. The drawing is computed once per change or
resize and cached, so a live candle costs one redraw, and `render_line` only styles cached cells.
Colours are component classes, so themes and `--theme` restyle the chart.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from itertools import groupby
from typing import ClassVar

from rich.segment import Segment
from rich.style import Style
from textual.binding import Binding, BindingType
from textual.message import Message
from textual.strip import Strip
from textual.widget import Widget

from barfinex_cli.studio.chart_model import (
    Bar,
    CandleSeries,
    Level,
    Marker,
    View,
    capacity,
    index_at,
    visible,
)
from barfinex_cli.studio.chart_render import AXIS_WIDTH, Cell, Frame, render

STYLES = ("title", "axis", "up", "down", "volume-up", "volume-down", "long", "short", "buy",
          "sell", "stop", "take-profit", "focus", "up-tag", "down-tag", "stop-tag",
          "take-profit-tag")  # fmt: skip


class CandleChart(Widget, can_focus=True):
    """Candles with volume beneath, signal and fill markers, and stop / take-profit lines."""

    COMPONENT_CLASSES: ClassVar[set[str]] = {f"candle-chart--{name}" for name in STYLES}
    DEFAULT_CSS = """
    CandleChart { height: 1fr; min-height: 6; }
    CandleChart > .candle-chart--title { color: $foreground; text-style: bold; }
    CandleChart > .candle-chart--axis { color: $foreground-muted; }
    CandleChart > .candle-chart--up { color: $success; }
    CandleChart > .candle-chart--down { color: $error; }
    CandleChart > .candle-chart--volume-up { color: $success-darken-2; }
    CandleChart > .candle-chart--volume-down { color: $error-darken-2; }
    CandleChart > .candle-chart--long { color: $success-lighten-2; text-style: bold; }
    CandleChart > .candle-chart--short { color: $error-lighten-2; text-style: bold; }
    CandleChart > .candle-chart--buy { color: $accent; text-style: bold; }
    CandleChart > .candle-chart--sell { color: $warning; text-style: bold; }
    CandleChart > .candle-chart--stop { color: $error; }
    CandleChart > .candle-chart--take-profit { color: $success; }
    CandleChart > .candle-chart--focus { color: $primary; }
    CandleChart > .candle-chart--up-tag { color: $background; background: $success; }
    CandleChart > .candle-chart--down-tag { color: $background; background: $error; }
    CandleChart > .candle-chart--stop-tag { color: $background; background: $error-darken-1; }
    CandleChart > .candle-chart--take-profit-tag {
        color: $background; background: $success-darken-1;
    }
    CandleChart:focus > .candle-chart--title { color: $accent; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("left", "scroll_bars(1)", "Back", show=False),
        Binding("right", "scroll_bars(-1)", "Forward", show=False),
        Binding("shift+left,pageup", "scroll_page(1)", "Page back", show=False),
        Binding("shift+right,pagedown", "scroll_page(-1)", "Page forward", show=False),
        Binding("plus,equals_sign", "zoom(1)", "Zoom in"),
        Binding("minus", "zoom(-1)", "Zoom out"),
        Binding("home", "oldest", "Oldest", show=False),
        Binding("end", "latest", "Latest"),
    ]

    class ViewChanged(Message):
        """The user zoomed or scrolled; `view.following` says whether it tracks the live edge."""

        def __init__(self, view: View) -> None:
            self.view = view
            super().__init__()

    def __init__(self, *, name: str | None = None, id: str | None = None,
                 classes: str | None = None) -> None:  # fmt: skip
        """Start empty; `show` hands it a series."""
        super().__init__(name=name, id=id, classes=classes)
        self.title = ""
        self.series: CandleSeries | None = None
        self.markers: Sequence[Marker] = ()
        self.levels: Sequence[Level] = ()
        self.view = View()
        self.live = False
        self.focus_time: datetime | None = None
        self.redraws = 0
        """How many times the drawing was recomputed (the benchmark and tests read it)."""
        self._cells: list[list[Cell]] | None = None
        self._cells_size = (0, 0)
        self._strips: list[Strip] | None = None
        self._styles: dict[str, Style] = {}

    # --- what the screen calls ------------------------------------------------------------------

    def show(self, series: CandleSeries, title: str) -> None:
        """Display `series` from its newest candle, forgetting any focus."""
        self.series, self.title = series, title
        self.view = View(zoom=self.view.zoom)
        self.focus_time = None
        self.live = False
        self.invalidate()

    def add_bar(self, bar: Bar, *, forming: bool = False) -> None:
        """Add or replace a candle; a view scrolled into the past stays where it is."""
        if self.series is None:
            return
        if self.series.upsert(bar) == "appended" and not self.view.following:
            self.view = View(self.view.zoom, self.view.offset + 1)
        # a closed candle behind a forming one (trades already opened the next) keeps it live
        self.live = forming or (self.live and bar.time < self.series.bars[-1].time)
        self.invalidate()

    def apply_trades(self, trades: Sequence[tuple[float, float, datetime]]) -> None:
        """Move the forming candle by each (price, amount, time); one redraw for the lot."""
        if self.series is None or not trades:
            return
        for price, amount, time in trades:
            self.series.apply_trade(price, amount, time)  # a late trade of a closed one: ignored
        self.live = True
        self.invalidate()

    def set_overlays(self, markers: Sequence[Marker], levels: Sequence[Level]) -> None:
        """Replace the signal and fill markers and the stop / take-profit lines."""
        self.markers, self.levels = markers, levels
        self.invalidate()

    def jump_to(self, time: datetime) -> bool:
        """Centre the chart on the candle holding `time` and point at it; False if none holds it."""
        if self.series is None or (at := index_at(self.series.bars, time)) is None:
            return False
        self.focus_time = time
        total = len(self.series.bars)
        self.view = self.view.centred_on(at, total, capacity(self._plot_width(), self.view))
        self.invalidate()
        return True

    def invalidate(self) -> None:
        """Forget the cached drawing and repaint."""
        self._cells = None
        self._strips = None
        self.refresh()

    def notify_style_update(self) -> None:
        """Forget the cached styles when the theme or CSS changes."""
        self._styles = {}
        self._strips = None
        super().notify_style_update()

    def text_lines(self) -> list[str]:
        """Return the drawing as plain text lines (what the user reads, without colour)."""
        return ["".join(ch for ch, _ in row) for row in self._drawing()]

    # --- actions --------------------------------------------------------------------------------

    def action_scroll_bars(self, bars: int) -> None:
        """Scroll back (positive) or forward (negative) by drawn bars."""
        self._move(self.view.scrolled(bars, self._total()))

    def action_scroll_page(self, pages: int) -> None:
        """Scroll by nine tenths of a screen."""
        step = max(capacity(self._plot_width(), self.view) * 9 // 10, 1)
        self._move(self.view.scrolled(pages * step, self._total()))

    def action_zoom(self, steps: int) -> None:
        """Zoom in (positive) or out (negative)."""
        self._move(self.view.zoomed(steps))

    def action_oldest(self) -> None:
        """Scroll back until the oldest candle held is at the left edge."""
        shown = capacity(self._plot_width(), self.view) * self.view.level.bucket
        self._move(View(self.view.zoom, max(self._total() - shown, 0)))

    def action_latest(self) -> None:
        """Scroll back to the newest candle and follow it."""
        self._move(View(self.view.zoom, 0))

    # --- drawing --------------------------------------------------------------------------------

    def _move(self, view: View) -> None:
        if view != self.view:
            self.view = view
            self.invalidate()
            self.post_message(self.ViewChanged(view))

    def _total(self) -> int:
        return len(self.series.bars) if self.series else 0

    def _plot_width(self) -> int:
        return max(self.size.width - AXIS_WIDTH, 1)

    def _drawing(self) -> list[list[Cell]]:
        size = (self.size.width, self.size.height)
        if self._cells is None or self._cells_size != size:
            self._cells = render(self._frame(), *size)
            self._cells_size = size
            self._strips = None
            self.redraws += 1
        return self._cells

    def _frame(self) -> Frame:
        if self.series is None:
            return Frame(self.title or "no series chosen", [], self.view, 60)
        bars = visible(self.series, self.view, self._plot_width())
        focus = None
        if self.focus_time is not None and bars and self.focus_time >= bars[0].time:
            focus = index_at(bars, self.focus_time)
        return Frame(self.title, bars, self.view, self.series.period_s, self.markers,
                     self.levels, focus, self.live and self.view.following)  # fmt: skip

    def render_line(self, y: int) -> Strip:
        """Return row `y` of the drawing, styled (all rows are styled once per drawing)."""
        cells = self._drawing()
        if self._strips is None:
            self._strips = [self._strip(row) for row in cells]
        if y >= len(self._strips):
            return Strip.blank(self.size.width)
        return self._strips[y]

    def _strip(self, row: list[Cell]) -> Strip:
        text = "".join([ch for ch, _ in row])
        # a plain blank takes the style before it (unless that style paints a background), so
        # a row is a few long segments, not one per candle: the compositor's work per frame
        styles, before = [], ""
        for ch, style in row:
            if ch == " " and not style and not before.endswith("_tag"):
                style = before
            styles.append(style)
            before = style
        segments, start = [], 0
        for style, run in groupby(styles):  # one segment per run of a style, sliced from the row
            end = start + len(list(run))
            segments.append(Segment(text[start:end], self._style(style)))
            start = end
        return Strip(segments, len(row))

    def _style(self, name: str) -> Style:
        style = self._styles.get(name)
        if style is None:
            base = self.rich_style
            style = self._styles[name] = (
                (
                    base
                    + self.get_component_rich_style(
                        f"candle-chart--{name.replace('_', '-')}", partial=True
                    )
                )
                if name
                else base
            )
        return style
