"""The candles on which a strategy fires, as arrays: what a backtest needs of the detector.

`VectorEngine.evaluate` builds a `SignalRecord` per signal with every rule's attribution, which a
backtest of a million candles and fifty thousand signals does not read. This module runs the same
steps up to the decision (the engine's node frame, its rule bitmask, `Plan.scores`,
`Strategy.decide`, `Cooldown.admit`) and stops there: one row per firing candle with what it asks
for. tests/kernel/backtest/test_vector.py proves the candles and decisions equal `evaluate`'s on
the example strategies, so the two cannot drift apart unnoticed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from barfinex_cli.detector.engine import Decision, VectorEngine
from barfinex_cli.detector.strategy import Cooldown

if TYPE_CHECKING:
    import polars as pl

CODES = ("entry", "close_long", "close_short", "reduce_long", "reduce_short")


@dataclass(frozen=True, slots=True)
class SignalCandles:
    """Per firing candle (ascending): its index and what its decisions ask of the position.

    `entry` is +1 (open or flip long), -1 (short) or 0, after conflicts cancel: an entry and a
    close of the same side, or entries of both sides, on one candle ask for nothing.
    """

    index: npt.NDArray[np.int64]
    entry: npt.NDArray[np.int8]
    close_long: npt.NDArray[np.bool_]
    close_short: npt.NDArray[np.bool_]
    reduce_long: npt.NDArray[np.bool_]
    reduce_short: npt.NDArray[np.bool_]
    signals: npt.NDArray[np.int64]
    """How many signals (decisions) each candle fired."""


def codes(decisions: list[Decision]) -> tuple[int, bool, bool, bool, bool, int]:
    """Return what one candle's decisions ask for: (entry, close/reduce long/short, count)."""
    entries = {d for d, a, _ in decisions if a in ("open", "flip")}
    closes = {d for d, a, _ in decisions if a == "close"}
    reduces = {d for d, a, _ in decisions if a == "reduce"}
    clash = entries & closes
    entries, closes = entries - clash, closes - clash
    entry = 0 if len(entries) != 1 else (1 if "long" in entries else -1)
    return (entry, "long" in closes, "short" in closes, "long" in reduces, "short" in reduces,
            len(decisions))  # fmt: skip


def signal_candles(engine: VectorEngine, frame: pl.DataFrame, symbol: str) -> SignalCandles:
    """Return the candles of `frame` (one symbol, prepared) that fire, as `evaluate` finds them.

    Rules that cannot be evaluated are added to `engine.broken` and count as not holding.
    """
    import polars as pl

    strategy, plan = engine.strategy, engine.plan
    nodes, failed = engine.node_frame(frame)
    n_rules, warm = len(strategy.rules), strategy.effective_warmup - 1
    widths = ((8, pl.UInt8), (16, pl.UInt16), (32, pl.UInt32), (64, pl.UInt64))
    width = next(t for b, t in widths if n_rules <= b)
    zero, bits = pl.lit(0, width), []
    for i, rule in enumerate(strategy.rules):
        if bad := sorted(plan.depends[i] & failed.keys()):
            engine.broken[rule.name] = f"{plan.nodes[bad[0]]}: {failed[bad[0]]}"
            continue
        held = pl.col(f"__n{plan.conditions[i]}")
        bits.append(pl.when(held).then(pl.lit(1 << i, width)).otherwise(zero))
    if not bits:
        return _empty()
    masks = nodes.select(pl.sum_horizontal(bits).alias("__m"))["__m"]
    decided: dict[int, list[Decision]] = {}
    for m in masks.slice(warm).unique().to_list():
        scores = plan.scores(tuple(bool(m >> i & 1) for i in range(n_rules)))
        if plan.reached(scores) and (decisions := strategy.decide(scores)):
            decided[m] = decisions
    if not decided:
        return _empty()
    cands = (masks.slice(warm).is_in(list(decided)).arg_true() + warm).to_numpy()
    if strategy.cooldown:
        fired = np.asarray(Cooldown(strategy.cooldown).admit(symbol, cands.tolist()), np.int64)
    else:  # no quiet period: every candidate fires (what `admit` returns, without its loop)
        fired = cands.astype(np.int64, copy=False)
    if not len(fired):
        return _empty()
    keys = np.array(sorted(decided), dtype=np.uint64)
    table = np.array([codes(decided[int(k)]) for k in keys], dtype=np.int64)
    at = np.searchsorted(keys, masks.to_numpy()[fired].astype(np.uint64))
    rows = table[at]
    return SignalCandles(
        fired, rows[:, 0].astype(np.int8), rows[:, 1] == 1,
        rows[:, 2] == 1, rows[:, 3] == 1, rows[:, 4] == 1, rows[:, 5],
    )  # fmt: skip


def _empty() -> SignalCandles:
    no = np.zeros(0, dtype=np.bool_)
    return SignalCandles(np.zeros(0, np.int64), np.zeros(0, np.int8), no, no, no, no,
                         np.zeros(0, np.int64))  # fmt: skip
