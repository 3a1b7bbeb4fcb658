"""Activity policies: a stand-down in force, how often the account trades, and losing in a row.

All guard entries only. A STAND_DOWN already in force (`Portfolio.stand_down_until`, set by an
earlier verdict or `bfx inspector stand-down`) refuses entries until it ends. Too many trades in
a day THROTTLEs to the next trading day; too many losing trades in a day, or a losing streak,
STANDs DOWN — the streak for `activity.loss_streak_stand_down_minutes` after its last loss, so the
next trade after the pause can end it. A cooldown THROTTLEs entries for a while after any loss or
stop-out. Times are the kernel's clock: in a replay they are market time.
"""

from __future__ import annotations

from datetime import timedelta

from barfinex_cli.inspector.model import Action
from barfinex_cli.inspector.policies.base import ALLOW, Context, Outcome, Policy, next_day_start


def stand_down(ctx: Context) -> Outcome:
    """Refuse entries while a stand-down is in force."""
    until = ctx.portfolio.stand_down_until
    if until is None or ctx.now >= until:
        return ALLOW
    return Outcome(
        "STAND_DOWN",
        f"standing down until {until.isoformat()}",
        {"until": until.isoformat()},
        until,
    )


def _daily_cap(
    ctx: Context, action: Action, count: int, limit: int | None, what: str, key: str
) -> Outcome:
    """Apply `action` until the next trading day once `count` of today reaches `limit`."""
    if limit is None or count < limit:
        return ALLOW
    return Outcome(
        action,
        f"{count} {what} today, at {key} {limit}",
        {what.replace(" ", "_") + "_today": count, key: limit},
        next_day_start(ctx.now, ctx.day_zone),
    )


def trades_per_day(ctx: Context) -> Outcome:
    """Throttle entries to the next trading day once `max_trades_per_day` is reached."""
    limit = ctx.rules.activity.max_trades_per_day
    count = ctx.portfolio.trades_today
    return _daily_cap(ctx, "THROTTLE", count, limit, "trades", "max_trades_per_day")


def losing_trades_per_day(ctx: Context) -> Outcome:
    """Stand down to the next trading day once `max_losing_trades_per_day` is reached."""
    limit = ctx.rules.activity.max_losing_trades_per_day
    count = ctx.portfolio.losing_trades_today
    return _daily_cap(ctx, "STAND_DOWN", count, limit, "losing trades", "max_losing_trades_per_day")


def loss_streak(ctx: Context) -> Outcome:
    """Stand down for a while after `max_loss_streak` losing trades in a row."""
    cfg = ctx.rules.activity
    streak = ctx.portfolio.loss_streak
    if cfg.max_loss_streak is None or streak < cfg.max_loss_streak:
        return ALLOW
    since = ctx.portfolio.last_loss_at or ctx.now
    until = since + timedelta(minutes=cfg.loss_streak_stand_down_minutes)
    if ctx.now >= until:
        return ALLOW
    return Outcome(
        "STAND_DOWN",
        f"{streak} losing trades in a row, at max_loss_streak {cfg.max_loss_streak}",
        {"loss_streak": streak, "max_loss_streak": cfg.max_loss_streak},
        until,
    )


def cooldown(ctx: Context) -> Outcome:
    """Throttle entries for `cooldown.after_loss_minutes` after the last loss or stop-out."""
    minutes = ctx.limits.cooldown.after_loss_minutes
    last = ctx.portfolio.last_loss_at
    if minutes is None or last is None:
        return ALLOW
    until = last + timedelta(minutes=minutes)
    if ctx.now >= until:
        return ALLOW
    left = (until - ctx.now).total_seconds() / 60
    return Outcome(
        "THROTTLE",
        f"cooling down after a loss: {left:.1f} of {minutes:g} minutes left",
        {"minutes_left": left, "after_loss_minutes": minutes, "last_loss_at": last.isoformat()},
        until,
    )


POLICIES = (
    Policy("stand_down", stand_down),
    Policy("trades_per_day", trades_per_day),
    Policy("losing_trades_per_day", losing_trades_per_day),
    Policy("loss_streak", loss_streak),
    Policy("cooldown", cooldown),
)
