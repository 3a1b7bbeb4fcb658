"""The market features the advisor scores a signal on, computed the same way in training and live.

Training needs every candle's features at once (`feature_frame`, vectorised with polars over a
whole history); the live pipeline needs one candle's features from the few candles it keeps in
memory (`features_at`, plain numpy, a few microseconds). Both must give the same numbers, or a model
is scored live on inputs it never saw in training, so every feature here is *window-bounded*: it
reads the current candle and at most `WINDOW - 1` before it, never anything after, and keeps no
recursive state (no Wilder or exponential smoothing, whose value depends on the whole history).
That is why the RSI is Cutler's (simple means of gains and losses) and the ATR a simple mean of
true ranges. The two paths agree to float rounding (1e-9; rolling sums accumulate differently).

Features, in `FEATURES` order (c = close, h = high, l = low, v = volume, at candle t):
- `ret_1`, `ret_5`, `ret_20`: log returns ln(c_t / c_{t-k}).
- `vol_20`: sample standard deviation of the last 20 one-candle log returns.
- `rsi_14`: 100 * G / (G + L), G and L the mean gain and loss of the last 14 closes' changes
  (50 when the price did not move).
- `volume_z_20`: (v_t - mean) / std of the last 20 volumes, the current one included (0 if flat).
- `atr_pct_14`: the mean true range of the last 14 candles over c_t.
- `atr_pct_rank_100`: the fraction of the last 100 `atr_pct_14` values (this one included) that
  are <= this one: 1.0 means the most volatile candle of the window.
- `efficiency_ratio_20`: |c_t - c_{t-20}| / sum of the last 20 |c_i - c_{i-1}| (Kaufman's ratio:
  1 for a straight line, near 0 for noise; 0 when the price did not move).
- `dist_high_50`, `dist_low_50`: ln(c_t / highest high) and ln(c_t / lowest low) of the last 50
  candles (<= 0 and >= 0).

A signal adds what the market alone cannot say: its side and the detector's score, and the
direction-bearing features turned to the trade's side (`signal_features`), so a model learns "the
move runs with the trade" once rather than once per side.
"""

from __future__ import annotations

import itertools
import math
import operator
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import polars as pl

FEATURES: tuple[str, ...] = (
    "ret_1",
    "ret_5",
    "ret_20",
    "vol_20",
    "rsi_14",
    "volume_z_20",
    "atr_pct_14",
    "atr_pct_rank_100",
    "efficiency_ratio_20",
    "dist_high_50",
    "dist_low_50",
)
"""The market features, in the fixed order of `feature_frame`'s columns."""

SIDED: tuple[str, ...] = ("ret_1", "ret_5", "ret_20", "rsi_14", "dist_high_50", "dist_low_50")
"""Features whose meaning flips with the trade's side; `signal_features` adds `<name>_sided`."""

SIGNAL_FEATURES: tuple[str, ...] = (*FEATURES, "side", "score", *(f"{n}_sided" for n in SIDED))
"""Everything a scorer may read about a signal: the market, the side (+1/-1), the detector score."""

RANK_WINDOW = 100
ATR_WINDOW = 14
WINDOW = RANK_WINDOW + ATR_WINDOW
"""Candles `features_at` needs, the signal's candle last: the ATR rank's reach."""

CANDLE_COLUMNS = ("open_ms", "open", "high", "low", "close", "volume")


class ShortWindow(ValueError):
    """Fewer candles than the features need: the live path has not warmed up yet."""

    def __init__(self, got: int) -> None:
        self.got = got
        super().__init__(f"{got} candles; the advisor's features need the last {WINDOW}")


def feature_frame(frame: pl.DataFrame) -> pl.DataFrame:
    """Return one row of features per candle of `frame` (one series, in time order).

    Args:
        frame: Candles with `open_ms`, `high`, `low`, `close`, `volume` (more columns are ignored),
            sorted by `open_ms`.

    Returns:
        `open_ms` and the `FEATURES` columns (Float64); a feature is null until its window is full.
        Row t reads candles t-`WINDOW`+1 .. t only.
    """
    c, h, lo, v = pl.col("close"), pl.col("high"), pl.col("low"), pl.col("volume")
    lr = (c / c.shift(1)).log()
    move = c.diff().abs()
    gain = c.diff().clip(lower_bound=0.0).rolling_mean(ATR_WINDOW)
    loss = (-c.diff()).clip(lower_bound=0.0).rolling_mean(ATR_WINDOW)
    tr = pl.max_horizontal(h - lo, (h - c.shift(1)).abs(), (lo - c.shift(1)).abs())
    tr = pl.when(c.shift(1).is_null()).then(None).otherwise(tr)
    vmean, vstd = v.rolling_mean(20), v.rolling_std(20)
    path = move.rolling_sum(20)
    base = frame.select(
        pl.col("open_ms"),
        (c / c.shift(1)).log().alias("ret_1"),
        (c / c.shift(5)).log().alias("ret_5"),
        (c / c.shift(20)).log().alias("ret_20"),
        lr.rolling_std(20).alias("vol_20"),
        pl.when(gain + loss > 0).then(100.0 * gain / (gain + loss)).otherwise(50.0).alias("rsi_14"),
        pl.when(vstd > 0).then((v - vmean) / vstd).otherwise(0.0).alias("volume_z_20"),
        (tr.rolling_mean(ATR_WINDOW) / c).alias("atr_pct_14"),
        pl.when(path > 0).then((c - c.shift(20)).abs() / path).otherwise(0.0)
        .alias("efficiency_ratio_20"),
        (c / h.rolling_max(50)).log().alias("dist_high_50"),
        (c / lo.rolling_min(50)).log().alias("dist_low_50"),
    )  # fmt: skip
    # a window-bounded percentile rank has no polars expression; numpy's strided view is exact
    atr = base["atr_pct_14"].to_numpy().astype(np.float64)
    rank = np.full(atr.shape, np.nan)
    if atr.size >= RANK_WINDOW:
        view = np.lib.stride_tricks.sliding_window_view(atr, RANK_WINDOW)
        counted = (view <= view[:, -1:]).sum(axis=1) / RANK_WINDOW
        counted[np.isnan(view).any(axis=1)] = np.nan
        rank[RANK_WINDOW - 1 :] = counted
    base = base.with_columns(pl.Series("atr_pct_rank_100", rank).fill_nan(None))
    # warm-up rows: a rolling value over a partial window is null, so the guards above leave them
    warm = {"rsi_14": ATR_WINDOW + 1, "volume_z_20": 20, "efficiency_ratio_20": 21}
    index = pl.int_range(pl.len())
    base = base.with_columns(
        pl.when(index >= n - 1).then(pl.col(name)).otherwise(None).alias(name)
        for name, n in warm.items()
    )
    return base.select("open_ms", *[pl.col(n).cast(pl.Float64) for n in FEATURES])


