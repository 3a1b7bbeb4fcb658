"""The protocols every connector and broker implements.

A `MarketConnector` yields market payloads (closed candles, trades, books, tickers) as a live feed
would, and answers history requests. A `Broker` takes orders and reports what happened to them as
order payloads through the `emit` callback it is given; the paper broker and the ccxt broker emit
events identical in shape.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping, Sequence
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
from barfinex_cli.contracts.rest import BrokerCapabilities
from barfinex_cli.contracts.times import to_ms
from barfinex_cli.contracts.types import Payload
from barfinex_cli.store.market import CandleRow, TradeRow

Emit = Callable[[Payload], Awaitable[None]]
BookSide = Sequence[tuple[Decimal | float, Decimal | float]]
"""Where a connector or broker sends the payloads it produces (the provider wraps and publishes)."""


@dataclass(frozen=True, slots=True)
class StreamHole:
    """Candles `start_ms..end_ms` (open times) the stream lost to a reconnect: repair from REST."""

    exchange: str
    symbol: str
    timeframe: str
    start_ms: int
    end_ms: int
    missing: int


class MarketConnector(Protocol):
    """A source of market data: a live exchange or a replay.

    The optional parts have defaults in `ConnectorBase`, so the provider never probes a
    connector for what it can do.
    """

    name: str
    exchange: str

    @property
    def base_timeframe(self) -> str:
        """The timeframe its candles (or trade-built candles) come in; higher ones are built."""
        ...

    @property
    def live_start_ms(self) -> int:
        """Where its live part starts; what is older is history the provider stores at start."""
        ...

    @property
    def candle_symbols(self) -> frozenset[str] | None:
        """Symbols that stream closed candles; the others are trade tapes. None: every symbol."""
        ...

    @property
    def holes(self) -> asyncio.Queue[StreamHole] | None:
        """Where a live feed reports candles lost to a reconnect, for repair; None if not."""
        ...

    def broker(self) -> Broker | None:
        """Return the connector as a broker (a live exchange takes orders), or None."""
        ...

    def resume_after(self, marks: Mapping[str, int]) -> None:
        """Skip, per symbol, what the store already holds up to `marks[symbol]` (epoch ms)."""
        ...

    def hole_repaired(self, hole: StreamHole, resolved: bool, reason: str) -> None:
        """Hear how the provider's repair of a hole from `holes` ended (for the health counts)."""
        ...

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


class ConnectorBase:
    """The defaults of a connector's optional parts (see `MarketConnector`)."""

    base_timeframe: str = "1m"
    live_start_ms: int = 0
    candle_symbols: frozenset[str] | None = None
    holes: asyncio.Queue[StreamHole] | None = None

    def broker(self) -> Broker | None:
        """Return None: a connector takes no orders unless it says so."""
        return None

    def resume_after(self, marks: Mapping[str, int]) -> None:
        """Do nothing: a live feed starts from now whatever the store holds."""

    def hole_repaired(self, hole: StreamHole, resolved: bool, reason: str) -> None:
        """Do nothing: a connector that reports no holes keeps no count of their repair."""


class Broker(Protocol):
    """Takes orders and reports their fate as order events."""

    name: str

    async def place(self, request: OrderRequest) -> OrderState:
        """Place an order; the same `client_order_id` twice returns the first order."""
        ...

    async def cancel(self, client_order_id: str, reason: str = "user") -> OrderState:
        """Cancel an open order; raise `NotFound` if there is no such order."""
        ...

    async def orders(
        self,
        account: str | None = None,
        open_only: bool = False,
        ids: Collection[str] | None = None,
        limit: int | None = None,
    ) -> list[OrderState]:
        """Return orders, newest last; with `ids`, only those (an unknown id is left out).

        With `limit`, only the latest that many of those, still newest last; a broker that
        keeps its orders in a store reads only those.
        """
        ...

    async def positions(self, account: str | None = None) -> Sequence[PositionChanged]:
        """Return the current position per (account, symbol)."""
        ...

    async def balances(self, account: str | None = None) -> Sequence[BalanceUpdated]:
        """Return the current balances per account."""
        ...

    def capabilities(self) -> BrokerCapabilities:
        """Return which orders the venue holds for a position (stops, reduce-only)."""
        ...


class MarketFedBroker(Broker, Protocol):
    """A broker that fills against the market data the provider feeds it (the paper broker)."""

    async def on_candle(self, symbol: str, timeframe: str, row: CandleRow, closed_ms: int) -> None:
        """Match resting orders against a closed candle."""
        ...

    def on_trade(self, symbol: str, trade: TradeRow) -> None:
        """Remember the last trade (the price market orders fill near)."""
        ...

    def on_book(self, symbol: str, bids: BookSide, asks: BookSide) -> None:
        """Remember the book (market orders walk it)."""
        ...


def ms(value: datetime) -> int:
    """Return a datetime as UTC epoch milliseconds."""
    return to_ms(value)
