"""Draw a candle chart as a grid of (glyph, style) cells, with no Textual.

The widget (`studio.widgets.candles`) only turns these cells into styled strips, so everything
that can be wrong with a chart (scaling, which glyph, where a marker or a stop line lands) is
tested here on plain strings.

Vertical resolution is two steps per row. A candle body is half blocks (`█ ▀ ▄`), one column
wide or wider when zoomed in, with its wick a light line (`│ ╵ ╷`) on the centre column; at the
tightest zoom (one column per candle, no gap between them) bodies become heavy box-drawing lines
(`┃ ╽ ╿ ╻ ╹`, as cli-candlestick-chart draws) so neighbours do not merge into one block. Volume is
eighth blocks beneath, signals `▲`/`▼` below/above their candle, fills `●` at their price, stops
and take-profits dashed lines with their price tagged on the axis.

Layout, top to bottom: one info line, the price area, the volume rows, one time-axis row; a price
axis down the right edge.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta

from barfinex_cli.studio.chart_model import Bar, Level, Marker, View, index_at

Cell = tuple[str, str]
"""A glyph and a style name (`up`, `down`, `axis`, `long`, `stop`, ...; empty for plain)."""

AXIS_WIDTH = 11
MIN_WIDTH = AXIS_WIDTH + 10
MIN_HEIGHT = 6
EIGHTHS = " ▁▂▃▄▅▆▇█"
BLANK: Cell = (" ", "")

# (top half, bottom half) -> glyph, for a one-column candle; "w" wick, "b" body, "" empty
THIN: dict[tuple[str, str], str] = {
    ("w", "w"): "│", ("b", "b"): "┃", ("", "w"): "╷", ("w", ""): "╵",
    ("", "b"): "╻", ("b", ""): "╹", ("w", "b"): "╽", ("b", "w"): "╿",
}  # fmt: skip
BLOCK: dict[tuple[str, str], str] = {
    ("b", "b"): "█", ("", "b"): "▄", ("b", ""): "▀", ("w", "b"): "▄", ("b", "w"): "▀",
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Frame:
    """Everything one drawing needs: the drawn bars (already bucketed and windowed) and extras."""

    title: str
    bars: Sequence[Bar]
    view: View
    period_s: int
    markers: Sequence[Marker] = ()
    levels: Sequence[Level] = ()
    focus: int | None = None
    """Index into `bars` of the candle to point at (a signal jumped to); None for none."""
    live: bool = field(default=False)
    """Whether the last bar is still forming (its close moves with trades)."""


@dataclass(frozen=True, slots=True)
class Scale:
    """Maps prices to half-rows of a price area `rows` high, top to bottom."""

    low: float
    high: float
    rows: int

    @classmethod
    def fit(cls, bars: Sequence[Bar], levels: Sequence[Level], rows: int) -> Scale:
        """Return a scale holding every bar and level, with a spare row each side for markers."""
        prices = [b.high for b in bars] + [b.low for b in bars] + [lv.price for lv in levels]
        low, high = min(prices), max(prices)
        pad = (high - low) / max(rows - 2, 1) or abs(high) * 0.005 or 1.0
        return cls(low - pad, high + pad, rows)

    def half(self, price: float) -> int:
        """Return the half-row of `price`: 0 at the top edge, `2 * rows - 1` at the bottom."""
        span = 2 * self.rows - 1
        y = round((self.high - price) / (self.high - self.low) * span)
        return min(max(y, 0), span)

    def price_at(self, row: int) -> float:
        """Return the price at the middle of `row`."""
        return self.high - (row * 2 + 0.5) / (2 * self.rows - 1) * (self.high - self.low)

    def decimals(self) -> int:
        """Return how many decimals tell one row from the next."""
        step = (self.high - self.low) / max(self.rows, 1)
        return min(max(1 - math.floor(math.log10(step)), 0), 8) if step > 0 else 2


def price_text(price: float, decimals: int) -> str:
    """Return a price with thousands separators, as the axis prints it."""
    return f"{price:,.{decimals}f}"


def _info(frame: Frame, decimals: int) -> str:
    bar = frame.bars[frame.focus if frame.focus is not None else -1]
    change = (bar.close - bar.open) / bar.open * 100 if bar.open else 0.0
    bucket = frame.view.level.bucket
    merged = f" (bar = {bucket} candles)" if bucket > 1 else ""
    live = " live" if frame.live and frame.focus is None else ""
    p = decimals
    return (f"{frame.title}{merged}  {bar.time:%Y-%m-%d %H:%M}{live}  O {bar.open:,.{p}f}  "
            f"H {bar.high:,.{p}f}  L {bar.low:,.{p}f}  C {bar.close:,.{p}f}  {change:+.2f}%  "
            f"V {bar.volume:,.4g}")  # fmt: skip


def _put_text(row: list[Cell], col: int, text: str, style: str) -> None:
    for i, ch in enumerate(text):
        if 0 <= col + i < len(row):
            row[col + i] = (ch, style)


def render(frame: Frame, width: int, height: int) -> list[list[Cell]]:
    """Return `height` rows of `width` cells drawing `frame`."""
    grid = [[BLANK] * width for _ in range(height)]
    if width < MIN_WIDTH or height < MIN_HEIGHT:
        _put_text(grid[0], 0, f"chart needs {MIN_WIDTH}x{MIN_HEIGHT}", "axis")
        return grid
    if not frame.bars:
        _put_text(grid[0], 0, f"{frame.title}  no candles yet", "axis")
        return grid
    plot_w = width - AXIS_WIDTH
    vol_rows = max(1, (height - 2) // 7) if height >= 10 else 0
    price_rows = height - 2 - vol_rows
    top = 1
    scale = Scale.fit(frame.bars, frame.levels, price_rows)
    decimals = scale.decimals()
    _put_text(grid[0], 0, _info(frame, decimals)[:width], "title")

    slot = frame.view.level.slot
    body_w = 1 if slot < 4 else slot - 1
    first_col = plot_w - len(frame.bars) * slot  # right-aligned; >= 0 since bars fit
    cols = [first_col + i * slot + (slot - body_w) // 2 for i in range(len(frame.bars))]

    if frame.focus is not None:
        centre = cols[frame.focus] + body_w // 2
        for r in range(top, top + price_rows + vol_rows):
            grid[r][centre] = ("┊", "focus")
    for level in frame.levels:
        r = top + scale.half(level.price) // 2
        for c in range(plot_w):
            grid[r][c] = ("┄", level.kind)
    for i, bar in enumerate(frame.bars):
        _candle(grid, top, scale, bar, cols[i], body_w, slot == 1)
    if vol_rows:
        _volume(grid, top + price_rows, vol_rows, frame.bars, cols, body_w)
    _markers(grid, top, price_rows, scale, frame, cols, body_w)
    _price_axis(grid, top, price_rows, scale, decimals, plot_w, frame)
    _time_axis(grid[height - 1], frame, cols, plot_w)
    return grid


def _candle(grid: list[list[Cell]], top: int, scale: Scale, bar: Bar, col: int, w: int,
            thin: bool) -> None:  # fmt: skip
    style = "up" if bar.up else "down"
    wick_top, wick_bottom = scale.half(bar.high), scale.half(bar.low)
    body_top = scale.half(max(bar.open, bar.close))
    body_bottom = scale.half(min(bar.open, bar.close))

    def part(y: int) -> str:
        if body_top <= y <= body_bottom:
            return "b"
        return "w" if wick_top <= y <= wick_bottom else ""

    centre = col + w // 2
    for row in range(wick_top // 2, wick_bottom // 2 + 1):
        halves = (part(row * 2), part(row * 2 + 1))
        if thin:
            grid[top + row][col] = (THIN[halves], style)
            continue
        for c in range(col, col + w):
            glyph = BLOCK.get(halves)
            if glyph is not None:
                grid[top + row][c] = (glyph, style)
            elif c == centre:
                grid[top + row][c] = (THIN[halves], style)


def _volume(grid: list[list[Cell]], top: int, rows: int, bars: Sequence[Bar],
            cols: Sequence[int], w: int) -> None:  # fmt: skip
    peak = max(b.volume for b in bars) or 1.0
    for bar, col in zip(bars, cols, strict=True):
        full, part = divmod(round(bar.volume / peak * rows * 8), 8)
        style = "volume_up" if bar.up else "volume_down"
        bottom = top + rows - 1
        for r, glyph in [(bottom - i, "█") for i in range(full)] + [(bottom - full, EIGHTHS[part])]:
            if r >= top and glyph != " ":
                for c in range(col, col + w):
                    grid[r][c] = (glyph, style)


def _markers(grid: list[list[Cell]], top: int, rows: int, scale: Scale, frame: Frame,
             cols: Sequence[int], w: int) -> None:  # fmt: skip
    span = timedelta(seconds=frame.period_s * frame.view.level.bucket)
    newest = len(frame.bars) - 1
    for marker in frame.markers:
        i = index_at(frame.bars, marker.time)
        # a marker in the still-forming candle sits on the newest one until its candle closes
        reach = span * 2 if i == newest else span
        if i is None or marker.time >= frame.bars[i].time + reach:
            continue
        bar, centre = frame.bars[i], cols[i] + w // 2
        if marker.kind == "long":
            row, glyph = scale.half(bar.low) // 2 + 1, "▲"
        elif marker.kind == "short":
            row, glyph = scale.half(bar.high) // 2 - 1, "▼"
        elif marker.price is not None:
            row, glyph = scale.half(marker.price) // 2, "●"
        else:
            continue
        if 0 <= row < rows:
            grid[top + row][centre] = (glyph, marker.kind)


def _price_axis(grid: list[list[Cell]], top: int, rows: int, scale: Scale, decimals: int,
                plot_w: int, frame: Frame) -> None:  # fmt: skip
    for r in range(rows):
        grid[top + r][plot_w] = ("│", "axis")
        if r % 4 == 0:
            grid[top + r][plot_w] = ("┤", "axis")
            _put_text(grid[top + r], plot_w + 1, price_text(scale.price_at(r), decimals), "axis")
    tags: list[tuple[float, str, str]] = [
        (lv.price, lv.kind, "SL " if lv.kind == "stop" else "TP ") for lv in frame.levels
    ]
    last = frame.bars[-1]
    tags.append((last.close, "up" if last.up else "down", ""))
    for price, style, prefix in tags:
        r = top + scale.half(price) // 2
        text = (prefix + price_text(price, decimals))[: AXIS_WIDTH - 1]
        _put_text(grid[r], plot_w + 1, text.ljust(AXIS_WIDTH - 1), f"{style}_tag")


def _time_axis(row: list[Cell], frame: Frame, cols: Sequence[int], plot_w: int) -> None:
    daily = frame.period_s * frame.view.level.bucket >= 86400
    next_free = 0
    previous_day = None
    for bar, col in zip(frame.bars, cols, strict=True):
        if col < next_free:
            continue
        day = bar.time.date()
        if daily:
            text = bar.time.strftime("%Y-%m-%d")
        elif day != previous_day:
            text = bar.time.strftime("%m-%d %H:%M")
        else:
            text = bar.time.strftime("%H:%M")
        if col + len(text) <= plot_w:
            _put_text(row, col, "╵" + text, "axis")
            next_free = col + len(text) + 3
            previous_day = day
