"""Sizing: how large an allowed order is — risk per trade over the stop distance, within the caps.

An entry risks `risk.per_trade_pct` of equity if its stop is hit, so its amount is that budget
divided by the distance from entry to stop; the advisor's `size_hint`, `size.max_notional` and
`size.max_equity_pct` can only make it smaller, `size.step` rounds it down to the venue's lot, and
an order worth less than `size.min_notional` is refused rather than placed as dust. A decision
with no stop (or a stop on the wrong side of the entry) cannot be sized and is blocked with the
reason. Closes take the held amount, reduces the hint (never more than is held), and a flip is
one order: the held amount plus the freshly sized opposite position.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_DOWN, Decimal

from barfinex_cli.inspector.model import Intent, Portfolio
from barfinex_cli.inspector.policies.base import NO_FIGURES, Figures, Outcome
from barfinex_cli.inspector.policies.config import Limits

RISK = "risk_per_trade"
SIZE = "position_size"
EXIT = "exit"
_ZERO = Decimal(0)
_HUNDRED = Decimal(100)
DEFAULT_STEP = Decimal("0.00000001")
"""Without a `size.step` an amount is rounded down to 8 decimals (the paper broker's step):
never a 28-digit amount, never more than the risk cap allowed."""


def _amount(size: Decimal) -> str:
    """Return `size` as a reason shows it: plain digits, no exponent, no trailing zeros."""
    text = f"{size:f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


@dataclass(frozen=True, slots=True)
class Sizing:
    """The sizing step's answer: the policy that settled it, its outcome and the order amount."""

    policy: str
    outcome: Outcome
    size: Decimal | None = None
    signed: Decimal = _ZERO
    """Signed change to the net position in the quote currency: + for a buy, - for a sell."""


def _block(policy: str, reason: str, figures: Figures = NO_FIGURES) -> Sizing:
    return Sizing(policy, Outcome("BLOCK", reason, figures))


def held(intent: Intent, portfolio: Portfolio) -> Decimal:
    """Return how much of the strategy's position in the symbol the intent's side would close."""
    closes = "short" if intent.side == "buy" else "long"
    return sum(
        (
            abs(p.size)
            for p in portfolio.positions
            if p.symbol == intent.symbol and p.strategy == intent.strategy and p.side == closes
        ),
        _ZERO,
    )


def size_intent(intent: Intent, portfolio: Portfolio, limits: Limits) -> Sizing:
    """Size `intent` under `limits`, or say which sizing policy refuses it and why."""
    sign = Decimal(1) if intent.side == "buy" else Decimal(-1)
    if intent.kind in ("close", "reduce"):
        return _size_exit(intent, portfolio, sign)
    opening = _size_entry(intent, portfolio, limits)
    if opening.size is None or intent.kind == "open":
        return opening
    closing = held(intent, portfolio)
    total = opening.size + closing
    figures = {**opening.outcome.figures, "close_size": float(closing), "size": float(total)}
    return Sizing(
        opening.policy,
        Outcome("ALLOW", opening.outcome.reason, figures),
        total,
        sign * total * intent.entry,
    )


def _size_exit(intent: Intent, portfolio: Portfolio, sign: Decimal) -> Sizing:
    position = held(intent, portfolio)
    what = "short" if intent.side == "buy" else "long"
    if position <= 0:
        return _block(
            EXIT, f"no {what} position of {intent.strategy} in {intent.symbol} to {intent.kind}"
        )
    if intent.kind == "close":
        size = position
    elif intent.size_hint is None or intent.size_hint.quantize(DEFAULT_STEP, ROUND_DOWN) <= 0:
        return _block(EXIT, "a reduce needs a positive size_hint (how much to take off)")
    else:
        size = min(intent.size_hint.quantize(DEFAULT_STEP, ROUND_DOWN), position)
    figures = {"held": float(position), "size": float(size)}
    reason = f"{intent.kind} {_amount(size)} of {_amount(position)} held"
    return Sizing(EXIT, Outcome("ALLOW", reason, figures), size, sign * size * intent.entry)


def _size_entry(intent: Intent, portfolio: Portfolio, limits: Limits) -> Sizing:
    equity, entry, stop = portfolio.equity, intent.entry, intent.stop
    if equity <= 0:
        return _block(RISK, f"equity is {equity}: nothing to risk", {"equity": float(equity)})
    if entry <= 0:
        return _block(RISK, f"entry price {entry} is not positive")
    if stop is None:
        return _block(
            RISK,
            "the decision has no stop: risk per trade sizes the order from the "
            "stop distance, so an entry without one is refused",
        )
    if (intent.side == "buy" and stop >= entry) or (intent.side == "sell" and stop <= entry):
        where = "at or above" if intent.side == "buy" else "at or below"
        return _block(
            RISK,
            f"stop {stop} is {where} the entry {entry} for a {intent.side}",
            {"entry": float(entry), "stop": float(stop)},
        )
    size_cfg = limits.size
    risk_pct = limits.risk.per_trade_pct
    size = equity * risk_pct / _HUNDRED / abs(entry - stop)
    # Figures in float arithmetic from four conversions: float(Decimal) costs about a microsecond.
    equity_f, risk_f, entry_f = float(equity), float(risk_pct), float(entry)
    budget_f, distance_f = equity_f * risk_f / 100, abs(entry_f - float(stop))
    figures: dict[str, float | str] = {
        "equity": equity_f,
        "risk_pct": risk_f,
        "risk_budget": budget_f,
        "stop_distance": distance_f,
        "risk_size": budget_f / distance_f,
    }
    bound = "budget"
    hint = intent.size_hint
    if hint is not None and 0 < hint < size:
        size, bound = hint, "hint"
    if size_cfg.max_notional is not None and size_cfg.max_notional / entry < size:
        size, bound = size_cfg.max_notional / entry, "max_notional"
    if size_cfg.max_equity_pct is not None:
        cap = equity * size_cfg.max_equity_pct / _HUNDRED / entry
        if cap < size:
            size, bound = cap, "max_equity_pct"
    if size_cfg.step is not None:
        size = (size / size_cfg.step).to_integral_value(ROUND_DOWN) * size_cfg.step
    else:
        size = size.quantize(DEFAULT_STEP, ROUND_DOWN)
    policy = RISK if bound in ("budget", "hint") else SIZE
    bound = _bound_text(bound, limits)
    notional = size * entry
    size_f = float(size)
    figures["size"] = size_f
    figures["notional"] = size_f * entry_f
    figures["bound_by"] = bound
    if size <= 0 or notional < size_cfg.min_notional:
        figures["min_notional"] = float(size_cfg.min_notional)
        return _block(
            SIZE,
            f"sized at {size_f * entry_f:.2f} notional ({bound}), below the minimum "
            f"{size_cfg.min_notional}",
            figures,
        )
    sign = Decimal(1) if intent.side == "buy" else Decimal(-1)
    by = bound if bound.startswith(("the ", "max_")) else f"the {bound}"
    reason = f"size {_amount(size)} ({size_f * entry_f:.2f} notional) set by {by}"
    return Sizing(policy, Outcome("ALLOW", reason, figures), size, sign * notional)


def _bound_text(bound: str, limits: Limits) -> str:
    if bound == "budget":
        return "risk budget"
    if bound == "hint":
        return "the advisor's size hint"
    if bound == "max_notional":
        return f"max_notional {limits.size.max_notional}"
    return f"max_equity_pct {limits.size.max_equity_pct}%"
