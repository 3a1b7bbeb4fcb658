"""Stage 3, rule and ML evaluation: the advisor's own probability that the trade wins.

The signal is scored independently of the detector, on the market features of its series
(`advisor.features`, computed from the candles in memory) plus its side and score. The scorer is
the trained model when one is loaded, else the transparent rule scorer, and the event names which.
With too few candles for the features, features that cannot be computed (a zero price), or a
scorer that raises, the stage is skipped (the run goes on with the detector's score alone) and
says why.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np

from barfinex_cli.advisor.features import (
    WINDOW,
    ShortWindow,
    features_at,
    features_of,
    signal_features,
)
from barfinex_cli.advisor.stages.base import Events, SignalView, passed, skipped
from barfinex_cli.advisor.stages.context import MarketView
from barfinex_cli.contracts.advisor import MlScored, MlSkipped, StageOutcome


class ScorerLike(Protocol):
    """What the stage needs of a scorer (see `advisor.models.Scorer`)."""

    @property
    def name(self) -> str: ...

    @property
    def kind(self) -> Literal["ml", "rule"]: ...

    def probability(self, features: Mapping[str, float]) -> float: ...


@dataclass(frozen=True, slots=True)
class ScoreResult:
    outcome: StageOutcome
    events: Events
    market_features: dict[str, float] | None
    """The series' features, for the regime; None when the window is too short."""
    probability: float | None


def score_signal(view: SignalView, market: MarketView, scorer: ScorerLike) -> ScoreResult:
    """Compute the features and score the signal with `scorer`."""
    start = time.perf_counter()
    h, lo, c, v = market.snapshot.columns
    try:
        with np.errstate(all="ignore"):  # a non-finite result is checked below
            if len(c) == len(market.snapshot.candles):
                w = -WINDOW
                features = features_of(
                    np.array(h[w:]), np.array(lo[w:]), np.array(c[w:]), np.array(v[w:])
                )
            else:  # a snapshot made without columns
                features = features_at(market.snapshot.candles)
        bad = sorted(k for k, x in features.items() if not math.isfinite(x))
        if bad:
            raise ValueError(f"not finite: {', '.join(bad)} (a zero or missing price?)")
    except (ShortWindow, ArithmeticError, ValueError) as exc:
        event = MlSkipped(signal_id=view.id, reason="missing_features", detail=str(exc))
        return ScoreResult(skipped("ml", str(exc)), (event,), None, None)
    full = signal_features(features, view.side, view.signal.score)
    try:
        p = float(scorer.probability(full))
        if not math.isfinite(p) or not 0.0 <= p <= 1.0:
            raise ValueError(f"probability {p!r} is not in [0, 1]")
    except Exception as exc:  # a model file's scorer is user data: never take the advisor down
        detail = f"{scorer.name}: {type(exc).__name__}: {exc}"
        event = MlSkipped(signal_id=view.id, reason="scorer_error", detail=detail)
        return ScoreResult(skipped("ml", detail), (event,), features, None)
    scored = MlScored(
        signal_id=view.id,
        model=scorer.name,
        kind=scorer.kind,
        probability=p,
        features=full,
        duration_us=round((time.perf_counter() - start) * 1e6, 3),
    )
    return ScoreResult(passed("ml", f"{scorer.name} p={p:.3f}"), (scored,), features, p)
