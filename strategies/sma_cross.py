"""SMA cross: long while the fast average is above the slow one, the textbook baseline.

Fires `open long` on the candle where SMA(10) of the close crosses above SMA(20), and `close
long` on the candle where it crosses back below. No shorts, no filters, no cooldown: the plain
crossover that vectorbt's and backtesting.py's tutorials start from, so `bfx backtest` can be
checked trade by trade against them (tests/kernel/backtest/test_vector_vectorbt.py, and
benchmarks/backtest.py). Warm-up 21 candles (SMA(20), then one more to see the cross).

`build` declares the two periods, so `bfx optimize` can vary them:
    bfx backtest strategies/sma_cross.py --exchange synthetic --symbol BTC/USDT
    bfx optimize strategies/sma_cross.py --param fast=5:30:5 --param slow=20:100:10
"""

from barfinex_cli.detector import indicators as ta
from barfinex_cli.detector.strategy import Rule, Strategy


def build(fast: int = 10, slow: int = 20) -> Strategy:
    """Return the SMA(fast)/SMA(slow) cross strategy."""
    fast_ma, slow_ma = ta.sma("close", fast), ta.sma("close", slow)
    return Strategy(
        name="sma_cross",
        symbols=["BTC/USDT"],
        timeframe="1m",
        threshold=1.0,
        rules=[
            Rule("cross_up", ta.crosses_above(fast_ma, slow_ma), direction="long"),
            Rule(
                "cross_down",
                ta.crosses_below(fast_ma, slow_ma),
                direction="long",
                action="close",
            ),
        ],
    )


strategy = build()
