"""Mean reversion: buy what is stretched below its Bollinger band and oversold, sell the mirror.

Fires `open long` when RSI(14) < 30 and the close is below the lower Bollinger band (20, 2):
1.5 + 1.5 reaches the threshold 3; a calm market (ADX(14) < 20, where reversion works best) adds
1 to the score. Fires `open short` on RSI(14) > 70 with the close above the upper band. Fires
`close long` when the close crosses back above the middle band (the mean it reverted to) and
`close short` when it crosses below. Cooldown 10 candles; warm-up 28 candles (ADX).

    bfx detector scan strategies/mean_reversion_rsi_bb.py --exchange synthetic --symbol BTC/USDT
"""

from barfinex_cli.detector import indicators as ta
from barfinex_cli.detector.strategy import Rule, Strategy

rsi = ta.rsi(14)
bands = ta.bollinger(20, 2.0)

strategy = Strategy(
    name="mean_reversion_rsi_bb",
    symbols=["BTC/USDT"],
    timeframe="1m",
    threshold=3.0,
    cooldown=10,
    rules=[
        Rule("rsi_oversold", rsi < 30, weight=1.5, direction="long"),
        Rule("below_lower_band", ta.close < bands.lower, weight=1.5, direction="long"),
        Rule("rsi_overbought", rsi > 70, weight=1.5, direction="short"),
        Rule("above_upper_band", ta.close > bands.upper, weight=1.5, direction="short"),
        Rule("calm_market", ta.adx(14) < 20, weight=1.0, direction="either"),
        Rule(
            "back_above_mid",
            ta.crosses_above(ta.close, bands.mid),
            weight=3.0,
            direction="long",
            action="close",
        ),
        Rule(
            "back_below_mid",
            ta.crosses_below(ta.close, bands.mid),
            weight=3.0,
            direction="short",
            action="close",
        ),
    ],
)
