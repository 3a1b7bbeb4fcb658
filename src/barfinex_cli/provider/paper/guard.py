"""The paper broker's own bounds: what it refuses before any of its state changes.

The gateway validates order bodies too, but the broker is also called from MCP and in-process, and
one absurd number (an amount of 1e30, a NaN) that reached the arithmetic used to leave an order
half-placed and every later call raising. So every order passes `check_request` (a `UsageError`
naming the field and the bound) and every piece of market data passes `bar_of`, `price_of` or
`clean_levels` (unusable data is dropped, never half-applied). The bounds live in `fills.py`.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import get_args

from barfinex_cli.contracts.orders import OrderSide, OrderType
from barfinex_cli.errors import UsageError
from barfinex_cli.provider.connectors.base import OrderRequest
from barfinex_cli.provider.paper.fills import (
    MAX_AMOUNT,
    MAX_NOTIONAL,
    MAX_PRICE,
    MAX_VOLUME,
    Bar,
    Level,
    to_decimal,
)
from barfinex_cli.store.market import CandleRow

MAX_ID_LENGTH = 200
"""The longest `client_order_id` kept: it is stored forever, so it must stay an id."""
SIDES: tuple[str, ...] = get_args(OrderSide)
TYPES: tuple[str, ...] = get_args(OrderType)


def _bound(limit: Decimal) -> str:
    return f"{limit:.0e}".replace("e+", "e")


def check_request(request: OrderRequest) -> None:
    """Refuse an order that cannot be represented: bad side or type, or an absurd number.

    Raises:
        UsageError: naming the field, the value and what to give instead.
    """
    cid = request.client_order_id
    if not isinstance(cid, str) or not cid or len(cid) > MAX_ID_LENGTH:
        raise UsageError(
            f"bad client_order_id: give a non-empty id of at most {MAX_ID_LENGTH} characters"
        )
    if request.side not in SIDES:
        raise UsageError(f"bad side {request.side!r}: give one of {', '.join(SIDES)}")
    if request.type not in TYPES:
        raise UsageError(f"bad order type {request.type!r}: give one of {', '.join(TYPES)}")
    _check_number("amount", request.amount, MAX_AMOUNT)
    for label, value in (("price", request.price), ("stop_price", request.stop_price)):
        if value is not None:
            _check_number(label, value, MAX_PRICE)


def _check_number(label: str, value: object, limit: Decimal) -> None:
    number = value if isinstance(value, Decimal) else None
    if isinstance(value, int) and not isinstance(value, bool):
        number = Decimal(value)
    if number is None or not number.is_finite() or number <= 0 or number > limit:
        raise UsageError(
            f"bad {label} {value}: give a number greater than 0 and at most {_bound(limit)}"
        )


def check_notional(request: OrderRequest, mark: Decimal | None) -> None:
    """Refuse an order worth more than `MAX_NOTIONAL` at its highest reference price.

    Raises:
        UsageError: naming the value and the bound.
    """
    prices = [p for p in (request.price, request.stop_price, mark) if p is not None]
    if not prices:
        return
    value = request.amount * max(prices)
    if value > MAX_NOTIONAL:
        raise UsageError(
            f"order value {request.amount} x {max(prices)} = {value:.3e} is beyond the paper "
            f"broker's limit of {_bound(MAX_NOTIONAL)}; give a smaller amount"
        )


def check_opening(account: str, currency: str, value: Decimal) -> str | None:
    """Return why an opening balance cannot be used, or None."""
    if not value.is_finite() or value < 0 or value > MAX_NOTIONAL:
        return (
            f"paper account {account!r}: opening {currency} balance {value} must be from 0 "
            f"to {_bound(MAX_NOTIONAL)}"
        )
    return None


def price_of(value: float | int | Decimal) -> Decimal:
    """Return a market price as a Decimal.

    Raises:
        ValueError: the price is not finite, not above 0, or beyond `MAX_PRICE`.
    """
    price = to_decimal(value)
    if not 0 < price <= MAX_PRICE:
        raise ValueError(f"price {value} is not in (0, {_bound(MAX_PRICE)}]")
    return price


def bar_of(row: CandleRow) -> Bar:
    """Return a stored candle as a `Bar` of exact decimals.

    Raises:
        ValueError: a price or the volume is not finite or out of bounds.
    """
    volume = to_decimal(row.volume)
    if not 0 <= volume <= MAX_VOLUME:
        raise ValueError(f"volume {row.volume} is not in [0, {_bound(MAX_VOLUME)}]")
    return Bar(
        price_of(row.open), price_of(row.high), price_of(row.low), price_of(row.close), volume
    )


def clean_levels(side: Sequence[tuple[Decimal | float, Decimal | float]]) -> list[Level]:
    """Return the usable levels of one book side: finite, positive, in bounds (others dropped)."""
    levels: list[Level] = []
    for price, amount in side:
        try:
            level = (price_of(price), to_decimal(amount))
        except (ValueError, ArithmeticError, TypeError):
            continue
        if 0 < level[1] <= MAX_VOLUME:
            levels.append(level)
    return levels
