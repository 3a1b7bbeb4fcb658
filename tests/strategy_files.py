"""The strategy file the service, stack and e2e tests run: EMA and RSI momentum, in one place.

Each test names its own copy (a detector's name is its source on the bus, `detector/NAME`) and
picks its symbols and cooldown; the four rules are the same everywhere, so a change to the
strategy format is made here once.
"""

from __future__ import annotations

from collections.abc import Sequence


def momentum(
    name: str = "momentum",
    *,
    symbols: Sequence[str] = ("BTC/USDT",),
    cooldown: int = 2,
    threshold: float = 2.0,
) -> str:
    """Return the text of a 1m momentum strategy file: price against EMA(10) and RSI(7)."""
    return f"""
from barfinex_cli.detector import indicators as ta
from barfinex_cli.detector.strategy import Rule, Strategy

strategy = Strategy(
    name={name!r}, symbols={list(symbols)!r}, timeframe="1m", threshold={threshold!r},
    cooldown={cooldown!r},
    rules=[
        Rule("above_ema", ta.close > ta.ema("close", 10), weight=1.0, direction="long"),
        Rule("below_ema", ta.close < ta.ema("close", 10), weight=1.0, direction="short"),
        Rule("rsi_up", ta.rsi(7) > 55, weight=1.0, direction="long"),
        Rule("rsi_down", ta.rsi(7) < 45, weight=1.0, direction="short"),
    ],
)
"""
