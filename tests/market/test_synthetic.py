"""The synthetic market: deterministic per seed, internally consistent, and shaped like a market."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from barfinex_cli.market import synthetic
from barfinex_cli.store.market import CandleRow

START = synthetic.DEFAULT_START_MS
DAY = 1440


def _log_returns(candles: list[CandleRow]) -> np.ndarray:
    return np.diff(np.log([c.close for c in candles]))


def test_the_same_seed_gives_the_same_market_and_another_seed_another() -> None:
    first = synthetic.generate_candles("BTC/USDT", START, DAY, seed=7)
    again = synthetic.generate_candles("BTC/USDT", START, DAY, seed=7)
    other = synthetic.generate_candles("BTC/USDT", START, DAY, seed=8)
    assert first == again
    assert [c.close for c in first] != [c.close for c in other]
    assert synthetic.generate_trades(first[:5], "BTC/USDT", 7) == synthetic.generate_trades(
        again[:5], "BTC/USDT", 7
    )


def test_each_symbol_has_its_own_seed_and_price_level() -> None:
    data = synthetic.default_dataset(days=1)
    assert list(data) == list(synthetic.DEFAULT_SYMBOLS)
    opens = {s: rows[0].open for s, rows in data.items()}
    assert opens == {s: synthetic.PROFILES[s].base_price for s in synthetic.DEFAULT_SYMBOLS}
    btc, eth = _log_returns(data["BTC/USDT"]), _log_returns(data["ETH/USDT"])
    assert abs(np.corrcoef(btc, eth)[0, 1]) < 0.2  # independent draws, not one path rescaled


def test_candles_are_consecutive_minutes_with_consistent_ohlc() -> None:
    for symbol, rows in synthetic.default_dataset(days=2).items():
        assert [c.open_ms for c in rows] == [START + i * 60_000 for i in range(2 * DAY)]
        for prev, c in itertools.pairwise(rows):
            assert c.open == prev.close, symbol  # a continuous market: no jumps between minutes
        for c in rows:
            assert 0 < c.low <= min(c.open, c.close) <= max(c.open, c.close) <= c.high
            assert c.volume > 0 and c.trades is not None and c.trades >= 4


def test_trades_print_the_open_close_high_and_low_and_sum_to_the_volume() -> None:
    for symbol in synthetic.DEFAULT_SYMBOLS:
        candles = synthetic.generate_candles(symbol, START, 120)
        trades = synthetic.generate_trades(candles, symbol)
        assert [t.time_ms for t in trades] == sorted(t.time_ms for t in trades)
        assert len({t.trade_id for t in trades}) == len(trades)
        for c in candles:
            minute = [t for t in trades if c.open_ms <= t.time_ms < c.open_ms + 60_000]
            prices = [t.price for t in minute]
            assert len(minute) == c.trades
            assert prices[0] == c.open and prices[-1] == c.close
            assert max(prices) == c.high and min(prices) == c.low
            assert all(c.low <= p <= c.high for p in prices)
            assert sum(t.amount for t in minute) == pytest.approx(c.volume, rel=1e-9)
            assert all(t.amount > 0 and t.side in ("buy", "sell") for t in minute)


def test_trades_of_a_minute_do_not_depend_on_the_range_asked_for() -> None:
    candles = synthetic.generate_candles("ETH/USDT", START, 30)
    whole = synthetic.generate_trades(candles, "ETH/USDT")
    part = synthetic.generate_trades(candles[10:12], "ETH/USDT")
    lo, hi = candles[10].open_ms, candles[12].open_ms
    assert part == [t for t in whole if lo <= t.time_ms < hi]


def test_the_book_is_uncrossed_around_the_close_with_a_plausible_spread() -> None:
    for symbol in synthetic.DEFAULT_SYMBOLS:
        for c in synthetic.generate_candles(symbol, START, 300):
            book = synthetic.top_of_book(c, symbol)
            best_bid, best_ask = book.bids[0][0], book.asks[0][0]
            assert best_bid < best_ask
            assert best_bid <= c.close <= best_ask
            assert (best_ask - best_bid) / c.close < 0.002  # under 20 bps
            assert [p for p, _ in book.bids] == sorted((p for p, _ in book.bids), reverse=True)
            assert [p for p, _ in book.asks] == sorted(p for p, _ in book.asks)
            assert all(a > 0 for _, a in book.bids + book.asks)
            assert book.time_ms == c.open_ms + 60_000


def test_every_regime_occurs_and_trends_drift_their_way() -> None:
    up: list[float] = []
    down: list[float] = []
    seen: set[str] = set()
    for symbol in synthetic.DEFAULT_SYMBOLS:
        series = synthetic.generate_market(symbol, START, 28 * DAY)
        seen |= set(series.regimes)
        r = _log_returns(series.candles)
        regimes = np.array(series.regimes[1:])
        up += r[regimes == "up"].tolist()
        down += r[regimes == "down"].tolist()
    assert seen == set(synthetic.REGIMES)
    assert np.mean(up) > 0 > np.mean(down)


def test_volatility_clusters_while_returns_stay_uncorrelated() -> None:
    r = _log_returns(synthetic.generate_candles("BTC/USDT", START, 14 * DAY))
    size = np.abs(r)
    assert np.corrcoef(size[:-1], size[1:])[0, 1] > 0.1
    assert abs(np.corrcoef(r[:-1], r[1:])[0, 1]) < 0.05


def test_volume_follows_a_u_shape_over_the_utc_day() -> None:
    candles = synthetic.generate_candles("SOL/USDT", START, 14 * DAY)
    hours = np.array([(c.open_ms // 3_600_000) % 24 for c in candles])
    volume = np.array([c.volume for c in candles])
    edges = volume[(hours < 2) | (hours >= 22)].mean()
    middle = volume[(hours >= 11) & (hours < 13)].mean()
    assert edges > 1.5 * middle


def test_the_default_dataset_is_three_symbols_for_a_week_labelled_synthetic() -> None:
    # its speed is a benchmark figure (benchmarks/provider.py), never a timed assertion
    data = synthetic.default_dataset()
    assert sum(len(rows) for rows in data.values()) == 3 * 7 * DAY
    assert synthetic.SYNTHETIC_EXCHANGE == "synthetic"


def test_a_start_off_the_minute_is_refused_and_no_minutes_give_no_candles() -> None:
    with pytest.raises(ValueError, match="minute boundary"):
        synthetic.generate_market("BTC/USDT", START + 1, 10)
    assert synthetic.generate_candles("BTC/USDT", START, 0) == []
