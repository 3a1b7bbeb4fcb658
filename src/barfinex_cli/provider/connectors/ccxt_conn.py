"""The live exchange connector: any ccxt exchange as a `MarketConnector` and a `Broker`.

REST (history, orders, account) goes through ccxt's async client, websockets through ccxt's
`watch_*` methods (`ccxt.pro`, merged into ccxt) — one ccxt client per connector serves both.
Nothing here works offline, and nothing pretends to: an unreachable exchange is a
`ServiceUnreachable` that says so. Keys come only from the environment
(`BFX_<EXCHANGE>_API_KEY`, `_SECRET`, `_PASSWORD`).

Longer than the house size (about 750 lines) on purpose: market data, orders and the account
share one ccxt client, its rate limiting and its error translation, and this is the one place
where ccxt's REST shapes become our contracts. The websocket loops live in `ccxt_ws`, the error
mapping in `ccxt_errors`, the fault counts and the degraded rule of `health()` in `faults`; the
pure order mapping at the bottom is the natural next split.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from functools import partial
from typing import Any, get_args

from barfinex_cli.contracts.market import ConnectorHealth, Timeframe
from barfinex_cli.contracts.orders import (
    BalanceUpdated,
    CurrencyBalance,
    Fill,
    OrderAccepted,
    OrderCancelled,
    OrderFilled,
    OrderPartiallyFilled,
    OrderRejected,
    OrderState,
    OrderSubmitted,
    OrderType,
    PositionChanged,
)
from barfinex_cli.contracts.rest import BrokerCapabilities
from barfinex_cli.contracts.times import from_ms
from barfinex_cli.contracts.types import Payload
from barfinex_cli.errors import BfxError, ConfigError, NotFound, ServiceUnreachable, UsageError
from barfinex_cli.market.candles import grid_offset
from barfinex_cli.provider.connectors.base import (
    Broker,
    ConnectorBase,
    Emit,
    OrderRequest,
    StreamHole,
)
from barfinex_cli.provider.connectors.ccxt_errors import (
    OrderRefused,
    bad_symbol,
    env_name,
    fault_kind,
    translate,
    unknown_exchange,
)
from barfinex_cli.provider.connectors.ccxt_ws import (
    WATCH_METHOD,
    Channel,
    LiveFeed,
    LiveStats,
    Subscription,
    candle_row,
)
from barfinex_cli.store.market import CandleRow

log = logging.getLogger(__name__)

TIMEFRAMES: tuple[str, ...] = get_args(Timeframe)
CLIENT_ID_PARAM: dict[str, str] = {
    "binance": "newClientOrderId",
    "binanceus": "newClientOrderId",
    "binanceusdm": "newClientOrderId",
    "binancecoinm": "newClientOrderId",
}
"""The request field that carries our client order id, where it is not ccxt's `clientOrderId`."""
CANCEL_BY = ("user", "inspector", "exchange", "expiry")
_REQUEST_FIELDS = ("client_order_id", "account", "side", "type", "amount", "price", "stop_price",
                   "reduce_only", "decision_id")  # fmt: skip
DEFAULT_PAGE_LIMIT = 500
MAX_RATE_LIMIT_DELAY_S = 60.0


