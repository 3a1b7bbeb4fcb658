"""Market data events: trades, closed candles, books, tickers, gaps and repairs, provider health.

The provider is the only role that emits these. A series is keyed by exchange, symbol and timeframe;
gap, repair and incident events carry that key so the detector knows which history to distrust.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Literal

from pydantic import Field, NonNegativeFloat, NonNegativeInt

from barfinex_cli.contracts.types import Model, Payload, UtcDatetime

Timeframe = Literal["1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "12h", "1d", "1w"]
TradeSide = Literal["buy", "sell"]
Amount = Annotated[Decimal, Field(ge=0)]
BookLevel = tuple[Decimal, Amount]
"""One price level of a book as `[price, amount]`; a pair keeps bursty books small on the wire."""
GapKind = Literal[
    "hole",
    "duplicate",
    "out_of_order",
    "misaligned",
    "seam",
    "stale",
    "lagging",
    "bad_ohlc",
    "outage",
]
IncidentAction = Literal["NONE", "TARGETED_REPAIR", "VERIFY_ONLY", "CONNECTOR_RECOVERY", "ESCALATE"]
QualityScore = Annotated[float, Field(ge=0.0, le=100.0)]
ConnectorState = Literal["ok", "degraded"]
FaultKind = Literal[
    "unavailable", "timeout", "unreachable", "rate_limited", "ws_drop", "lost_order_answer", "gap"
]
"""What went wrong between a connector and its exchange (see `ConnectorHealth.last_errors`)."""


class TradeExecuted(Payload):
    """A public trade printed on the exchange tape."""

    event_type = "market.trade"

    exchange: str
    symbol: str
    trade_id: str
    price: Decimal
    amount: Amount
    side: TradeSide
    time: UtcDatetime


class CandleClosed(Payload):
    """A candle that has closed; never emitted while it is still forming."""

    event_type = "market.candle"

    exchange: str
    symbol: str
    timeframe: Timeframe
    open_time: UtcDatetime
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal
    trades: int | None = None
    buy_volume: Decimal | None = None
    """Taker buy volume, when the candle was built from trades that carry their side."""
    sell_volume: Decimal | None = None
    """Taker sell volume, likewise; None where order flow is unknown."""


class BookUpdated(Payload):
    """Top levels of an order book, best first; `snapshot` is false for a delta."""

    event_type = "market.book"

    exchange: str
    symbol: str
    bids: list[BookLevel]
    asks: list[BookLevel]
    snapshot: bool = True
    sequence: NonNegativeInt | None = None
    time: UtcDatetime


class TickerUpdated(Payload):
    """Best bid and ask, last price and the rolling 24-hour figures of one symbol."""

    event_type = "market.ticker"

    exchange: str
    symbol: str
    bid: Decimal | None = None
    ask: Decimal | None = None
    last: Decimal
    volume_24h: Amount | None = None
    change_24h_pct: float | None = None
    time: UtcDatetime


class GapDetected(Payload):
    """A flaw in a candle series between two open times, found by the provider's checks."""

    event_type = "market.gap"

    exchange: str
    symbol: str
    timeframe: Timeframe
    start: UtcDatetime
    end: UtcDatetime
    missing: NonNegativeInt
    kind: GapKind


class GapRepaired(Payload):
    """A flaw in a candle series that has been repaired, with the rows backfilled and dropped."""

    event_type = "market.repaired"

    exchange: str
    symbol: str
    timeframe: Timeframe
    start: UtcDatetime
    end: UtcDatetime
    kind: GapKind
    backfilled: NonNegativeInt
    dropped: NonNegativeInt
    source: Literal["rest", "archive", "stream"]
    duration_ms: NonNegativeFloat


class LastFault(Model):
    """When a connector last met one kind of fault, and the one-line error it got."""

    at: UtcDatetime
    error: str


