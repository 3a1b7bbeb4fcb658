"""Stage 7, validation: is the planned trade worth its costs?

The plan: enter at the ask for a long (the bid for a short; the last price when no book was seen),
stop `stop_atr` ATRs and take profit `take_profit_atr` ATRs from the mid. Paying the spread moves
the entry against the trade, so a wide spread both fails the spread check and erodes the
reward-to-risk. Blocks when the spread exceeds `max_spread_pct` (0.4 %), when there is no ATR to
place the stop with, or when reward / risk is under `min_risk_reward` (1.2).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from barfinex_cli.advisor.stages.base import Events, SignalView, blocked, passed
from barfinex_cli.advisor.stages.context import MarketView
from barfinex_cli.contracts.advisor import StageOutcome, ValidationBlocked, ValidationPassed


@dataclass(frozen=True, slots=True)
class Plan:
    """Entry, stop and take-profit of a trade, with its reward-to-risk."""

    entry: float
    stop: float
    take_profit: float
    risk_reward: float

    @property
    def stop_distance(self) -> float:
        return abs(self.entry - self.stop)


@dataclass(frozen=True, slots=True)
class ValidationResult:
    outcome: StageOutcome
    events: Events
    plan: Plan | None


def price(value: float) -> Decimal:
    """Return a price as the Decimal the events carry (10 significant decimals at most)."""
    return Decimal(repr(round(value, 10)))


def plan_trade(side: int, market: MarketView, atr: float, stop_atr: float, tp_atr: float) -> Plan:
    """Return the entry, stop and take-profit of a trade on `side` (+1 long, -1 short)."""
    mid = market.snapshot.mid
    if side > 0:
        entry = market.ask if market.ask is not None else market.last_price
    else:
        entry = market.bid if market.bid is not None else market.last_price
    stop = mid - side * stop_atr * atr
    target = mid + side * tp_atr * atr
    risk = (entry - stop) * side
    reward = (target - entry) * side
    ratio = reward / risk if risk > 0 else 0.0
    return Plan(entry=entry, stop=stop, take_profit=target, risk_reward=max(0.0, ratio))


def validate(
    view: SignalView,
    market: MarketView,
    *,
    max_spread_pct: float,
    min_risk_reward: float,
    stop_atr: float,
    take_profit_atr: float,
) -> ValidationResult:
    """Plan the trade and check its spread and reward-to-risk."""

    def refuse(
        check: str, reason: str, observed: float | None, limit: float | None
    ) -> ValidationResult:
        event = ValidationBlocked(
            signal_id=view.id,
            check=check,
            reason=reason,
            observed=observed,
            limit=limit,
        )
        return ValidationResult(blocked("validation", reason), (event,), None)

    spread = market.spread_pct or 0.0
    if spread > max_spread_pct:
        return refuse(
            "spread",
            f"spread {spread:.3f}% above {max_spread_pct}%",
            round(spread, 6),
            max_spread_pct,
        )
    if market.atr is None or market.atr <= 0:
        return refuse(
            "atr", "no ATR to place the stop with (too few candles, or no range)", market.atr, None
        )
    plan = plan_trade(view.side, market, market.atr, stop_atr, take_profit_atr)
    if plan.risk_reward < min_risk_reward:
        reason = f"reward/risk {plan.risk_reward:.2f} below {min_risk_reward}"
        return refuse("risk_reward", reason, round(plan.risk_reward, 6), min_risk_reward)
    event = ValidationPassed(
        signal_id=view.id,
        entry=price(plan.entry),
        stop=price(plan.stop),
        take_profit=price(plan.take_profit),
        spread_pct=round(spread, 6),
        risk_reward=round(plan.risk_reward, 6),
    )
    detail = f"spread {spread:.3f}%, reward/risk {plan.risk_reward:.2f}"
    return ValidationResult(passed("validation", detail), (event,), plan)
