"""The indicator vocabulary a strategy file writes with (`from ... import indicators as ta`).

Each function returns a node (see `indicators_core`) that evaluates both over a whole candle frame
and one closed candle at a time, with equal results. Sources are column names ("close"), nodes
(`ta.rsi(14)`) or numbers. Comparisons (`>`, `<=`, ...) make conditions; `&`, `|`, `~` combine
them. An unknown name (`ta.emaa`) fails with the close names, so a typo names its fix.

Conventions: EMA and Wilder smoothing (RSI, ATR, ADX) are seeded with the simple mean of their
first `n` inputs; standard deviations are population (ddof 0); VWAP uses the typical price
(high + low + close) / 3.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import TYPE_CHECKING, NamedTuple

from barfinex_cli.detector.indicators_core import Column, Const, Kind, Node, Raw, as_node
from barfinex_cli.detector.indicators_ops import Logic, SafeDiv, Shift, Unary
from barfinex_cli.detector.indicators_window import (
    DirectionalMove,
    Extreme,
    SessionSum,
    Smooth,
    Stdev,
    TrueRange,
    Window,
)

if TYPE_CHECKING:
    import polars as pl

Source = Node | str | float

open = Column("open")  # shadows the builtin on purpose: `ta.open` is the candle's open
high = Column("high")
low = Column("low")
close = Column("close")
volume = Column("volume")
buy_volume = Column("buy_volume")
sell_volume = Column("sell_volume")


class UnknownIndicator(AttributeError):
    """`ta.<name>` that the vocabulary does not hold; the message names the close ones."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"unknown indicator ta.{name}{close_names(name, PUBLIC, 'ta.')}")


def close_names(name: str, known: Iterable[str], prefix: str = "") -> str:
    """Return '; did you mean X, Y?' for the names close to `name`, or ''."""
    near = difflib.get_close_matches(name, list(known), n=3, cutoff=0.6)
    return f"; did you mean {', '.join(prefix + n for n in near)}?" if near else ""


def _n(n: object, name: str) -> int:
    """Return the period `n` of indicator `name`, refused at definition unless a whole n >= 1.

    Checked before anything divides by it: `ta.rsi(0)` says so, not ZeroDivisionError.
    """
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"ta.{name}: the period must be a whole number of candles >= 1, not {n!r}")
    return n


def _src(source: Source) -> Node:
    node = as_node(source)
    if node.kind != "num":
        raise TypeError(f"{node} is a condition; indicators read numbers")
    return node


def col(name: str) -> Node:
    """Return a candle column by name: open, high, low, close, volume, buy_volume, sell_volume."""
    return Column(name)


def sma(source: Source = "close", n: int = 20) -> Node:
    """Simple moving average of the last `n` values."""
    n = _n(n, "sma")
    x = _src(source)
    return Window(x, n, "mean", label=f"sma({x}, {n})")


def ema(source: Source = "close", n: int = 20) -> Node:
    """Exponential moving average, alpha = 2 / (n + 1), seeded with the SMA of the first n."""
    n = _n(n, "ema")
    x = _src(source)
    return Smooth(x, n, 2.0 / (n + 1), label=f"ema({x}, {n})")


def rma(source: Source = "close", n: int = 14) -> Node:
    """Wilder's moving average (alpha = 1 / n), seeded with the SMA of the first n."""
    n = _n(n, "rma")
    x = _src(source)
    return Smooth(x, n, 1.0 / n, label=f"rma({x}, {n})")


def stdev(source: Source = "close", n: int = 20) -> Node:
    """Population standard deviation of the last `n` values."""
    n = _n(n, "stdev")
    x = _src(source)
    return Stdev(x, n, label=f"stdev({x}, {n})")


def rsi(n: int = 14, source: Source = "close") -> Node:
    """Wilder's RSI: 100 * avg gain / (avg gain + avg loss); 50 when nothing moved."""
    n = _n(n, "rsi")
    x = _src(source)
    change = x - Shift(x, 1)
    gain = Smooth(Unary("pos", change), n, 1.0 / n)
    loss = Smooth(Unary("pos", -change), n, 1.0 / n)
    label = f"rsi({n})" if x.key == close.key else f"rsi({x}, {n})"
    return SafeDiv(Const(100.0) * gain, gain + loss, Const(50.0), label=label)


class MACD(NamedTuple):
    """MACD line (fast EMA - slow EMA), its signal line (EMA of the line) and the histogram."""

    line: Node
    signal: Node
    hist: Node


def macd(fast: int = 12, slow: int = 26, signal: int = 9, source: Source = "close") -> MACD:
    """Return `MACD(line, signal, hist)`; use e.g. `ta.macd().hist > 0`."""
    fast, slow, signal = _n(fast, "macd"), _n(slow, "macd"), _n(signal, "macd")
    x = _src(source)
    name = f"macd({x}, {fast}, {slow}, {signal})"
    line = Smooth(x, fast, 2.0 / (fast + 1)) - Smooth(x, slow, 2.0 / (slow + 1))
    line.label = f"{name}.line"
    sig = Smooth(line, signal, 2.0 / (signal + 1), label=f"{name}.signal")
    hist = line - sig
    hist.label = f"{name}.hist"
    return MACD(line, sig, hist)


class Bands(NamedTuple):
    """Bollinger bands: the SMA and the SMA plus and minus k standard deviations."""

    mid: Node
    upper: Node
    lower: Node


def bollinger(n: int = 20, k: float = 2.0, source: Source = "close") -> Bands:
    """Return `Bands(mid, upper, lower)`; use e.g. `ta.close < ta.bollinger(20, 2).lower`."""
    n = _n(n, "bollinger")
    x = _src(source)
    name = f"bollinger({x}, {n}, {k:g})"
    mid = Window(x, n, "mean", label=f"{name}.mid")
    width = Const(float(k)) * Stdev(x, n)
    upper, lower = mid + width, mid - width
    upper.label, lower.label = f"{name}.upper", f"{name}.lower"
    return Bands(mid, upper, lower)


