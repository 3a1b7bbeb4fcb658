"""Signals to fills, positions, cash and equity for one symbol, in numpy with no per-bar loop.

`vector.py` states the rules (fill at the next open, exits before entries, no pyramiding, all-in
sizing); this module carries them out over arrays:

1. The position before each signal candle is a forward fill: only entries set a side, and a
   close of side D takes effect exactly when the last entry before it was D.
2. Each candle yields up to three fill rows in order: a close or reduce, the closing leg of a
   flip, an entry. An entry starts a round trip ("segment").
3. Sized per unit of equity, a segment multiplies the sleeve's cash by a factor its own prices
   decide, so the cash each entry commits is a cumulative product over the segments before it.
4. Cash and position after each filled candle, laid over every candle by `searchsorted`, give
   the equity at each close.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    import polars as pl

    from barfinex_cli.kernel.backtest.signals import SignalCandles

Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class Costs:
    """Fractions (not bps or pct): fee, slippage, entry size of equity, reduce of position."""

    fee: float
    slip: float
    size: float
    reduce: float


@dataclass(frozen=True, slots=True)
class Ledger:
    """One symbol's run: equity per candle, fills and round trips as tables."""

    symbol: str
    times: Ints
    equity: Floats
    fills: pl.DataFrame
    trades: pl.DataFrame
    signals: int
    unfilled: int


def before(values: Ints, valid: npt.NDArray[np.bool_]) -> Ints:
    """Return, at each k, the last `values[m]` with `valid[m]` and m < k (0 when none)."""
    k = len(values)
    pos = np.maximum.accumulate(np.where(valid, np.arange(k), -1)) if k else np.zeros(0, np.int64)
    prev = np.empty(k, dtype=np.int64)
    if k:
        prev[0] = -1
        prev[1:] = pos[:-1]
    return np.where(prev >= 0, values[np.maximum(prev, 0)], 0)


def simulate(
    symbol: str,
    part: pl.DataFrame,
    found: SignalCandles,
    costs: Costs,
    cash0: float,
    step: int,
    run_id: str,
) -> Ledger:
    """Play the firing candles `found` over the candles of `part` (one symbol, prepared)."""
    opens = part["open"].to_numpy()
    closes = part["close"].to_numpy()
    times = part["open_ms"].to_numpy().astype(np.int64, copy=False)
    n = len(closes)
    last = found.index + 1 >= n  # no next open to fill at
    unfilled = int(found.signals[last].sum())
    keep = ~last
    idx = found.index[keep]
    entry = found.entry[keep].astype(np.int64)
    cl, cs = found.close_long[keep], found.close_short[keep]
    rl, rs = found.reduce_long[keep], found.reduce_short[keep]

    # 1. side held before each candle's fills
    side = before(entry, entry != 0)  # the last entry's side
    closing = ((side == 1) & cl) | ((side == -1) & cs)
    after = np.where(entry != 0, entry, 0)
    held = before(after, (entry != 0) | closing)
    full = (held != 0) & closing
    reduced = ~full & (((held == 1) & rl) | ((held == -1) & rs))
    flip = ~full & (entry != 0) & (held != 0) & (entry != held)
    enter = (entry != 0) & (entry != np.where(full, 0, held))

    # 2. fill rows in order: [close | reduce], [flip exit], [entry]
    slots = np.stack([full | reduced, flip, enter], axis=1).ravel()
    rows = np.flatnonzero(slots)
    ev, slot = rows // 3, rows % 3
    is_entry = slot == 2
    is_reduce = (slot == 0) & reduced[ev]
    seg = np.cumsum(is_entry) - 1
    entry_rows = np.flatnonzero(is_entry)
    seg_side = entry[ev[entry_rows]].astype(np.float64)  # +1 long, -1 short
    sgn = seg_side[seg] if len(seg) else np.zeros(0)
    buy = np.where(is_entry, sgn > 0, sgn < 0)
    bar = idx[ev] + 1
    price = opens[bar] * np.where(buy, 1 + costs.slip, 1 - costs.slip)
    pe = price[entry_rows]

    # share of the segment's entry quantity each row fills
    red_count = np.cumsum(is_reduce)
    red_start = red_count[entry_rows][seg]
    n_before = red_count - is_reduce - red_start
    keep_share = (1 - costs.reduce) ** n_before
    share = np.where(is_entry, 1.0, np.where(is_reduce, costs.reduce * keep_share, keep_share))

    # 3. per unit of equity, then compounded over the segments
    unit_q = costs.size / (pe * (1 + costs.fee))
    q1 = unit_q[seg] * share
    direction = np.where(buy, 1.0, -1.0)
    d1 = -direction * q1 * price - q1 * price * costs.fee
    growth = np.bincount(seg, weights=d1, minlength=len(entry_rows)) + 1.0
    wealth = np.cumprod(growth)
    gone = np.flatnonzero(wealth <= 0)
    if len(gone):  # bust: no equity left to enter with
        growth[gone[0] + 1 :] = 1.0
        wealth = np.cumprod(growth)
    start_cash = cash0 * np.concatenate(([1.0], wealth[:-1]))
    scale = np.maximum(start_cash, 0.0)[seg]
    qty = scale * q1
    delta = scale * d1
    fee = qty * price * costs.fee
    run_cash = np.cumsum(delta)
    base = (run_cash - delta)[entry_rows]
    cash_after = start_cash[seg] + run_cash - base[seg]
    left = np.where(is_entry | is_reduce, (1 - costs.reduce) ** (n_before + is_reduce), 0.0)
    pos_after = sgn * scale * unit_q[seg] * left

    # 4. equity at every close: the last filled candle at or before it
    last_row = np.r_[ev[1:] != ev[:-1], True] if len(ev) else np.zeros(0, np.bool_)
    change = bar[last_row]
    # state k (0: before any fill) holds from the k-th filled candle to the next one
    lasts = np.diff(np.concatenate(([0], change, [n])))
    cash = np.repeat(np.concatenate(([cash0], cash_after[last_row])), lasts)
    pos = np.repeat(np.concatenate(([0.0], pos_after[last_row])), lasts)
    equity = np.multiply(pos, closes, out=pos)
    equity += cash

    fills, trades = _tables(
        symbol, run_id, times, closes, step, bar, price, qty, fee, buy, slot, is_reduce,
        seg, entry_rows, seg_side, share, pos_after,
    )  # fmt: skip
    return Ledger(symbol, times, equity, fills, trades, int(found.signals.sum()), unfilled)