class CcxtConnector(ConnectorBase):
    """A live exchange through ccxt: history, the websocket feed, orders and balances."""

    def __init__(
        self,
        exchange_id: str,
        *,
        symbols: Sequence[str] = (),
        timeframes: Sequence[str] = ("1m",),
        channels: Sequence[Channel] = ("trades", "candles"),
        options: dict[str, Any] | None = None,
        urls_override: dict[str, Any] | None = None,
        sandbox: bool = False,
        account: str = "main",
        name: str | None = None,
        emit: Emit | None = None,
        on_hole: Callable[[StreamHole], Awaitable[None]] | None = None,
        page_limit: int | None = None,
        timeout_ms: int = 10_000,
        rate_limit_ms: int | None = None,
        reconnect_delay: float = 0.5,
        max_reconnect_delay: float = 30.0,
        max_rate_limit_retries: int = 5,
    ) -> None:
        """Create the ccxt client (no network yet; `start()` connects).

        Args:
            exchange_id: A ccxt exchange id (`ccxt.exchanges`), e.g. "binance".
            symbols: Symbols to stream and to look for orders in (unified, e.g. "BTC/USDT").
            timeframes: Candle timeframes to stream.
            channels: What `stream()` watches per symbol: trades, candles, book, ticker.
            options: ccxt options merged over the exchange's defaults.
            urls_override: Merged into the ccxt `urls` (e.g. `{"api": {"public": ...}}`): a
                mirror, a proxy or a local test server.
            sandbox: Use the exchange's testnet (ccxt sandbox mode).
            account: The account name our order and balance events carry.
            name: The connector name (default "ccxt:<exchange_id>").
            emit: Where order events go as orders are placed and cancelled.
            on_hole: Called with each hole a reconnect left in a candle stream.
            page_limit: Candles per history request (default: the exchange's maximum).
            timeout_ms: REST request timeout.
            rate_limit_ms: Milliseconds between requests for ccxt's limiter (default: the
                exchange's published limit); raise it for a shared IP, lower it for a VIP tier.
            reconnect_delay: First websocket reconnect wait, doubled per failure.
            max_reconnect_delay: Cap of the reconnect wait.
            max_rate_limit_retries: How often a rate-limited request is retried.
        """
        import ccxt
        import ccxt.pro

        if exchange_id not in ccxt.exchanges:
            raise unknown_exchange(exchange_id, ccxt.exchanges)
        for tf in timeframes:
            _check_timeframe(tf)
        cls = getattr(ccxt.pro, exchange_id, None) or getattr(ccxt.async_support, exchange_id)
        config: dict[str, Any] = {
            "enableRateLimit": True,
            "timeout": timeout_ms,
            "options": dict(options or {}),
        }
        if rate_limit_ms is not None:
            config["rateLimit"] = rate_limit_ms
        for field, what in (("apiKey", "API_KEY"), ("secret", "SECRET"), ("password", "PASSWORD")):
            value = os.environ.get(env_name(exchange_id, what))
            if value:
                config[field] = value
        self._ex: Any = cls(config)
        if sandbox:
            try:
                self._ex.set_sandbox_mode(True)
            except ccxt.NotSupported:
                raise UsageError(f"{exchange_id} has no sandbox (testnet) in ccxt") from None
        if urls_override:
            self._ex.urls = self._ex.deep_extend(self._ex.urls, urls_override)
        self.exchange = exchange_id
        self.name = name or f"ccxt:{exchange_id}"
        self.account = account
        self.symbols_wanted = list(symbols)
        self.timeframes = list(timeframes)
        self.channels = list(channels)
        self.emit = emit
        self.on_hole = on_hole
        self.page_limit = page_limit or _page_limit(self._ex)
        self.reconnect_delay = reconnect_delay
        self.max_reconnect_delay = max_reconnect_delay
        self.max_rate_limit_retries = max_rate_limit_retries
        self.stats = LiveStats()
        self.holes: asyncio.Queue[StreamHole] = asyncio.Queue()
        self.pages = 0
        self._orders: dict[str, OrderState] = {}
        self._unresolved: dict[str, str] = {}
        """Orders whose create went unanswered and that are not found yet: what was lost."""
        self._markets_loaded = False
        self._count_throttle_waits()

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Load the markets and check the configured symbols; raise if the exchange is away."""
        await self._load_markets()
        self.symbols_wanted = [await self.market_symbol(s) for s in self.symbols_wanted]

    async def stop(self) -> None:
        """Close the websockets and the HTTP session."""
        await self._ex.close()

    async def __aenter__(self) -> CcxtConnector:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # -- market data -----------------------------------------------------------------------------

    async def symbols(self) -> list[str]:
        """Return every symbol the exchange lists (ccxt unified form)."""
        await self._load_markets()
        return sorted(self._ex.symbols)

    async def market_symbol(self, text: str) -> str:
        """Return the unified symbol for `text` (BTC/USDT, btc/usdt or the id BTCUSDT)."""
        await self._load_markets()
        markets: dict[str, Any] = self._ex.markets
        for candidate in (text, text.upper()):
            if candidate in markets:
                return candidate
        by_id = self._ex.markets_by_id or {}
        for candidate in (text, text.upper()):
            if by_id.get(candidate):
                return str(by_id[candidate][0]["symbol"])
        raise bad_symbol(self.exchange, text, markets)

    def timeframe_ms(self, timeframe: str) -> int:
        """Return the length of a timeframe in milliseconds, if this exchange offers it."""
        _check_timeframe(timeframe)
        offered = self._ex.timeframes or {}
        if offered and timeframe not in offered:
            raise UsageError(
                f"{self.exchange} has no {timeframe} candles; it offers {', '.join(offered)}"
            )
        return int(self._ex.parse_timeframe(timeframe) * 1000)

    async def candle_pages(
        self, symbol: str, timeframe: str, since_ms: int, until_ms: int | None = None
    ) -> AsyncIterator[list[CandleRow]]:
        """Yield closed candles from `since_ms` to `until_ms` (open times), one page at a time.

        Pages follow each other by open time; the candle still forming is never included.
        """
        unified = await self.market_symbol(symbol)
        tf_ms = self.timeframe_ms(timeframe)
        offset = grid_offset(timeframe)  # weeks open on Mondays, not on the epoch's Thursday
        end = last_closed_open(tf_ms, until_ms, offset)
        cursor = since_ms + (offset - since_ms) % tf_ms
        while cursor <= end:
            raw = await self._rest(
                partial(self._ex.fetch_ohlcv, unified, timeframe, cursor, self.page_limit),
                symbol=unified,
            )
            self.pages += 1
            page = {
                row.open_ms: row
                for row in map(candle_row, raw)
                if row is not None and cursor <= row.open_ms <= end
            }
            if not page:
                return  # the exchange holds nothing more in the range
            rows = [page[k] for k in sorted(page)]
            yield rows
            cursor = rows[-1].open_ms + tf_ms

    async def fetch_candles(
        self,
        symbol: str,
        timeframe: str,
        since_ms: int,
        until_ms: int | None = None,
        limit: int | None = None,
    ) -> list[CandleRow]:
        """Return closed candles with `since_ms <= open_ms <= until_ms`, paging as needed."""
        rows: list[CandleRow] = []
        async for page in self.candle_pages(symbol, timeframe, since_ms, until_ms):
            rows.extend(page)
            if limit is not None and len(rows) >= limit:
                return rows[:limit]
        return rows

    async def stream(self) -> AsyncIterator[Payload]:
        """Yield trades, closed candles, books and tickers of the configured symbols, live."""
        if not self.symbols_wanted:
            raise UsageError("the connector streams nothing: give it symbols")
        await self.start()
        for channel in self.channels:
            if not self._ex.has.get(WATCH_METHOD[channel]):
                raise UsageError(f"{self.exchange} has no websocket {channel} in ccxt")
        subs = [
            Subscription("candles", s, tf, self.timeframe_ms(tf))
            for s in self.symbols_wanted
            for tf in self.timeframes
            if "candles" in self.channels
        ] + [
            Subscription(c, s) for s in self.symbols_wanted for c in self.channels if c != "candles"
        ]
        feed = LiveFeed(
            self._ex,
            subs,
            self.stats,
            holes=self.holes,
            on_hole=self.on_hole,
            reconnect_delay=self.reconnect_delay,
            max_reconnect_delay=self.max_reconnect_delay,
        )
        async for payload in feed.run():
            yield payload

    def health(self) -> ConnectorHealth:
        """Return the measured health: socket state, last data, lag, rate, each fault, state.

        The state follows `faults.FaultLog.state`: `degraded` while recent REST calls keep
        failing or a stream is down, `ok` again after an answer.
        """
        clients = getattr(self._ex, "clients", None) or {}
        connected = (
            bool(clients)
            and all(not c.closed() for c in clients.values())
            and not self.stats.failing
        )
        faults = self.stats.faults
        return ConnectorHealth(
            connector=self.name,
            exchange=self.exchange,
            connected=connected,
            last_trade_at=_utc(self.stats.last_trade_ms),
            last_candle_at=_utc(self.stats.last_candle_ms),
            lag_ms=self.stats.lag_ms,
            messages_per_s=self.stats.messages_per_s(),
            reconnects=self.stats.reconnects,
            gaps=self.stats.holes,
            rate_limit_waits=self.rate_limit_waits,
            status=faults.state(streams_down=bool(self.stats.failing)),
            consecutive_failures=faults.streak,
            unavailable=faults.counts["unavailable"],
            timeouts=faults.counts["timeout"],
            unreachable=faults.counts["unreachable"],
            ws_drops=faults.counts["ws_drop"],
            lost_order_answers=faults.counts["lost_order_answer"],
            lost_orders_resolved=faults.lost_orders_resolved,
            gaps_repaired=faults.gaps_repaired,
            last_errors=dict(faults.last),
        )

    @property
    def rate_limit_waits(self) -> int:
        """Requests delayed by ccxt's limiter plus requests the exchange refused as too many."""
        return self.stats.throttle_waits + self.stats.rate_limited

    def hole_repaired(self, hole: StreamHole, resolved: bool, reason: str) -> None:
        """Count a hole the provider refilled from history; remember one it could not."""
        if resolved:
            self.stats.faults.gaps_repaired += 1
        else:
            self.stats.faults.remember(
                "gap", f"{hole.symbol} {hole.timeframe}: a reconnect's hole not repaired: {reason}"
            )

    # -- broker ----------------------------------------------------------------------------------

    def broker(self) -> Broker:
        """Return this connector: a live exchange takes the orders itself."""
        return self

    async def place(self, request: OrderRequest) -> OrderState:
        """Place an order; the same client order id again returns the first order."""
        known = self._orders.get(request.client_order_id)
        if known is not None:
            return known
        symbol = await self.market_symbol(request.symbol)
        asked = OrderState(
            exchange=self.exchange,
            symbol=symbol,
            **{f: getattr(request, f) for f in _REQUEST_FIELDS},
        )
        kind, price, params = self._order_args(request)
        await self._emit(OrderSubmitted(order=asked))
        try:
            create = self._ex.create_order
            args = (symbol, kind, request.side, float(request.amount), price, params)
            raw = await self._rest(partial(create, *args), symbol=symbol)
        except OrderRefused as refused:
            if "duplicate" in str(refused).lower() or _is_duplicate(refused.__cause__):
                existing = await self._find_order(symbol, request.client_order_id, asked)
                if existing is not None:
                    self._orders[request.client_order_id] = existing
                    self._found(request.client_order_id, "a retry refused as a duplicate")
                    return existing
            await self._emit(OrderRejected(order=asked, reason=str(refused), by="exchange"))
            raise
        except ServiceUnreachable as unanswered:
            # no answer: the exchange may hold the order all the same — ask it, never resend
            raw = await self._lookup_in_flight(symbol, request.client_order_id, unanswered)
        state = self._state(raw, asked)
        self._orders[request.client_order_id] = state
        await self._emit(_status_event(raw, state))
        return state

    async def cancel(self, client_order_id: str, reason: str = "user") -> OrderState:
        """Cancel an open order by our client order id; `NotFound` if there is none."""
        state = self._orders.get(client_order_id)
        if state is None:
            for symbol in self.symbols_wanted:
                state = await self._find_order(symbol, client_order_id)
                if state is not None:
                    break
        if state is None or state.order_id is None:
            raise NotFound(f"no order {client_order_id!r} on {self.exchange}")
        raw = await self._rest(partial(self._ex.cancel_order, state.order_id, state.symbol))
        cancelled = self._state(raw, state)
        self._orders[client_order_id] = cancelled
        by = reason if reason in CANCEL_BY else "user"
        await self._emit(OrderCancelled(order=cancelled, reason=reason, by=by))
        return cancelled

    def capabilities(self) -> BrokerCapabilities:
        """Return what the exchange holds, read off ccxt's `has` flags (no network).

        A stop is held when ccxt can send a trigger (or stop-market) order there, reduce-only
        when it says `createReduceOnlyOrder`; a flag ccxt leaves unknown counts as no.
        """
        has = self._ex.has
        flags = ("createTriggerOrder", "createStopMarketOrder", "createReduceOnlyOrder")
        seen = ", ".join(f"{flag}={has.get(flag)}" for flag in flags)
        return BrokerCapabilities(
            broker=self.name,
            exchange=self.exchange,
            stop_orders=has.get("createTriggerOrder") is True
            or has.get("createStopMarketOrder") is True,
            reduce_only=has.get("createReduceOnlyOrder") is True,
            source=f"ccxt {self.exchange} has: {seen}",
        )

    async def orders(
        self,
        account: str | None = None,
        open_only: bool = False,
        ids: Collection[str] | None = None,
        limit: int | None = None,
    ) -> list[OrderState]:
        """Return the orders of the configured symbols (and of those we placed), newest last.

        With `ids`, only those, and with `limit`, only the latest that many: the exchange is
        still asked for every order of those symbols (what an exchange's own limit keeps, the
        oldest or the newest, differs between exchanges), only the answer is cut.
        """
        if account is not None and account != self.account:
            return []
        symbols = dict.fromkeys([*self.symbols_wanted, *(o.symbol for o in self._orders.values())])
        raws: list[dict[str, Any]] = []
        for symbol in symbols:
            if open_only:
                raws += await self._rest(partial(self._ex.fetch_open_orders, symbol))
            elif self._ex.has.get("fetchOrders"):
                raws += await self._rest(partial(self._ex.fetch_orders, symbol))
            else:
                raws += await self._rest(partial(self._ex.fetch_open_orders, symbol))
                raws += await self._rest(partial(self._ex.fetch_closed_orders, symbol))
        raws.sort(key=lambda r: r.get("timestamp") or 0)
        if ids is not None:
            wanted = set(ids)
            raws = [r for r in raws if str(r.get("clientOrderId")) in wanted]
        if limit is not None:
            raws = raws[-limit:]
        return [self._state(r, self._orders.get(str(r.get("clientOrderId")))) for r in raws]

    async def positions(self, account: str | None = None) -> Sequence[PositionChanged]:
        """Return positions; a spot account has none (its holdings are its balances)."""
        if self._ex.options.get("defaultType", "spot") == "spot":
            log.info(
                "%s spot account: holdings are reported by balances(), not as positions",
                self.exchange,
            )
            return []
        raise UsageError(
            f"positions of {self.exchange} derivatives accounts are not mapped yet; "
            "use balances() or the exchange's own tools"
        )

    async def balances(self, account: str | None = None) -> Sequence[BalanceUpdated]:
        """Return the account's balances per currency, as the exchange reports them now."""
        if account is not None and account != self.account:
            return []
        raw = await self._rest(self._ex.fetch_balance)
        totals: dict[str, Any] = raw.get("total") or {}
        held = {
            cur: CurrencyBalance(
                total=_dec(total),
                free=_dec(raw.get("free", {}).get(cur) or 0),
                used=_dec(raw.get("used", {}).get(cur) or 0),
            )
            for cur, total in totals.items()
            if total
        }
        when = _utc(raw.get("timestamp")) or datetime.now(UTC)
        return [
            BalanceUpdated(account=self.account, exchange=self.exchange, balances=held, time=when)
        ]

    # -- internals -------------------------------------------------------------------------------

    async def _load_markets(self) -> None:
        if not self._markets_loaded:
            await self._rest(self._ex.load_markets)
            self._markets_loaded = True

    async def _rest(self, call: Callable[[], Awaitable[Any]], *, symbol: str | None = None) -> Any:
        """Await a ccxt REST call; retry when rate-limited; translate every ccxt error."""
        import ccxt

        faults = self.stats.faults
        attempt = 0
        while True:
            try:
                result = await call()
            except (ccxt.DDoSProtection, ccxt.RateLimitExceeded) as exc:
                attempt += 1
                self.stats.rate_limited += 1
                limited = translate(exc, self.exchange)
                faults.remember("rate_limited", str(limited))
                if attempt > self.max_rate_limit_retries:
                    faults.failed()
                    raise limited from exc
                await asyncio.sleep(self._rate_limit_delay(attempt))
            except ccxt.BaseError as exc:
                markets = list(self._ex.markets or {}) if self._markets_loaded else []
                error = translate(exc, self.exchange, symbol=symbol, markets=markets)
                kind = fault_kind(exc)
                if kind is None:
                    faults.answered()  # a refusal is an answer: the exchange is serving
                else:
                    faults.noted(kind, str(error))
                    faults.failed()
                raise error from exc
            else:
                faults.answered()
                return result

    def _rate_limit_delay(self, attempt: int) -> float:
        """Return the wait before retry `attempt`: the exchange's Retry-After, else exponential."""
        headers = self._ex.last_response_headers or {}
        retry_after = next((v for k, v in headers.items() if k.lower() == "retry-after"), None)
        try:
            floor = float(retry_after) if retry_after is not None else 0.0
        except ValueError:
            floor = 0.0
        delay = max(floor, float(self._ex.rateLimit) / 1000 * 2.0**attempt)
        return min(MAX_RATE_LIMIT_DELAY_S, delay * random.uniform(1.0, 1.25))

    def _count_throttle_waits(self) -> None:
        """Wrap ccxt's request limiter so every request it delays is counted."""
        original = self._ex.throttle

        async def throttle(cost: float | None = None) -> Any:
            started = time.monotonic()
            result = await original(cost)
            if time.monotonic() - started > 0.001:
                self.stats.throttle_waits += 1
            return result

        self._ex.throttle = throttle

    def _order_args(self, request: OrderRequest) -> tuple[str, float | None, dict[str, Any]]:
        """Return ccxt's order type, price and params for a request."""
        params: dict[str, Any] = {
            CLIENT_ID_PARAM.get(self.exchange, "clientOrderId"): request.client_order_id
        }
        if request.type in ("limit", "stop_limit") and request.price is None:
            raise UsageError(f"a {request.type} order needs a price")
        if request.type in ("stop_market", "stop_limit"):
            if request.stop_price is None:
                raise UsageError(f"a {request.type} order needs a stop price")
            params["triggerPrice"] = float(request.stop_price)
        if request.reduce_only:
            params["reduceOnly"] = True
        kind = "limit" if request.type in ("limit", "stop_limit") else "market"
        price = float(request.price) if kind == "limit" and request.price is not None else None
        return kind, price, params

    async def _find_order(
        self, symbol: str, client_order_id: str, asked: OrderState | None = None
    ) -> OrderState | None:
        """Return the exchange's order with our client order id, or None."""
        try:
            raw = await self._rest(
                partial(self._ex.fetch_order, "", symbol, {"clientOrderId": client_order_id})
            )
        except NotFound:
            return None
        return self._state(raw, asked)

    async def _lookup_in_flight(
        self, symbol: str, client_order_id: str, unanswered: ServiceUnreachable
    ) -> Any:
        """Return the exchange's raw order for an unanswered create; re-raise if it has none.

        Unresolved (the lookup fails or finds nothing), the caller's retry later sends the same
        client order id, which the exchange refuses as a duplicate and `place` then finds.
        Health counts the lost answer and, once found, the order resolved.
        """
        lost = f"order {client_order_id} ({symbol}): no answer to the create ({unanswered})"
        self.stats.faults.noted("lost_order_answer", f"{lost}; looking it up")
        self._unresolved[client_order_id] = lost
        try:
            raw = await self._rest(
                partial(self._ex.fetch_order, "", symbol, {"clientOrderId": client_order_id})
            )
        except (NotFound, ServiceUnreachable) as missed:
            self.stats.faults.remember(
                "lost_order_answer",
                f"{lost}; the lookup failed too ({missed}) — a retry with the same client "
                "order id finds it instead of placing it again",
            )
            raise unanswered from None
        self._found(client_order_id, "looking up its client order id")
        return raw

    def _found(self, client_order_id: str, how: str) -> None:
        """Count an order whose lost answer was made up for (once per client order id)."""
        lost = self._unresolved.pop(client_order_id, None)
        if lost is not None:
            self.stats.faults.lost_orders_resolved += 1
            self.stats.faults.remember("lost_order_answer", f"{lost}; found by {how}")

    def _state(self, raw: dict[str, Any], asked: OrderState | None) -> OrderState:
        return _state(raw, asked, account=self.account, exchange=self.exchange)

    async def _emit(self, payload: Payload) -> None:
        if self.emit is not None:
            await self.emit(payload)


