"""Request and response schemas of the provider's REST gateway (`/api/v1`).

The gateway's routes declare these as their bodies and answers, so `/openapi.json` describes real
shapes; the runtime's `GatewayClient` parses answers into the same models, so both ends agree by
construction. Requests are strict (frozen, unknown fields rejected, amounts finite, positive and
bounded) because they come from outside; responses ignore unknown fields so that an older client
still reads the answer of a newer gateway. Event payloads that already describe what a route
answers (`OrderState`, `PositionChanged`, `BalanceUpdated`, `BookUpdated`, `ConnectorHealth`) are
reused as they are.

Times in query strings are epoch milliseconds or ISO 8601 (`EpochMs`), bounded to years 1-9999 so
that no value reaches the store or a datetime conversion it cannot take.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import (
    AnyHttpUrl,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
)

from barfinex_cli.contracts.apps import Role
from barfinex_cli.contracts.market import BookUpdated, ConnectorHealth
from barfinex_cli.contracts.orders import (
    BalanceUpdated,
    OrderSide,
    OrderState,
    OrderType,
    PositionChanged,
)
from barfinex_cli.contracts.times import to_ms
from barfinex_cli.contracts.types import UtcDatetime

MAX_AMOUNT = Decimal("1e15")
"""The largest amount or price an order may carry; above it no market exists and sums overflow."""
MIN_MS = to_ms(datetime(1, 1, 1, tzinfo=UTC))
MAX_MS = to_ms(datetime(9999, 12, 31, 23, 59, 59, 999000, tzinfo=UTC))
MAX_ROWS = 10_000
"""The most candles or trades one request returns."""

Health = Literal["ok", "degraded"]
Clock = Literal["wall", "market"]


def parse_time_ms(value: str | int | None) -> int | None:
    """Turn epoch milliseconds or an ISO 8601 time (naive means UTC) into epoch milliseconds.

    Raises:
        ValueError: The value is neither, or lies outside years 1-9999.
    """
    if value is None:
        return None
    if isinstance(value, int):
        ms = value
    else:
        text = value.strip()
        if text.lstrip("-").isdigit():
            ms = int(text)
        else:
            try:
                moment = datetime.fromisoformat(text)
            except ValueError:
                raise ValueError("expected epoch milliseconds or an ISO 8601 time") from None
            ms = to_ms(moment if moment.tzinfo else moment.replace(tzinfo=UTC))
    if not MIN_MS <= ms <= MAX_MS:
        raise ValueError(f"out of range: epoch milliseconds lie between {MIN_MS} and {MAX_MS}")
    return ms


def _before_ms(value: object) -> object:
    if isinstance(value, bool):  # a bool is an int to Python, never a time to a user
        raise ValueError("expected epoch milliseconds or an ISO 8601 time")
    return parse_time_ms(value) if isinstance(value, str | int) else value


EpochMs = Annotated[int | None, BeforeValidator(_before_ms)]
"""An optional time: epoch milliseconds or ISO 8601 in, bounded epoch milliseconds out."""
Price = Annotated[Decimal, Field(gt=0, le=MAX_AMOUNT, allow_inf_nan=False)]
"""A positive, finite amount or price no larger than `MAX_AMOUNT`."""


class Request(BaseModel):
    """Base of every request body: immutable, unknown fields rejected, no NaN or infinity."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class Response(BaseModel):
    """Base of every answer: immutable; fields a newer gateway adds are ignored, not refused."""

    model_config = ConfigDict(frozen=True, extra="ignore")


# --- health -------------------------------------------------------------------------------------


class HealthResponse(Response):
    """Liveness, and which clock the provider runs on (a replay runs on the market's clock).

    `degraded` while the bus waits out a Redis outage (publishes are held, nothing is lost), or
    while a connector's exchange is failing (`connectors` says which).
    """

    status: Health
    version: str
    uptime_s: float
    clock: Clock = "wall"
    market_time: UtcDatetime | None = None
    """The market time a replaying provider has reached; None on the wall clock."""
    replay_done: bool | None = None
    """True once a replay has played its last event (the gateway still serves); None live."""
    connectors: dict[str, Health] = Field(default_factory=dict)
    """Each connector's `status` by name; its counts and last errors are at `/connectors`."""


class ReadyResponse(Response):
    """Readiness: each check is `ok` or what failed."""

    ready: bool
    checks: dict[str, str]


# --- market -------------------------------------------------------------------------------------


class ConnectorSymbols(Response):
    """The symbols one connector serves; `error` says why the list is empty when it failed."""

    connector: str
    exchange: str
    symbols: list[str]
    error: str | None = None


class SymbolsResponse(Response):
    """Symbols per connector."""

    connectors: list[ConnectorSymbols]


class SeriesInfo(Response):
    """One candle series the store holds, with its row count and first and last open."""

    exchange: str
    symbol: str
    timeframe: str
    rows: int
    first_ms: int
    last_ms: int


class SeriesResponse(Response):
    """Every candle series the store holds."""

    series: list[SeriesInfo]


