"""What the Market screen draws for one series, from the studio's state, with no Textual.

Turns the contract models the studio holds (REST candles, live `market.candle` events, signals,
fills, open orders and positions) into the chart's own types: bars, markers and stop /
take-profit levels. A protective order is a reduce-only order still working on an open
position: a stop (`stop_market`/`stop_limit`, drawn at its stop price) or a take-profit (a
`limit`, drawn at its limit price), which is how the inspector places them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from barfinex_cli.contracts.detector import SignalGenerated
from barfinex_cli.contracts.envelope import Envelope
from barfinex_cli.contracts.market import CandleClosed
from barfinex_cli.contracts.orders import OrderFilled, OrderPartiallyFilled, OrderState
from barfinex_cli.contracts.rest import Candle, SeriesInfo
from barfinex_cli.studio.chart_model import Bar, Level, Marker

DONE = ("filled", "cancelled", "rejected")


@dataclass(frozen=True, slots=True, order=True)
class SeriesKey:
    """One chartable series: exchange, symbol and timeframe."""

    exchange: str
    symbol: str
    timeframe: str

    @property
    def title(self) -> str:
        """Return the chart's title, e.g. `binance BTC/USDT 1m`."""
        return f"{self.exchange} {self.symbol} {self.timeframe}"


def series_keys(series: Iterable[SeriesInfo]) -> list[SeriesKey]:
    """Return the distinct series the store holds, sorted."""
    return sorted({SeriesKey(s.exchange, s.symbol, s.timeframe) for s in series})


def bar_from_rest(candle: Candle) -> Bar:
    """Return a REST candle as a chart bar."""
    return Bar(candle.time, candle.open, candle.high, candle.low, candle.close, candle.volume)


def bar_from_event(candle: CandleClosed) -> Bar:
    """Return a live closed candle as a chart bar (decimals become floats for drawing)."""
    return Bar(candle.open_time, float(candle.open), float(candle.high), float(candle.low),
               float(candle.close), float(candle.volume))  # fmt: skip


def live_bars(candles: Iterable[CandleClosed], key: SeriesKey) -> list[Bar]:
    """Return the live candles of `key` as bars."""
    return [
        bar_from_event(c)
        for c in candles
        if (c.exchange, c.symbol, c.timeframe) == (key.exchange, key.symbol, key.timeframe)
    ]


def markers(
    key: SeriesKey, signals: Iterable[Envelope[SignalGenerated]], fills: Iterable[Envelope[Any]]
) -> list[Marker]:
    """Return the signal and fill markers of `key`'s symbol (signals of any timeframe)."""
    out: list[Marker] = []
    for event in signals:
        signal = event.payload
        if signal.symbol == key.symbol and signal.exchange == key.exchange:
            out.append(Marker(signal.candle_time, signal.direction))
    for event in fills:
        payload = event.payload
        if not isinstance(payload, OrderFilled | OrderPartiallyFilled):
            continue
        order = payload.order
        if order.symbol == key.symbol and order.exchange in (key.exchange, "paper"):
            out.append(Marker(payload.fill.time, order.side, float(payload.fill.price)))
    return out


def levels(
    key: SeriesKey, orders: Iterable[OrderState], open_symbols: Iterable[str]
) -> list[Level]:
    """Return the stop and take-profit lines of `key`'s symbol while a position on it is open."""
    if key.symbol not in set(open_symbols):
        return []
    out: list[Level] = []
    for order in orders:
        if order.symbol != key.symbol or not order.reduce_only or order.status in DONE:
            continue
        if order.type in ("stop_market", "stop_limit") and order.stop_price is not None:
            out.append(Level(float(order.stop_price), "stop"))
        elif order.type == "limit" and order.price is not None:
            out.append(Level(float(order.price), "take_profit"))
    return out


def open_symbols(positions: Mapping[tuple[str, str], Any]) -> list[str]:
    """Return the symbols with an open position, from a map keyed by (account, symbol)."""
    return [symbol for (_account, symbol), p in positions.items() if getattr(p, "size", 0)]
