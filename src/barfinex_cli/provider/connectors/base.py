"""The protocols every connector and broker implements.

A `MarketConnector` yields market payloads (closed candles, trades, books, tickers) as a live feed
would, and answers history requests. A `Broker` takes orders and reports what happened to them as
order payloads through the `emit` callback it is given; the paper broker and the ccxt broker emit
events identical in shape.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Protocol

from barfinex_cli.contracts.market import ConnectorHealth
from barfinex_cli.contracts.orders import (
    BalanceUpdated,
    OrderSide,
    OrderState,
    OrderType,
    PositionChanged,
)
from barfinex_cli.contracts.times import to_ms
from barfinex_cli.contracts.types import Payload
from barfinex_cli.store.market import CandleRow

Emit = Callable[[Payload], Awaitable[None]]
"""Where a connector or broker sends the payloads it produces (the provider wraps and publishes)."""


class MarketConnector(Protocol):
    """A source of market data: a live exchange or a replay."""

    name: str
    exchange: str

    async def start(self) -> None:
        """Open connections; raise `ServiceUnreachable` with the reason if that fails."""
        ...

    async def stop(self) -> None:
        """Close every connection this connector opened."""
        ...

    def stream(self) -> AsyncIterator[Payload]:
        """Yield market payloads as they happen (closed candles only, never forming ones)."""
        ...

    async def symbols(self) -> list[str]:
        """Return the symbols this connector can serve."""
        ...

    async def fetch_candles(
        self,
        symbol: str,
        timeframe: str,
        since_ms: int,
        until_ms: int | None = None,
        limit: int | None = None,
    ) -> list[CandleRow]:
        """Return closed candles from history with `since_ms <= open_ms <= until_ms`."""
        ...

    def health(self) -> ConnectorHealth:
        """Return the measured ingestion health (never assumed)."""
        ...


@dataclass(frozen=True, slots=True)
class OrderRequest:
    """What a caller asks a broker for; `client_order_id` makes placing idempotent."""

    client_order_id: str
    account: str
    symbol: str
    side: OrderSide
    type: OrderType
    amount: Decimal
    price: Decimal | None = None
    stop_price: Decimal | None = None
    reduce_only: bool = False
    decision_id: str | None = None


class Broker(Protocol):
    """Takes orders and reports their fate as order events."""

    name: str

    async def place(self, request: OrderRequest) -> OrderState:
        """Place an order; the same `client_order_id` twice returns the first order."""
        ...

    async def cancel(self, client_order_id: str, reason: str = "user") -> OrderState:
        """Cancel an open order; raise `NotFound` if there is no such order."""
        ...

    async def orders(self, account: str | None = None, open_only: bool = False) -> list[OrderState]:
        """Return orders, newest last."""
        ...

    async def positions(self, account: str | None = None) -> Sequence[PositionChanged]:
        """Return the current position per (account, symbol)."""
        ...

    async def balances(self, account: str | None = None) -> Sequence[BalanceUpdated]:
        """Return the current balances per account."""
        ...


def ms(value: datetime) -> int:
    """Return a datetime as UTC epoch milliseconds."""
    return to_ms(value)
