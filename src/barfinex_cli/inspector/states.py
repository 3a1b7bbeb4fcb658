"""Each configured policy's state now, with its figure against its limit, for the KPIs.

`/kpi`, `inspector.kpi`, `/api/v1/status` and the studio's Risk screen show one line per policy the
file turns on (the stand-down always, plain `ok` when none is in force): `ok: 3 trades today of
max_trades_per_day 10`, or the action it would answer now — `THROTTLE until T: ...`,
`STAND_DOWN until T: ...` (`until resumed` when open-ended), `BLOCK: ...`, `CLOSE_ALL: ...`.
The state is what the policy itself answers now, asked with a probe entry of no size (so the
account-level policies — stand-down, drawdown, activity, cooldown, windows, exposure — judge the
account as it stands); the figure is the one it judges by. Per-trade policies (sizing, spread,
slippage, excluded assets, hold time, correlated groups) depend on the trade, so their line
gives the limit and, where the account has one, the figure. The per-trade sections are the
file's defaults; a symbol's or strategy's override shows in `/policies`.

Pure: the service hands it the policy set, the portfolio and the clock's `now`.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from decimal import Decimal

from barfinex_cli.inspector.model import Intent, Portfolio
from barfinex_cli.inspector.policies import ALL_POLICIES, Context, Outcome, PolicySet
from barfinex_cli.inspector.policies.base import Book, pct
from barfinex_cli.inspector.policies.config import PolicyFile

_ZERO = Decimal(0)


def policy_states(
    policies: PolicySet, portfolio: Portfolio, now: datetime, stand_down_reason: str = ""
) -> dict[str, str]:
    """Return `{policy: state}` for every policy the file turns on, the stand-down always.

    `stand_down_reason` is why the stand-down in force was ordered (the store keeps it).
    """
    rules = policies.rules
    limits = policies.limits("", "")
    probe = Intent(
        decision_id="",
        strategy="",
        instance=None,
        symbol="",
        side="buy",
        kind="open",
        entry=_ZERO,
        stop=None,
        take_profit=None,
        size_hint=None,
        conviction=0.0,
        spread_bps=None,
        at=now,
    )
    book = Book.of(portfolio.positions)
    ctx = Context(probe, portfolio, now, limits, rules, policies.day_zone, book)
    outcomes = {p.name: p.evaluate for p in ALL_POLICIES}
    states: dict[str, str] = {}
    for name, figure in _figures(rules, portfolio, now, ctx).items():
        evaluate = outcomes.get(name)
        outcome = evaluate(ctx) if evaluate is not None else None
        if name == "stand_down" and stand_down_reason:
            figure = stand_down_reason
        states[name] = _state(outcome, figure, prefer_figure=name == "stand_down")
    return states


def _state(outcome: Outcome | None, figure: str, *, prefer_figure: bool = False) -> str:
    if outcome is None or outcome.action == "ALLOW":
        return f"ok: {figure}" if figure else "ok"
    word = outcome.action
    until = outcome.until
    when = (
        ""
        if until is None
        else " until resumed"
        if until.year == 9999
        else (f" until {until.isoformat()}")
    )
    return f"{word}{when}: {figure if prefer_figure else outcome.reason or figure}"


def _figures(
    rules: PolicyFile, portfolio: Portfolio, now: datetime, ctx: Context
) -> dict[str, str]:
    """Return the figure-against-limit line of each configured policy, in the governor's order."""
    out: dict[str, str] = {}
    add: Callable[[str, str], None] = out.__setitem__
    dd, act, limits = rules.drawdown, rules.activity, ctx.limits
    equity = portfolio.equity
    until = portfolio.stand_down_until
    add("stand_down", "" if until is None or until <= now else "in force")
    if dd.daily_loss_pct is not None:
        start = portfolio.day_start_equity
        add("daily_loss", f"down {pct(max(start - equity, _ZERO), start):.2f}% today "
                          f"of daily_loss_pct {dd.daily_loss_pct}%")  # fmt: skip
    if dd.from_peak_pct is not None:
        peak = max(portfolio.peak_equity, equity)
        add("peak_drawdown", f"{pct(max(peak - equity, _ZERO), peak):.2f}% below the peak "
                             f"of from_peak_pct {dd.from_peak_pct}%")  # fmt: skip
    if dd.daily_profit_cap_pct is not None:
        gained = pct(max(portfolio.realised_today, _ZERO), portfolio.day_start_equity)
        add(
            "daily_profit_cap",
            f"realised {gained:.2f}% today of daily_profit_cap_pct {dd.daily_profit_cap_pct}%",
        )
    if act.max_trades_per_day is not None:
        add("trades_per_day",
            f"{portfolio.trades_today} trades today of max_trades_per_day "
            f"{act.max_trades_per_day}")  # fmt: skip
    if act.max_losing_trades_per_day is not None:
        add("losing_trades_per_day",
            f"{portfolio.losing_trades_today} losing trades today of max_losing_trades_per_day "
            f"{act.max_losing_trades_per_day}")  # fmt: skip
    if act.max_loss_streak is not None:
        add(
            "loss_streak",
            f"{portfolio.loss_streak} losing in a row of max_loss_streak {act.max_loss_streak}",
        )
    if limits.cooldown.after_loss_minutes is not None:
        last = portfolio.last_loss_at
        since = "no loss yet" if last is None else f"last loss {last.isoformat()}"
        add("cooldown", f"{since}; after_loss_minutes {limits.cooldown.after_loss_minutes:g}")
    if rules.assets.excluded:
        add("excluded_asset", f"{len(rules.assets.excluded)} symbols excluded from entries")
    if limits.market.max_spread_bps is not None:
        add("spread", f"judged per entry, max_spread_bps {limits.market.max_spread_bps:g}")
    if limits.market.max_slippage_bps is not None:
        add("slippage", f"judged per entry, max_slippage_bps {limits.market.max_slippage_bps:g}")
    if limits.windows.allow:
        add("trading_window", f"inside one of {len(limits.windows.allow)} windows")
    if rules.exposure.max_net_pct is not None:
        add("net_exposure", f"net {pct(abs(ctx.book.net), equity):.1f}% of equity "
                            f"of max_net_pct {rules.exposure.max_net_pct}%")  # fmt: skip
    if rules.exposure.max_leverage is not None:
        gross = ctx.book.gross + portfolio.open_orders_notional
        add("leverage", f"{pct(gross, equity) / 100:.2f}x of max_leverage "
                        f"{rules.exposure.max_leverage}x")  # fmt: skip
    for name, group in rules.correlation.groups.items():
        held = sum(1 for s in group.symbols if ctx.book.by_symbol.get(s))
        add(f"correlated_group:{name}", f"{held} open of max_open {group.max_open}")
    add("risk_per_trade", f"judged per entry, per_trade_pct {limits.risk.per_trade_pct}%")
    size = limits.size
    caps = [f"max_notional {size.max_notional}"] if size.max_notional is not None else []
    caps += [f"max_equity_pct {size.max_equity_pct}%"] if size.max_equity_pct is not None else []
    if caps:
        add("position_size", "judged per entry, " + ", ".join(caps))
    if limits.hold.max_hold_minutes is not None:
        held_min = [
            (now - p.opened_at).total_seconds() / 60 for p in portfolio.positions if p.runtime
        ]
        longest = f"longest held {max(held_min):.0f} min" if held_min else "no position held"
        add("max_hold", f"{longest} of max_hold_minutes {limits.hold.max_hold_minutes:g}")
    return out
