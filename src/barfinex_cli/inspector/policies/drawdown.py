"""Drawdown policies: the day's loss, the fall from the equity peak, and the day's profit cap.

These judge the account, not the trade, so the governor also runs them with no intent at all
(`Governor.check`) to act on a breach the moment equity crosses a limit. A loss limit answers its
configured action: CLOSE_ALL flattens every runtime-managed position (and is never softened for a
close), STAND_DOWN stops new entries while open positions stay managed. The daily limits hold to
the next trading day (local midnight of the file's `timezone`) and the peak limit until
`bfx inspector resume`, unless `drawdown.stand_down_minutes` sets a fixed length. The profit cap
counts realised profit only: it keeps the day's gains, it does not chase them.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from barfinex_cli.inspector.model import Portfolio
from barfinex_cli.inspector.policies.base import (
    ALLOW,
    Context,
    Outcome,
    Policy,
    next_day_start,
    pct,
)
from barfinex_cli.inspector.policies.config import PolicyFile

_HUNDRED = Decimal(100)


def _until(rules: PolicyFile, now: datetime, day_end: datetime | None) -> datetime | None:
    minutes = rules.drawdown.stand_down_minutes
    return now + timedelta(minutes=minutes) if minutes is not None else day_end


def daily_loss_breach(
    portfolio: Portfolio, rules: PolicyFile, zone: ZoneInfo, now: datetime
) -> Outcome | None:
    """Return the configured action when today's loss reaches `drawdown.daily_loss_pct`."""
    limit = rules.drawdown.daily_loss_pct
    if limit is None:
        return None
    start = portfolio.day_start_equity
    loss = start - portfolio.equity
    if loss <= 0 or loss * _HUNDRED < limit * start:  # exact, and cheap on the allow path
        return None
    loss_pct = pct(loss, start)
    action = rules.drawdown.on_daily_loss
    return Outcome(
        action,
        f"down {loss_pct:.2f}% today, at or past daily_loss_pct {limit}%",
        {
            "daily_loss_pct": loss_pct,
            "limit_pct": float(limit),
            "day_start_equity": float(start),
            "equity": float(portfolio.equity),
        },
        _until(rules, now, next_day_start(now, zone)),
    )


def peak_breach(portfolio: Portfolio, rules: PolicyFile, now: datetime) -> Outcome | None:
    """Return the configured action once equity is `drawdown.from_peak_pct` below its peak."""
    limit = rules.drawdown.from_peak_pct
    if limit is None:
        return None
    peak = portfolio.peak_equity
    fall = peak - portfolio.equity
    if fall <= 0 or fall * _HUNDRED < limit * peak:
        return None
    fall_pct = pct(fall, peak)
    action = rules.drawdown.on_peak
    return Outcome(
        action,
        f"equity {fall_pct:.2f}% below its peak, at or past from_peak_pct {limit}%",
        {
            "drawdown_pct": fall_pct,
            "limit_pct": float(limit),
            "peak_equity": float(peak),
            "equity": float(portfolio.equity),
        },
        _until(rules, now, None),
    )


def profit_cap_reached(
    portfolio: Portfolio, rules: PolicyFile, zone: ZoneInfo, now: datetime
) -> Outcome | None:
    """Return STAND_DOWN to the next trading day once realised profit reaches the daily cap."""
    limit = rules.drawdown.daily_profit_cap_pct
    if limit is None:
        return None
    gained = portfolio.realised_today
    if gained <= 0 or gained * _HUNDRED < limit * portfolio.day_start_equity:
        return None
    gained_pct = pct(gained, portfolio.day_start_equity)
    return Outcome(
        "STAND_DOWN",
        f"realised {gained_pct:.2f}% today, at daily_profit_cap_pct {limit}%: done for the day",
        {"realised_pct": gained_pct, "limit_pct": float(limit)},
        next_day_start(now, zone),
    )


def _softened(outcome: Outcome | None, ctx: Context) -> Outcome:
    # A STAND_DOWN stops entries only; a close or reduce goes on. CLOSE_ALL stays for everything.
    if outcome is None or (outcome.action == "STAND_DOWN" and not ctx.intent.is_entry):
        return ALLOW
    return outcome


def daily_loss(ctx: Context) -> Outcome:
    """Answer the daily-loss action once today's loss reaches its limit."""
    return _softened(daily_loss_breach(ctx.portfolio, ctx.rules, ctx.day_zone, ctx.now), ctx)


def peak_drawdown(ctx: Context) -> Outcome:
    """Answer the peak-drawdown action once equity has fallen its limit from the peak."""
    return _softened(peak_breach(ctx.portfolio, ctx.rules, ctx.now), ctx)


def daily_profit_cap(ctx: Context) -> Outcome:
    """Stand down new entries once the day's realised profit reaches its cap."""
    return _softened(profit_cap_reached(ctx.portfolio, ctx.rules, ctx.day_zone, ctx.now), ctx)


POLICIES = (
    Policy("daily_loss", daily_loss, entry_only=False),
    Policy("peak_drawdown", peak_drawdown, entry_only=False),
    Policy("daily_profit_cap", daily_profit_cap),
)