def overrides_from_env(exchange_id: str) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """Return (options, urls) from `BFX_<EXCHANGE>_OPTIONS` / `BFX_<EXCHANGE>_URLS` (JSON objects).

    The URLs point an exchange at a mirror, a regional host or a proxy; the options tune ccxt
    (e.g. Binance's `{"fetchMarkets": {"types": ["spot"]}}`).
    """
    found: list[dict[str, Any] | None] = []
    for what in ("OPTIONS", "URLS"):
        var = env_name(exchange_id, what)
        text = os.environ.get(var)
        if not text:
            found.append(None)
            continue
        try:
            value = json.loads(text)
        except ValueError as exc:
            raise ConfigError(f"environment variable {var}: not JSON ({exc})") from None
        if not isinstance(value, dict):
            raise ConfigError(f"environment variable {var}: must be a JSON object")
        found.append(value)
    return found[0], found[1]


def last_closed_open(timeframe_ms: int, until_ms: int | None = None, offset_ms: int = 0) -> int:
    """Return the open time of the last candle that has closed by now (and opens <= `until_ms`).

    `offset_ms` shifts the grid from the epoch (`candles.grid_offset`: weeks open on Monday).
    """
    now = int(time.time() * 1000)
    forming = now - (now - offset_ms) % timeframe_ms
    last = forming - timeframe_ms
    return last if until_ms is None else min(last, until_ms)


