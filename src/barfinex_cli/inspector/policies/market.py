"""Market policies: excluded assets, and the spread and slippage an entry will pay.

An excluded symbol is never entered. A spread wider than `market.max_spread_bps` blocks an entry
(the book is thin or the market is moving); a market order pays about half the spread over the
mid, so `market.max_slippage_bps` blocks an entry whose half-spread already exceeds it, and
`worst_price` gives the service the limit price that keeps the fill inside the tolerance. The
intent's `spread_bps` is the provider's last book (or ticker) of the symbol as the decision is
judged (`quotes.top_of_book`); without one these two have nothing to judge and allow.
"""

from __future__ import annotations

from decimal import Decimal

from barfinex_cli.inspector.model import Intent
from barfinex_cli.inspector.policies.base import ALLOW, Context, Outcome, Policy
from barfinex_cli.inspector.policies.config import Limits

_BPS = Decimal(10_000)


def excluded_asset(ctx: Context) -> Outcome:
    """Block an entry in a symbol listed in `[assets] excluded`."""
    if ctx.intent.symbol in ctx.rules.assets.excluded:
        return Outcome(
            "BLOCK", f"{ctx.intent.symbol} is in [assets] excluded", {"symbol": ctx.intent.symbol}
        )
    return ALLOW


def spread(ctx: Context) -> Outcome:
    """Block an entry while the spread is wider than `market.max_spread_bps`."""
    limit = ctx.limits.market.max_spread_bps
    seen = ctx.intent.spread_bps
    if limit is None or seen is None or seen <= limit:
        return ALLOW
    return Outcome(
        "BLOCK",
        f"spread {seen:.1f} bps is wider than max_spread_bps {limit:g}",
        {"spread_bps": seen, "max_spread_bps": limit},
    )


def slippage(ctx: Context) -> Outcome:
    """Block an entry whose expected slippage (half the spread) exceeds `max_slippage_bps`."""
    limit = ctx.limits.market.max_slippage_bps
    seen = ctx.intent.spread_bps
    if limit is None or seen is None or seen / 2 <= limit:
        return ALLOW
    return Outcome(
        "BLOCK",
        f"expected slippage {seen / 2:.1f} bps (half the spread) exceeds "
        f"max_slippage_bps {limit:g}",
        {"expected_slippage_bps": seen / 2, "max_slippage_bps": limit},
    )


def worst_price(intent: Intent, limits: Limits) -> Decimal | None:
    """Return the worst acceptable fill price for `intent`, or None when slippage is unbounded.

    A buy accepts up to `entry * (1 + max_slippage_bps / 10,000)`, a sell down to the mirror.
    No order is capped at it (no venue here takes an immediate-or-cancel limit): the fill audit
    flags an entry filled past the same bound (`FillAudited.past_tolerance`) and alerts.
    """
    limit = limits.market.max_slippage_bps
    if limit is None:
        return None
    offset = intent.entry * Decimal(str(limit)) / _BPS
    return intent.entry + offset if intent.side == "buy" else intent.entry - offset


POLICIES = (
    Policy("excluded_asset", excluded_asset),
    Policy("spread", spread),
    Policy("slippage", slippage),
)
