"""The candle chart's data and viewport, with no Textual: series upkeep, bucketing, zoom and scroll.

The Market screen's chart only displays; everything that decides *what* it displays lives here so
it is tested without a terminal: keeping a series of bars (a closed candle replaces the forming one
of the same open time, a trade moves the forming candle), merging bars into wider buckets when
zoomed out, and which bars a viewport of a given width shows. `chart_render` turns the result into
glyphs.

Zoom is an index into `ZOOMS`: a bucket size (how many candles merge into one drawn bar) and a slot
width (columns per drawn bar). Scroll is `View.offset`, counted in source candles back from the
newest, so zooming keeps the right edge where it was; offset 0 follows the live edge.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Literal

MarkerKind = Literal["long", "short", "buy", "sell"]
LevelKind = Literal["stop", "take_profit"]

TIMEFRAME_SECONDS: dict[str, int] = {
    "1m": 60, "3m": 180, "5m": 300, "15m": 900, "30m": 1800, "1h": 3600, "2h": 7200,
    "4h": 14400, "6h": 21600, "12h": 43200, "1d": 86400, "1w": 604800,
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Bar:
    """One candle as drawn: open time (UTC) and prices as floats (the store's precision)."""

    time: datetime
    open: float
    high: float
    low: float
    close: float
    volume: float

    @property
    def up(self) -> bool:
        """Return whether the bar closed at or above its open."""
        return self.close >= self.open


@dataclass(frozen=True, slots=True)
class Marker:
    """A signal (`long`/`short`) or a fill (`buy`/`sell`) pinned to the candle holding `time`."""

    time: datetime
    kind: MarkerKind
    price: float | None = None
    """Where a fill executed; signals are drawn beside their candle and need no price."""


@dataclass(frozen=True, slots=True)
class Level:
    """A horizontal line across the chart: an open position's stop or take-profit."""

    price: float
    kind: LevelKind


@dataclass(frozen=True, slots=True)
class Zoom:
    """How many candles merge into one drawn bar, and how many columns a drawn bar takes."""

    bucket: int
    slot: int


ZOOMS: tuple[Zoom, ...] = (
    Zoom(16, 1), Zoom(8, 1), Zoom(4, 1), Zoom(2, 1), Zoom(1, 1), Zoom(1, 2), Zoom(1, 4), Zoom(1, 6),
)  # fmt: skip
DEFAULT_ZOOM = 5
"""One candle per two columns: a 200-column terminal shows about 95 candles."""


def timeframe_seconds(timeframe: str) -> int:
    """Return the length of a timeframe such as `15m` in seconds.

    Raises:
        ValueError: The timeframe is not one the contracts know.
    """
    try:
        return TIMEFRAME_SECONDS[timeframe]
    except KeyError:
        raise ValueError(f"unknown timeframe {timeframe!r}") from None


def _epoch(time: datetime) -> int:
    return int(time.timestamp())


class CandleSeries:
    """The bars of one symbol and timeframe, oldest first, bounded to the newest `max_bars`."""

    def __init__(self, timeframe: str, bars: Iterable[Bar] = (), *, max_bars: int = 5000) -> None:
        """Keep `bars` (any order; a later duplicate of an open time wins)."""
        self.timeframe = timeframe
        self.period_s = timeframe_seconds(timeframe)
        self.max_bars = max_bars
        self.bars: list[Bar] = []
        for bar in bars:
            self.upsert(bar)

    def upsert(self, bar: Bar) -> Literal["appended", "replaced", "inserted"]:
        """Add a bar; one of the same open time replaces the held one (closed over forming)."""
        if not self.bars or bar.time > self.bars[-1].time:
            self.bars.append(bar)
            self._trim()
            return "appended"
        times = [b.time for b in self.bars]
        at = bisect.bisect_left(times, bar.time)
        if at < len(self.bars) and self.bars[at].time == bar.time:
            self.bars[at] = bar
            return "replaced"
        self.bars.insert(at, bar)
        self._trim()
        return "inserted"

    def apply_trade(self, price: float, amount: float, time: datetime) -> Bar:
        """Move the forming candle by one trade; open a new one when `time` is past its period."""
        start = datetime.fromtimestamp(_epoch(time) // self.period_s * self.period_s, tz=UTC)
        last = self.bars[-1] if self.bars else None
        if last is not None and last.time == start:
            bar = Bar(start, last.open, max(last.high, price), min(last.low, price), price,
                      last.volume + amount)  # fmt: skip
        elif last is not None and last.time > start:
            return last  # a late trade of a candle already drawn: the closed candle will settle it
        else:
            bar = Bar(start, price, price, price, price, amount)
        self.upsert(bar)
        return bar

    def _trim(self) -> None:
        if len(self.bars) > self.max_bars:
            del self.bars[: len(self.bars) - self.max_bars]


def bucketed(bars: Sequence[Bar], bucket: int, period_s: int) -> list[Bar]:
    """Merge bars into buckets of `bucket` periods aligned to the epoch, so they stay put live."""
    if bucket <= 1:
        return list(bars)
    width = period_s * bucket
    out: list[Bar] = []
    key: int | None = None
    for bar in bars:
        k = _epoch(bar.time) // width
        if k != key:
            out.append(bar)
            key = k
            continue
        head = out[-1]
        out[-1] = Bar(head.time, head.open, max(head.high, bar.high), min(head.low, bar.low),
                      bar.close, head.volume + bar.volume)  # fmt: skip
    return out


@dataclass(frozen=True, slots=True)
class View:
    """Zoom level (an index into `ZOOMS`) and scroll offset in candles back from the newest."""

    zoom: int = DEFAULT_ZOOM
    offset: int = 0

    @property
    def level(self) -> Zoom:
        """Return the zoom level this view uses."""
        return ZOOMS[self.zoom]

    @property
    def following(self) -> bool:
        """Return whether the view shows the newest candle (and so moves with it)."""
        return self.offset == 0

    def zoomed(self, steps: int) -> View:
        """Return the view zoomed in (positive) or out (negative), within `ZOOMS`."""
        return replace(self, zoom=min(max(self.zoom + steps, 0), len(ZOOMS) - 1))

    def scrolled(self, bars: int, total: int) -> View:
        """Return the view moved back in time by `bars` drawn bars (negative: forward)."""
        step = bars * self.level.bucket
        return replace(self, offset=min(max(self.offset + step, 0), max(total - 1, 0)))

    def centred_on(self, index: int, total: int, capacity: int) -> View:
        """Return the view scrolled so candle `index` sits in the middle of `capacity` bars."""
        shown = capacity * self.level.bucket
        offset = total - 1 - index - (shown - 1) // 2
        return replace(self, offset=min(max(offset, 0), max(total - 1, 0)))


def capacity(columns: int, view: View) -> int:
    """Return how many drawn bars fit in `columns`."""
    return max(columns // view.level.slot, 0)


def visible(series: CandleSeries, view: View, columns: int) -> list[Bar]:
    """Return the drawn bars a viewport of `columns` shows: bucketed, newest at the right edge."""
    end = len(series.bars) - view.offset
    fit = capacity(columns, view)
    if end <= 0 or fit == 0:
        return []
    bucket = view.level.bucket
    # take whole buckets plus one spare so the leftmost drawn bar is never a partial bucket
    start = max(end - (fit + 1) * bucket, 0)
    drawn = bucketed(series.bars[start:end], bucket, series.period_s)
    return drawn[-fit:]


def index_at(bars: Sequence[Bar], time: datetime) -> int | None:
    """Return the index of the bar holding `time` (the last bar opening at or before it)."""
    at = bisect.bisect_right([b.time for b in bars], time) - 1
    return at if at >= 0 else None