def _check_timeframe(timeframe: str) -> None:
    if timeframe not in TIMEFRAMES:
        raise UsageError(f"unknown timeframe {timeframe!r}; use one of {', '.join(TIMEFRAMES)}")


def _page_limit(exchange: Any) -> int:
    features = getattr(exchange, "features", None) or {}
    spot = features.get("spot") or {}
    limit = (spot.get("fetchOHLCV") or {}).get("limit")
    return int(limit) if isinstance(limit, int) and limit > 0 else DEFAULT_PAGE_LIMIT


def _is_duplicate(exc: BaseException | None) -> bool:
    import ccxt

    return isinstance(exc, ccxt.DuplicateOrderId)


def _state(
    raw: dict[str, Any], asked: OrderState | None, *, account: str, exchange: str
) -> OrderState:
    """Return the `OrderState` of a ccxt order, keeping what we asked for where ccxt is silent."""
    amount, price, trigger = raw.get("amount"), raw.get("price"), raw.get("triggerPrice")
    side = raw.get("side") or (asked.side if asked else None)
    if side not in ("buy", "sell"):
        raise BfxError(f"{exchange} reported order {raw.get('id')} without a side")
    return OrderState(
        client_order_id=str(raw.get("clientOrderId") or (asked.client_order_id if asked else "")),
        order_id=str(raw["id"]) if raw.get("id") else (asked.order_id if asked else None),
        account=asked.account if asked else account,
        exchange=exchange,
        symbol=str(raw.get("symbol") or (asked.symbol if asked else "")),
        side=side,
        type=asked.type if asked else _order_type(raw),
        amount=_dec(amount) if amount is not None else (asked.amount if asked else Decimal(0)),
        price=_dec(price) if price else (asked.price if asked else None),
        stop_price=_dec(trigger) if trigger else (asked.stop_price if asked else None),
        reduce_only=bool(raw.get("reduceOnly")) or (asked.reduce_only if asked else False),
        filled=_dec(raw.get("filled") or 0),
        average_price=_dec(raw["average"]) if raw.get("average") else None,
        decision_id=asked.decision_id if asked else None,
        fees=_fees_of(raw),
    )


