"""Order, position and balance events: what happened to our orders and our account.

Every order event carries an `OrderState`, the order as it stands after that event, so a consumer
that keeps only the latest state per `client_order_id` always holds a complete picture.
`decision_id` is the id of the `advisor.decision` event the order executes, when there is one.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Literal

from pydantic import Field

from barfinex_cli.contracts.types import Model, Payload, UtcDatetime

OrderSide = Literal["buy", "sell"]
OrderType = Literal["market", "limit", "stop_market", "stop_limit"]
OrderStatus = Literal["submitted", "open", "filled", "cancelled", "rejected"]
PositionSide = Literal["long", "short", "flat"]
Amount = Annotated[Decimal, Field(ge=0)]


class OrderState(Model):
    """One order as it stands: what was asked, how much is filled and at what average price."""

    client_order_id: str
    order_id: str | None = None
    """The exchange's id; None until the exchange has acknowledged the order."""
    account: str
    exchange: str
    symbol: str
    side: OrderSide
    type: OrderType
    amount: Amount
    price: Decimal | None = None
    stop_price: Decimal | None = None
    reduce_only: bool = False
    filled: Amount = Decimal(0)
    average_price: Decimal | None = None
    decision_id: str | None = None
    status: OrderStatus | None = None
    """Where the order stands; None where the source did not say."""
    fees: Decimal | None = None
    """What the order's fills cost so far, in total; None where the source did not say (an
    audit of its fills then waits for the fill events, which carry each fee)."""


class Fill(Model):
    """One execution against an order, with the fee it cost."""

    trade_id: str | None = None
    price: Decimal
    amount: Amount
    fee: Decimal
    fee_currency: str
    liquidity: Literal["maker", "taker"] | None = None
    time: UtcDatetime


class OrderSubmitted(Payload):
    """An order sent to the exchange and not yet acknowledged."""

    event_type = "order.submitted"

    order: OrderState


class OrderAccepted(Payload):
    """An order the exchange acknowledged and put on its book."""

    event_type = "order.accepted"

    order: OrderState


class OrderPartiallyFilled(Payload):
    """An order that received a fill and still has amount left open."""

    event_type = "order.partially_filled"

    order: OrderState
    fill: Fill


class OrderFilled(Payload):
    """An order whose last fill completed it."""

    event_type = "order.filled"

    order: OrderState
    fill: Fill


class OrderCancelled(Payload):
    """An order cancelled before it filled completely; `order.filled` says how much did."""

    event_type = "order.cancelled"

    order: OrderState
    reason: str
    by: Literal["user", "inspector", "exchange", "expiry"]


class OrderRejected(Payload):
    """An order refused by the exchange or by a local check before it reached the exchange."""

    event_type = "order.rejected"

    order: OrderState
    reason: str
    by: Literal["exchange", "local"]


class PositionChanged(Payload):
    """A position whose size, entry price or profit changed; `flat` with size 0 means closed."""

    event_type = "position.changed"

    account: str
    exchange: str
    symbol: str
    side: PositionSide
    size: Amount
    entry_price: Decimal | None = None
    mark_price: Decimal | None = None
    unrealised_pnl: Decimal
    realised_pnl: Decimal
    pnl_currency: str


class CurrencyBalance(Model):
    """What an account holds of one currency: total, free to use, and tied up in orders."""

    total: Decimal
    free: Decimal
    used: Decimal


class BalanceUpdated(Payload):
    """The balances of an account, per currency, as the exchange last reported them."""

    event_type = "account.balance"

    account: str
    exchange: str
    balances: dict[str, CurrencyBalance]
    time: UtcDatetime


EVENTS: tuple[type[Payload], ...] = (
    OrderSubmitted,
    OrderAccepted,
    OrderPartiallyFilled,
    OrderFilled,
    OrderCancelled,
    OrderRejected,
    PositionChanged,
    BalanceUpdated,
)
