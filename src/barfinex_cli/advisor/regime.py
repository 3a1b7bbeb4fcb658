"""Which market regime a series is in, from two measures a trader can check by hand.

A calibrator is fitted per regime because a model's probabilities drift differently in a trend, in
a range and in a volatility burst. The regime is read from features the advisor already computes
(`advisor.features`), so it costs nothing per signal and means the same in training and live:

- `atr_pct_rank_100` (the ATR's percentile over the last 100 candles) >= `high_vol_rank` (0.8):
  **high_vol** — volatility is in the top fifth of its recent range; it wins over the others,
  because a burst breaks both trend and range behaviour;
- else `efficiency_ratio_20` (Kaufman: net move over path length, 0..1) >= `trend_efficiency`
  (0.3): **trend** — the price travelled in one direction for a third or more of its path;
- else **range**.

`confidence` says how far past the deciding threshold the reading is: 0.5 on the threshold, 1.0 at
the far end of the measure's scale (for a range, the nearer of the two thresholds decides).
`direction` is the sign of the 20-candle return, for a caller that names up- and down-trends.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

Regime = Literal["trend", "range", "high_vol"]
REGIMES: tuple[Regime, ...] = ("trend", "range", "high_vol")


@dataclass(frozen=True, slots=True)
class RegimeConfig:
    """The regime thresholds.

    Attributes:
        trend_efficiency: Efficiency ratio at or above which the series trends.
        high_vol_rank: ATR percentile rank at or above which volatility is high.
    """

    trend_efficiency: float = 0.3
    high_vol_rank: float = 0.8

    def __post_init__(self) -> None:
        for name in ("trend_efficiency", "high_vol_rank"):
            value = getattr(self, name)
            if not 0.0 < value < 1.0:
                raise ValueError(f"{name} must be between 0 and 1 (exclusive), not {value}")


@dataclass(frozen=True, slots=True)
class RegimeReading:
    """A regime and the measures that decided it."""

    regime: Regime
    efficiency_ratio: float
    atr_pct_rank: float
    confidence: float
    direction: Literal["up", "down", "flat"]


def detect_regime(
    features: Mapping[str, float], config: RegimeConfig | None = None
) -> RegimeReading:
    """Return the regime of the candle whose features these are (see the module docstring).

    Args:
        features: At least `efficiency_ratio_20`, `atr_pct_rank_100` and `ret_20`.
        config: Thresholds (default: `RegimeConfig()`).

    Raises:
        KeyError: a measure is missing.
    """
    cfg = config or RegimeConfig()
    er = features["efficiency_ratio_20"]
    rank = features["atr_pct_rank_100"]
    ret = features["ret_20"]
    regime: Regime
    if rank >= cfg.high_vol_rank:
        regime, past = "high_vol", (rank - cfg.high_vol_rank) / (1.0 - cfg.high_vol_rank)
    elif er >= cfg.trend_efficiency:
        regime, past = "trend", (er - cfg.trend_efficiency) / (1.0 - cfg.trend_efficiency)
    else:
        regime = "range"
        past = min(
            (cfg.trend_efficiency - er) / cfg.trend_efficiency,
            (cfg.high_vol_rank - rank) / cfg.high_vol_rank,
        )
    confidence = 0.5 + 0.5 * min(1.0, max(0.0, past))
    direction: Literal["up", "down", "flat"] = "up" if ret > 0 else "down" if ret < 0 else "flat"
    return RegimeReading(regime, er, rank, confidence, direction)