def features_at(rows: Sequence[Any]) -> dict[str, float]:
    """Return the features of the last candle of `rows`, equal to its `feature_frame` row.

    Args:
        rows: The most recent candles of one series, oldest first, the signal's candle last; each
            a mapping or an object (e.g. `CandleRow`) with `high`, `low`, `close`, `volume`. Only
            the last `WINDOW` are read.

    Raises:
        ShortWindow: fewer than `WINDOW` candles.
    """
    if len(rows) < WINDOW:
        raise ShortWindow(len(rows))
    tail = rows[-WINDOW:]
    pick = _COLUMNS_OF if isinstance(tail[0], Mapping) else _FIELDS_OF
    table = np.array([pick(row) for row in tail], dtype=np.float64)
    return features_of(table[:, 0], table[:, 1], table[:, 2], table[:, 3])


def features_of(
    h: np.ndarray[Any, Any],
    lo: np.ndarray[Any, Any],
    c: np.ndarray[Any, Any],
    v: np.ndarray[Any, Any],
) -> dict[str, float]:
    """Return the features of the last candle from arrays of high, low, close and volume.

    For a caller that keeps its recent candles as arrays; the last `WINDOW` entries are read.

    Raises:
        ShortWindow: fewer than `WINDOW` candles.
    """
    if len(c) < WINDOW:
        raise ShortWindow(len(c))
    h, lo, c, v = h[-WINDOW:], lo[-WINDOW:], c[-WINDOW:], v[-WINDOW:]
    prev = c[:-1]
    tr = np.maximum(np.maximum(h[1:] - lo[1:], np.abs(h[1:] - prev)), np.abs(lo[1:] - prev))
    # atr_pct of the last RANK_WINDOW candles (tr[i] belongs to candle i+1)
    run = np.cumsum(tr)
    sums = run[ATR_WINDOW - 1 :] - np.concatenate(([0.0], run[:-ATR_WINDOW]))
    atr_pct = sums / ATR_WINDOW / c[-RANK_WINDOW:]
    now = float(atr_pct[-1])
    closes = c[-21:].tolist()
    diff = [b - a for a, b in itertools.pairwise(closes)]
    gain = sum(d for d in diff[-ATR_WINDOW:] if d > 0) / ATR_WINDOW
    loss = -sum(d for d in diff[-ATR_WINDOW:] if d < 0) / ATR_WINDOW
    vol = _std([math.log(b / a) for a, b in itertools.pairwise(closes)])
    vwin = v[-20:].tolist()
    vstd = _std(vwin)
    path = sum(abs(d) for d in diff)
    last = closes[-1]
    return {
        "ret_1": math.log(last / closes[-2]),
        "ret_5": math.log(last / closes[-6]),
        "ret_20": math.log(last / closes[0]),
        "vol_20": vol,
        "rsi_14": 100.0 * gain / (gain + loss) if gain + loss > 0 else 50.0,
        "volume_z_20": (vwin[-1] - sum(vwin) / 20) / vstd if vstd > 0 else 0.0,
        "atr_pct_14": now,
        "atr_pct_rank_100": int(np.count_nonzero(atr_pct <= now)) / RANK_WINDOW,
        "efficiency_ratio_20": abs(last - closes[0]) / path if path > 0 else 0.0,
        "dist_high_50": math.log(last / float(h[-50:].max())),
        "dist_low_50": math.log(last / float(lo[-50:].min())),
    }


def _std(values: list[float]) -> float:
    """Return the sample standard deviation (ddof 1), as polars' rolling_std computes it."""
    mean = sum(values) / len(values)
    return math.sqrt(sum((x - mean) ** 2 for x in values) / (len(values) - 1))


def signal_features(market: Mapping[str, float], side: int, score: float) -> dict[str, float]:
    """Return `market` plus the signal's `side` (+1 long, -1 short), `score` and sided features.

    A sided feature is the market feature times the side (the RSI centred first, (rsi - 50) / 50),
    so "the last 20 candles rose" reads as +ret for a long and -ret for a short.
    """
    out = dict(market)
    out["side"] = float(side)
    out["score"] = float(score)
    for name in SIDED:
        value = market[name]
        out[f"{name}_sided"] = side * ((value - 50.0) / 50.0 if name == "rsi_14" else value)
    return out


_COLUMNS_OF = operator.itemgetter("high", "low", "close", "volume")
_FIELDS_OF = operator.attrgetter("high", "low", "close", "volume")
