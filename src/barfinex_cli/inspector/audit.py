"""Post-trade audit: how well each order was executed against what the decision intended.

For every order of the inspector that ends (filled, or cancelled after part of it filled) an
`inspector.fill_audit` says the slippage in basis points against the intended price (positive:
worse than intended, for either side), the fees paid, the share of the asked amount that filled,
how many partial fills it took and the time from the decision to the last fill. Pure: the
service hands it the order as the store holds it.

The service publishes it once the fees are known: when the provider's fill events read so far
cover the filled amount, or its final order event (filled, cancelled, rejected) has been read.
A provider whose order state carries the fees (the paper broker; an exchange that reports them)
gives them with the REST answer too: an order settled from that answer (the placing call, the
in-flight settle, a reconciliation, a catch-up) is audited from it at once, so an audit is not
lost when the fill event never arrives. From a provider that gives no fee with the state, the
audit waits for the fill events. The audit's id is derived from the client order id
(`audit_id`): the fill event read later, or a repeat after a restart, is no second audit.

Slippage tolerance: entries go out as the decision's order type (a market order), and neither
the paper broker nor the exchange connectors take an immediate-or-cancel limit, so the fill
price cannot be capped at `market.worst_price`. An entry that filled worse than the policy's
`market.max_slippage_bps` from its intended price is flagged instead (`past_tolerance`) and the
service raises a warning alert naming the figures.

Latency is measured twice: `latency_ms` on the kernel's clock (market time in a replay, where a
fill on the decision's own candle is 0.0) and `wall_latency_ms`, wall-clock time from the
decision's judgment to the fill being seen, which a replay measures too.
"""

from __future__ import annotations

from decimal import Decimal

from barfinex_cli.contracts.ids import derived_uuid7
from barfinex_cli.contracts.inspector import FillAudited
from barfinex_cli.store.inspector import OrderRecord

AUDIT_RANK = 4
"""Sorts an order's audit after its decision's verdict, throttle and guard announcements."""


def audit_id(order: OrderRecord) -> str:
    """Return the one id of `order`'s `inspector.fill_audit`, derived from its client order id.

    Whichever path publishes the audit (the fill events, or the provider's REST answer when a
    reconciliation or the in-flight settle took the fill first), and however often a restart
    repeats it, it is one event.
    """
    anchor = order.decision_id or order.client_order_id
    return derived_uuid7(anchor, f"inspector.fill_audit:{order.client_order_id}", AUDIT_RANK)


def slippage_bps(side: str, intended: Decimal, average: Decimal) -> float:
    """Return how far `average` is from `intended` in bps; positive is worse for the side."""
    if intended <= 0:
        return 0.0
    move = (average - intended) / intended * Decimal(10_000)
    return float(move if side == "buy" else -move)


def audit(
    order: OrderRecord,
    *,
    decided_ms: int | None,
    filled_ms: int,
    fee_currency: str,
    asked: Decimal | None = None,
    decided_wall_ms: int | None = None,
    filled_wall_ms: int | None = None,
    tolerance_bps: float | None = None,
) -> FillAudited | None:
    """Return the audit of an order that filled at least in part, or None if nothing filled."""
    if order.filled <= 0 or order.average_price is None:
        return None
    intended = order.intended_price or order.price or order.stop_price or order.average_price
    amount = asked if asked is not None and asked > 0 else order.amount
    rate = float(min(order.filled / amount, Decimal(1))) if amount > 0 else 1.0
    start = decided_ms if decided_ms is not None else order.placed_ms
    slipped = round(slippage_bps(order.side, intended, order.average_price), 4)
    return FillAudited(
        order_id=order.client_order_id,
        decision_id=order.decision_id,
        symbol=order.symbol,
        intended_price=intended,
        average_price=order.average_price,
        slippage_bps=slipped,
        fees=order.fees,
        fee_currency=fee_currency,
        fill_rate=rate,
        partials=order.partials,
        latency_ms=float(max(0, filled_ms - start)),
        wall_latency_ms=None
        if decided_wall_ms is None or filled_wall_ms is None
        else float(max(0, filled_wall_ms - decided_wall_ms)),
        tolerance_bps=tolerance_bps,
        past_tolerance=tolerance_bps is not None and slipped > tolerance_bps,
    )