def _fees_of(raw: dict[str, Any]) -> Decimal | None:
    """Return the total fee the exchange reported for an order (None if it reported none)."""
    fees = [f for f in (raw.get("fees") or [raw.get("fee")]) if f and f.get("cost") is not None]
    if not fees:
        return None
    currency = fees[0].get("currency")
    return sum((_dec(f["cost"]) for f in fees if f.get("currency") == currency), Decimal(0))


def _order_type(raw: dict[str, Any]) -> OrderType:
    stop = bool(raw.get("triggerPrice") or raw.get("stopPrice"))
    if raw.get("type") == "market":
        return "stop_market" if stop else "market"
    return "stop_limit" if stop else "limit"


def _status_event(raw: dict[str, Any], state: OrderState) -> Payload:
    """Return the event saying what the exchange did with a fresh order.

    A fill is only reported with the price and fee the exchange gave; without them the order is
    reported accepted, its `filled` amount telling the rest, and never with an invented fee.
    """
    status = raw.get("status")
    fill = _fill(raw, state)
    if status == "closed" and fill is not None:
        return OrderFilled(order=state, fill=fill)
    if state.filled > 0 and fill is not None:
        return OrderPartiallyFilled(order=state, fill=fill)
    if status in ("canceled", "expired"):
        by = "expiry" if status == "expired" else "exchange"
        return OrderCancelled(order=state, reason=str(status), by=by)
    if status == "rejected":
        return OrderRejected(order=state, reason="rejected by the exchange", by="exchange")
    return OrderAccepted(order=state)


def _fill(raw: dict[str, Any], state: OrderState) -> Fill | None:
    """Return the fill of a fresh order when the exchange reported its price and fee."""
    fees = [f for f in (raw.get("fees") or [raw.get("fee")]) if f and f.get("cost") is not None]
    if state.filled <= 0 or state.average_price is None or not fees:
        return None
    currency = str(fees[0].get("currency") or "")
    return Fill(
        trade_id=str((raw.get("trades") or [{}])[-1].get("id") or "") or None,
        price=state.average_price,
        amount=state.filled,
        fee=sum(
            (_dec(f["cost"]) for f in fees if f.get("currency") == fees[0].get("currency")),
            Decimal(0),
        ),
        fee_currency=currency,
        time=_utc(raw.get("lastTradeTimestamp") or raw.get("timestamp")) or datetime.now(UTC),
    )


def _dec(value: Any) -> Decimal:
    return Decimal(str(value))


def _utc(ms: Any) -> datetime | None:
    return from_ms(ms) if ms is not None else None
