"""Candle frames for the detector tests, built from plain lists."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import polars as pl
import pytest

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "strategies").glob("*.py"))
T0 = 1_704_067_200_000  # 2024-01-01 00:00 UTC

FrameOf = Callable[..., pl.DataFrame]


def build_frame(
    closes: Sequence[float],
    *,
    spread: float = 0.01,
    volumes: Sequence[float] | None = None,
    buy_share: Sequence[float] | None = None,
    step_ms: int = 60_000,
) -> pl.DataFrame:
    """Return 1m candles with these closes: open = previous close, high/low `spread` around."""
    opens = [closes[0], *closes[:-1]]
    highs = [max(o, c) * (1 + spread) for o, c in zip(opens, closes, strict=True)]
    lows = [min(o, c) * (1 - spread) for o, c in zip(opens, closes, strict=True)]
    vols = list(volumes) if volumes is not None else [10.0 + (i % 7) for i in range(len(closes))]
    data: dict[str, object] = {
        "open_ms": [T0 + i * step_ms for i in range(len(closes))],
        "open": opens,
        "high": highs,
        "low": lows,
        "close": list(closes),
        "volume": vols,
    }
    if buy_share is not None:
        data["buy_volume"] = [v * s for v, s in zip(vols, buy_share, strict=True)]
        data["sell_volume"] = [v - v * s for v, s in zip(vols, buy_share, strict=True)]
    return pl.DataFrame(data)


@pytest.fixture
def frame_of() -> FrameOf:
    """Return `build_frame`: candles from a list of closes."""
    return build_frame


@pytest.fixture(params=[p.name for p in EXAMPLES])
def example_path(request: pytest.FixtureRequest) -> Path:
    """Yield each example strategy file in turn."""
    return next(p for p in EXAMPLES if p.name == request.param)