class ConnectorHealth(Payload):
    """A periodic health report of one exchange connector (counts since it started)."""

    event_type = "provider.health"

    connector: str
    exchange: str
    connected: bool
    last_trade_at: UtcDatetime | None = None
    last_candle_at: UtcDatetime | None = None
    lag_ms: NonNegativeFloat
    messages_per_s: NonNegativeFloat
    reconnects: NonNegativeInt
    """Websocket streams that came back after failing."""
    gaps: NonNegativeInt
    """Holes reconnects left in candle streams."""
    rate_limit_waits: NonNegativeInt
    """Requests held by the client's own limiter plus those the exchange refused as too many."""
    status: ConnectorState = "ok"
    """`degraded` while the exchange is failing: the latest REST calls failed with a fault (5xx,
    timeout, unreachable, a rate limit outlasting its retries) and the last is recent, or a
    websocket stream is down; the next answer (and every stream receiving) makes it `ok` again.
    A connector that cannot fail (a replay) is always `ok` with zero counts."""
    consecutive_failures: NonNegativeInt = 0
    """REST calls in a row that failed with a fault; the next answer resets it."""
    unavailable: NonNegativeInt = 0
    """Answers saying the exchange is not serving (HTTP 5xx, maintenance, an unreadable body)."""
    timeouts: NonNegativeInt = 0
    """Requests that got no answer within the timeout."""
    unreachable: NonNegativeInt = 0
    """Requests that could not reach the exchange (connection refused, name lookup, reset)."""
    ws_drops: NonNegativeInt = 0
    """Websocket streams that failed (dropped, or could not connect), each failure counted."""
    lost_order_answers: NonNegativeInt = 0
    """Orders sent whose answer never came (the exchange may hold them all the same)."""
    lost_orders_resolved: NonNegativeInt = 0
    """Of those, orders found afterwards by asking the exchange for their client order id."""
    gaps_repaired: NonNegativeInt = 0
    """Holes the provider refilled from REST history."""
    last_errors: dict[FaultKind, LastFault] = Field(default_factory=dict)
    """The time and one-line text of the latest fault of each kind met so far."""


class _SeriesIncident(Payload):
    """Fields every data-quality incident carries: its id, the series and the chosen action."""

    incident_id: str
    exchange: str
    symbol: str
    timeframe: Timeframe
    action: IncidentAction
    quality_score: QualityScore
    reason: str


class IncidentOpened(_SeriesIncident):
    """A series fell below its quality bar and the provider opened an incident for it."""

    event_type = "provider.incident.opened"

    opened_at: UtcDatetime


class IncidentResolved(_SeriesIncident):
    """An incident whose series is healthy again; `quality_score` is the score after the fix."""

    event_type = "provider.incident.resolved"

    resolved_at: UtcDatetime
    duration_s: NonNegativeFloat


class IncidentEscalated(_SeriesIncident):
    """An incident the provider could not fix by itself and hands to an operator."""

    event_type = "provider.incident.escalated"

    attempts: NonNegativeInt
    escalated_at: UtcDatetime


class BusRecovered(Payload):
    """The bus's Redis answered again after an outage; what the provider held meanwhile went out."""

    event_type = "provider.bus.recovered"

    started_at: UtcDatetime
    lasted_s: NonNegativeFloat
    held_events: NonNegativeInt
    """Events the provider held while Redis was away, published once it answered."""
    lost_types: list[str] = []
    """Types whose earlier entries Redis no longer held after an outage of this provider's bus
    (it restarted without persistence), over the provider's run: what was on them and not yet
    handled by a role is gone. Empty when nothing was lost."""


EVENTS: tuple[type[Payload], ...] = (
    TradeExecuted,
    CandleClosed,
    BookUpdated,
    TickerUpdated,
    GapDetected,
    GapRepaired,
    ConnectorHealth,
    IncidentOpened,
    IncidentResolved,
    IncidentEscalated,
    BusRecovered,
)
