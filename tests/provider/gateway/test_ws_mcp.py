"""The gateway's live doors: WebSocket `/ws` streaming bus events, and MCP `/mcp` tools.

Real uvicorn on loopback; WebSocket clients from the `websockets` package, MCP clients from the
`mcp` package's streamable-HTTP client. The WebSocket tests run on both buses.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest
from mcp.client import Client
from mcp.client.streamable_http import streamable_http_client
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from barfinex_cli.bus.base import Bus
from barfinex_cli.bus.memory import MemoryBus
from barfinex_cli.contracts.detector import SignalGenerated
from barfinex_cli.contracts.envelope import make_event
from barfinex_cli.contracts.market import BookUpdated, CandleClosed
from barfinex_cli.contracts.types import Payload
from barfinex_cli.provider.gateway.context import GatewayOptions
from barfinex_cli.store.market import CandleRow, SeriesKey
from provider.gateway_server import AUTH, TOKEN, gateway, make_broker, make_context

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def _candle(close: int = 100) -> CandleClosed:
    d = Decimal(close)
    return CandleClosed(
        exchange="binance", symbol="BTC/USDT", timeframe="1m", open_time=T0,
        open=d, high=d, low=d, close=d, volume=Decimal(1),
    )  # fmt: skip


def _signal() -> SignalGenerated:
    return SignalGenerated(
        strategy="s", instance="s-1", exchange="binance", symbol="BTC/USDT", timeframe="1m",
        candle_time=T0, direction="long", score=2.0, threshold=1.0, attribution=[],
    )  # fmt: skip


def _book(levels: int) -> BookUpdated:
    bids = [(Decimal(10_000 - i), Decimal(i + 1)) for i in range(levels)]
    asks = [(Decimal(10_001 + i), Decimal(i + 1)) for i in range(levels)]
    return BookUpdated(exchange="binance", symbol="BTC/USDT", bids=bids, asks=asks, time=T0)


async def _publish(bus: Bus, payload: Payload) -> str:
    event = make_event(payload, source="test")
    await bus.publish(event)
    return event.id


def _ws_url(http: httpx.AsyncClient) -> str:
    return str(http.base_url).replace("http://", "ws://").rstrip("/") + "/ws"


async def _frame(ws: ClientConnection) -> dict[str, Any]:
    return dict(json.loads(await asyncio.wait_for(ws.recv(), 5)))


async def _subscribe(ws: ClientConnection, *channels: str) -> list[dict[str, Any]]:
    await ws.send(json.dumps({"subscribe": list(channels)}))
    frames = [await _frame(ws)]
    while "subscribed" not in frames[-1]:
        frames.append(await _frame(ws))
    return frames


@pytest.fixture
async def live(tmp_path: Path, bus: Bus) -> AsyncIterator[tuple[httpx.AsyncClient, Bus]]:
    async with gateway(make_context(tmp_path, bus)) as http:
        yield http, bus


async def test_ws_streams_the_events_a_client_subscribed_to(
    live: tuple[httpx.AsyncClient, Bus],
) -> None:
    http, bus = live
    async with connect(_ws_url(http), additional_headers=AUTH, proxy=None) as ws:
        frames = await _subscribe(ws, "market.candle", "detector.*")
        assert frames == [{"subscribed": ["detector.*", "market.candle"]}]
        book_id = await _publish(bus, _book(2))  # not subscribed: never sent
        candle_id = await _publish(bus, _candle())
        signal_id = await _publish(bus, _signal())
        got = [await _frame(ws), await _frame(ws)]
        assert {f["id"] for f in got} == {candle_id, signal_id}
        candle = next(f for f in got if f["type"] == "market.candle")
        assert candle["payload"]["close"] == "100"
        assert candle["source"] == "test"
        assert book_id not in {f["id"] for f in got}


async def test_an_unknown_channel_gets_an_error_frame_and_the_connection_stays_usable(
    live: tuple[httpx.AsyncClient, Bus],
) -> None:
    http, bus = live
    async with connect(_ws_url(http) + f"?token={TOKEN}", proxy=None) as ws:
        frames = await _subscribe(ws, "market.candles")
        assert frames[0]["channel"] == "market.candles"
        assert "unknown channel 'market.candles'" in frames[0]["error"]
        assert "market.candle" in frames[0]["error"]  # the close match is suggested
        assert frames[1] == {"subscribed": []}
        await ws.send("not json")
        assert "not JSON" in (await _frame(ws))["error"]
        await ws.send(json.dumps({"ping": 7}))
        assert await _frame(ws) == {"pong": 7}
        await _subscribe(ws, "market.candle")
        candle_id = await _publish(bus, _candle())
        assert (await _frame(ws))["id"] == candle_id


async def test_ws_refuses_a_missing_or_wrong_token(live: tuple[httpx.AsyncClient, Bus]) -> None:
    http, _ = live
    with pytest.raises(InvalidStatus) as missing:
        async with connect(_ws_url(http), proxy=None):
            pass
    assert missing.value.response.status_code == 401
    with pytest.raises(InvalidStatus) as wrong:
        async with connect(_ws_url(http) + "?token=nope", proxy=None):
            pass
    assert wrong.value.response.status_code == 403


async def test_a_slow_client_is_dropped_without_holding_up_the_others(tmp_path: Path) -> None:
    bus = MemoryBus("slow")
    ctx = make_context(tmp_path, bus, options=GatewayOptions(ws_queue_size=8))
    async with gateway(ctx) as http:
        # a tiny receive window and no compression, so the server's buffers fill quickly
        raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        raw.connect((http.base_url.host, http.base_url.port or 80))
        raw.setblocking(False)
        async with (
            connect(_ws_url(http), additional_headers=AUTH, proxy=None, sock=raw,
                    compression=None, max_queue=1) as slow,
            connect(_ws_url(http), additional_headers=AUTH, proxy=None) as fast,
        ):  # fmt: skip
            await _subscribe(slow, "market.book")
            await _subscribe(fast, "market.book")
            received: list[str] = []

            async def read_fast() -> None:
                while True:
                    received.append(json.loads(await fast.recv())["id"])

            reader = asyncio.create_task(read_fast())
            published: list[str] = []
            loop = asyncio.get_running_loop()
            for _ in range(100):  # until the slow client is dropped
                for _ in range(20):
                    published.append(await _publish(bus, _book(400)))
                    deadline = loop.time() + 2.0
                    while len(received) < len(published):  # the fast client keeps pace
                        assert loop.time() < deadline, "the fast client was held up"
                        await asyncio.sleep(0)
                if "bfx_gateway_ws_dropped_total 1" in (await http.get("/metrics")).text:
                    break
            else:
                pytest.fail("the slow client was never dropped")
            reader.cancel()
            assert received == published  # the fast client got everything, in order
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    await asyncio.wait_for(slow.recv(), 10)
            assert closed.value.rcvd is not None
            assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (1008, "slow consumer")


# --- MCP ----------------------------------------------------------------------------------------


@pytest.fixture
async def mcp_gateway(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    bus = MemoryBus("mcp")
    ctx = make_context(tmp_path, bus, broker=make_broker(bus))
    key = SeriesKey("binance", "BTC/USDT", "1m")
    base = 1_700_000_040_000
    ctx.market.upsert_candles(
        key,
        [CandleRow(base + i * 60_000, 1.0 + i, 2.0 + i, 0.5 + i, 1.5 + i, 3.0) for i in range(5)],
    )
    async with gateway(ctx) as http:
        yield http, str(http.base_url).rstrip("/") + "/mcp"


async def test_mcp_lists_its_tools_and_serves_candles(
    mcp_gateway: tuple[httpx.AsyncClient, str],
) -> None:
    _, url = mcp_gateway
    async with (
        httpx2.AsyncClient(headers=AUTH, timeout=10) as transport_client,
        Client(streamable_http_client(url, http_client=transport_client)) as client,
    ):
        tools = {t.name for t in (await client.list_tools()).tools}
        assert tools == {
            "candles",
            "symbols",
            "positions",
            "account",
            "health",
            "role_tools",
            "call_role_tool",
        }
        args = {"exchange": "binance", "symbol": "BTC/USDT", "timeframe": "1m", "limit": 2}
        result = await client.call_tool("candles", args)
        assert not result.is_error
        assert result.structured_content is not None
        candles = result.structured_content["candles"]
        assert [c["close"] for c in candles] == [4.5, 5.5]
        missing = await client.call_tool("candles", {**args, "symbol": "ETH/USDT"})
        assert missing.is_error
        assert "held series: binance BTC/USDT 1m" in missing.content[0].text  # type: ignore[union-attr]
        account = await client.call_tool("account", {})
        assert account.structured_content is not None
        assert account.structured_content["accounts"][0]["account"] == "paper"


async def test_mcp_refuses_requests_without_the_token(
    mcp_gateway: tuple[httpx.AsyncClient, str],
) -> None:
    http, url = mcp_gateway
    init = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
    missing = await http.post(url, json=init, headers={"Authorization": ""})
    wrong = await http.post(url, json=init, headers={"Authorization": "Bearer nope"})
    assert (missing.status_code, wrong.status_code) == (401, 403)


async def test_mcp_offers_place_order_only_when_enabled(tmp_path: Path) -> None:
    bus = MemoryBus("mcp-orders")
    options = GatewayOptions(mcp_orders_enabled=True)
    ctx = make_context(tmp_path, bus, broker=make_broker(bus), options=options)
    async with gateway(ctx) as http:
        url = str(http.base_url).rstrip("/") + f"/mcp?token={TOKEN}"
        async with Client(url) as client:
            tools = {t.name for t in (await client.list_tools()).tools}
            assert "place_order" in tools
            args = {"client_order_id": "m-1", "account": "paper", "symbol": "BTC/USDT",
                    "side": "buy", "type": "market", "amount": "0.1"}  # fmt: skip
            first = await client.call_tool("place_order", args)
            again = await client.call_tool("place_order", args)
            bad = await client.call_tool("place_order", {**args, "client_order_id": "m-2",
                                                         "type": "limit"})  # fmt: skip
        assert first.structured_content is not None and again.structured_content is not None
        assert first.structured_content["created"] is True
        assert again.structured_content["created"] is False
        assert bad.is_error
        assert "price" in bad.content[0].text  # type: ignore[union-attr]
        orders = (await http.get("/api/v1/orders")).json()["orders"]
        assert [o["client_order_id"] for o in orders] == ["m-1"]


async def test_mcp_candles_refuses_out_of_range_arguments_naming_them(
    mcp_gateway: tuple[httpx.AsyncClient, str],
) -> None:
    _, url = mcp_gateway
    args = {"exchange": "binance", "symbol": "BTC/USDT", "timeframe": "1m"}
    async with (
        httpx2.AsyncClient(headers=AUTH, timeout=10) as transport_client,
        Client(streamable_http_client(url, http_client=transport_client)) as client,
    ):
        for name, value in [("since", str(2**63)), ("until", "1e30"), ("since", "-1e30"),
                            ("limit", 2**63), ("limit", 0)]:  # fmt: skip
            result = await client.call_tool("candles", {**args, name: value})
            assert result.is_error, (name, value)
            assert name in result.content[0].text, result.content  # type: ignore[union-attr]
        fine = await client.call_tool("candles", {**args, "since": "2023-11-14T22:14:00Z"})
        assert not fine.is_error


async def test_mcp_lists_and_forwards_the_tools_a_registered_role_declared(tmp_path: Path) -> None:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from provider.gateway_server import serving

    seen: list[dict[str, Any]] = []

    async def decision(request: Request) -> JSONResponse:
        seen.append({"id": request.path_params["id"], **request.headers})
        return JSONResponse({"decision": request.path_params["id"], "stages": 8})

    role_app = Starlette(routes=[Route("/api/v1/decisions/{id}", decision)])
    bus = MemoryBus("mcp-roles")
    ctx = make_context(tmp_path, bus)
    async with serving(role_app) as role_url, gateway(ctx) as http:
        tool = {"name": "advisor_explain", "path": "/api/v1/decisions/{id}",
                "description": "Explain one decision."}  # fmt: skip
        registered = await http.post(
            "/api/v1/apps",
            json={"name": "advisor", "role": "advisor", "url": role_url, "tools": [tool]},
        )
        assert registered.status_code in (200, 201), registered.text
        url = str(http.base_url).rstrip("/") + "/mcp"
        async with (
            httpx2.AsyncClient(headers=AUTH, timeout=10) as transport_client,
            Client(streamable_http_client(url, http_client=transport_client)) as client,
        ):
            listed = await client.call_tool("role_tools", {})
            assert listed.structured_content is not None
            [offered] = listed.structured_content["tools"]
            assert (offered["name"], offered["app"], offered["path_parameters"]) == (
                "advisor_explain",
                "advisor",
                ["id"],
            )
            answer = await client.call_tool(
                "call_role_tool", {"name": "advisor_explain", "arguments": {"id": "d 1"}}
            )
            assert not answer.is_error, answer.content
            assert answer.structured_content == {"result": {"decision": "d 1", "stages": 8}}
            escape = await client.call_tool(  # a slash is encoded: it cannot climb the path
                "call_role_tool", {"name": "advisor_explain", "arguments": {"id": "../../x"}}
            )
            assert escape.is_error and len(seen) == 1
            unknown = await client.call_tool("call_role_tool", {"name": "nope"})
            assert unknown.is_error and "offered: advisor_explain" in unknown.content[0].text  # type: ignore[union-attr]
    assert seen[0]["x-bfx-proxy"] and "authorization" not in seen[0]  # the token stays here
