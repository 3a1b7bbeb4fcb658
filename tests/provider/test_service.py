"""The provider service end to end: replay -> bus -> market store and audit store, and the CLI."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from barfinex_cli.bus.redis_streams import RedisStreamsBus
from barfinex_cli.provider.service import ProviderOptions
from barfinex_cli.runtime.settings import load_settings
from barfinex_cli.store.audit import AuditStore
from barfinex_cli.store.market import MarketStore, SeriesKey
from conftest import REDIS_URL, Kernels
from polling import wait_until
from ports import free_port

OPTIONS = dict(
    symbols=("BTC/USDT",), timeframes=("1m", "5m", "1h"), speed=None, history=60, days=0.25,
    port=0, exit_at_end=True, health_interval_s=0.2,
)  # fmt: skip


@pytest.mark.parametrize("bus", ["redis", "memory"])
async def test_replay_candles_reach_the_bus_the_market_store_and_the_audit_log(
    kernels: Kernels, tmp_path: Path, namespace: str, bus: str
) -> None:
    settings = load_settings(
        home=tmp_path, namespace=namespace, bus=bus, redis_url=REDIS_URL, token="t0ken"
    )
    provider = await (await kernels(settings)).provider(ProviderOptions(**OPTIONS))  # type: ignore[arg-type]
    published = await asyncio.wait_for(provider.run(asyncio.Event()), 60)
    try:
        with MarketStore(settings.market_path) as market:
            one = market.candles(SeriesKey("synthetic", "BTC/USDT", "1m"))
            five = market.candles(SeriesKey("synthetic", "BTC/USDT", "5m"))
        assert len(one) == 360  # 0.25 days of minutes: 60 of history, 300 streamed
        assert [r.open_ms for r in one] == sorted({r.open_ms for r in one})
        assert len(five) == 72
        assert five[0].open == one[0].open and five[0].close == one[4].close
        assert five[0].high == max(r.high for r in one[:5])
        with AuditStore(settings.audit_path) as audit:
            counts = dict(audit.types())
        assert counts["market.candle"] == 300 + 300 // 5 + 300 // 60
        assert counts["provider.health"] >= 1
        assert sum(counts.values()) == published
    finally:
        if bus == "redis":
            cleanup = RedisStreamsBus(REDIS_URL, namespace)
            await cleanup.delete_namespace()
            await cleanup.close()


def test_provider_start_serves_the_gateway_takes_a_paper_order_and_stops_on_sigint(
    tmp_path: Path, namespace: str
) -> None:
    port = free_port()
    env = {"BFX_HOME": str(tmp_path), "BFX_NAMESPACE": namespace, "BFX_REDIS_URL": REDIS_URL,
           "PATH": "/usr/bin:/bin"}  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "barfinex_cli", "--log-json", "provider", "start", "--speed", "max",
         "--days", "0.1", "--history", "30", "--symbols", "BTC/USDT", "--port", str(port)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    token_file = tmp_path / "token"
    try:
        wait_until(
            lambda: token_file.exists() and token_file.read_text().strip()
            and httpx.get(f"{base}/api/v1/health", timeout=1).status_code == 200,
            60, what="the gateway", ignoring=(httpx.HTTPError,),
        )  # fmt: skip
        token = token_file.read_text().strip()
        assert oct((tmp_path / "token").stat().st_mode & 0o777) == "0o600"
        headers = {"Authorization": f"Bearer {token}"}
        assert httpx.get(f"{base}/api/v1/candles", params={"symbol": "BTC/USDT"}).status_code == 401

        def five_candles() -> httpx.Response:
            return httpx.get(
                f"{base}/api/v1/candles", headers=headers,
                params={"exchange": "synthetic", "symbol": "BTC/USDT", "timeframe": "5m",
                        "limit": 5},
            )  # fmt: skip

        # the replay plays on: poll until five 5m candles have closed
        wait_until(lambda: len(five_candles().json().get("candles", [])) == 5, 60,
                   what="five 5m candles")  # fmt: skip
        candles = five_candles()
        assert candles.status_code == 200, candles.text
        assert len(candles.json()["candles"]) == 5
        order = {"client_order_id": "svc-test-1", "symbol": "BTC/USDT", "side": "buy",
                 "type": "market", "amount": "0.01", "account": "paper"}  # fmt: skip
        first = httpx.post(f"{base}/api/v1/orders", headers=headers, json=order)
        again = httpx.post(f"{base}/api/v1/orders", headers=headers, json=order)
        assert first.status_code == 201, first.text
        assert again.status_code == 200
        assert first.json()["order_id"] == again.json()["order_id"]
        assert first.json()["status"] in ("open", "filled")
        orders = httpx.get(f"{base}/api/v1/orders", headers=headers).json()
        assert len([o for o in orders["orders"] if o["client_order_id"] == "svc-test-1"]) == 1

        def order_recorded() -> bool:  # the flusher publishes, the recorder writes
            if not (tmp_path / "audit.db").exists():
                return False
            with AuditStore(tmp_path / "audit.db", read_only=True) as audit:
                return audit.count(["order.filled"]) > 0

        wait_until(order_recorded, 60, what="the recorder to write the fill")
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "provider up" in err and "provider stopped" in err
    query = subprocess.run(
        [sys.executable, "-m", "barfinex_cli", "events", "query", "-t", "order.*", "--json"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    kinds = [json.loads(line)["type"] for line in query.stdout.splitlines()]
    assert kinds[:2] == ["order.submitted", "order.accepted"]
    assert "order.filled" in kinds
    assert asyncio.run(_purge(namespace)) >= 0


async def _purge(namespace: str) -> int:
    bus = RedisStreamsBus(REDIS_URL, namespace)
    try:
        return await bus.delete_namespace()
    finally:
        await bus.close()


async def test_provider_posts_signed_webhooks_named_in_the_settings(
    kernels: Kernels, tmp_path: Path, namespace: str
) -> None:
    from aiohttp import web

    from barfinex_cli.provider.gateway.webhooks import verify

    received: list[tuple[bytes, str | None]] = []

    async def hook(request: web.Request) -> web.Response:
        received.append((await request.read(), request.headers.get("X-Bfx-Signature")))
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    settings = load_settings(
        home=tmp_path, namespace=namespace, bus="memory", token="t0ken",
        webhooks={
            "targets": [{"url": f"http://127.0.0.1:{port}/hook", "types": ["market.candle"]}]
        },
        webhook_secret="hook-secret",
    )  # fmt: skip
    options = ProviderOptions(**{**OPTIONS, "exit_at_end": False})  # type: ignore[arg-type]
    provider = await (await kernels(settings)).provider(options)
    stop = asyncio.Event()
    task = asyncio.create_task(provider.run(stop))
    try:
        for _ in range(600):  # generous: a loaded machine delivers later, never fewer
            if len(received) >= 3:
                break
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        try:
            await asyncio.wait_for(task, 60)
        finally:
            await runner.cleanup()
    assert len(received) >= 3
    body, signature = received[0]
    assert verify(b"hook-secret", body, signature)
    assert json.loads(body)["type"] == "market.candle"


def test_a_webhook_without_a_secret_is_a_config_error_when_settings_load(
    tmp_path: Path, namespace: str
) -> None:
    from barfinex_cli.errors import ConfigError

    with pytest.raises(ConfigError, match="BFX_WEBHOOK_SECRET"):
        load_settings(
            home=tmp_path, namespace=namespace, bus="memory", token="t0ken",
            webhooks={"targets": [{"url": "http://127.0.0.1:9/hook"}]},
        )  # fmt: skip


async def test_a_bad_row_in_stored_history_is_found_repaired_and_verified_at_start(
    kernels: Kernels, tmp_path: Path, namespace: str
) -> None:
    from barfinex_cli.market.synthetic import DEFAULT_START_MS
    from barfinex_cli.store.market import CandleRow

    key = SeriesKey("synthetic", "BTC/USDT", "1m")
    bad = CandleRow(DEFAULT_START_MS + 10 * 60_000 + 30_000, 1.0, 1.0, 1.0, 1.0, 1.0)
    with MarketStore(tmp_path / "market.db") as market:
        market.upsert_candles(key, [bad])  # half a minute off the grid
    settings = load_settings(home=tmp_path, namespace=namespace, bus="memory", token="t0ken")
    provider = await (await kernels(settings)).provider(ProviderOptions(**OPTIONS))  # type: ignore[arg-type]
    await asyncio.wait_for(provider.run(asyncio.Event()), 60)
    with MarketStore(settings.market_path) as market:
        opens = [r.open_ms for r in market.candles(key)]
    assert bad.open_ms not in opens
    assert all(ms % 60_000 == 0 for ms in opens)
    with AuditStore(settings.audit_path) as audit:
        kinds = [e.type for e in audit.query(["provider.incident.*", "market.repaired"])]
    assert kinds == ["provider.incident.opened", "market.repaired", "provider.incident.resolved"]


async def test_connector_recovery_reconnects_and_the_stream_resumes_without_duplicates(
    kernels: Kernels, tmp_path: Path, namespace: str
) -> None:
    settings = load_settings(home=tmp_path, namespace=namespace, bus="memory", token="t0ken")
    options = ProviderOptions(**{**OPTIONS, "speed": 3000.0, "exit_at_end": True})  # type: ignore[arg-type]
    provider = await (await kernels(settings)).provider(options)
    task = asyncio.create_task(provider.run(asyncio.Event()))
    await asyncio.wait_for(provider.ready.wait(), 30)
    assert provider.runtime is not None
    for _ in range(1500):  # until 20 candles are out
        if provider.runtime.candles >= 20:
            break
        await asyncio.sleep(0.02)
    await provider.reconnect(SeriesKey("synthetic", "BTC/USDT", "1m"))
    await asyncio.wait_for(task, 60)
    assert provider.runtime.reconnects == 1
    with AuditStore(settings.audit_path) as audit:
        candles = audit.query(["market.candle"], limit=None)
    one_minute = [e.payload.open_time for e in candles if e.payload.timeframe == "1m"]
    assert len(one_minute) == 300  # every live minute once: none lost, none repeated
    assert len(set(one_minute)) == 300


async def test_a_restarted_replay_resumes_after_what_it_stored_and_publishes_no_candle_twice(
    kernels: Kernels, tmp_path: Path, namespace: str
) -> None:
    settings = load_settings(home=tmp_path, namespace=namespace, bus="memory", token="t0ken")
    first = await (await kernels(settings)).provider(
        ProviderOptions(**{**OPTIONS, "speed": 6000.0, "exit_at_end": False})  # type: ignore[arg-type]
    )
    stop = asyncio.Event()
    task = asyncio.create_task(first.run(stop))
    await asyncio.wait_for(first.ready.wait(), 30)
    for _ in range(600):  # stop it part of the way through the replay
        if first.runtime is not None and first.runtime.candles >= 40:
            break
        await asyncio.sleep(0.02)
    stop.set()
    await asyncio.wait_for(task, 60)
    assert first.runtime is not None and 40 <= first.runtime.candles < 300
    second = await (await kernels(settings)).provider(ProviderOptions(**OPTIONS))  # type: ignore[arg-type]
    await asyncio.wait_for(second.run(asyncio.Event()), 60)
    with AuditStore(settings.audit_path) as audit:
        candles = audit.query(["market.candle"], limit=None)
    keys = [(c.payload.timeframe, c.payload.open_time) for c in candles]
    assert len(keys) == len(set(keys))  # no candle published twice across the two runs
    assert len(keys) == 300 + 300 // 5 + 300 // 60  # and none missing: the whole live part
    with MarketStore(settings.market_path) as market:
        assert len(market.candles(SeriesKey("synthetic", "BTC/USDT", "1m"))) == 360
