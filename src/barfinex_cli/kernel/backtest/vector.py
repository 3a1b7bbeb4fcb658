"""Detector-only backtest: a strategy's signals straight into fills, vectorised over history.

The fastest honest answer to "what would this strategy have done": the detector's own
`VectorEngine` finds the signals (the same ones `bfx detector scan` and the live detector fire),
and each becomes an order with no advisor and no inspector in between. `bfx optimize` runs every
trial through here; `bfx backtest --detector-only` prints it.

Fill convention: a signal decided on candle i's close fills at candle i+1's open, moved against
the trade by the slippage (a buy at open * (1 + slippage), a sell at open * (1 - slippage)), and
pays the fee on the filled notional. A signal on the last candle has no next open and does not
fill (`BacktestResult.unfilled` counts them).

Signal semantics, per symbol, one position at a time (no pyramiding):
- `open D` / `flip D`: flat → open D; holding the other side → close it and open D (a flip: two
  fills); already holding D → nothing.
- `close D`: holding D → close it all; else nothing.
- `reduce D`: holding D → sell `reduce_pct` of what is held; else nothing.
- On one candle exits apply before entries; an entry and a close of the same side on one candle
  cancel out (vectorbt's default for conflicting signals), as do entries of both sides.
Sizing: an entry commits `size_pct` of the symbol's equity at the fill price, fee included
(100 % is vectorbt's `size=inf`). Several symbols split the initial equity into equal sleeves.

Nothing walks the candles in Python: the signal candles come from the engine's rule masks
(`signals.py`), the position each leaves is a forward fill over them, and cash compounds as a
product over the round trips (`ledger.py`); the curve is numpy over every candle.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, TypeVar

import numpy as np

from barfinex_cli.detector.engine import VectorEngine, prepare_frame
from barfinex_cli.errors import UsageError
from barfinex_cli.kernel.backtest.ledger import Costs, Ledger, simulate
from barfinex_cli.kernel.backtest.metrics import metrics_of_arrays
from barfinex_cli.kernel.backtest.result import BacktestResult, EquityCurve, Fill, Trade
from barfinex_cli.kernel.backtest.signals import signal_candles
from barfinex_cli.market.candles import timeframe_ms

if TYPE_CHECKING:
    import polars as pl

    from barfinex_cli.detector.strategy import Strategy

MAX_BPS = 10_000.0
T = TypeVar("T")


def check_costs(fees_bps: float, slippage_bps: float) -> None:
    """Raise a one-line `UsageError` unless fees are 0..10,000 bps and slippage below 10,000."""
    for name, value in (("fees", fees_bps), ("slippage", slippage_bps)):
        if not np.isfinite(value) or not 0 <= value <= MAX_BPS:
            raise UsageError(
                f"--{name} {value:g} bps is out of range; give 0 to {MAX_BPS:g} basis points "
                "(10 bps = 0.1 %)"
            )
    if slippage_bps >= MAX_BPS:
        raise UsageError("--slippage must be below 10000 bps (a sell would fill at a price of 0)")


def run_vector(
    strategy: Strategy,
    frame: pl.DataFrame,
    *,
    exchange: str,
    fees_bps: float,
    slippage_bps: float,
    initial_equity: float = 10_000.0,
    size_pct: float = 100.0,
    reduce_pct: float = 50.0,
    run_id: str | None = None,
    params: dict[str, float | int | str] | None = None,
    objects: bool = True,
    points: bool = False,
) -> BacktestResult:
    """Return the detector-only backtest of `strategy` over `frame` (see the module doc).

    Args:
        strategy: The strategy to run.
        frame: Candles (`open_ms`, `open`, `close`, ...), with a `symbol` column for several
            symbols; without one they are the strategy's first symbol.
        exchange: The exchange the candles come from (labels the result).
        fees_bps: Fee per fill, in basis points of the notional.
        slippage_bps: Price moved against each fill, in basis points.
        initial_equity: Starting equity in quote currency.
        size_pct: Share of the symbol's equity an entry commits, fee included.
        reduce_pct: Share of the position a `reduce` signal sells.
        run_id: The run's id (default: a fresh UUID).
        params: Strategy parameters to record on the result.
        objects: Fill `fills` and `trades` with objects; `fills_table` and `trades_table`
            always hold the same rows as columns (skip objects when only figures matter).
        points: Fill `equity` with one `EquityPoint` per candle (slow on long histories;
            `curve` always holds the same figures as arrays).

    Raises:
        UsageError: Costs, sizes or the initial equity out of range, or no candles.
    """
    import polars as pl

    check_costs(fees_bps, slippage_bps)
    if not initial_equity > 0 or not np.isfinite(initial_equity):
        raise UsageError(f"--initial {initial_equity:g}: the starting equity must be above 0")
    if not 0 < size_pct <= 100 or not 0 < reduce_pct <= 100:
        raise UsageError("size and reduce are percentages above 0 and at most 100")
    run_id = run_id or str(uuid.uuid4())
    # only what the rules and the fills read is checked and carried (a wide file costs nothing)
    wanted = {"open_ms", "time", "timestamp", "symbol", "open", "close"} | strategy.columns()
    frame = prepare_frame(frame.select(c for c in frame.columns if c in wanted))
    if frame.height == 0:
        raise UsageError("no candles to backtest: the data holds no rows in that window")
    if "symbol" in frame.columns:
        split = frame.partition_by("symbol", maintain_order=True, as_dict=True)
        parts = [(str(key[0]), part.drop("symbol")) for key, part in split.items()]
    else:
        parts = [(strategy.symbols[0], frame)]
    step = timeframe_ms(strategy.timeframe)
    sleeve = initial_equity / len(parts)
    costs = Costs(fees_bps / 1e4, slippage_bps / 1e4, size_pct / 100, reduce_pct / 100)
    engine = VectorEngine(strategy)
    engine.broken = {}
    ledgers: list[Ledger] = []
    for symbol, part in parts:
        found = signal_candles(engine, part, symbol)
        ledgers.append(simulate(symbol, part, found, costs, sleeve, step, run_id))
    if len(ledgers) == 1:
        times, values = ledgers[0].times, ledgers[0].equity
    else:
        joined = pl.concat(
            [pl.DataFrame({"t": b.times, f"e{k}": b.equity}) for k, b in enumerate(ledgers)],
            how="align",
        ).sort("t")
        filled = joined.with_columns(pl.exclude("t").forward_fill().fill_null(sleeve))
        times = filled["t"].to_numpy()
        values = filled.select(pl.sum_horizontal(pl.exclude("t")))[:, 0].to_numpy()
    fills, trades = ledgers[0].fills, ledgers[0].trades  # one symbol: already in time order
    if len(ledgers) > 1:
        fills = pl.concat([b.fills for b in ledgers]).sort("time_ms", maintain_order=True)
        trades = pl.concat([b.trades for b in ledgers]).sort("entry_ms", maintain_order=True)
    fees = float(fills["fee"].sum())
    metrics = metrics_of_arrays(
        values, trades["pnl"].to_numpy(), trades["entry_ms"].to_numpy(),
        trades["exit_ms"].to_numpy(), fees, strategy.timeframe, initial_equity=initial_equity,
    )  # fmt: skip
    curve = EquityCurve(times.astype(np.int64, copy=False), values.astype(np.float64, copy=False))
    return BacktestResult(
        run_id=run_id,
        mode="detector",
        strategy=strategy.name,
        exchange=exchange,
        symbols=tuple(b.symbol for b in ledgers),
        timeframe=strategy.timeframe,
        start_ms=int(times[0]),
        end_ms=int(times[-1]) + step,
        bars=frame.height,
        initial_equity=initial_equity,
        signals=sum(b.signals for b in ledgers),
        metrics=metrics,
        fills=rows_of(fills, Fill) if objects else (),
        trades=rows_of(trades, Trade) if objects else (),
        equity=curve.points() if points else (),
        params=dict(params or {}),
        curve=curve,
        unfilled=sum(b.unfilled for b in ledgers),
        fills_table=fills,
        trades_table=trades,
        broken=dict(engine.broken),
    )


def rows_of(table: pl.DataFrame, kind: type[T]) -> tuple[T, ...]:
    """Return a table's rows as `kind` objects (its columns are `kind`'s fields, in order)."""
    return tuple(map(kind, *(table[c].to_list() for c in table.columns)))
