"""Breakout with volume confirmation: a new 20-candle extreme that the volume believes.

Fires `open long` when the close breaks above the highest high of the 20 candles before it (2)
on unusual volume (volume z-score over 20 candles > 2: +1), reaching the threshold 3; a close
above the session VWAP and a range wider than 1.5 ATR(14) add 0.25 each. Fires `open short` on
the mirror break below the lowest low. A breakout on ordinary volume does not fire (2 + 0.25 +
0.25 falls short of 3). Cooldown 15 candles; warm-up 21 candles (the 20 before the breakout).

    bfx detector lookahead strategies/breakout_volume.py --data BTCUSDT-1m-2024-01.zip
"""

from barfinex_cli.detector import indicators as ta
from barfinex_cli.detector.strategy import Rule, Strategy

strategy = Strategy(
    name="breakout_volume",
    symbols=["BTC/USDT"],
    timeframe="1m",
    threshold=3.0,
    cooldown=15,
    rules=[
        Rule(
            "breakout_up", ta.close > ta.highest("high", 20).shift(1), weight=2.0, direction="long"
        ),
        Rule("breakdown", ta.close < ta.lowest("low", 20).shift(1), weight=2.0, direction="short"),
        Rule("volume_surge", ta.volume_zscore(20) > 2.0, weight=1.0, direction="either"),
        Rule("above_vwap", ta.close > ta.vwap(), weight=0.25, direction="long"),
        Rule("below_vwap", ta.close < ta.vwap(), weight=0.25, direction="short"),
        Rule("wide_range", ta.true_range() > ta.atr(14) * 1.5, weight=0.25, direction="either"),
    ],
)
