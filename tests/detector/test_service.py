"""A detector instance end to end: real provider, real Redis, real HTTP; live == scan."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from barfinex_cli.bus.redis_streams import RedisStreamsBus
from barfinex_cli.contracts.envelope import Envelope, make_event
from barfinex_cli.contracts.inspector import ThrottleOrdered
from barfinex_cli.detector.engine import VectorEngine
from barfinex_cli.detector.loader import load_strategy
from barfinex_cli.detector.service import Detector, DetectorOptions
from barfinex_cli.kernel.parts import Kernel
from barfinex_cli.provider.service import Provider, ProviderOptions
from barfinex_cli.runtime.settings import Settings, load_settings
from barfinex_cli.store.market import MarketStore, SeriesKey
from conftest import REDIS_URL, Kernels

STRATEGY = """
from barfinex_cli.detector import indicators as ta
from barfinex_cli.detector.strategy import Rule, Strategy

strategy = Strategy(
    name="momentum_test",
    symbols=["BTC/USDT"],
    timeframe="1m",
    threshold=2.0,
    cooldown=2,
    rules=[
        Rule("above_ema", ta.close > ta.ema("close", 10), weight=1.0, direction="long"),
        Rule("below_ema", ta.close < ta.ema("close", 10), weight=1.0, direction="short"),
        Rule("rsi_up", ta.rsi(7) > 55, weight=1.0, direction="long"),
        Rule("rsi_down", ta.rsi(7) < 45, weight=1.0, direction="short"),
    ],
)
"""


@pytest.fixture
async def stack(tmp_path: Path, namespace: str) -> AsyncIterator[tuple[Settings, Provider]]:
    """A provider replaying 300 minutes of history and then 1 candle every 20 ms, on Redis."""
    settings = load_settings(home=tmp_path, namespace=namespace, redis_url=REDIS_URL, token="t0ken")
    options = ProviderOptions(
        symbols=("BTC/USDT",), timeframes=("1m", "5m"), speed=3000, history=300, days=0.5,
        port=0, exit_at_end=False, health_interval_s=1,
    )  # fmt: skip
    kernel = Kernel(settings)
    provider = await kernel.provider(options)
    stop = asyncio.Event()
    task = asyncio.create_task(provider.run(stop))
    await asyncio.wait_for(provider.ready.wait(), 30)
    try:
        yield settings, provider
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        await kernel.close()
        bus = RedisStreamsBus(REDIS_URL, namespace)
        await bus.delete_namespace()
        await bus.close()


async def _signals(settings: Settings) -> list[Envelope[Any]]:
    from barfinex_cli.store.audit import AuditStore

    with AuditStore(settings.audit_path) as audit:
        return audit.query(["detector.*"], limit=None)


async def _started(
    stack: tuple[Settings, Provider], tmp_path: Path, kernels: Kernels, **options: Any
) -> tuple[Path, Detector, asyncio.Event, asyncio.Task[int]]:
    """Write the test strategy and start a detector on the stack's provider; wait until ready."""
    settings, provider = stack
    path = tmp_path / "momentum.py"
    path.write_text(STRATEGY)
    detector = await (await kernels(settings)).detector(
        DetectorOptions(strategy=path, provider_url=provider.gateway_url, port=0, **options)
    )
    stop = asyncio.Event()
    task = asyncio.create_task(detector.run(stop))
    await asyncio.wait_for(detector.ready.wait(), 30)
    return path, detector, stop, task


async def test_live_signals_equal_a_scan_and_trace_back_to_their_candle(
    stack: tuple[Settings, Provider], tmp_path: Path, kernels: Kernels
) -> None:
    settings, provider = stack
    path, detector, stop, task = await _started(
        stack, tmp_path, kernels, instance="mom-1", metrics_interval_s=0.5, heartbeat_s=0.2
    )
    assert detector.warmed["BTC/USDT"] >= 300
    async with httpx.AsyncClient() as client:
        health = (await client.get(f"{detector.health_url}/health")).json()
        assert health["status"] == "ok" and health["instance"] == "mom-1"
        assert (
            "bfx_detector_signals_total"
            in (await client.get(f"{detector.health_url}/metrics")).text
        )
    await asyncio.sleep(3.0)  # ~150 live candles
    async with httpx.AsyncClient(headers={"Authorization": "Bearer t0ken"}) as client:
        apps = (await client.get(f"{provider.gateway_url}/api/v1/apps")).json()["apps"]
    assert [a["name"] for a in apps] == ["mom-1"] and apps[0]["status"] == "alive"
    stop.set()
    await asyncio.wait_for(task, 30)
    await asyncio.sleep(1.0)  # the recorder writes the last signals

    live = [e for e in await _signals(settings) if e.type == "detector.signal"]
    assert len(live) >= 3
    with MarketStore(settings.market_path) as market:
        frame = market.candles_frame(SeriesKey("synthetic", "BTC/USDT", "1m"))
    scanned = VectorEngine(load_strategy(path)).evaluate(frame, "BTC/USDT")
    first_live = live[0].payload.candle_time
    last_live = live[-1].payload.candle_time
    expected = [
        r for r in scanned
        if first_live <= datetime.fromtimestamp(r.open_ms / 1000, UTC) <= last_live
    ]  # fmt: skip
    got = [(e.payload.candle_time, e.payload.direction, e.payload.score,
            [a.model_dump() for a in e.payload.attribution]) for e in live]  # fmt: skip
    want = [(datetime.fromtimestamp(r.open_ms / 1000, UTC), r.direction, r.score,
             [a.model_dump() for a in r.attribution]) for r in expected]  # fmt: skip
    assert got == want

    from barfinex_cli.store.audit import AuditStore

    with AuditStore(settings.audit_path) as audit:
        chain = audit.trace(live[0].id)
    assert [e.type for e in chain] == ["market.candle", "detector.signal"]
    assert chain[0].payload.open_time == live[0].payload.candle_time


