"""Stage 6's inputs: the structured context the LLM sees, the facts it may cite, the evidence.

The numbers the prompt carries are rounded once here and the hallucination check compares the
answer with exactly these, so a model citing what it was shown always passes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from barfinex_cli.advisor.stages.base import SignalView
from barfinex_cli.advisor.stages.context import MarketView


@dataclass(frozen=True, slots=True)
class LlmInputs:
    context: dict[str, Any]
    facts: dict[str, float]
    evidence: dict[str, int]


def _r(value: float) -> float:
    return float(f"{value:.6g}")


def llm_inputs(
    view: SignalView,
    market: MarketView,
    features: Mapping[str, float] | None,
    probability: float | None,
    raw: float,
    calibrated: float,
    regime: str,
) -> LlmInputs:
    """Return the prompt's context, the citable facts and the directional evidence."""
    signal = view.signal
    facts: dict[str, float] = {
        "last_price": _r(market.last_price),
        "detector_score": _r(signal.score),
        "detector_threshold": _r(signal.threshold),
        "raw_conviction": _r(raw),
        "calibrated_conviction": _r(calibrated),
        "position_size": _r(market.snapshot.position_size),
    }
    for name, value in (
        ("bid", market.bid),
        ("ask", market.ask),
        ("spread_pct", market.spread_pct),
        ("atr", market.atr),
        ("ml_probability", probability),
    ):
        if value is not None:
            facts[name] = _r(value)
    for name, value in (features or {}).items():
        facts[name] = _r(value)
    closes = [_r(row["close"]) for row in market.snapshot.candles[-5:]]
    for i, close in enumerate(closes):
        facts[f"close_{i - len(closes) + 1}"] = close
    context: dict[str, Any] = {
        "symbol": signal.symbol,
        "exchange": signal.exchange,
        "timeframe": signal.timeframe,
        "signal": {
            "strategy": signal.strategy,
            "direction": signal.direction,
            "rules_held": [a.rule for a in signal.attribution if a.held],
        },
        "regime": regime,
        "recent_closes": closes,
        "numbers": {k: v for k, v in facts.items() if not k.startswith("close_")},
    }
    evidence = {"detector": view.side}
    if probability is not None:
        evidence["ml_probability"] = (
            view.side if probability > 0.5 else (-view.side if probability < 0.5 else 0)
        )
    if features is not None and "ret_20" in features:
        ret = features["ret_20"]
        evidence["ret_20"] = 1 if ret > 0 else -1 if ret < 0 else 0
    return LlmInputs(context, facts, evidence)
