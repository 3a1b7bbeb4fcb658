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


def _book(ctx: Context) -> tuple[Decimal, Decimal, Decimal, Decimal]:
    """Return net and gross position notional before and after the order."""
    by_symbol: dict[str, Decimal] = {}
    for p in ctx.portfolio.positions:
        value = abs(p.size) * p.entry
        by_symbol[p.symbol] = by_symbol.get(p.symbol, _ZERO) + (
            value if p.side == "long" else -value
        )
    net_before = sum(by_symbol.values(), _ZERO)
    gross_before = sum((abs(v) for v in by_symbol.values()), _ZERO)
    symbol = ctx.intent.symbol
    old = by_symbol.get(symbol, _ZERO)
    new = old + ctx.order_signed
    net_after = net_before + ctx.order_signed
    gross_after = gross_before - abs(old) + abs(new)
    return net_before, net_after, gross_before, gross_after


def net_exposure(ctx: Context) -> Outcome:
    """Block an entry that leaves |net exposure| above `exposure.max_net_pct` of equity."""
    limit = ctx.rules.exposure.max_net_pct
    if limit is None:
        return ALLOW
    before, after, _, _ = _book(ctx)
    equity = ctx.portfolio.equity
    after_pct = pct(abs(after), equity)
    if after_pct <= float(limit) or abs(after) <= abs(before):
        return ALLOW
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
    ratio = pct(after + orders, equity) / 100
    if ratio <= float(limit) or after <= before:
        return ALLOW
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
        held = {p.symbol for p in ctx.portfolio.positions if p.symbol in group.symbols}
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
