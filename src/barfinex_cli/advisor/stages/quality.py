"""Stage 2, market quality gate: is the data under the signal good enough to act on?

Five measures, each 0..1, weighted into one score that must reach `min_quality`:

    integrity 0.30  the provider's quality score of the series (its open incidents), 0 when the
                    connector reported itself disconnected
    staleness 0.25  1 when the context holds the signal's candle or the one before; falling to 0
                    at `max_staleness` candles behind
    gaps      0.15  1 / (1 + gaps seen in the last 50 candles)
    spread    0.15  1 at no spread, 0 at twice `max_spread_pct` (0.7 when no book was seen)
    volume    0.15  the last candle's volume over the median of the 20 before, capped at 1

A context lagging more than `max_staleness` candles, or a disconnected connector, blocks whatever
the score: a stale context is never traded on.
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import median

from barfinex_cli.advisor.stages.base import Events, SignalView, blocked, passed
from barfinex_cli.advisor.stages.context import MarketView
from barfinex_cli.contracts.advisor import QualityBlocked, QualityPassed, StageOutcome

WEIGHTS = {"integrity": 0.30, "staleness": 0.25, "gaps": 0.15, "spread": 0.15, "volume": 0.15}


@dataclass(frozen=True, slots=True)
class QualityResult:
    outcome: StageOutcome
    events: Events
    score: float


def components(market: MarketView, max_staleness: int, max_spread_pct: float) -> dict[str, float]:
    """Return each quality measure of `market`, 0..1."""
    snap = market.snapshot
    integrity = 0.0 if snap.connected is False else snap.integrity
    behind = market.lag - 1
    staleness = 1.0 if behind <= 0 else max(0.0, 1.0 - behind / max(1, max_staleness))
    spread = (
        0.7
        if market.spread_pct is None
        else max(0.0, 1.0 - market.spread_pct / (2 * max_spread_pct))
    )
    volumes = [row["volume"] for row in snap.candles[-21:]]
    if len(volumes) < 2:
        volume = 0.5
    else:
        typical = median(volumes[:-1])
        volume = (
            1.0
            if typical <= 0 and volumes[-1] > 0
            else 0.0
            if typical <= 0
            else (min(1.0, volumes[-1] / typical))
        )
    return {
        "integrity": round(integrity, 6),
        "staleness": round(staleness, 6),
        "gaps": round(1.0 / (1 + snap.recent_gaps), 6),
        "spread": round(spread, 6),
        "volume": round(volume, 6),
    }


def gate_quality(
    view: SignalView,
    market: MarketView,
    *,
    min_quality: float,
    max_staleness: int,
    max_spread_pct: float,
) -> QualityResult:
    """Score the data under the signal; block below `min_quality`, on a stale context or a
    disconnected connector."""
    parts = components(market, max_staleness, max_spread_pct)
    score = round(sum(WEIGHTS[k] * v for k, v in parts.items()), 6)
    reason = ""
    if market.lag > max_staleness:
        reason = (
            f"stale context: the newest {view.signal.timeframe} candle held is {market.lag} "
            f"candles behind the signal (at most {max_staleness})"
        )
    elif market.snapshot.connected is False:
        reason = f"the {view.signal.exchange} connector reports itself disconnected"
    elif score < min_quality:
        weakest = min(parts, key=lambda k: parts[k])
        reason = (
            f"quality {score:.2f} below {min_quality:.2f} (weakest: {weakest} {parts[weakest]:.2f})"
        )
    if reason:
        event = QualityBlocked(
            signal_id=view.id,
            quality=score,
            threshold=min_quality,
            components=parts,
            reason=reason,
        )
        return QualityResult(blocked("quality", reason), (event,), score)
    ok = QualityPassed(signal_id=view.id, quality=score, threshold=min_quality, components=parts)
    return QualityResult(passed("quality", f"quality {score:.2f}"), (ok,), score)