def true_range() -> Node:
    """max(high - low, |high - previous close|, |low - previous close|)."""
    return TrueRange(high, low, close, label="true_range()")


def atr(n: int = 14) -> Node:
    """Wilder's average true range."""
    n = _n(n, "atr")
    return Smooth(TrueRange(high, low, close), n, 1.0 / n, label=f"atr({n})")


def _di(n: int, side: str) -> Node:
    n = _n(n, f"{side}_di")
    move = DirectionalMove(high, low, "plus" if side == "plus" else "minus")
    smoothed_move = Smooth(move, n, 1.0 / n)
    average_range = Smooth(TrueRange(high, low, close), n, 1.0 / n)
    return SafeDiv(Const(100.0) * smoothed_move, average_range, Const(0.0), label=f"{side}_di({n})")


def plus_di(n: int = 14) -> Node:
    """Wilder's +DI: 100 * smoothed +DM / ATR."""
    return _di(n, "plus")


def minus_di(n: int = 14) -> Node:
    """Wilder's -DI: 100 * smoothed -DM / ATR."""
    return _di(n, "minus")


def adx(n: int = 14) -> Node:
    """Wilder's ADX: the smoothed DX, 100 * |+DI - -DI| / (+DI + -DI); first at candle 2n."""
    n = _n(n, "adx")
    pdi, mdi = _di(n, "plus"), _di(n, "minus")
    dx = SafeDiv(Const(100.0) * abs(pdi - mdi), pdi + mdi, Const(0.0))
    return Smooth(dx, n, 1.0 / n, label=f"adx({n})")


def vwap(n: int | None = None) -> Node:
    """Volume-weighted average typical price: since the UTC day began, or over `n` candles."""
    n = None if n is None else _n(n, "vwap")
    typical = (high + low + close) / 3.0
    if n is None:
        open_ms = Column("open_ms")
        return SafeDiv(
            SessionSum(typical * volume, open_ms),
            SessionSum(volume, open_ms),
            typical,
            label="vwap()",
        )
    return SafeDiv(
        Window(typical * volume, n, "sum"), Window(volume, n, "sum"), typical, label=f"vwap({n})"
    )


def zscore(source: Source = "close", n: int = 20) -> Node:
    """(x - sma(x, n)) / stdev(x, n); 0 when the window is flat."""
    n = _n(n, "zscore")
    x = _src(source)
    return SafeDiv(x - Window(x, n, "mean"), Stdev(x, n), Const(0.0), label=f"zscore({x}, {n})")


def volume_zscore(n: int = 20) -> Node:
    """How unusual this candle's volume is: the z-score of volume over `n` candles."""
    n = _n(n, "volume_zscore")
    node = zscore(volume, n)
    node.label = f"volume_zscore({n})"
    return node


def highest(source: Source = "high", n: int = 20) -> Node:
    """The highest value of the last `n` candles (this one included)."""
    n = _n(n, "highest")
    x = _src(source)
    return Extreme(x, n, "max", label=f"highest({x}, {n})")


def lowest(source: Source = "low", n: int = 20) -> Node:
    """The lowest value of the last `n` candles (this one included)."""
    n = _n(n, "lowest")
    x = _src(source)
    return Extreme(x, n, "min", label=f"lowest({x}, {n})")


def shift(source: Source, n: int = 1) -> Node:
    """The value `n` candles ago (n >= 1: only the past)."""
    x = as_node(source)
    return Shift(x, n, label=f"shift({x}, {n})")


def _cross(a: Source, b: Source, up: bool) -> Node:
    x, y = _src(a), _src(b)
    now = x > y if up else x < y
    before = Shift(x, 1) <= Shift(y, 1) if up else Shift(x, 1) >= Shift(y, 1)
    node = Logic("&", now, before)
    node.label = f"crosses_{'above' if up else 'below'}({x}, {y})"
    return node


def crosses_above(a: Source, b: Source) -> Node:
    """True on the candle where `a` rises above `b` (it was at or below on the one before)."""
    return _cross(a, b, up=True)


def crosses_below(a: Source, b: Source) -> Node:
    """True on the candle where `a` falls below `b` (it was at or above on the one before)."""
    return _cross(a, b, up=False)


def flow_delta() -> Node:
    """Taker buy volume minus taker sell volume of the candle (needs trades)."""
    delta = buy_volume - sell_volume
    delta.label = "flow_delta()"
    return delta


def flow_imbalance() -> Node:
    """(buy - sell) / (buy + sell) taker volume of the candle, in [-1, 1]; 0 with no trades."""
    return SafeDiv(
        buy_volume - sell_volume, buy_volume + sell_volume, Const(0.0), label="flow_imbalance()"
    )


def raw(expr: pl.Expr, name: str, lookback: int = 0, kind: Kind = "num") -> Node:
    """Wrap a bare polars expression (vectorised only: `bfx detector run` refuses it)."""
    return Raw(expr, name, lookback, kind)


PUBLIC = (
    "open", "high", "low", "close", "volume", "buy_volume", "sell_volume", "col", "sma", "ema",
    "rma", "stdev", "rsi", "macd", "bollinger", "true_range", "atr", "plus_di", "minus_di",
    "adx", "vwap", "zscore", "volume_zscore", "highest", "lowest", "shift", "crosses_above",
    "crosses_below", "flow_delta", "flow_imbalance", "raw",
)  # fmt: skip


def __getattr__(name: str) -> object:
    if name.startswith("__"):
        raise AttributeError(name)
    raise UnknownIndicator(name)
