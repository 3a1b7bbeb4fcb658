"""A Binance-shaped exchange on loopback, for driving the real ccxt client in tests.

It answers the spot REST endpoints ccxt's `binance` uses for markets, klines, orders and the
account (signed requests are checked with HMAC-SHA256, as Binance does), and a websocket at
`/ws/{n}` that acknowledges `SUBSCRIBE` and plays scripted messages per stream. Shapes come from
the recorded responses in `fixtures/binance/`; klines come from a deterministic generated series,
so any range can be asked for and the expected candles computed independently.

Knobs: `fail_next(path, status, after=n)` answers requests to a path with an error (429 by
default), optionally after `n` good answers; `ws_scripts[stream]` is a list of message batches,
one per connection — after every batch but the last the server drops the socket. Everything seen
is recorded in `requests`.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import hashlib
import hmac
import itertools
import json
import math
import threading
import time
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import WSCloseCode, WSMsgType, web

FIXTURES = Path(__file__).parent / "fixtures" / "binance"
API_KEY = "fake-api-key"
SECRET = "fake-secret"
INTERVALS = {
    "1m": 60_000,
    "3m": 180_000,
    "5m": 300_000,
    "15m": 900_000,
    "30m": 1_800_000,
    "1h": 3_600_000,
    "4h": 14_400_000,
    "1d": 86_400_000,
}
BINANCE_OPTIONS = {
    "fetchMarkets": {"types": ["spot"]},
    "fetchMargins": False,
    "fetchCurrencies": False,
}
"""ccxt options that keep `binance` on the spot endpoints this server answers."""


def fixture(name: str) -> Any:
    """Return a recorded response from `fixtures/binance/`."""
    return json.loads((FIXTURES / name).read_text())


def series(symbol: str, open_ms: int, interval_ms: int = 60_000) -> list[Any]:
    """Return the Binance kline row of `symbol` opening at `open_ms`: deterministic, any time."""
    k = open_ms // interval_ms
    base = 100.0 + (sum(map(ord, symbol)) % 50) * 600.0

    def price(i: int) -> float:
        return base + base * 0.01 * math.sin(i / 40) + base * 0.003 * math.sin(i / 7.3)

    o, c = price(k), price(k + 1)
    h, low = max(o, c) + (k % 5) * 0.5 + 0.5, min(o, c) - (k % 3) * 0.5 - 0.5
    v = 1 + (k % 17) * 0.37
    return [
        open_ms,
        f"{o:.2f}",
        f"{h:.2f}",
        f"{low:.2f}",
        f"{c:.2f}",
        f"{v:.8f}",
        open_ms + interval_ms - 1,
        f"{v * c:.8f}",
        10 + k % 90,
        f"{v / 2:.8f}",
        f"{v * c / 2:.8f}",
        "0",
    ]


def expected(symbol: str, open_ms: int, interval_ms: int = 60_000) -> tuple[Any, ...]:
    """Return the candle ccxt should make of `series(...)`: (open_ms, o, h, l, c, v) floats."""
    row = series(symbol, open_ms, interval_ms)
    return (row[0], *(float(x) for x in row[1:6]))


@dataclass(frozen=True)
class Seen:
    """One request the server answered."""

    method: str
    path: str
    params: dict[str, str]


class FakeBinance:
    """The server; `await start()` binds a free port on 127.0.0.1."""

    def __init__(self) -> None:
        self.requests: list[Seen] = []
        self.failures: dict[str, deque[tuple[int, dict[str, Any] | str] | None]] = {}
        self.orders: dict[str, dict[str, Any]] = {}
        self.ws_scripts: dict[str, list[list[dict[str, Any]]]] = {}
        self.ws_subscriptions: Counter[str] = Counter()
        self.ws_sockets: set[web.WebSocketResponse] = set()
        self.account = fixture("account.json")
        self._order_ids = itertools.count(1001)
        self._tasks: set[asyncio.Task[None]] = set()
        self._runner: web.AppRunner | None = None
        self.port = 0

    # -- lifecycle and addresses -----------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/api/v3/{endpoint}", self._rest)
        app.router.add_get("/ws/{stream}", self._ws)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        for ws in list(self.ws_sockets):
            await ws.close(code=WSCloseCode.GOING_AWAY)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def urls_override(self) -> dict[str, Any]:
        """The ccxt `urls` that point `binance` here."""
        base = f"http://127.0.0.1:{self.port}/api/v3"
        return {
            "api": {
                "public": base,
                "private": base,
                "v1": base,
                "ws": {"spot": f"ws://127.0.0.1:{self.port}/ws"},
            }
        }

    def connector_kwargs(self) -> dict[str, Any]:
        """Keyword arguments that make a `CcxtConnector("binance", ...)` talk to this server."""
        return {"options": dict(BINANCE_OPTIONS), "urls_override": self.urls_override}

    def env(self) -> dict[str, str]:
        """Environment that points the CLI's binance at this server, with valid keys."""
        return {
            "BFX_BINANCE_URLS": json.dumps(self.urls_override),
            "BFX_BINANCE_OPTIONS": json.dumps(BINANCE_OPTIONS),
            "BFX_BINANCE_API_KEY": API_KEY,
            "BFX_BINANCE_SECRET": SECRET,
        }

    def fail_next(
        self,
        path: str,
        status: int = 429,
        times: int = 1,
        *,
        after: int = 0,
        body: dict[str, Any] | str | None = None,
    ) -> None:
        """Answer `times` requests to `/api/v3/{path}` with `status`, after `after` good ones."""
        answer = body or {
            "code": -1003,
            "msg": "Too many requests; current limit of IP is 6000 requests per minute.",
        }
        planned = self.failures.setdefault(path, deque())
        planned.extend([None] * after)
        planned.extend([(status, answer)] * times)

    def seen(self, path: str, method: str = "GET") -> list[Seen]:
        """Return the requests to `/api/v3/{path}` with `method`."""
        return [r for r in self.requests if r.path == path and r.method == method]

    # -- REST ------------------------------------------------------------------------------------

    async def _rest(self, request: web.Request) -> web.Response:
        endpoint = request.match_info["endpoint"]
        body = await request.text()
        params = dict(parse_qsl(request.query_string)) | dict(parse_qsl(body))
        self.requests.append(Seen(request.method, endpoint, params))
        queued = self.failures.get(endpoint)
        planned = queued.popleft() if queued else None
        if planned is not None:
            status, answer = planned
            headers = {"Retry-After": "0"}
            if isinstance(answer, str):
                return web.Response(text=answer, status=status, headers=headers)
            return web.json_response(answer, status=status, headers=headers)
        if "signature" in params and not self._signed(request, body):
            return _error(-1022, "Signature for this request is not valid.", 401)
        handler = getattr(self, f"_{request.method.lower()}_{endpoint}", None)
        if handler is None:
            return _error(-1100, f"no route {request.method} {endpoint}", 404)
        response: web.Response = await handler(params)
        return response

    def _signed(self, request: web.Request, body: str) -> bool:
        if request.headers.get("X-MBX-APIKEY") != API_KEY:
            return False
        payload = body if request.method in ("POST", "PUT") else request.query_string
        unsigned, _, signature = payload.rpartition("&signature=")
        digest = hmac.new(SECRET.encode(), unsigned.encode(), hashlib.sha256).hexdigest()
        return hmac.compare_digest(digest, signature)

    async def _get_ping(self, params: dict[str, str]) -> web.Response:
        return web.json_response({})

    async def _get_time(self, params: dict[str, str]) -> web.Response:
        return web.json_response({"serverTime": int(time.time() * 1000)})

    async def _get_exchangeInfo(self, params: dict[str, str]) -> web.Response:
        info = fixture("exchangeInfo.json")
        info["serverTime"] = int(time.time() * 1000)
        return web.json_response(info)

    async def _get_klines(self, params: dict[str, str]) -> web.Response:
        symbol, interval = params.get("symbol", ""), params.get("interval", "1m")
        if symbol not in self._symbols():
            return _error(-1121, "Invalid symbol.")
        step = INTERVALS[interval]
        limit = min(int(params.get("limit", 500)), 1000)
        now = int(time.time() * 1000)
        end = min(int(params.get("endTime", now)), now)
        start = int(params["startTime"]) if "startTime" in params else end - step * limit
        first = -(-start // step) * step
        rows = [series(symbol, t, step) for t in range(first, end + 1, step)][:limit]
        return web.json_response(rows)

    async def _get_account(self, params: dict[str, str]) -> web.Response:
        return web.json_response(self.account)

    async def _post_order(self, params: dict[str, str]) -> web.Response:
        symbol, cid = params["symbol"], params.get("newClientOrderId", "")
        if symbol not in self._symbols():
            return _error(-1121, "Invalid symbol.")
        if cid in self.orders:
            return _error(-2010, "Duplicate order sent.")
        qty = float(params["quantity"])
        last = float(series(symbol, int(time.time() * 1000) // 60_000 * 60_000)[4])
        price = float(params.get("price") or last)
        free_usdt = next(float(b["free"]) for b in self.account["balances"] if b["asset"] == "USDT")
        if params["side"] == "BUY" and symbol.endswith("USDT") and qty * price > free_usdt:
            return _error(-2010, "Account has insufficient balance for requested action.")
        order = copy.deepcopy(fixture("order_full.json"))
        now = int(time.time() * 1000)
        market = params["type"] == "MARKET"
        order.update(
            symbol=symbol,
            orderId=next(self._order_ids),
            clientOrderId=cid,
            transactTime=now,
            workingTime=now,
            price=f"{0 if market else price:.8f}",
            origQty=f"{qty:.8f}",
            executedQty=f"{qty if market else 0:.8f}",
            cummulativeQuoteQty=f"{qty * price if market else 0:.8f}",
            status="FILLED" if market else "NEW",
            type=params["type"],
            side=params["side"],
            timeInForce=params.get("timeInForce", "GTC"),
        )
        order["fills"] = (
            [
                {
                    "price": f"{price:.8f}",
                    "qty": f"{qty:.8f}",
                    "commission": f"{qty * 0.001:.8f}",
                    "commissionAsset": "BTC",
                    "tradeId": order["orderId"] * 10,
                }
            ]
            if market
            else []
        )
        self.orders[cid] = order
        return web.json_response(order)

    async def _get_order(self, params: dict[str, str]) -> web.Response:
        order = self._find(params)
        if order is None:
            return _error(-2013, "Order does not exist.")
        return web.json_response(_queried(order))

    async def _delete_order(self, params: dict[str, str]) -> web.Response:
        order = self._find(params)
        if order is None or order["status"] != "NEW":
            return _error(-2011, "Unknown order sent.")
        order["status"] = "CANCELED"
        answer = {
            k: order[k]
            for k in (
                "symbol",
                "orderId",
                "orderListId",
                "clientOrderId",
                "transactTime",
                "price",
                "origQty",
                "executedQty",
                "cummulativeQuoteQty",
                "status",
                "timeInForce",
                "type",
                "side",
                "selfTradePreventionMode",
            )
        }
        answer["origClientOrderId"] = order["clientOrderId"]
        return web.json_response(answer)

    async def _get_openOrders(self, params: dict[str, str]) -> web.Response:
        return web.json_response(
            [
                _queried(o)
                for o in self.orders.values()
                if o["status"] == "NEW" and o["symbol"] == params.get("symbol")
            ]
        )

    async def _get_allOrders(self, params: dict[str, str]) -> web.Response:
        return web.json_response(
            [_queried(o) for o in self.orders.values() if o["symbol"] == params.get("symbol")]
        )

    def _find(self, params: dict[str, str]) -> dict[str, Any] | None:
        for order in self.orders.values():
            if params.get("origClientOrderId") == order["clientOrderId"] or params.get(
                "orderId"
            ) == str(order["orderId"]):
                return order
        return None

    def _symbols(self) -> set[str]:
        return {s["symbol"] for s in fixture("exchangeInfo.json")["symbols"]}

    # -- websocket -------------------------------------------------------------------------------

    async def _ws(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.ws_sockets.add(ws)
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                command = json.loads(msg.data)
                if command.get("method") != "SUBSCRIBE":
                    continue
                await ws.send_json({"result": None, "id": command["id"]})
                for stream in command["params"]:
                    turn = self.ws_subscriptions[stream]
                    self.ws_subscriptions[stream] += 1
                    script = self.ws_scripts.get(stream, [])
                    if turn < len(script):
                        last = turn == len(script) - 1
                        task = asyncio.create_task(self._play(ws, script[turn], drop=not last))
                        self._tasks.add(task)
                        task.add_done_callback(self._tasks.discard)
        finally:
            self.ws_sockets.discard(ws)
        return ws

    async def _play(
        self, ws: web.WebSocketResponse, batch: list[dict[str, Any]], drop: bool
    ) -> None:
        for message in batch:
            await asyncio.sleep(0.01)
            if ws.closed:
                return
            await ws.send_json(message)
        if drop:
            await asyncio.sleep(0.05)
            await ws.close(code=WSCloseCode.GOING_AWAY)


def trade_message(
    symbol: str, trade_id: int, price: str, qty: str, time_ms: int, buyer_is_maker: bool
) -> dict[str, Any]:
    """Return a `<symbol>@trade` message shaped like the recorded one."""
    msg = fixture("ws_trade.json")
    msg.update(E=time_ms + 2, s=symbol, t=trade_id, p=price, q=qty, T=time_ms, m=buyer_is_maker)
    return dict(msg)


def ticker_message(symbol: str, last: str, time_ms: int) -> dict[str, Any]:
    """Return a `<symbol>@miniTicker` message (ccxt's default ticker stream for binance)."""
    msg = fixture("ws_mini_ticker.json")
    msg.update(E=time_ms, s=symbol, c=last)
    return dict(msg)


def kline_message(
    symbol: str, open_ms: int, *, final: bool, interval: str = "1m"
) -> dict[str, Any]:
    """Return a `<symbol>@kline_<interval>` update of the series candle at `open_ms`.

    A non-final update carries the candle as it stood half way (close at the open price, half
    the volume); the final one carries exactly the values REST history returns.
    """
    step = INTERVALS[interval]
    row = series(symbol, open_ms, step)
    msg = fixture("ws_kline.json")
    k = msg["k"]
    k.update(t=open_ms, T=open_ms + step - 1, s=symbol, i=interval, o=row[1], x=final)
    if final:
        k.update(h=row[2], l=row[3], c=row[4], v=row[5])
    else:
        k.update(h=row[1], l=row[1], c=row[1], v=f"{float(row[5]) / 2:.8f}")
    msg.update(E=open_ms + step // 2, s=symbol)
    return dict(msg)


def _queried(order: dict[str, Any]) -> dict[str, Any]:
    """Return an order as GET /order answers it (no fills, with times)."""
    out = {k: v for k, v in order.items() if k not in ("fills", "transactTime")}
    out.update(
        time=order["transactTime"],
        updateTime=order["transactTime"],
        isWorking=True,
        stopPrice="0.00000000",
        icebergQty="0.00000000",
    )
    return out


def _error(code: int, msg: str, status: int = 400) -> web.Response:
    return web.json_response({"code": code, "msg": msg}, status=status)


@contextlib.contextmanager
def running_in_thread() -> Iterator[FakeBinance]:
    """Run a `FakeBinance` on its own event loop in a thread (for CLI tests that own their loop)."""
    fake = FakeBinance()
    loop = asyncio.new_event_loop()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_forever()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(fake.start(), loop).result(10)
    try:
        yield fake
    finally:
        asyncio.run_coroutine_threadsafe(fake.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
