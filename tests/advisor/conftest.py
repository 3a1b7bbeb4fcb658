"""Builders for the advisor tests: a market context of known shape, and signals on it."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest

from barfinex_cli.advisor.context import MarketContext
from barfinex_cli.advisor.stages.base import SignalView
from barfinex_cli.contracts.detector import RuleAttribution, SignalGenerated
from barfinex_cli.contracts.times import from_ms

T0 = 1_704_067_200_000
MINUTE = 60_000
KEY = ("paper", "BTC/USDT", "1m")


def candles(n: int = 200, shape: str = "trend", base: float = 100.0) -> list[dict[str, float]]:
    """Return `n` 1m candles: `trend` (steady rise), `range` (a sine), `burst` (calm, then wild)."""
    rows: list[dict[str, float]] = []
    close = base
    for i in range(n):
        prev = close
        if shape == "trend":
            close = base * (1 + 0.002 * i) + 0.05 * math.sin(i)
            width = 0.2
        elif shape == "range":
            close = base + 2 * math.sin(i / 3)
            width = 0.3
        else:  # burst: the last 10 candles swing 30 times wider
            close = base + 0.1 * math.sin(i) + (3 * math.sin(i * 1.7) if i >= n - 10 else 0)
            width = 0.1 if i < n - 10 else 3.0
        rows.append({
            "open_ms": T0 + i * MINUTE, "open": prev, "high": max(prev, close) + width,
            "low": min(prev, close) - width, "close": close, "volume": 10.0 + i % 5,
        })  # fmt: skip
    return rows


def context(
    n: int = 200, shape: str = "trend", spread_pct: float | None = 0.02, equity: float | None = None
) -> MarketContext:
    """Return a context holding `n` candles of `shape` and a book `spread_pct` wide."""
    ctx = MarketContext()
    rows = candles(n, shape)
    ctx.warm(KEY, rows)
    if spread_pct is not None:
        mid = rows[-1]["close"]
        half = mid * spread_pct / 200
        ctx.set_quote(KEY[0], KEY[1], mid - half, mid + half)
    if equity is not None:
        ctx.set_quote_total(KEY[0], "USDT", equity)
    return ctx


def signal(
    index: int = 199,
    direction: str = "long",
    score: float = 2.0,
    action: str = "open",
    symbol: str = "BTC/USDT",
    event_id: str = "sig-1",
) -> SignalView:
    """Return a signal on the `index`-th candle: two of its side's rules held, of three."""
    other = "short" if direction == "long" else "long"
    rules = [
        RuleAttribution(rule="a", held=True, weight=1.0, direction=direction, values={}),
        RuleAttribution(rule="b", held=score >= 2, weight=1.0, direction=direction, values={}),
        RuleAttribution(rule="c", held=False, weight=1.0, direction=direction, values={}),
        RuleAttribution(rule="d", held=False, weight=1.0, direction=other, values={}),
    ]
    payload = SignalGenerated(
        strategy="momentum",
        instance="m",
        exchange=KEY[0],
        symbol=symbol,
        timeframe="1m",
        candle_time=from_ms(T0 + index * MINUTE),
        direction=direction,
        action=action,
        score=score,
        threshold=2.0,
        attribution=rules,
    )
    return SignalView(event_id, payload)


@pytest.fixture
def make_context() -> Callable[..., MarketContext]:
    return context


@pytest.fixture
def make_signal() -> Callable[..., SignalView]:
    return signal


Builder = Callable[..., Any]