class SeriesNotFoundBody(Response):
    """The 404 answer for a series the store does not hold: why, and the series it does hold."""

    detail: str
    series: list[SeriesInfo]


class Candle(Response):
    """One closed candle as the store holds it (store values are floats, not exact decimals)."""

    time: UtcDatetime
    open_ms: int
    open: float
    high: float
    low: float
    close: float
    volume: float
    trades: int | None = None
    buy_volume: float | None = None
    sell_volume: float | None = None


class CandlesResponse(Response):
    """Closed candles of one series, oldest first."""

    exchange: str
    symbol: str
    timeframe: str
    candles: list[Candle]


class Trade(Response):
    """One trade from the store."""

    time: UtcDatetime
    time_ms: int
    trade_id: str
    price: float
    amount: float
    side: str


class TradesResponse(Response):
    """Trades of one symbol in time order."""

    exchange: str
    symbol: str
    trades: list[Trade]


OrderBook = BookUpdated
"""`GET /orderbook` answers the last `market.book` payload, trimmed to the asked depth."""


class ConnectorStatus(ConnectorHealth):
    """A connector's measured health (the `provider.health` fields) under its configured name."""

    name: str


class ConnectorsResponse(Response):
    """Measured health of every connector."""

    connectors: list[ConnectorStatus]


# --- accounts and orders ------------------------------------------------------------------------


class AccountsResponse(Response):
    """Balances per account."""

    accounts: list[BalanceUpdated]


class PositionsResponse(Response):
    """Positions per account and symbol."""

    positions: list[PositionChanged]


class OrdersResponse(Response):
    """Orders, oldest first."""

    orders: list[OrderState]


class BrokerCapabilities(Response):
    """What the venue behind the provider's broker can hold for a position (`GET /broker`).

    The inspector reads it to choose per venue: protective orders held by the venue where it
    can, emulated on price updates where it cannot. Every broker holds plain limit orders.
    """

    broker: str
    exchange: str
    stop_orders: bool
    """It holds a `stop_market` order until its stop price trades."""
    reduce_only: bool
    """It takes reduce-only orders (an order that can only shrink a position)."""
    source: str = ""
    """Where the answer comes from, e.g. the ccxt `has` flags it was read off."""


class PlaceOrderRequest(Request):
    """An order to place; `client_order_id` makes placing it idempotent."""

    client_order_id: str = Field(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")
    account: str = Field(min_length=1, max_length=64)
    symbol: str = Field(min_length=1, max_length=64)
    side: OrderSide
    type: OrderType
    amount: Price
    price: Price | None = Field(None, validate_default=True)
    stop_price: Price | None = Field(None, validate_default=True)
    reduce_only: bool = False
    decision_id: str | None = Field(None, max_length=64)

    @field_validator("price")
    @classmethod
    def _price_for_limits(cls, value: Decimal | None, info: ValidationInfo) -> Decimal | None:
        kind = info.data.get("type")
        if kind in ("limit", "stop_limit") and value is None:
            raise ValueError(f"a {kind} order needs a price")
        if kind in ("market", "stop_market") and value is not None:
            raise ValueError(f"a {kind} order takes no price")
        return value

    @field_validator("stop_price")
    @classmethod
    def _stop_for_stops(cls, value: Decimal | None, info: ValidationInfo) -> Decimal | None:
        kind = info.data.get("type")
        if kind in ("stop_market", "stop_limit") and value is None:
            raise ValueError(f"a {kind} order needs a stop_price")
        if kind in ("market", "limit") and value is not None:
            raise ValueError(f"a {kind} order takes no stop_price")
        return value


# --- app registry -------------------------------------------------------------------------------


class AppTool(Request):
    """A tool an app offers assistants: a route of its own API that the gateway's `/mcp` lists
    and forwards (`role_tools`, `call_role_tool`), so one gateway URL reaches every role."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")
    method: Literal["GET", "POST"] = "GET"
    path: str = Field(pattern=r"^/[A-Za-z0-9_./{}-]{0,199}$")
    """The route on the app's URL; `{name}` segments are filled from the call's arguments."""
    description: str = Field("", max_length=500)


class RegisterRequest(Request):
    """What an app sends to register: its unique name, its role and where it serves, if it does."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    role: Role
    url: AnyHttpUrl | None = None
    version: str = Field("", max_length=64)
    tools: list[AppTool] = Field(default_factory=list, max_length=32)


class HeartbeatRequest(Request):
    """What an app sends with a heartbeat: whether it is fully working."""

    status: Health = "ok"


class AppInfo(Response):
    """One registered app as the registry sees it now."""

    id: str
    name: str
    role: Role
    url: str | None
    version: str
    started_at: datetime
    last_seen: datetime
    status: Literal["alive", "lost"]
    health: Health
    silent_for_s: float
    tools: list[AppTool] = []


class AppsResponse(Response):
    """Registered apps, alive or lost, by name."""

    apps: list[AppInfo]
