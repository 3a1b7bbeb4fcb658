"""Alerts reach the bus and Telegram's Bot API (a loopback server standing in for it)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from barfinex_cli.contracts.inspector import AlertRaised
from barfinex_cli.inspector.alerts import Alerts, Telegram
from barfinex_cli.runtime.health import bind_first_free, serve_health
from inspector.conftest import Market, StartInspector, until


class BotApi:
    """A loopback HTTP server that answers `sendMessage` like Telegram and keeps what it got."""

    def __init__(self, ok: bool = True) -> None:
        self.ok = ok
        self.messages: list[tuple[str, dict[str, Any]]] = []
        self.url = ""

    def app(self) -> Any:
        from starlette.applications import Starlette
        from starlette.requests import Request
        from starlette.responses import JSONResponse
        from starlette.routing import Route

        async def send(request: Request) -> JSONResponse:
            self.messages.append((request.url.path, await request.json()))
            if not self.ok:
                return JSONResponse({"ok": False, "description": "chat not found"}, 400)
            return JSONResponse({"ok": True, "result": {"message_id": len(self.messages)}})

        return Starlette(routes=[Route("/{path:path}", send, methods=["POST"])])


@pytest.fixture
async def bot() -> AsyncIterator[BotApi]:
    api = BotApi()
    sock = bind_first_free("127.0.0.1", 0)
    host, port = sock.getsockname()[:2]
    api.url = f"http://{host}:{port}"
    stop = asyncio.Event()
    task = asyncio.create_task(serve_health(api.app(), sock, stop))
    yield api
    stop.set()
    await task


async def test_an_alert_goes_on_the_bus_and_to_telegram_when_both_variables_are_set(
    market: Market, start_inspector: StartInspector, bot: BotApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BFX_TELEGRAM_TOKEN", "123:secret")
    monkeypatch.setenv("BFX_TELEGRAM_CHAT", "-1001")
    inspector, _, _ = await start_inspector(telegram_api=bot.url)
    assert inspector.api_url is not None
    async with httpx.AsyncClient() as http:
        answer = await http.post(inspector.api_url + "/api/v1/stand-down", json={"until": None})
    assert answer.status_code == 200 and answer.json()["stand_down_until"] is not None
    await until(lambda: bot.messages)
    path, body = bot.messages[0]
    assert path == "/bot123:secret/sendMessage" and body["chat_id"] == "-1001"
    assert "stand down until resumed" in body["text"]
    on_bus = [e.payload for e in await market.published("inspector.alert")]
    assert any("stand down" in a.message for a in on_bus)


async def test_a_refused_telegram_delivery_is_counted_and_never_raised(bot: BotApi) -> None:
    bot.ok = False
    published: list[AlertRaised] = []

    async def publish(alert: AlertRaised) -> None:
        published.append(alert)

    telegram = Telegram("1:x", "42", base_url=bot.url)
    alerts = Alerts(publish, telegram)
    await alerts.raise_("error", "policy edit refused")
    await alerts.aclose()
    assert [a.message for a in published] == ["policy edit refused"]
    assert (telegram.sent, telegram.failed) == (0, 1)


def test_telegram_is_off_unless_both_variables_are_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BFX_TELEGRAM_CHAT", raising=False)
    monkeypatch.setenv("BFX_TELEGRAM_TOKEN", "1:x")
    assert Telegram.from_env("http://127.0.0.1:9") is None
