"""Outbound webhooks: signed deliveries to a real loopback receiver, retries, and dead letters.

The sender tails a real bus (both transports); the receiver is a small FastAPI app on uvicorn that
records what it gets and can be told to fail.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI, Request, Response
from pydantic import ValidationError

from barfinex_cli.bus.base import Bus
from barfinex_cli.bus.memory import MemoryBus
from barfinex_cli.contracts.apps import AppRegistered
from barfinex_cli.contracts.envelope import make_event
from barfinex_cli.contracts.market import TickerUpdated
from barfinex_cli.provider.gateway.app import bind
from barfinex_cli.provider.gateway.webhooks import (
    DEAD_LETTER_FILE,
    SIGNATURE_HEADER,
    WebhooksConfig,
    WebhookSender,
    sign,
    verify,
)
from barfinex_cli.runtime.settings import Settings
from polling import until
from provider.gateway_server import gateway, make_context, serving

SECRET = "hook-secret"
NOW = datetime(2024, 1, 1, tzinfo=UTC)


def _payload(name: str = "det-1") -> AppRegistered:
    return AppRegistered(
        app_id="a1", name=name, role="detector", last_seen=NOW, version="1", started_at=NOW
    )


def _ticker() -> TickerUpdated:
    return TickerUpdated(exchange="binance", symbol="BTC/USDT", last=Decimal(1), time=NOW)


@dataclass
class Receiver:
    """What the loopback receiver got, and the statuses it answers with, in turn."""

    bodies: list[bytes] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    got: asyncio.Event = field(default_factory=asyncio.Event)

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/hook")
        async def hook(request: Request) -> Response:
            self.bodies.append(await request.body())
            self.headers.append(dict(request.headers))
            status = self.statuses.pop(0) if self.statuses else 200
            if status < 300:
                self.got.set()
            return Response(status_code=status)

        @app.get("/ping")
        async def ping() -> dict[str, bool]:
            return {"ok": True}

        return app


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[Receiver, str]]:
    rec = Receiver()
    async with serving(rec.app(), ready_path="/ping") as base:
        yield rec, base + "/hook"


def _config(url: str, **overrides: Any) -> WebhooksConfig:
    options: dict[str, Any] = {
        "targets": [{"url": url, "types": ["registry.*"]}],
        "secret": SECRET,
        "attempts": 3,
        "backoff_s": 0.01,
        "drain_s": 1.0,
    }
    return WebhooksConfig.model_validate({**options, **overrides})


@dataclass
class Running:
    sender: WebhookSender
    stop: asyncio.Event
    task: asyncio.Task[None]

    async def close(self) -> None:
        self.stop.set()
        await asyncio.wait_for(self.task, 10)


async def _start(bus: Bus, config: WebhooksConfig, home: Path) -> Running:
    sender = WebhookSender(bus, config, home / DEAD_LETTER_FILE)
    stop = asyncio.Event()
    task = asyncio.create_task(sender.run(stop))
    await sender.ready.wait()
    return Running(sender, stop, task)


def test_signature_is_hmac_sha256_of_the_body_and_verifies_in_constant_time() -> None:
    signature = sign(b"k", b'{"a":1}')
    assert signature == "sha256=" + hmac.new(b"k", b'{"a":1}', hashlib.sha256).hexdigest()
    assert verify(b"k", b'{"a":1}', signature)
    assert not verify(b"k", b'{"a":2}', signature)
    assert not verify(b"other", b'{"a":1}', signature)
    assert not verify(b"k", b'{"a":1}', None)


def test_every_target_needs_a_secret() -> None:
    with pytest.raises(ValidationError, match="no secret"):
        WebhooksConfig.model_validate({"targets": [{"url": "http://127.0.0.1:1/h"}]})
    own = WebhooksConfig.model_validate(
        {"targets": [{"url": "http://127.0.0.1:1/h", "secret": "s"}]}
    )
    assert own.secret_of(own.targets[0]) == b"s"


async def test_a_matching_event_is_delivered_signed_and_others_are_not(
    bus: Bus, receiver: tuple[Receiver, str], tmp_path: Path
) -> None:
    rec, url = receiver
    running = await _start(bus, _config(url), tmp_path)
    try:
        await bus.publish(make_event(_ticker(), source="test"))  # not matched: market.*
        event = make_event(_payload(), source="provider")
        await bus.publish(event)
        await asyncio.wait_for(rec.got.wait(), 5)
    finally:
        await running.close()
    assert len(rec.bodies) == 1
    body, headers = rec.bodies[0], rec.headers[0]
    assert verify(SECRET.encode(), body, headers[SIGNATURE_HEADER.lower()])
    assert headers["x-bfx-event"] == "registry.registered"
    assert headers["x-bfx-delivery"] == event.id
    assert json.loads(body)["payload"]["name"] == "det-1"
    assert running.sender.counts == {"delivered": 1, "retried": 0, "dead_lettered": 0}
    assert not (tmp_path / DEAD_LETTER_FILE).exists()


async def test_a_failing_receiver_is_retried_until_it_answers(
    receiver: tuple[Receiver, str], tmp_path: Path
) -> None:
    rec, url = receiver
    rec.statuses = [503, 429]
    bus = MemoryBus("retry")
    running = await _start(bus, _config(url), tmp_path)
    try:
        await bus.publish(make_event(_payload(), source="provider"))
        await asyncio.wait_for(rec.got.wait(), 5)
    finally:
        await running.close()
    assert len(rec.bodies) == 3
    assert rec.bodies[0] == rec.bodies[2]
    assert running.sender.counts == {"delivered": 1, "retried": 2, "dead_lettered": 0}


async def test_a_receiver_that_is_down_gets_retries_then_a_dead_letter(tmp_path: Path) -> None:
    sock = bind("127.0.0.1", 0)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}/hook"
    sock.close()  # nothing listens there
    bus = MemoryBus("down")
    running = await _start(bus, _config(url), tmp_path)
    event = make_event(_payload(), source="provider")
    try:
        await bus.publish(event)
        await until(lambda: running.sender.counts["dead_lettered"] == 1)
    finally:
        await running.close()
    records = [json.loads(line) for line in (tmp_path / DEAD_LETTER_FILE).read_text().splitlines()]
    assert len(records) == 1
    record = records[0]
    assert (record["url"], record["event_id"], record["type"]) == (url, event.id, event.type)
    assert record["attempts"] == 3
    assert "ConnectError" in record["error"]
    assert record["event"]["payload"]["app_id"] == "a1"
    assert running.sender.counts == {"delivered": 0, "retried": 2, "dead_lettered": 1}


async def test_a_refused_body_is_not_retried(
    receiver: tuple[Receiver, str], tmp_path: Path
) -> None:
    rec, url = receiver
    rec.statuses = [400]
    bus = MemoryBus("refused")
    running = await _start(bus, _config(url), tmp_path)
    try:
        await bus.publish(make_event(_payload(), source="provider"))
        await until(lambda: running.sender.counts["dead_lettered"] == 1)
    finally:
        await running.close()
    assert len(rec.bodies) == 1
    record = json.loads((tmp_path / DEAD_LETTER_FILE).read_text())
    assert (record["attempts"], record["error"]) == (1, "HTTP 400")


async def test_the_gateway_runs_the_sender_and_reports_it_in_metrics(
    receiver: tuple[Receiver, str], tmp_path: Path
) -> None:
    rec, url = receiver
    bus = MemoryBus("gw-hooks")
    settings = Settings(home=tmp_path)
    sender = WebhookSender(bus, _config(url), settings.home / DEAD_LETTER_FILE)
    async with gateway(make_context(tmp_path, bus, webhooks=sender)) as http:
        await sender.ready.wait()
        registered = await http.post("/api/v1/apps", json={"name": "adv", "role": "advisor"})
        assert registered.status_code == 201
        await asyncio.wait_for(rec.got.wait(), 5)
        metrics = (await http.get("/metrics")).text
    assert json.loads(rec.bodies[0])["payload"]["app_id"] == registered.json()["id"]
    assert 'bfx_webhook_deliveries_total{outcome="delivered"} 1' in metrics
