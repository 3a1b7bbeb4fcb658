"""The app registry: registration, heartbeats, lost apps and their event, and the proxy to apps.

The decisions are checked with a hand-driven clock; the routes, the lost-app sweep and the proxy
run on a real gateway over loopback, on both buses, with a second tiny app to forward to.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request

from barfinex_cli.bus.base import Bus
from barfinex_cli.bus.memory import MemoryBus
from barfinex_cli.contracts.apps import AppLost
from barfinex_cli.contracts.rest import RegisterRequest
from barfinex_cli.contracts.types import Payload
from barfinex_cli.errors import NotFound, RedisUnreachable
from barfinex_cli.provider.gateway.app import bind
from barfinex_cli.provider.gateway.registry import AppRegistry
from polling import until
from provider.gateway_server import gateway, make_context, serving


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2024, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def _echo_app() -> FastAPI:
    app = FastAPI()

    @app.api_route("/{path:path}", methods=["GET", "POST"])
    async def echo(path: str, request: Request) -> dict[str, Any]:
        return {
            "path": path,
            "method": request.method,
            "query": dict(request.query_params),
            "body": (await request.body()).decode(),
            "prefix": request.headers.get("x-forwarded-prefix"),
        }

    return app


def test_an_app_silent_for_three_intervals_is_lost_once_and_revived_by_a_heartbeat() -> None:
    clock = Clock()
    registry = AppRegistry(heartbeat_interval_s=5.0, missed=3, clock=clock)
    info, registered = registry.register(RegisterRequest(name="det-1", role="detector"))
    assert (info.status, registered.app_id) == ("alive", info.id)
    clock.advance(14.9)
    assert registry.sweep() == []
    clock.advance(0.2)
    lost = registry.sweep()
    assert [(e.app_id, e.name) for e in lost] == [(info.id, "det-1")]
    assert lost[0].silent_for_s == pytest.approx(15.1)
    assert registry.sweep() == []  # reported once
    assert registry.apps()[0].status == "lost"
    revived, beat = registry.heartbeat(info.id, "degraded")
    assert (revived.status, revived.health, beat.uptime_s) == ("alive", "degraded", 15.1)
    assert registry.counts() == {"alive": 1, "lost": 0}


def test_registering_a_known_name_again_keeps_its_id() -> None:
    clock = Clock()
    registry = AppRegistry(clock=clock)
    first, _ = registry.register(RegisterRequest(name="adv", role="advisor"))
    clock.advance(registry.lost_after_s + 1)  # the first is lost: the name may move to a URL
    again, _ = registry.register(
        RegisterRequest(name="adv", role="advisor", url="http://127.0.0.1:8009/")
    )
    assert again.id == first.id
    assert again.url == "http://127.0.0.1:8009"
    by_name, by_id = registry.find("adv"), registry.find(first.id)
    assert by_name is not None and by_id is not None
    assert by_name.id == by_id.id == first.id
    with pytest.raises(NotFound, match="register it first"):
        registry.heartbeat("nope")


async def test_a_lost_event_the_bus_refuses_is_published_at_the_next_sweep() -> None:
    clock = Clock()
    registry = AppRegistry(heartbeat_interval_s=0.02, missed=1, clock=clock)
    registry.register(RegisterRequest(name="insp", role="inspector"))
    clock.advance(1.0)
    attempts: list[Payload] = []
    sent: list[Payload] = []

    async def publish(payload: Payload) -> None:
        attempts.append(payload)
        if len(attempts) == 1:
            raise RedisUnreachable("redis://127.0.0.1:1/0", "refused")
        sent.append(payload)

    stop = asyncio.Event()
    task = asyncio.create_task(registry.watch(publish, stop))
    for _ in range(200):
        if sent:
            break
        await asyncio.sleep(0.01)
    stop.set()
    await task
    assert len(attempts) == 2
    assert [type(p) for p in sent] == [AppLost]


@pytest.fixture
async def fast(tmp_path: Path, bus: Bus) -> AsyncIterator[tuple[httpx.AsyncClient, Bus]]:
    ctx = make_context(tmp_path, bus, registry=AppRegistry(heartbeat_interval_s=0.1, missed=3))
    async with gateway(ctx) as http:
        yield http, bus


async def test_apps_register_beat_and_get_lost_with_an_event(
    fast: tuple[httpx.AsyncClient, Bus],
) -> None:
    http, bus = fast
    consumer = await bus.consumer("check", "check", ["registry.*"], start="0")
    created = await http.post("/api/v1/apps", json={"name": "det-1", "role": "detector"})
    assert created.status_code == 201
    app_id = created.json()["id"]
    beat = await http.post(f"/api/v1/apps/{app_id}/heartbeat", json={"status": "ok"})
    assert beat.status_code == 200
    assert (await http.post(f"/api/v1/apps/{app_id}/heartbeat")).status_code == 200
    listed = (await http.get("/api/v1/apps")).json()["apps"]
    assert [(a["name"], a["status"]) for a in listed] == [("det-1", "alive")]

    async def statuses() -> list[tuple[str, str]]:
        return [(a["name"], a["status"]) for a in (await http.get("/api/v1/apps")).json()["apps"]]

    # three missed intervals of 0.1 s, and a sweep
    await until(lambda: _equals(statuses(), [("det-1", "lost")]), 10, what="det-1 lost")
    seen: dict[str, str] = {}
    lost: list[Any] = []
    for _ in range(50):  # the lost event's stream is new: found within a discovery interval
        deliveries = await consumer.fetch(100, 200)
        await consumer.ack(deliveries)  # or they are fetched again, as the group's pending
        seen.update((d.event.id, d.type) for d in deliveries)
        lost += [d.event.payload for d in deliveries if d.type == "registry.lost"]
        if lost:
            break
    # each type is its own stream: order holds within a type, not across types
    types = list(seen.values())
    assert (types.count("registry.registered"), types.count("registry.heartbeat")) == (1, 2)
    assert isinstance(lost[0], AppLost)
    assert lost[0].app_id == app_id
    assert lost[0].silent_for_s > 0.3
    assert (await http.post("/api/v1/apps/unknown/heartbeat")).status_code == 404
    assert "lost" in (await http.get("/metrics")).text


async def test_a_bad_registration_is_422_naming_the_field(tmp_path: Path) -> None:
    async with gateway(make_context(tmp_path, MemoryBus("r"))) as http:
        role = await http.post("/api/v1/apps", json={"name": "x", "role": "trader"})
        url = await http.post("/api/v1/apps", json={"name": "x", "role": "advisor", "url": "ftp:x"})
        name = await http.post("/api/v1/apps", json={"name": "a b", "role": "advisor"})
    for response, field in ((role, "role"), (url, "url"), (name, "name")):
        assert response.status_code == 422
        assert response.json()["detail"][0]["loc"][-1] == field


async def test_the_proxy_forwards_to_a_registered_app(tmp_path: Path) -> None:
    registry = AppRegistry(heartbeat_interval_s=0.25, missed=3)
    ctx = make_context(tmp_path, MemoryBus("p"), registry=registry)
    async with serving(_echo_app(), ready_path="/ping") as echo_url, gateway(ctx) as http:
        await http.post(
            "/api/v1/apps", json={"name": "echo", "role": "advisor", "url": echo_url + "/base"}
        )
        got = await http.get("/proxy/echo/status/now", params={"x": "1"})
        assert got.status_code == 200
        assert got.json() == {
            "path": "base/status/now", "method": "GET", "query": {"x": "1"}, "body": "",
            "prefix": "/proxy/echo",
        }  # fmt: skip
        posted = await http.post("/proxy/echo/orders", content=b'{"a": 1}')
        assert posted.json()["body"] == '{"a": 1}'
        unknown = await http.get("/proxy/nobody/x")
        assert unknown.status_code == 404
        assert "registered: echo" in unknown.json()["detail"]

        async def refused() -> bool:  # no heartbeats: the app is lost
            return (await http.get("/proxy/echo/status")).status_code == 503

        await until(refused, 10, what="the proxy to refuse the lost app")
        lost = await http.get("/proxy/echo/status")
        assert lost.status_code == 503
        assert "is lost" in lost.json()["detail"]


async def test_the_proxy_says_502_when_the_app_does_not_answer(tmp_path: Path) -> None:
    sock = bind("127.0.0.1", 0)
    dead_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    sock.close()  # nothing listens there now
    async with gateway(make_context(tmp_path, MemoryBus("d"))) as http:
        await http.post("/api/v1/apps", json={"name": "gone", "role": "inspector", "url": dead_url})
        response = await http.get("/proxy/gone/health")
    assert response.status_code == 502
    assert "did not answer" in response.json()["detail"]


async def _equals(value: Awaitable[object], expected: object) -> bool:
    return await value == expected
