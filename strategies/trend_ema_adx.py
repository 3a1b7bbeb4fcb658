"""Trend follower: enter on an EMA crossover, but only while ADX says the market trends.

Fires `open long` on the candle where EMA(12) crosses above EMA(26) while ADX(14) > 25 (2 + 1 =
threshold 3), and `open short` on the mirror cross. Fires `close long` when RSI(14) goes above 75
and `close short` when it drops below 25: stretched moves tend to give some back. After a signal
the symbol stays quiet for 5 candles. Needs 28 candles of warm-up (ADX(14) is first defined on
the 28th).

Copy it, change the periods or weights, then check it:
    bfx detector check strategies/trend_ema_adx.py
    bfx detector scan strategies/trend_ema_adx.py --data BTCUSDT-1m-2024-01.zip
"""

from barfinex_cli.detector import indicators as ta
from barfinex_cli.detector.strategy import Rule, Strategy

fast, slow = ta.ema("close", 12), ta.ema("close", 26)

strategy = Strategy(
    name="trend_ema_adx",
    symbols=["BTC/USDT"],
    timeframe="1m",
    threshold=3.0,
    cooldown=5,
    rules=[
        Rule("ema_cross_up", ta.crosses_above(fast, slow), weight=2.0, direction="long"),
        Rule("ema_cross_down", ta.crosses_below(fast, slow), weight=2.0, direction="short"),
        Rule("adx_trending", ta.adx(14) > 25, weight=1.0, direction="either"),
        Rule("rsi_overbought_exit", ta.rsi(14) > 75, weight=3.0, direction="long", action="close"),
        Rule("rsi_oversold_exit", ta.rsi(14) < 25, weight=3.0, direction="short", action="close"),
    ],
)
