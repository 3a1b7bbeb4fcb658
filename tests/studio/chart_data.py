"""Fixed candles for the chart tests, the snapshot and the benchmark: a seeded random walk."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from barfinex_cli.studio.chart_model import Bar

T0 = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)


def walk(n: int, *, seed: int = 7, minutes: int = 15, start: float = 100.0) -> list[Bar]:
    """Return `n` bars `minutes` apart from `T0`, the same ones for the same seed."""
    rnd = random.Random(seed)
    price, out = start, []
    for i in range(n):
        open_ = price
        close = open_ * (1 + rnd.gauss(0, 0.006))
        high = max(open_, close) * (1 + abs(rnd.gauss(0, 0.003)))
        low = min(open_, close) * (1 - abs(rnd.gauss(0, 0.003)))
        out.append(Bar(T0 + timedelta(minutes=minutes * i), open_, high, low, close,
                       round(rnd.uniform(5, 50), 3)))  # fmt: skip
        price = close
    return out
