"""The advisor's features: live equals vectorised, nothing reads ahead, edge cases stay finite."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

from barfinex_cli.advisor.features import (
    FEATURES,
    SIDED,
    SIGNAL_FEATURES,
    WINDOW,
    ShortWindow,
    feature_frame,
    features_at,
    features_of,
    signal_features,
)
from barfinex_cli.market.history import rows_frame
from barfinex_cli.market.synthetic import generate_candles
from barfinex_cli.store.market import CandleRow


def walk(n: int = 1_200, seed: int = 1) -> pl.DataFrame:
    """A random-walk candle series with wide ranges and volumes."""
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    open_ = np.r_[close[0], close[:-1]]
    return pl.DataFrame({
        "open_ms": np.arange(n, dtype=np.int64) * 60_000,
        "open": open_,
        "high": np.maximum(open_, close) * (1 + rng.random(n) * 0.004),
        "low": np.minimum(open_, close) * (1 - rng.random(n) * 0.004),
        "close": close,
        "volume": rng.gamma(1.5, 4.0, n),
    })  # fmt: skip


@pytest.mark.parametrize(
    "frame",
    [walk(), rows_frame(generate_candles("BTC/USDT", minutes=1_000))],
    ids=["random-walk", "synthetic-btc"],
)
def test_live_features_equal_the_vectorised_row_on_every_candle(frame: pl.DataFrame) -> None:
    table = feature_frame(frame)
    rows = frame.rows(named=True)
    for t in range(WINDOW - 1, frame.height):
        live = features_at(rows[max(0, t + 1 - WINDOW - 5) : t + 1])
        batch = table.row(t, named=True)
        for name in FEATURES:
            assert math.isclose(live[name], batch[name], rel_tol=1e-9, abs_tol=1e-12), (t, name)


def test_features_at_reads_candle_rows_mappings_and_arrays_alike() -> None:
    frame = walk(300)
    rows = frame.rows(named=True)
    as_candles = [CandleRow(r["open_ms"], r["open"], r["high"], r["low"], r["close"], r["volume"])
                  for r in rows]  # fmt: skip
    arrays = [frame[c].to_numpy() for c in ("high", "low", "close", "volume")]
    assert features_at(rows) == features_at(as_candles) == features_of(*arrays)


def test_a_feature_row_does_not_change_when_later_candles_are_cut() -> None:
    frame = walk(600, seed=4)
    full = feature_frame(frame)
    for cut in (WINDOW, 250, 431, 599):
        part = feature_frame(frame[:cut])
        assert part.equals(full[:cut]), cut


def test_a_feature_row_does_not_change_when_later_candles_change() -> None:
    frame = walk(600, seed=5)
    noise = walk(600, seed=6)
    t = 400
    changed = pl.concat([frame[: t + 1], noise[t + 1 :]])
    assert feature_frame(changed)[: t + 1].equals(feature_frame(frame)[: t + 1])


def test_every_feature_is_defined_from_the_window_on_and_null_before_its_own() -> None:
    table = feature_frame(walk(400))
    assert table.columns == ["open_ms", *FEATURES]
    assert table[WINDOW - 1 :].null_count().sum_horizontal().item() == 0
    assert table[: WINDOW - 1]["atr_pct_rank_100"].is_null().all()
    assert table["ret_1"].null_count() == 1 and table["rsi_14"].null_count() == 14


def test_flat_prices_and_volumes_give_neutral_finite_values() -> None:
    n = WINDOW + 10
    flat = pl.DataFrame({
        "open_ms": np.arange(n, dtype=np.int64), "open": [5.0] * n, "high": [5.0] * n,
        "low": [5.0] * n, "close": [5.0] * n, "volume": [2.0] * n,
    })  # fmt: skip
    row = feature_frame(flat).row(n - 1, named=True)
    live = features_at(flat.rows(named=True))
    for values in (row, live):
        assert values["rsi_14"] == 50.0
        assert values["volume_z_20"] == 0.0
        assert values["efficiency_ratio_20"] == 0.0
        assert values["atr_pct_rank_100"] == 1.0  # every window value ties with the current one
        assert all(math.isfinite(values[n]) for n in FEATURES)


def test_a_straight_rise_reads_as_efficient_overbought_and_at_its_high() -> None:
    n = WINDOW
    close = np.linspace(100, 130, n)
    frame = pl.DataFrame({
        "open_ms": np.arange(n, dtype=np.int64), "open": close, "high": close, "low": close,
        "close": close, "volume": np.ones(n),
    })  # fmt: skip
    values = features_at(frame.rows(named=True))
    assert values["efficiency_ratio_20"] == pytest.approx(1.0)
    assert values["rsi_14"] == 100.0
    assert values["dist_high_50"] == 0.0
    assert values["ret_20"] > 0 and values["dist_low_50"] > 0


def test_fewer_candles_than_the_window_are_refused_by_name() -> None:
    rows = walk(WINDOW - 1).rows(named=True)
    with pytest.raises(ShortWindow, match=f"need the last {WINDOW}"):
        features_at(rows)


def test_signal_features_turn_direction_bearing_features_to_the_trade_side() -> None:
    market = features_at(walk(300, seed=9).rows(named=True))
    long, short = signal_features(market, 1, 2.0), signal_features(market, -1, 2.0)
    assert set(long) == set(SIGNAL_FEATURES)
    assert long["side"] == 1.0 and short["side"] == -1.0 and long["score"] == 2.0
    for name in SIDED:
        assert long[f"{name}_sided"] == -short[f"{name}_sided"]
    assert long["rsi_14_sided"] == pytest.approx((market["rsi_14"] - 50) / 50)
    assert long["ret_20_sided"] == market["ret_20"]
