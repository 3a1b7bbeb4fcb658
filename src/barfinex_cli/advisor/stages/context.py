"""Stage 1, context: what the market and the account look like for the signal, from memory.

It reads the `Snapshot` the advisor's `MarketContext` holds for the signal's series (no network
call) and derives what later stages need: the last price, the top of book and its spread, the
ATR of the recent candles, how many candles the context lags the signal, the open position and
the equity. It blocks only when the context holds no candle of the series at all.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from decimal import Decimal

from barfinex_cli.advisor.context import Snapshot
from barfinex_cli.advisor.stages.base import Events, SignalView, blocked, passed
from barfinex_cli.contracts.advisor import ContextFetched, StageOutcome
from barfinex_cli.contracts.times import to_ms
from barfinex_cli.market.candles import timeframe_ms


@dataclass(frozen=True, slots=True)
class MarketView:
    """The context a signal is decided on."""

    snapshot: Snapshot
    last_price: float
    bid: float | None
    ask: float | None
    spread_pct: float | None
    atr: float | None
    lag: int
    """Candles between the newest one held and the signal's candle (0: the signal's own)."""
    age_s: float
    """Market seconds between the newest candle's close and the signal's candle close."""


@dataclass(frozen=True, slots=True)
class ContextResult:
    outcome: StageOutcome
    events: Events
    view: MarketView | None


def atr(candles: tuple[dict[str, float], ...], period: int) -> float | None:
    """Return the mean true range of the last `period` candles, or None with too few."""
    if len(candles) < period + 1:
        return None
    total = 0.0
    for prev, row in zip(candles[-period - 1 : -1], candles[-period:], strict=True):
        pc = prev["close"]
        total += max(row["high"] - row["low"], abs(row["high"] - pc), abs(row["low"] - pc))
    return total / period


def _dec(value: float) -> Decimal:
    return Decimal(repr(round(value, 10)))


def build_context(view: SignalView, snapshot: Snapshot, atr_period: int) -> ContextResult:
    """Return the signal's market view from `snapshot`, and `advisor.context.fetched`."""
    start = time.perf_counter()
    signal = view.signal
    if not snapshot.candles:
        detail = f"no {signal.symbol} {signal.timeframe} candles in the context"
        return ContextResult(blocked("context", detail), (), None)
    tf = timeframe_ms(signal.timeframe)
    signal_open = to_ms(signal.candle_time)
    newest = snapshot.last_open_ms or 0
    lag = max(0, (signal_open - newest) // tf)
    age_s = max(0.0, (signal_open - newest) / 1000)
    spread = snapshot.spread_pct
    value = atr(snapshot.candles, atr_period)
    market = MarketView(
        snapshot=snapshot,
        last_price=snapshot.last_close,
        bid=snapshot.bid,
        ask=snapshot.ask,
        spread_pct=spread,
        atr=value,
        lag=int(lag),
        age_s=age_s,
    )
    event = ContextFetched(
        signal_id=view.id,
        exchange=signal.exchange,
        symbol=signal.symbol,
        timeframe=signal.timeframe,
        candles=len(snapshot.candles),
        last_price=_dec(market.last_price),
        bid=_dec(market.bid) if market.bid is not None else None,
        ask=_dec(market.ask) if market.ask is not None else None,
        spread_pct=round(spread, 6) if spread is not None else None,
        atr=_dec(value) if value is not None else None,
        position_size=_dec(snapshot.position_size),
        equity=_dec(snapshot.equity) if snapshot.equity is not None else None,
        age_s=age_s,
        duration_us=round((time.perf_counter() - start) * 1e6, 3),
    )
    detail = f"{len(snapshot.candles)} candles, last {market.last_price:g}"
    return ContextResult(passed("context", detail), (event,), market)
