"""From a pipeline run's fills to its round trips and its equity curve.

The event-driven backtest learns what happened from the order events the paper broker published;
this module turns those fills into `Trade`s (a position opened and brought back to flat, or
flipped) and into the equity at every candle close (cash plus positions marked to that close),
the shapes `metrics.compute_metrics` scores. Pure functions over plain numbers: no IO.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from barfinex_cli.kernel.backtest.result import EquityPoint, Fill, Trade

EPSILON = 1e-12


@dataclass
class _Open:
    """A position being built: signed quantity, average entry, and what it cost so far."""

    quantity: float = 0.0
    entry_price: float = 0.0
    entry_ms: int = 0
    opened: float = 0.0
    """Total quantity opened (the trade's size)."""
    fees: float = 0.0
    realised: float = 0.0
    exit_notional: float = 0.0
    exit_quantity: float = 0.0
    trace_id: str | None = None


def trades_of(fills: Iterable[Fill]) -> list[Trade]:
    """Return the round trips the fills make, per symbol, in the order they closed.

    A fill against the position closes it (partly); one larger than the position closes it and
    opens the rest the other way, with the fee split by quantity.
    """
    book: dict[str, _Open] = {}
    trades: list[Trade] = []
    for fill in fills:
        pos = book.setdefault(fill.symbol, _Open())
        signed = fill.quantity if fill.side == "buy" else -fill.quantity
        remaining, fee_left = signed, fill.fee
        if abs(pos.quantity) > EPSILON and pos.quantity * signed < 0:
            closing = min(abs(signed), abs(pos.quantity))
            share = closing / abs(signed)
            fee = fill.fee * share
            direction = 1.0 if pos.quantity > 0 else -1.0
            pos.realised += closing * (fill.price - pos.entry_price) * direction
            pos.fees += fee
            pos.exit_notional += closing * fill.price
            pos.exit_quantity += closing
            pos.quantity += closing if pos.quantity < 0 else -closing
            remaining = signed + (closing if signed < 0 else -closing)
            fee_left = fill.fee - fee
            if abs(pos.quantity) <= EPSILON:
                trades.append(_close(fill.symbol, pos, fill))
                book[fill.symbol] = pos = _Open()
        if abs(remaining) > EPSILON:
            if abs(pos.quantity) <= EPSILON:
                pos.entry_ms, pos.trace_id = fill.time_ms, fill.trace_id
            total = abs(pos.quantity) + abs(remaining)
            pos.entry_price = (
                pos.entry_price * abs(pos.quantity) + fill.price * abs(remaining)
            ) / total
            pos.quantity += remaining
            pos.opened += abs(remaining)
            pos.fees += fee_left
    return trades


def _close(symbol: str, pos: _Open, fill: Fill) -> Trade:
    exit_price = pos.exit_notional / pos.exit_quantity
    pnl = pos.realised - pos.fees
    notional = pos.entry_price * pos.opened
    return Trade(
        symbol=symbol,
        side="long" if fill.side == "sell" else "short",
        entry_ms=pos.entry_ms,
        exit_ms=fill.time_ms,
        quantity=pos.opened,
        entry_price=pos.entry_price,
        exit_price=exit_price,
        fees=pos.fees,
        pnl=pnl,
        return_pct=pnl / notional * 100 if notional else 0.0,
        exit_reason=fill.reason,
        trace_id=pos.trace_id,
    )


def equity_curve(
    fills: Sequence[Fill],
    closes: Mapping[str, Sequence[tuple[int, float]]],
    initial: float,
) -> list[EquityPoint]:
    """Return cash plus open positions marked to the close, at every candle close time.

    `closes` holds per symbol its (close time ms, close price) pairs, oldest first. A fill at a
    close time counts at that close (the order answered that candle).
    """
    times = sorted({t for series in closes.values() for t, _ in series})
    marks: dict[str, float] = {}
    where = {s: 0 for s in closes}
    held: dict[str, float] = {}
    cash = initial
    ordered = sorted(fills, key=lambda f: f.time_ms)
    i = 0
    points: list[EquityPoint] = []
    for t in times:
        while i < len(ordered) and ordered[i].time_ms <= t:
            fill = ordered[i]
            signed = fill.quantity if fill.side == "buy" else -fill.quantity
            cash -= signed * fill.price + fill.fee
            held[fill.symbol] = held.get(fill.symbol, 0.0) + signed
            marks.setdefault(fill.symbol, fill.price)
            i += 1
        for symbol, series in closes.items():
            j = where[symbol]
            while j < len(series) and series[j][0] <= t:
                marks[symbol] = series[j][1]
                j += 1
            where[symbol] = j
        value = cash + sum(q * marks.get(s, 0.0) for s, q in held.items())
        points.append(EquityPoint(t, value))
    return points
