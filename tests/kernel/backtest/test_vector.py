"""The detector-only backtest: signals equal the detector's, fills follow the documented rules."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from barfinex_cli.detector.engine import Decision, VectorEngine, prepare_frame
from barfinex_cli.detector.loader import load_strategy
from barfinex_cli.errors import UsageError
from barfinex_cli.kernel.backtest.ledger import Costs, simulate
from barfinex_cli.kernel.backtest.result import Fill, Trade
from barfinex_cli.kernel.backtest.signals import SignalCandles, signal_candles
from barfinex_cli.kernel.backtest.vector import run_vector
from barfinex_cli.market.history import rows_frame
from barfinex_cli.market.synthetic import generate_candles
from kernel.backtest.reference_sim import Reference, random_wants

STRATEGIES = Path(__file__).resolve().parents[3] / "strategies"
MINUTE = 60_000


def market(symbol: str = "BTC/USDT", minutes: int = 4_000, seed: int = 7) -> pl.DataFrame:
    return rows_frame(generate_candles(symbol, minutes=minutes, seed=seed))


def candles(opens: list[float], closes: list[float]) -> pl.DataFrame:
    n = len(opens)
    return pl.DataFrame({
        "open_ms": [1_704_067_200_000 + i * MINUTE for i in range(n)],
        "open": opens, "high": [max(o, c) for o, c in zip(opens, closes, strict=True)],
        "low": [min(o, c) for o, c in zip(opens, closes, strict=True)], "close": closes,
        "volume": [1.0] * n,
    })  # fmt: skip


def wanted(found: SignalCandles) -> list[tuple[int, int, bool, bool, bool, bool]]:
    return list(zip(found.index.tolist(), found.entry.tolist(), found.close_long.tolist(),
                    found.close_short.tolist(), found.reduce_long.tolist(),
                    found.reduce_short.tolist(), strict=True))  # fmt: skip


@pytest.mark.parametrize(
    "name", ["sma_cross", "trend_ema_adx", "mean_reversion_rsi_bb", "breakout_volume"]
)
def test_signal_candles_are_the_candles_and_decisions_evaluate_fires(name: str) -> None:
    strategy = load_strategy(STRATEGIES / f"{name}.py")
    frame = prepare_frame(market(minutes=6_000))
    records = VectorEngine(strategy).evaluate(frame, "BTC/USDT")
    found = signal_candles(VectorEngine(strategy), frame, "BTC/USDT")
    assert records, "the example must fire on this data for the check to mean anything"
    by_candle: dict[int, list[Decision]] = {}
    for r in records:
        by_candle.setdefault(r.candle_index, []).append((r.direction, r.action, r.score))
    assert found.index.tolist() == sorted(by_candle)
    assert found.signals.tolist() == [len(by_candle[i]) for i in sorted(by_candle)]
    from barfinex_cli.kernel.backtest.signals import codes

    assert [row[1:] for row in wanted(found)] == [
        tuple(codes(by_candle[i])[:5]) for i in sorted(by_candle)
    ]


@pytest.mark.parametrize("seed", range(8))
def test_ledger_matches_a_plain_per_candle_loop_on_random_signals(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 300
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    opens = np.r_[100.0, close[:-1]] * (1 + rng.normal(0, 0.001, n))
    part = candles(opens.tolist(), close.tolist())
    wants = random_wants(rng, n, 0.2)
    keys = sorted(wants)
    found = SignalCandles(
        np.array(keys, dtype=np.int64), np.array([wants[k][0] for k in keys], np.int8),
        *[np.array([wants[k][c] for k in keys], bool) for c in range(1, 5)],
        np.ones(len(keys), np.int64),
    )  # fmt: skip
    costs = Costs(fee=0.001, slip=0.0005, size=0.9, reduce=0.5)
    ledger = simulate("X", part, found, costs, 1_000.0, MINUTE, "run-0001")
    ref = Reference(0.001, 0.0005, 0.9, 0.5, 1_000.0)
    equity = ref.run(opens, close, wants)
    np.testing.assert_allclose(ledger.equity, equity, rtol=1e-10)
    times = part["open_ms"].to_list()
    got = ledger.fills.select("time_ms", "side", "quantity", "price", "fee", "reason").rows()
    expected = [(times[j], side, q, p, f, why) for j, side, q, p, f, why in ref.fills]
    assert [g[:2] + g[5:] for g in got] == [e[:2] + e[5:] for e in expected]
    np.testing.assert_allclose([g[2:5] for g in got], [e[2:5] for e in expected], rtol=1e-10)
    closed = ledger.trades.filter(pl.col("exit_reason") != "open")
    assert closed.select("side", "exit_reason").rows() == [(t[0], t[7]) for t in ref.trades]
    np.testing.assert_allclose(closed["pnl"].to_numpy(), [t[6] for t in ref.trades], rtol=1e-9)


def test_a_long_fills_at_the_next_open_and_pays_fees_both_ways() -> None:
    # hand-computed: buy 1 candle after the signal at 101, sell at 110 (fee 10 bps each way)
    strategy = load_strategy(STRATEGIES / "sma_cross.py")
    frame = candles([100, 101, 104, 110, 108], [100, 103, 106, 109, 107])
    part = prepare_frame(frame)
    found = SignalCandles(np.array([0, 2]), np.array([1, 0], np.int8), np.array([False, True]),
                          np.zeros(2, bool), np.zeros(2, bool), np.zeros(2, bool),
                          np.ones(2, np.int64))  # fmt: skip
    ledger = simulate("BTC/USDT", part, found, Costs(0.001, 0.0, 1.0, 0.5), 1_000.0, MINUTE, "r")
    qty = 1_000.0 / (101 * 1.001)
    assert ledger.fills["price"].to_list() == [101.0, 110.0]
    assert ledger.fills["side"].to_list() == ["buy", "sell"]
    cash = qty * 110 * 0.999
    np.testing.assert_allclose(ledger.equity, [1_000, qty * 103, qty * 106, cash, cash])
    (trade,) = ledger.trades.rows(named=True)
    assert trade["entry_ms"] == part["open_ms"][1] and trade["exit_ms"] == part["open_ms"][3]
    assert trade["pnl"] == pytest.approx(cash - 1_000.0)
    assert trade["fees"] == pytest.approx(qty * 101 * 0.001 + qty * 110 * 0.001)
    assert strategy.name == "sma_cross"


def test_a_signal_on_the_last_candle_does_not_fill_and_an_open_trade_is_marked_to_the_close() -> (
    None
):
    part = prepare_frame(candles([100, 100, 100, 120], [100, 100, 110, 121]))
    found = SignalCandles(np.array([1, 3]), np.array([1, -1], np.int8), *[np.zeros(2, bool)] * 4,
                          np.ones(2, np.int64))  # fmt: skip
    ledger = simulate("X", part, found, Costs(0.0, 0.0, 1.0, 0.5), 100.0, MINUTE, "r")
    assert ledger.unfilled == 1
    assert ledger.fills.height == 1
    (trade,) = ledger.trades.rows(named=True)
    assert trade["exit_reason"] == "open" and trade["exit_price"] == 121
    assert trade["exit_ms"] == part["open_ms"][3] + MINUTE
    assert trade["pnl"] == pytest.approx(21.0)


def test_a_short_then_an_opposite_entry_flips_with_two_fills() -> None:
    part = prepare_frame(candles([100, 100, 90, 95, 95], [100, 100, 92, 95, 96]))
    found = SignalCandles(np.array([0, 1]), np.array([-1, 1], np.int8), *[np.zeros(2, bool)] * 4,
                          np.ones(2, np.int64))  # fmt: skip
    ledger = simulate("X", part, found, Costs(0.0, 0.0, 1.0, 0.5), 100.0, MINUTE, "r")
    assert ledger.fills.select("side", "reason").rows() == [
        ("sell", "entry"),
        ("buy", "flip"),
        ("buy", "entry"),
    ]
    assert ledger.trades["exit_reason"].to_list() == ["flip", "open"]
    assert ledger.equity[-1] == pytest.approx(110.0 / 90 * 96)  # +10 on the short, then long


def test_run_vector_on_the_sma_cross_returns_a_whole_result() -> None:
    strategy = load_strategy(STRATEGIES / "sma_cross.py")
    frame = market(minutes=3_000)
    result = run_vector(strategy, frame, exchange="synthetic", fees_bps=5, slippage_bps=1,
                        run_id="abcdef12-run")  # fmt: skip
    assert result.mode == "detector" and result.bars == 3_000
    assert result.curve is not None and len(result.curve) == 3_000
    assert result.start_ms == frame["open_ms"][0]
    assert result.end_ms == frame["open_ms"][-1] + MINUTE
    assert result.metrics.trades == len(result.trades) > 10
    assert all(isinstance(f, Fill) for f in result.fills)
    assert all(isinstance(t, Trade) for t in result.trades)
    assert result.fills[0].order_id == "abcdef12-BTC/USDT-1"
    assert result.metrics.fees == pytest.approx(sum(f.fee for f in result.fills))
    last = result.curve.equity[-1]
    assert result.metrics.total_return_pct == pytest.approx((last / 10_000 - 1) * 100)
    assert result.equity == ()
    again = run_vector(strategy, frame, exchange="synthetic", fees_bps=5, slippage_bps=1,
                       points=True, objects=False)  # fmt: skip
    assert again.fills == () and again.fills_table is not None
    assert again.fills_table.height == len(result.fills)
    assert [p.equity for p in again.equity] == result.curve.equity.tolist()


def test_two_symbols_each_trade_half_the_equity() -> None:
    strategy = load_strategy(STRATEGIES / "sma_cross.py")
    btc, eth = market("BTC/USDT", 2_000), market("ETH/USDT", 2_000)
    both = pl.concat([btc.with_columns(symbol=pl.lit("BTC/USDT")),
                      eth.with_columns(symbol=pl.lit("ETH/USDT"))])  # fmt: skip
    result = run_vector(strategy, both, exchange="synthetic", fees_bps=0, slippage_bps=0)
    alone = [run_vector(strategy, f, exchange="synthetic", fees_bps=0, slippage_bps=0,
                        initial_equity=5_000) for f in (btc, eth)]  # fmt: skip
    assert result.symbols == ("BTC/USDT", "ETH/USDT")
    assert result.curve is not None
    total = sum(r.curve.equity for r in alone if r.curve is not None)
    np.testing.assert_allclose(result.curve.equity, total)
    assert result.metrics.trades == sum(r.metrics.trades for r in alone)


@pytest.mark.parametrize(
    ("fees", "slippage", "word"),
    [(-1, 0, "--fees"), (10_001, 0, "--fees"), (0, 10_000, "--slippage"), (math.nan, 0, "--fees")],
)
def test_costs_out_of_range_are_refused_in_one_line(
    fees: float, slippage: float, word: str
) -> None:
    strategy = load_strategy(STRATEGIES / "sma_cross.py")
    with pytest.raises(UsageError, match=word):
        run_vector(strategy, market(minutes=100), exchange="x", fees_bps=fees,
                   slippage_bps=slippage)  # fmt: skip


def test_only_the_columns_the_rules_and_fills_read_are_checked() -> None:
    strategy = load_strategy(STRATEGIES / "sma_cross.py")
    frame = market(minutes=500).with_columns(
        volume=pl.when(pl.int_range(pl.len()) == 7).then(float("nan")).otherwise(pl.col("volume"))
    )
    result = run_vector(strategy, frame, exchange="synthetic", fees_bps=0, slippage_bps=0)
    assert result.bars == 500  # sma_cross reads only the close: a NaN volume does not matter
    bad = frame.with_columns(close=pl.when(pl.int_range(pl.len()) == 7).then(float("nan"))
                             .otherwise(pl.col("close")))  # fmt: skip
    with pytest.raises(UsageError, match="close is nan"):
        run_vector(strategy, bad, exchange="synthetic", fees_bps=0, slippage_bps=0)


def test_a_short_that_loses_more_than_the_sleeve_leaves_nothing_to_trade_with() -> None:
    part = prepare_frame(candles([100, 100, 250, 250, 250, 240], [100, 100, 250, 250, 250, 240]))
    found = SignalCandles(np.array([0, 2, 3]), np.array([-1, 0, 1], np.int8),
                          np.zeros(3, bool), np.array([False, True, False]),
                          np.zeros(3, bool), np.zeros(3, bool), np.ones(3, np.int64))  # fmt: skip
    ledger = simulate("X", part, found, Costs(0.0, 0.0, 1.0, 0.5), 100.0, MINUTE, "r")
    assert ledger.equity[-1] == pytest.approx(-50.0)  # short 1 at 100, bought back at 250
    assert ledger.fills["reason"].to_list() == ["entry", "exit"]  # the long never opens
    assert ledger.trades["pnl"].to_list() == [pytest.approx(-150.0)]
