"""The WebSocket `/ws`: bus events streamed live to clients, filtered by the channels they ask for.

One reader (`Hub.run`) tails every stream of the bus and hands each event, encoded once, to the
bounded queue of every client subscribed to its type; each client has its own sender task. The
reader never waits on a client: a client whose queue is full is dropped (closed with code 1008 and
reason "slow consumer") and everyone else carries on.

Protocol, all frames JSON text:
- client → `{"subscribe": ["market.candle", "detector.*"]}`, `{"unsubscribe": [...]}`,
  `{"ping": x}`;
- server → `{"subscribed": [patterns]}` after each (un)subscribe, `{"pong": x}`,
  `{"error": "...", "channel": "..."}` for a channel that is neither a known event type nor a glob
  (the connection stays open), and each matching event as its envelope
  (`{"id", "type", "source", "ts", "trace_id", "parent_id", "schema", "payload"}`).
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import json
import logging
from typing import Any, cast

from fastapi import WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse

from barfinex_cli.bus.base import Bus, Delivery, matches
from barfinex_cli.bus.tail import tail_forever
from barfinex_cli.contracts.catalog import is_known, known_types
from barfinex_cli.contracts.codec import encode
from barfinex_cli.provider.gateway import auth
from barfinex_cli.provider.gateway.context import GatewayState
from barfinex_cli.provider.gateway.metrics import GatewayMetrics

log = logging.getLogger("bfx.provider.gateway.ws")

MAX_PATTERNS = 100
SLOW_CONSUMER = "slow consumer"
_GLOB = set("*?[")
_USAGE = 'expected {"subscribe": [channels]}, {"unsubscribe": [channels]} or {"ping": x}'


class WsClient:
    """One connected client: its channel patterns and its bounded queue of encoded events."""

    def __init__(self, queue_size: int) -> None:
        self.patterns: set[str] = set()
        self.queue: asyncio.Queue[str] = asyncio.Queue(queue_size)
        self.dropped = asyncio.Event()

    def wants(self, event_type: str) -> bool:
        """Tell whether an event of this type goes to this client."""
        return bool(self.patterns) and matches(event_type, tuple(self.patterns))


class Hub:
    """The single bus reader fanning events out to the connected clients."""

    def __init__(self, bus: Bus, metrics: GatewayMetrics, queue_size: int) -> None:
        self.bus = bus
        self.metrics = metrics
        self.queue_size = queue_size
        self.clients: set[WsClient] = set()

    def join(self) -> WsClient:
        """Add a client with no subscriptions yet."""
        client = WsClient(self.queue_size)
        self.clients.add(client)
        return client

    def leave(self, client: WsClient) -> None:
        """Remove a client; events for it stop at once."""
        self.clients.discard(client)

    async def run(self) -> None:
        """Read the bus until cancelled; after a bus failure, resume after the last event read."""
        async for delivery in tail_forever(self.bus, ["*"]):
            self.dispatch(delivery)

    def dispatch(self, delivery: Delivery) -> None:
        """Queue one event for every client that wants it; drop clients that cannot keep up."""
        text: str | None = None
        for client in list(self.clients):
            if client.dropped.is_set() or not client.wants(delivery.type):
                continue
            if text is None:
                raw = delivery.raw if delivery.raw is not None else encode(delivery.event)
                text = raw.decode()
            try:
                client.queue.put_nowait(text)
            except asyncio.QueueFull:
                self._drop(client)

    def _drop(self, client: WsClient) -> None:
        client.dropped.set()
        self.metrics.ws_dropped.inc()
        self.clients.discard(client)
        while not client.queue.empty():  # free the backlog now; it will never be sent
            client.queue.get_nowait()


def apply_message(client: WsClient, text: str) -> list[dict[str, Any]]:
    """Apply one client message to its subscriptions; return the frames to answer with."""
    try:
        message = json.loads(text)
    except ValueError:
        return [{"error": f"not JSON; {_USAGE}"}]
    except RecursionError:  # json nests by recursion: a deep frame would end the connection
        return [{"error": f"JSON nested too deeply; {_USAGE}"}]
    if not isinstance(message, dict) or len(message) != 1:
        return [{"error": _USAGE}]
    ((verb, channels),) = message.items()
    if verb == "ping":
        return [{"pong": channels}]
    if verb not in ("subscribe", "unsubscribe") or not isinstance(channels, list):
        return [{"error": _USAGE}]
    frames: list[dict[str, Any]] = []
    for channel in channels:
        problem = _channel_problem(channel)
        if problem is not None:
            frames.append({"error": problem, "channel": channel})
        elif verb == "unsubscribe":
            client.patterns.discard(channel)
        elif len(client.patterns) >= MAX_PATTERNS:
            frames.append({"error": f"at most {MAX_PATTERNS} channels", "channel": channel})
        else:
            client.patterns.add(channel)
    frames.append({"subscribed": sorted(client.patterns)})
    return frames


def _channel_problem(channel: object) -> str | None:
    if not isinstance(channel, str) or not 0 < len(channel) <= 200:
        return "a channel is an event type or a glob such as 'market.*'"
    if _GLOB & set(channel) or is_known(channel):
        return None
    close = difflib.get_close_matches(channel, known_types(), n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else "; see the event catalogue"
    return f"unknown channel {channel!r}{hint}"


async def endpoint(websocket: WebSocket) -> None:
    """Serve one WebSocket client until it leaves, the server stops, or it falls behind."""
    state = cast(GatewayState, websocket.app.state.gateway)
    query = dict(websocket.query_params)
    verdict = auth.check_scope(websocket.scope["headers"], query, state.ctx.token)
    if verdict != "ok":
        refusal = JSONResponse({"detail": auth.reason_of(verdict)}, auth.status_of(verdict))
        try:
            await websocket.send_denial_response(refusal)
        except RuntimeError:  # the server cannot answer a handshake with HTTP: close instead
            await websocket.close(code=1008, reason=auth.reason_of(verdict))
        return
    hub = state.hub
    assert hub is not None, "the lifespan starts the hub"
    await websocket.accept()
    client = hub.join()
    state.metrics.ws_clients.inc()
    tasks = {
        asyncio.create_task(_send(websocket, client, state.metrics)),
        asyncio.create_task(_receive(websocket, client)),
        asyncio.create_task(client.dropped.wait()),
    }
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        hub.leave(client)
        state.metrics.ws_clients.dec()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    if client.dropped.is_set():
        timeout = state.ctx.options.ws_close_timeout_s
        with contextlib.suppress(Exception):  # the client may be gone already
            await asyncio.wait_for(websocket.close(1008, SLOW_CONSUMER), timeout)


async def _send(websocket: WebSocket, client: WsClient, metrics: GatewayMetrics) -> None:
    while True:
        text = await client.queue.get()
        await websocket.send_text(text)
        metrics.ws_events.inc()


async def _receive(websocket: WebSocket, client: WsClient) -> None:
    while True:
        try:
            message = await websocket.receive()
        except WebSocketDisconnect:
            return
        if message["type"] == "websocket.disconnect":
            return
        text = message.get("text")
        if text is None:
            frames = [{"error": f"binary frames are not understood; {_USAGE}"}]
        else:
            frames = apply_message(client, text)
        for frame in frames:
            await websocket.send_text(json.dumps(frame))