async def test_a_throttle_in_market_time_mutes_the_instance_until_the_market_reaches_it(
    stack: tuple[Settings, Provider], tmp_path: Path, kernels: Kernels
) -> None:
    settings, _ = stack
    _, detector, stop, task = await _started(
        stack, tmp_path, kernels, instance="mom-2", join_registry=False
    )
    assert detector.clock.kind == "market"  # the provider replays: the detector follows it
    bus = RedisStreamsBus(REDIS_URL, settings.namespace)
    # 3000x replay: 150 market minutes pass in about 3 s of wall time.
    until = detector.clock.now() + timedelta(minutes=150)
    await bus.publish(make_event(
        ThrottleOrdered(instance="mom-2", until=until, policy="loss_streak", reason="3 losses"),
        source="inspector",
    ))  # fmt: skip
    await bus.publish(make_event(
        ThrottleOrdered(instance="someone-else", until=until, policy="p", reason="r"),
        source="inspector",
    ))  # fmt: skip
    await bus.close()
    for _ in range(100):  # the throttle's stream is new: found within a discovery interval
        if detector.throttled_until is not None:
            break
        await asyncio.sleep(0.05)
    assert detector.throttled_until == until
    signals_at_throttle = detector.signals
    for _ in range(400):  # until the market is just short of the throttle's end
        if detector.clock.now() >= until - timedelta(minutes=10):
            break
        await asyncio.sleep(0.02)
    assert detector.signals == signals_at_throttle  # muted while the throttle lasts
    assert detector.suppressed > 0
    for _ in range(400):
        if detector.clock.now() >= until + timedelta(minutes=60):
            break
        await asyncio.sleep(0.02)
    stop.set()
    await asyncio.wait_for(task, 30)
    assert detector.signals > signals_at_throttle  # and speaking again after it ends
    await asyncio.sleep(1.0)
    throttled = [e for e in await _signals(settings) if e.type == "detector.throttled"]
    assert [e.payload.instance for e in throttled] == ["mom-2"]


def test_run_with_a_broken_strategy_prints_file_and_line_and_exits_nonzero(
    tmp_path: Path,
) -> None:
    path = tmp_path / "broken.py"
    path.write_text("strategy = (\n")
    result = subprocess.run(
        [sys.executable, "-m", "barfinex_cli", "detector", "run", str(path)],
        capture_output=True, text=True, timeout=60,
        env={"BFX_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert result.returncode != 0
    assert f"{path}:1" in result.stderr or f"{path}:2" in result.stderr
    assert "Traceback" not in result.stderr


def test_run_without_a_provider_says_how_to_start_one(tmp_path: Path) -> None:
    path = tmp_path / "momentum.py"
    path.write_text(STRATEGY)
    result = subprocess.run(
        [sys.executable, "-m", "barfinex_cli", "detector", "run", str(path),
         "--provider", "http://127.0.0.1:1"],
        capture_output=True, text=True, timeout=60,
        env={"BFX_HOME": str(tmp_path), "BFX_REDIS_URL": REDIS_URL, "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert result.returncode == 3
    assert "bfx provider start" in result.stderr
    assert "Traceback" not in result.stderr


async def test_a_wrong_token_is_refused_with_the_fix(
    stack: tuple[Settings, Provider], tmp_path: Path, kernels: Kernels
) -> None:
    from barfinex_cli.errors import ServiceUnreachable

    settings, provider = stack
    path = tmp_path / "momentum.py"
    path.write_text(STRATEGY)
    wrong = settings.model_copy(update={"token": SecretStr("not-the-token")})
    detector = await (await kernels(wrong)).detector(
        DetectorOptions(strategy=path, provider_url=provider.gateway_url, port=0)
    )
    with pytest.raises(ServiceUnreachable, match="refused the token — set BFX_TOKEN"):
        await asyncio.wait_for(detector.run(asyncio.Event()), 30)
