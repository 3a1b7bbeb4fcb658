"""The live feed against real WebSocket servers on loopback: bad frames, a refused token, batches.

A small `websockets` server stands in for a gateway that misbehaves (the real gateway never sends
a malformed envelope, so the feed's guard is proved here); the feed's happy path against the
real gateway is in test_app.py.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from decimal import Decimal
from http import HTTPStatus
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.http11 import Request, Response

from barfinex_cli.contracts.codec import encode
from barfinex_cli.contracts.envelope import Envelope, make_event
from barfinex_cli.contracts.market import CandleClosed
from barfinex_cli.studio.feed import LiveFeed, ws_url
from barfinex_cli.studio.state import Connection
from studio.stack import until


def candle_text(minute: int) -> str:
    payload = CandleClosed(
        exchange="x", symbol="BTC/USDT", timeframe="1m",
        open_time=datetime(2024, 1, 1, 0, minute, tzinfo=UTC), open=Decimal(1), high=Decimal(2),
        low=Decimal(1), close=Decimal(2), volume=Decimal(1),
    )  # fmt: skip
    return encode(make_event(payload, source="t")).decode()


@asynccontextmanager
async def ws_server(
    frames: list[str], *, refuse: bool = False
) -> AsyncIterator[tuple[str, list[Any]]]:
    """Serve /ws on a free port: answer the subscription, then send `frames` and stay open."""
    subscriptions: list[Any] = []

    async def handler(ws: ServerConnection) -> None:
        subscriptions.append(json.loads(await ws.recv()))
        await ws.send(json.dumps({"subscribed": subscriptions[-1]["subscribe"]}))
        for frame in frames:
            await ws.send(frame)
        await ws.wait_closed()

    def check(_: ServerConnection, request: Request) -> Response | None:
        if refuse or request.headers.get("Authorization") != "Bearer good":
            return Response(HTTPStatus.UNAUTHORIZED, "Unauthorized", _headers(), b"no")
        return None

    async with serve(handler, "127.0.0.1", 0, process_request=check) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        yield f"http://127.0.0.1:{port}", subscriptions


def _headers() -> Any:
    from websockets.datastructures import Headers

    return Headers({"Content-Length": "2"})


def collector() -> tuple[list[Envelope[Any]], list[list[Envelope[Any]]], list[Connection],
                         Callable[..., None], Callable[..., None]]:  # fmt: skip
    events: list[Envelope[Any]] = []
    batches: list[list[Envelope[Any]]] = []
    links: list[Connection] = []

    def on_batch(batch: list[Envelope[Any]]) -> None:
        batches.append(batch)
        events.extend(batch)

    return events, batches, links, on_batch, links.append


def test_the_ws_address_follows_the_scheme() -> None:
    assert ws_url("http://127.0.0.1:8081/") == "ws://127.0.0.1:8081/ws"
    assert ws_url("https://gw.example") == "wss://gw.example/ws"


async def test_a_malformed_event_is_logged_and_skipped_and_the_next_one_arrives(
    caplog: pytest.LogCaptureFixture,
) -> None:
    frames = [
        "{not json",
        json.dumps({"type": "market.candle", "id": "x", "payload": {"open": "NaN?"}}),
        json.dumps({"error": "unknown channel 'nope'", "channel": "nope"}),
        candle_text(1),
    ]
    events, _, links, on_batch, on_status = collector()
    async with ws_server(frames) as (url, subscriptions):
        feed = LiveFeed(url, "good", on_batch, on_status)
        with caplog.at_level(logging.WARNING, logger="bfx.studio.feed"):
            task = asyncio.create_task(feed.run())
            try:
                await until(lambda: len(events) == 1)
            finally:
                task.cancel()
    assert events[0].type == "market.candle" and events[0].payload.open_time.minute == 1
    assert feed.skipped == 2 and feed.received == 1
    assert links[0].state == "connected"
    assert "detector.signal" in subscriptions[0]["subscribe"]
    skipped = [r.getMessage() for r in caplog.records if "malformed" in r.getMessage()]
    assert len(skipped) == 2 and "not JSON" in skipped[0]
    assert any("unknown channel" in r.getMessage() for r in caplog.records)


async def test_a_refused_token_ends_the_feed_with_the_refused_state() -> None:
    events, _, links, on_batch, on_status = collector()
    async with ws_server([candle_text(1)]) as (url, _):
        feed = LiveFeed(url, "bad", on_batch, on_status)
        await asyncio.wait_for(feed.run(), 10)
    assert [c.state for c in links] == ["refused"] and events == []


async def test_a_burst_arrives_in_few_batches_in_order() -> None:
    frames = [candle_text(m % 60) for m in range(1000)]
    events, batches, _, on_batch, on_status = collector()
    async with ws_server(frames) as (url, _):
        feed = LiveFeed(url, "good", on_batch, on_status, batch_s=0.05, max_batch=500)
        task = asyncio.create_task(feed.run())
        try:
            await until(lambda: len(events) == 1000)
        finally:
            task.cancel()
    assert [e.payload.open_time.minute for e in events] == [m % 60 for m in range(1000)]
    assert len(batches) < 100 and max(len(b) for b in batches) <= 500


async def test_a_server_that_goes_away_is_reported_and_retried() -> None:
    events, _, links, on_batch, on_status = collector()
    async with ws_server([candle_text(1)]) as (url, _):
        feed = LiveFeed(url, "good", on_batch, on_status, backoff_s=0.05, max_backoff_s=0.1)
        task = asyncio.create_task(feed.run())
        await until(lambda: len(events) == 1)
    try:
        await until(lambda: any(c.state == "disconnected" for c in links))
        gone = next(c for c in links if c.state == "disconnected")
        assert gone.retry_in_s is not None and gone.retry_in_s <= 0.1
        await until(lambda: sum(c.state == "disconnected" for c in links) >= 2)  # keeps trying
    finally:
        task.cancel()