FILL_REASONS = ("exit", "flip", "entry", "reduce")
TRADE_REASONS = ("close", "flip", "entry", "reduce")


def _names(codes: npt.NDArray[np.integer[Any]], names: tuple[str, ...]) -> pl.Series:
    """Return small integer codes as the strings they stand for (in polars, not numpy)."""
    import polars as pl

    mapping = dict(enumerate(names))
    return pl.Series(codes.astype(np.int64)).replace_strict(mapping, return_dtype=pl.String)


def _tables(
    symbol: str, run_id: str, times: Ints, closes: Floats, step: int, bar: Ints, price: Floats,
    qty: Floats, fee: Floats, buy: npt.NDArray[np.bool_], slot: Ints,
    is_reduce: npt.NDArray[np.bool_], seg: Ints, entry_rows: Ints, seg_side: Floats,
    share: Floats, pos_after: Floats,
) -> tuple[pl.DataFrame, pl.DataFrame]:  # fmt: skip
    """Return the fills and the round trips (one per close, reduce or flip, and one still open)."""
    import polars as pl

    kind = np.where(is_reduce, 3, slot)  # 0 exit, 1 flip, 2 entry, 3 reduce
    count = len(bar)
    fills = pl.DataFrame({
        "order_id": pl.int_range(1, count + 1, eager=True).cast(pl.String),
        "time_ms": times[bar], "symbol": pl.repeat(symbol, count, eager=True),
        "side": _names(buy.astype(np.int8), ("sell", "buy")), "quantity": qty, "price": price,
        "fee": fee, "reason": _names(kind, FILL_REASONS),
        "trace_id": pl.repeat(None, count, dtype=pl.String, eager=True),
    })  # fmt: skip
    prefix = pl.lit(f"{run_id[:8]}-{symbol}-")
    fills = fills.with_columns(pl.concat_str(prefix, "order_id").alias("order_id"))
    out = np.flatnonzero(slot != 2)
    s = seg[out]
    entry_price = price[entry_rows][s]
    entry_fee = fee[entry_rows][s] * share[out]
    sides = seg_side[s]
    pnl = (price[out] - entry_price) * qty[out] * sides - entry_fee - fee[out]
    with np.errstate(divide="ignore", invalid="ignore"):  # a bust account enters with 0
        return_pct = pnl / (entry_price * qty[out]) * 100
    trades = pl.DataFrame({
        "symbol": pl.repeat(symbol, len(out), eager=True),
        "side": _names((sides > 0).astype(np.int8), ("short", "long")),
        "entry_ms": times[bar[entry_rows]][s], "exit_ms": times[bar[out]], "quantity": qty[out],
        "entry_price": entry_price, "exit_price": price[out], "fees": entry_fee + fee[out],
        "pnl": pnl, "return_pct": return_pct,
        "exit_reason": _names(kind[out], TRADE_REASONS),
    }, schema_overrides={"entry_ms": pl.Int64, "exit_ms": pl.Int64})  # fmt: skip
    if len(pos_after) and pos_after[-1] != 0:  # still open: marked to the last close, no exit fee
        k = entry_rows[-1]
        held = abs(float(pos_after[-1]))
        long = seg_side[-1] > 0
        pe, efee = float(price[k]), float(fee[k]) * held / float(qty[k])
        marked = (float(closes[-1]) - pe) * held * (1 if long else -1) - efee
        trades = pl.concat([trades, pl.DataFrame({
            "symbol": [symbol], "side": ["long" if long else "short"],
            "entry_ms": [int(times[bar[k]])], "exit_ms": [int(times[-1]) + step],
            "quantity": [held], "entry_price": [pe], "exit_price": [float(closes[-1])],
            "fees": [efee], "pnl": [marked], "return_pct": [marked / (pe * held) * 100],
            "exit_reason": ["open"],
        }, schema=trades.schema)])  # fmt: skip
    trades = trades.with_columns(pl.lit(None, pl.String).alias("trace_id"))
    # after a bust (a short that lost more than the sleeve) entries have nothing to commit
    return fills.filter(pl.col("quantity") > 0), trades.filter(pl.col("quantity") > 0)
