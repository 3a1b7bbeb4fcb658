"""The gateway's REST routes under `/api/v1` (the proxy to registered apps is in `proxy`).

Market reads come from the `MarketStore` (candles, trades) and from what the provider keeps in
memory (last books, connector health); order routes go to the `Broker`; the app registry answers
`/apps`. Every body and answer is a model of `contracts.rest`, so `/openapi.json` shows real shapes
and the runtime's `GatewayClient` parses the same models. The read functions (`read_candles`,
`read_symbols`, ...) are shared with the MCP tools, so both doors give the same answers.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Body, Depends, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from barfinex_cli import __version__
from barfinex_cli.contracts.market import BookUpdated, Timeframe
from barfinex_cli.contracts.orders import BalanceUpdated, OrderState, PositionChanged
from barfinex_cli.contracts.rest import (
    MAX_ROWS,
    AccountsResponse,
    AppInfo,
    AppsResponse,
    BrokerCapabilities,
    Candle,
    CandlesResponse,
    ConnectorsResponse,
    ConnectorStatus,
    ConnectorSymbols,
    EpochMs,
    HealthResponse,
    HeartbeatRequest,
    OrderBook,
    OrdersResponse,
    PlaceOrderRequest,
    PositionsResponse,
    ReadyResponse,
    RegisterRequest,
    SeriesInfo,
    SeriesNotFoundBody,
    SeriesResponse,
    SymbolsResponse,
    Trade,
    TradesResponse,
    parse_time_ms,
)
from barfinex_cli.contracts.times import from_ms, iso_ms, to_ms
from barfinex_cli.errors import BfxError, NotFound, ServiceUnreachable, UsageError
from barfinex_cli.provider.connectors.base import Broker, OrderRequest
from barfinex_cli.provider.gateway.context import GatewayContext, GatewayState, gateway_state
from barfinex_cli.provider.gateway.proxy import SECRET_HEADER, check_app_url, gateway_address
from barfinex_cli.store.market import CandleRow, SeriesKey

__all__ = ["MAX_ROWS", "parse_time_ms"]  # the MCP tools check their arguments with these


async def _state(request: Request) -> GatewayState:
    """Return `gateway_state` as an async dependency.

    FastAPI runs a plain `def` dependency in a worker thread: a thread hop on every request,
    which under load cost the provider more than the routes' own work (py-spy).
    """
    return gateway_state(request)


State = Annotated[GatewayState, Depends(_state)]

open_router = APIRouter(prefix="/api/v1", tags=["health"])
router = APIRouter(prefix="/api/v1")

SYMBOLS_TIMEOUT_S = 10.0

Since = Annotated[EpochMs, Query(description="epoch ms or ISO 8601, inclusive")]
Until = Annotated[EpochMs, Query(description="epoch ms or ISO 8601, inclusive")]
Limit = Annotated[int, Query(ge=1, le=MAX_ROWS)]
Account = Annotated[str | None, Query(max_length=64)]


class SeriesNotFound(NotFound):
    """A candle series the store does not hold; `series` lists the ones it does."""

    def __init__(self, key: SeriesKey, series: list[SeriesInfo]) -> None:
        self.series = series
        held = ", ".join(f"{s.exchange} {s.symbol} {s.timeframe}" for s in series[:20])
        super().__init__(
            f"no candles held for {key.exchange} {key.symbol} {key.timeframe}; "
            f"held series: {held or 'none'}"
        )


def held_series(ctx: GatewayContext) -> list[SeriesInfo]:
    """Return every candle series the store holds, with row counts and first/last open."""
    return [SeriesInfo(**info._asdict()) for info in ctx.market.series()]


def read_candles(
    ctx: GatewayContext,
    key: SeriesKey,
    since_ms: int | None = None,
    until_ms: int | None = None,
    limit: int = 500,
) -> CandlesResponse:
    """Return candles of a series: from `since_ms` on if given, else the newest `limit`.

    Raises:
        SeriesNotFound: The store holds no candle of this series at all.
    """
    rows = _candle_rows(ctx, key, since_ms, until_ms, limit)
    candles = [Candle.model_construct(time=from_ms(r.open_ms), **r._asdict()) for r in rows]
    return CandlesResponse.model_construct(**key._asdict(), candles=candles)


def candles_json(
    ctx: GatewayContext,
    key: SeriesKey,
    since_ms: int | None = None,
    until_ms: int | None = None,
    limit: int = 500,
) -> bytes:
    """Return what `read_candles` returns, as the JSON the route sends, built straight from rows.

    The hot read path: a model per candle (even unvalidated) cost more than the store read;
    plain dicts of the store's floats serialise to the same JSON (a test holds them equal).
    """
    rows = _candle_rows(ctx, key, since_ms, until_ms, limit)
    body = {**key._asdict(), "candles": [{"time": iso_ms(r.open_ms), **r._asdict()} for r in rows]}
    return json.dumps(body, separators=(",", ":"), allow_nan=False).encode()


def _candle_rows(
    ctx: GatewayContext, key: SeriesKey, since_ms: int | None, until_ms: int | None, limit: int
) -> list[CandleRow]:
    rows = ctx.market.candles(
        key, since_ms=since_ms, until_ms=until_ms, limit=limit, newest=since_ms is None
    )
    if not rows:
        series = held_series(ctx)
        if not any(SeriesKey(s.exchange, s.symbol, s.timeframe) == key for s in series):
            raise SeriesNotFound(key, series)
    return rows


async def read_symbols(ctx: GatewayContext) -> list[ConnectorSymbols]:
    """Return the symbols of every connector; a connector that fails says why instead."""

    async def one(name: str) -> ConnectorSymbols:
        connector = ctx.connectors[name]
        try:
            found = await asyncio.wait_for(connector.symbols(), SYMBOLS_TIMEOUT_S)
        except (BfxError, TimeoutError, OSError) as exc:
            error = str(exc) or type(exc).__name__
            return ConnectorSymbols(
                connector=name, exchange=connector.exchange, symbols=[], error=error
            )
        return ConnectorSymbols(connector=name, exchange=connector.exchange, symbols=sorted(found))

    return list(await asyncio.gather(*(one(name) for name in sorted(ctx.connectors))))


def read_connectors(ctx: GatewayContext) -> list[ConnectorStatus]:
    """Return the measured health of every connector."""
    return [
        ConnectorStatus(name=name, **dict(ctx.connectors[name].health()))
        for name in sorted(ctx.connectors)
    ]


def broker_of(ctx: GatewayContext) -> Broker:
    """Return the broker, or raise `ServiceUnreachable` if this provider runs without one."""
    if ctx.broker is None:
        raise ServiceUnreachable("this provider runs without a broker: orders are not available")
    return ctx.broker


async def read_positions(ctx: GatewayContext, account: str | None = None) -> list[PositionChanged]:
    """Return the current position per account and symbol."""
    return list(await broker_of(ctx).positions(account))


async def read_balances(ctx: GatewayContext, account: str | None = None) -> list[BalanceUpdated]:
    """Return the balances of every account (or of one)."""
    return list(await broker_of(ctx).balances(account))


async def place_order(state: GatewayState, body: PlaceOrderRequest) -> tuple[OrderState, bool]:
    """Place an order once per `client_order_id`; return it and whether it is new."""
    broker = broker_of(state.ctx)
    async with state.order_lock:  # the check and the placing must not interleave
        for order in await broker.orders(ids=[body.client_order_id]):
            return order, False
        return await broker.place(OrderRequest(**body.model_dump())), True


# --- health -------------------------------------------------------------------------------------


@open_router.get("/health", summary="Liveness and the provider's clock (no token)")
async def health(state: State) -> HealthResponse:
    ctx = state.ctx
    uptime = time.monotonic() - state.started
    market_time = ctx.market_time() if ctx.market_time is not None else None
    connectors = {name: ctx.connectors[name].health().status for name in sorted(ctx.connectors)}
    degraded = ctx.bus.degraded or "degraded" in connectors.values()  # Redis away, or an exchange
    return HealthResponse(
        status="degraded" if degraded else "ok",
        version=__version__,
        uptime_s=round(max(uptime, 0.0), 3),
        clock=ctx.clock,
        market_time=market_time,
        replay_done=None if ctx.replay_done is None else ctx.replay_done(),
        connectors=connectors,
    )


@open_router.get(
    "/ready",
    summary="Readiness: the bus answers and the store reads (no token)",
    response_model=ReadyResponse,
    responses={503: {"model": ReadyResponse, "description": "a check failed; it says which"}},
)
async def ready(state: State) -> JSONResponse:
    checks: dict[str, str] = {}
    try:
        await asyncio.wait_for(state.ctx.bus.ping(), 2.0)
        checks["bus"] = "ok"
    except (BfxError, TimeoutError, OSError) as exc:
        checks["bus"] = str(exc) or "timed out"
    try:
        state.ctx.market.conn.execute("SELECT 1 FROM candles LIMIT 1").fetchall()
        checks["store"] = "ok"
    except Exception as exc:  # any sqlite failure means not ready, and says which
        checks["store"] = f"{type(exc).__name__}: {exc}"
    answer = ReadyResponse(ready=all(v == "ok" for v in checks.values()), checks=checks)
    return JSONResponse(answer.model_dump(mode="json"), status_code=200 if answer.ready else 503)


# --- market -------------------------------------------------------------------------------------


@router.get(
    "/symbols",
    tags=["market"],
    summary="Symbols per connector",
    response_model_exclude_none=True,  # `error` appears only for a connector that failed
)
async def symbols(state: State) -> SymbolsResponse:
    return SymbolsResponse(connectors=await read_symbols(state.ctx))


@router.get("/series", tags=["market"], summary="Candle series held in the store")
async def series(state: State) -> SeriesResponse:
    return SeriesResponse(series=held_series(state.ctx))


@router.get(
    "/candles",
    tags=["market"],
    summary="Closed candles of one series",
    response_model=CandlesResponse,
    responses={404: {"model": SeriesNotFoundBody, "description": "the store holds no such series"}},
)
async def candles(
    state: State,
    exchange: Annotated[str, Query(min_length=1)],
    symbol: Annotated[str, Query(min_length=1)],
    timeframe: Timeframe,
    since: Since = None,
    until: Until = None,
    limit: Limit = 500,
) -> Response:
    key = SeriesKey(exchange, symbol, timeframe)
    try:
        answer = candles_json(state.ctx, key, since, until, limit)
    except SeriesNotFound as exc:
        body = SeriesNotFoundBody(detail=str(exc), series=exc.series)
        return JSONResponse(body.model_dump(mode="json"), status_code=404)
    # The hot read path: serialise once, skipping FastAPI's second validation of the response
    # model (it doubled the time of a 1,000-candle answer); the schema still documents it.
    return Response(answer, media_type="application/json")


@router.get("/trades", tags=["market"], summary="Trades of one symbol (default: the last hour)")
async def trades(
    state: State,
    exchange: Annotated[str, Query(min_length=1)],
    symbol: Annotated[str, Query(min_length=1)],
    since: Since = None,
    until: Until = None,
    limit: Limit = 1000,
) -> TradesResponse:
    if since is None:
        since = to_ms(datetime.now(UTC) - timedelta(hours=1))
    rows = state.ctx.market.trades(exchange, symbol, since_ms=since, until_ms=until, limit=limit)
    out = [Trade(time=from_ms(r.time_ms), **r._asdict()) for r in rows]
    return TradesResponse(exchange=exchange, symbol=symbol, trades=out)


@router.get("/orderbook", tags=["market"], summary="The last book seen for a symbol")
async def orderbook(
    state: State,
    symbol: Annotated[str, Query(min_length=1)],
    exchange: str | None = None,
    depth: Annotated[int | None, Query(ge=1, le=1000)] = None,
) -> OrderBook:
    books: list[BookUpdated] = [
        b
        for b in state.ctx.books.values()
        if b.symbol == symbol and (exchange is None or b.exchange == exchange)
    ]
    if not books:
        held = sorted({f"{b.exchange} {b.symbol}" for b in state.ctx.books.values()})
        raise NotFound(f"no book seen for {symbol}; books held: {', '.join(held) or 'none'}")
    if len(books) > 1:
        names = ", ".join(sorted(b.exchange for b in books))
        raise UsageError(f"{symbol} has books on several exchanges ({names}): pass exchange=")
    book = books[0]
    if depth is not None:
        book = book.model_copy(update={"bids": book.bids[:depth], "asks": book.asks[:depth]})
    return book


@router.get("/connectors", tags=["market"], summary="Measured health of every connector")
async def connectors(state: State) -> ConnectorsResponse:
    return ConnectorsResponse(connectors=read_connectors(state.ctx))


# --- account and orders -------------------------------------------------------------------------


@router.get("/accounts", tags=["orders"], summary="Balances per account")
async def accounts(state: State, account: Account = None) -> AccountsResponse:
    return AccountsResponse(accounts=await read_balances(state.ctx, account))


@router.get("/positions", tags=["orders"], summary="Positions per account and symbol")
async def positions(state: State, account: Account = None) -> PositionsResponse:
    return PositionsResponse(positions=await read_positions(state.ctx, account))


@router.get("/broker", tags=["orders"], summary="What the broker's venue holds: stops, reduce-only")
async def broker(state: State) -> BrokerCapabilities:
    return broker_of(state.ctx).capabilities()


MAX_ORDER_IDS = 200
"""Client order ids one `GET /orders` may ask for (the URL stays short; a client asks in chunks)."""

OrderIds = Annotated[
    list[str] | None,
    Query(
        alias="client_order_id", max_length=MAX_ORDER_IDS,
        description="only the orders with these client order ids, whatever their status (repeat "
        f"the parameter, at most {MAX_ORDER_IDS}); an id the broker does not know is left out",
    ),
]  # fmt: skip


MAX_ORDERS_LIMIT = 10_000
"""The largest window one `GET /orders?limit=` may ask for."""

OrdersLimit = Annotated[
    int | None,
    Query(
        ge=1, le=MAX_ORDERS_LIMIT,
        description="only the latest this many of the orders the other parameters select, still "
        f"oldest first (1 to {MAX_ORDERS_LIMIT}); without it, every one of them",
    ),
]  # fmt: skip


@router.get("/orders", tags=["orders"], summary="Orders, oldest first")
async def orders(
    state: State,
    account: Account = None,
    open_only: bool = False,
    ids: OrderIds = None,
    limit: OrdersLimit = None,
) -> OrdersResponse:
    # with ids or a limit, a role settling a few orders, or a screen showing the latest, does
    # not pay for every order ever placed
    found = await broker_of(state.ctx).orders(account, open_only, ids, limit=limit)
    return OrdersResponse(orders=found)


@router.post(
    "/orders",
    tags=["orders"],
    status_code=201,
    summary="Place an order (201); the same client_order_id again returns the first (200)",
    response_model=OrderState,
    responses={200: {"model": OrderState, "description": "this client_order_id already exists"}},
)
async def create_order(state: State, body: PlaceOrderRequest) -> JSONResponse:
    order, created = await place_order(state, body)
    return JSONResponse(order.model_dump(mode="json"), status_code=201 if created else 200)


@router.delete("/orders/{client_order_id}", tags=["orders"], summary="Cancel an open order")
async def cancel_order(state: State, client_order_id: str) -> OrderState:
    return await broker_of(state.ctx).cancel(client_order_id, "user")


# --- app registry -------------------------------------------------------------------------------


@router.post(
    "/apps",
    tags=["registry"],
    status_code=201,
    summary="Register an app; the X-Bfx-Proxy-Secret header holds what the proxy will present",
    responses={409: {"description": "the name is held by an alive app at another URL"}},
)
async def register_app(
    state: State, body: RegisterRequest, request: Request, response: Response
) -> AppInfo:
    if body.url is not None:
        problem = await asyncio.to_thread(
            check_app_url, str(body.url), state.ctx.config.allowed_app_hosts,
            gateway_address(request),
        )  # fmt: skip
        if problem is not None:
            raise RequestValidationError(
                [{"type": "value_error", "loc": ("body", "url"), "msg": problem,
                  "input": str(body.url)}]
            )  # fmt: skip
    info, event = state.ctx.registry.register(body)
    await state.ctx.publish(event)
    response.headers[SECRET_HEADER] = state.ctx.registry.proxy_secret(info.id) or ""
    return info


@router.post("/apps/{app_id}/heartbeat", tags=["registry"], summary="Send a heartbeat")
async def heartbeat(
    state: State, app_id: str, body: Annotated[HeartbeatRequest | None, Body()] = None
) -> AppInfo:
    info, event = state.ctx.registry.heartbeat(app_id, body.status if body else "ok")
    await state.ctx.publish(event)
    return info


@router.get("/apps", tags=["registry"], summary="Registered apps, alive or lost")
async def list_apps(state: State) -> AppsResponse:
    return AppsResponse(apps=state.ctx.registry.apps())
