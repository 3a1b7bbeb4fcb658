"""Exposure policies: the whole book after the order — net exposure, leverage, correlated groups.

Positions are valued at their entry price (the governor sees no marks; the service's KPIs do) and
netted per symbol, as a netting venue holds them. An entry is blocked when it would leave net
exposure (|long - short| over equity) above `exposure.max_net_pct` or gross exposure (positions
plus open orders over equity) above `exposure.max_leverage` — unless it lowers the figure it is
judged on, so a hedge is never refused for the excess it reduces. A correlated group caps how
many of its symbols hold a position at once; adding to a symbol already held is not a new one.
"""

from __future__ import annotations

from decimal import Decimal

from barfinex_cli.inspector.policies.base import ALLOW, Context, Outcome, Policy, pct

_ZERO = Decimal(0)
_HUNDRED = Decimal(100)


def _book(ctx: Context) -> tuple[Decimal, Decimal, Decimal, Decimal]:
    """Return net and gross position notional before and after the order."""
    book = ctx.book
    old = book.by_symbol.get(ctx.intent.symbol, _ZERO)
    new = old + ctx.order_signed
    return book.net, book.net + ctx.order_signed, book.gross, book.gross - abs(old) + abs(new)


def net_exposure(ctx: Context) -> Outcome:
    """Block an entry that leaves |net exposure| above `exposure.max_net_pct` of equity."""
    limit = ctx.rules.exposure.max_net_pct
    if limit is None:
        return ALLOW
    before, after, _, _ = _book(ctx)
    equity = ctx.portfolio.equity
    if abs(after) * _HUNDRED <= limit * equity or abs(after) <= abs(before):
        return ALLOW
    after_pct = pct(abs(after), equity)
    return Outcome(
        "BLOCK",
        f"net exposure would be {after_pct:.1f}% of equity, above max_net_pct {limit}%",
        {
            "net_exposure_pct": after_pct,
            "before_pct": pct(abs(before), equity),
            "max_net_pct": float(limit),
        },
    )


def leverage(ctx: Context) -> Outcome:
    """Block an entry that leaves gross exposure over equity above `exposure.max_leverage`."""
    limit = ctx.rules.exposure.max_leverage
    if limit is None:
        return ALLOW
    _, _, before, after = _book(ctx)
    orders = ctx.portfolio.open_orders_notional
    equity = ctx.portfolio.equity
    if after + orders <= limit * equity or after <= before:
        return ALLOW
    ratio = pct(after + orders, equity) / 100
    return Outcome(
        "BLOCK",
        f"leverage would be {ratio:.2f}x (positions and open orders over "
        f"equity), above max_leverage {limit}x",
        {
            "leverage": ratio,
            "before": pct(before + orders, equity) / 100,
            "open_orders_notional": float(orders),
            "max_leverage": float(limit),
        },
    )


def correlated_group(ctx: Context) -> Outcome:
    """Block an entry in a new symbol of a group that already holds `max_open` positions."""
    symbol = ctx.intent.symbol
    for name, group in ctx.rules.correlation.groups.items():
        if symbol not in group.symbols:
            continue
        held = {s for s in group.symbols if ctx.book.by_symbol.get(s)}
        if symbol not in held and len(held) >= group.max_open:
            return Outcome(
                "BLOCK",
                f"correlated group {name!r} already holds {len(held)} of "
                f"max_open {group.max_open} ({', '.join(sorted(held))})",
                {"group": name, "open": len(held), "max_open": group.max_open},
            )
    return ALLOW


POLICIES = (
    Policy("net_exposure", net_exposure),
    Policy("leverage", leverage),
    Policy("correlated_group", correlated_group),
)
