"""Stage 8, execution intent: the size to suggest, what each input contributed, the decision.

Size: the equity at risk (`risk_fraction` of the equity, times the LLM's sizing multiplier when
its answer was kept) over the stop distance, capped so the notional stays within
`max_position_fraction` of the equity. The equity is the quote currency's balance on the
signal's exchange when the context has seen one, else `default_equity`.

Attribution records how far each input moved the conviction: the detector's and the model's
weighted parts, the calibration's shift, and the LLM's sizing change.

Exits (`make_exit`): a `close` or `reduce` signal of a strategy's exit rule skips the entry
stages — they judge whether a new trade is worth its risk, which an exit does not add — and
becomes a decision of that kind at once: the side that takes the signal's direction off (a
`long` close sells), the last close as the intended price, no stop, no take-profit. A reduce
suggests `reduce_fraction` of the position the context holds in the symbol (0 when it holds
none: the inspector then refuses it, naming why); the inspector closes or reduces only what its
strategy holds.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from barfinex_cli.advisor.context import Snapshot
from barfinex_cli.advisor.stages.base import Events, SignalView, passed
from barfinex_cli.advisor.stages.validation import Plan, price
from barfinex_cli.contracts.advisor import (
    AttributionRecorded,
    DecisionMade,
    PositionSized,
    Regime,
    StageOutcome,
)
from barfinex_cli.contracts.detector import SignalAction


@dataclass(frozen=True, slots=True)
class Inputs:
    """What the earlier stages concluded, for the decision."""

    plan: Plan
    equity: float | None
    default_equity: float
    risk_fraction: float
    max_position_fraction: float
    strength: float
    probability: float | None
    weights: dict[str, float]
    raw: float
    calibrated: float
    regime: Regime
    multiplier: float
    ml_model: str | None
    llm_model: str | None
    reasoning: tuple[str, ...]
    stages: tuple[StageOutcome, ...]


@dataclass(frozen=True, slots=True)
class IntentResult:
    outcome: StageOutcome
    events: Events
    decision: DecisionMade


def _size(value: float) -> Decimal:
    return Decimal(repr(round(value, 8)))


def make_intent(view: SignalView, inputs: Inputs) -> IntentResult:
    """Size the trade and emit the sizing, the attribution and the decision."""
    signal = view.signal
    plan = inputs.plan
    equity = (
        inputs.equity
        if inputs.equity is not None and inputs.equity > 0
        else (inputs.default_equity)
    )
    risk_amount = equity * inputs.risk_fraction * inputs.multiplier
    size = risk_amount / plan.stop_distance if plan.stop_distance > 0 else 0.0
    cap = equity * inputs.max_position_fraction / plan.entry if plan.entry > 0 else 0.0
    capped_by = "none"
    if size > cap:
        size, capped_by = cap, "max_position"
    sized = PositionSized(
        signal_id=view.id,
        equity=_size(equity),
        risk_fraction=inputs.risk_fraction,
        risk_amount=_size(risk_amount),
        stop_distance=price(plan.stop_distance),
        multiplier=inputs.multiplier,
        size=_size(size),
        capped_by=capped_by,
    )
    contributions = {
        "detector": round(inputs.weights.get("detector", 1.0) * inputs.strength, 6),
        "ml": round(inputs.weights.get("ml", 0.0) * (inputs.probability or 0.0), 6),
        "calibration": round(inputs.calibrated - inputs.raw, 6),
        "llm_sizing": round(inputs.multiplier - 1.0, 6),
    }
    dominant = max(contributions, key=lambda k: abs(contributions[k]))
    attribution = AttributionRecorded(
        signal_id=view.id, contributions=contributions, dominant=dominant
    )
    outcome = passed("intent", f"size {size:.6g} ({capped_by})")
    decision = DecisionMade(
        signal_id=view.id,
        exchange=signal.exchange,
        symbol=signal.symbol,
        side="buy" if view.side > 0 else "sell",
        entry=price(plan.entry),
        stop=price(plan.stop),
        take_profit=price(plan.take_profit),
        size=_size(size),
        conviction=inputs.calibrated,
        reasoning="; ".join(inputs.reasoning),
        raw_conviction=inputs.raw,
        regime=inputs.regime,
        risk_reward=round(plan.risk_reward, 6),
        strategy=signal.strategy,
        ml_model=inputs.ml_model,
        llm_model=inputs.llm_model,
        stages=[*inputs.stages, outcome],
    )
    return IntentResult(outcome, (sized, attribution, decision), decision)


def make_exit(view: SignalView, snapshot: Snapshot, reduce_fraction: float) -> DecisionMade:
    """Return the decision of a `close` or `reduce` signal (see the module docstring)."""
    signal = view.signal
    kind: SignalAction = "reduce" if signal.action == "reduce" else "close"
    held = snapshot.position_size if view.side > 0 else -snapshot.position_size
    held = max(held, 0.0)  # only the side the signal exits counts
    size = held * reduce_fraction if kind == "reduce" else held
    what = f"{kind} {signal.direction}: exit rules of {signal.strategy} scored {signal.score:g}"
    outcome = passed("intent", f"{what}; entry stages not run")
    return DecisionMade(
        signal_id=view.id,
        exchange=signal.exchange,
        symbol=signal.symbol,
        side="sell" if view.side > 0 else "buy",
        kind=kind,
        order_type="market",
        entry=price(snapshot.last_close),
        stop=Decimal(0),
        take_profit=Decimal(0),
        size=_size(size),
        conviction=0.0,
        reasoning=what,
        strategy=signal.strategy,
        stages=[outcome],
    )
