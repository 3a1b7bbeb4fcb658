"""A detector instance end to end: real provider, real Redis, real HTTP; live == scan."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from barfinex_cli.bus.redis_streams import RedisStreamsBus
from barfinex_cli.contracts.detector import SignalGenerated
from barfinex_cli.contracts.envelope import Envelope, make_event
from barfinex_cli.contracts.inspector import ThrottleOrdered
from barfinex_cli.contracts.market import CandleClosed
from barfinex_cli.contracts.times import from_ms, to_ms
from barfinex_cli.contracts.types import Payload
from barfinex_cli.detector.engine import VectorEngine
from barfinex_cli.detector.loader import load_strategy
from barfinex_cli.detector.service import Detector, DetectorOptions
from barfinex_cli.kernel.parts import Kernel
from barfinex_cli.provider.service import Provider, ProviderOptions
from barfinex_cli.runtime.settings import Settings, load_settings
from barfinex_cli.store.market import MarketStore, SeriesKey
from conftest import REDIS_URL, Kernels
from polling import until
from strategy_files import momentum

STRATEGY = momentum("momentum_test")


@pytest.fixture
async def stack(
    tmp_path: Path, namespace: str, request: pytest.FixtureRequest
) -> AsyncIterator[tuple[Settings, Provider]]:
    """A provider replaying 300 minutes of history and then 1 candle every 20 ms, on Redis.

    Parametrized indirectly with a number, it replays that many days instead of half a day.
    """
    days = float(getattr(request, "param", 0.5))
    settings = load_settings(home=tmp_path, namespace=namespace, redis_url=REDIS_URL, token="t0ken")
    options = ProviderOptions(
        symbols=("BTC/USDT",), timeframes=("1m", "5m"), speed=3000, history=300, days=days,
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


async def _recorded(settings: Settings, source: str, count: int) -> list[Envelope[Any]]:
    """Wait until the recorder holds `count` signals of `source`; return them, oldest first."""
    found: list[Envelope[Any]] = []

    async def enough() -> bool:
        nonlocal found
        found = [
            e for e in await _signals(settings)
            if e.type == "detector.signal" and e.source == source
        ]  # fmt: skip
        return len(found) >= count

    await until(enough, 30, what=f"the recorder to hold {count} signals of {source}", step_s=0.05)
    return found


def _as_scanned(settings: Settings, path: Path, live: list[Envelope[Any]]) -> tuple[Any, Any]:
    """Return the live signals and a scan's over the same span, in one comparable form."""
    with MarketStore(settings.market_path) as market:
        frame = market.candles_frame(SeriesKey("synthetic", "BTC/USDT", "1m"))
    scanned = VectorEngine(load_strategy(path)).evaluate(frame, "BTC/USDT")
    first_live, last_live = live[0].payload.candle_time, live[-1].payload.candle_time
    expected = [
        r for r in scanned
        if first_live <= datetime.fromtimestamp(r.open_ms / 1000, UTC) <= last_live
    ]  # fmt: skip
    got = [(e.payload.candle_time, e.payload.direction, e.payload.score,
            [a.model_dump() for a in e.payload.attribution]) for e in live]  # fmt: skip
    want = [(datetime.fromtimestamp(r.open_ms / 1000, UTC), r.direction, r.score,
             [a.model_dump() for a in r.attribution]) for r in expected]  # fmt: skip
    return got, want


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
    async with httpx.AsyncClient(headers={"Authorization": "Bearer t0ken"}) as client:

        async def registered_alive() -> bool:
            apps = (await client.get(f"{provider.gateway_url}/api/v1/apps")).json()["apps"]
            return [(a["name"], a["status"]) for a in apps] == [("mom-1", "alive")]

        await until(registered_alive, 30, what="mom-1 alone in the registry, alive")
    await until(lambda: detector.signals >= 3, 60, what="three live signals")
    stop.set()
    await asyncio.wait_for(task, 30)

    live = await _recorded(settings, "detector/mom-1", detector.signals)  # every one published
    got, want = _as_scanned(settings, path, live)
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
    throttle_end = detector.clock.now() + timedelta(minutes=150)
    await bus.publish(make_event(
        ThrottleOrdered(
            instance="mom-2", until=throttle_end, policy="loss_streak", reason="3 losses"
        ),
        source="inspector",
    ))  # fmt: skip
    await bus.publish(make_event(
        ThrottleOrdered(instance="someone-else", until=throttle_end, policy="p", reason="r"),
        source="inspector",
    ))  # fmt: skip
    await bus.close()
    # the throttle's stream is new: found within a discovery interval
    await until(lambda: detector.throttled_until is not None, 30, what="the throttle")
    assert detector.throttled_until == throttle_end
    signals_at_throttle = detector.signals
    await until(
        lambda: detector.clock.now() >= throttle_end - timedelta(minutes=10),
        60, what="the market just short of the throttle's end",
    )  # fmt: skip
    assert detector.signals == signals_at_throttle  # muted while the throttle lasts
    assert detector.suppressed > 0
    await until(
        lambda: detector.clock.now() >= throttle_end + timedelta(minutes=60),
        60, what="the market an hour past the throttle's end",
    )  # fmt: skip
    stop.set()
    await asyncio.wait_for(task, 30)
    assert detector.signals > signals_at_throttle  # and speaking again after it ends

    async def throttle_recorded() -> bool:
        return any(e.type == "detector.throttled" for e in await _signals(settings))

    await until(throttle_recorded, 30, what="the recorder to write the throttle")
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
    from barfinex_cli.errors import TokenRefused

    settings, provider = stack
    path = tmp_path / "momentum.py"
    path.write_text(STRATEGY)
    wrong = settings.model_copy(update={"token": SecretStr("not-the-token")})
    detector = await (await kernels(wrong)).detector(
        DetectorOptions(strategy=path, provider_url=provider.gateway_url, port=0)
    )
    with pytest.raises(TokenRefused, match="refused the token — set BFX_TOKEN"):
        await asyncio.wait_for(detector.run(asyncio.Event()), 30)


class _KilledAfterSignal(Detector):
    """A detector whose process dies right after publishing a signal, before its candle's ack.

    Raising `CancelledError` there is what a kill at that instant leaves behind: the signal is
    on the bus, the candle is still pending in the group, nothing else is handled.
    """

    kill_at = 2

    async def _publish(
        self, payload: Payload, parent: Envelope[Any] | None = None, at: datetime | None = None
    ) -> None:
        await super()._publish(payload, parent, at)
        if isinstance(payload, SignalGenerated) and self.signals + 1 >= self.kill_at:
            raise asyncio.CancelledError


@pytest.mark.parametrize("stack", [1.0], indirect=True)
async def test_a_detector_killed_mid_replay_and_restarted_loses_and_doubles_no_signal(
    stack: tuple[Settings, Provider], tmp_path: Path, kernels: Kernels
) -> None:
    settings, provider = stack
    path = tmp_path / "momentum.py"
    path.write_text(STRATEGY)
    config = DetectorOptions(
        strategy=path, provider_url=provider.gateway_url, port=0, instance="mom-r",
        join_registry=False,
    )  # fmt: skip
    kernel = await kernels(settings)
    first = _KilledAfterSignal(
        config, strategy=load_strategy(path), bus=await kernel.bus(),
        clock=kernel.clock("market"), client=kernel.client(provider.gateway_url),
    )  # fmt: skip
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(first.run(asyncio.Event()), 60)
    assert first.signals == first.kill_at - 1  # the last one is on the bus but was not counted
    rt = provider.runtime
    assert rt is not None
    killed_at = rt.clock_ms
    await until(lambda: rt.clock_ms >= killed_at + 100 * 60_000)  # down for 100 market minutes

    second = await (await kernels(settings)).detector(config)
    stop = asyncio.Event()
    task = asyncio.create_task(second.run(stop))
    await asyncio.wait_for(second.ready.wait(), 30)
    resume_at = rt.clock_ms
    await until(lambda: second.clock.now() >= from_ms(resume_at + 200 * 60_000))
    stop.set()
    await asyncio.wait_for(task, 30)

    assert "BTC/USDT" in second.resumed  # it went back to the candle the first run left pending
    assert second.republish_skipped >= 1  # whose signal the first run had already published
    live = await _recorded(settings, "detector/mom-r", first.kill_at + second.signals)
    assert len(live) == first.kill_at + second.signals
    candles = [(e.payload.candle_time, e.payload.direction) for e in live]
    assert len(candles) == len(set(candles))  # none doubled
    assert live[0].payload.candle_time < from_ms(killed_at)
    assert live[-1].payload.candle_time > from_ms(killed_at + 100 * 60_000)
    got, want = _as_scanned(settings, path, live)
    assert got == want  # none lost, before, during or after the downtime


async def test_a_candle_dated_2100_is_refused_and_never_freezes_the_detector(
    stack: tuple[Settings, Provider], tmp_path: Path, kernels: Kernels
) -> None:
    settings, _ = stack
    path, detector, stop, task = await _started(
        stack, tmp_path, kernels, instance="mom-f", join_registry=False
    )
    bus = RedisStreamsBus(REDIS_URL, settings.namespace)
    price = Decimal("100")
    future = CandleClosed(
        exchange="synthetic", symbol="BTC/USDT", timeframe="1m",
        open_time=datetime(2100, 1, 1, tzinfo=UTC), open=price, high=price, low=price,
        close=price, volume=Decimal("1"),
    )  # fmt: skip
    await bus.publish(make_event(future, source="provider/somewhere-else"))
    await bus.close()
    await until(lambda: detector.gate.refused == 1)
    refusal = detector.gate.last_refusal
    assert refusal is not None
    # degraded for DEGRADED_TIMEFRAMES of market time after the refusal: at 3000x that is 0.2 s
    # of wall time, which a loaded machine's poll and request can outlast, so the status is
    # checked at the refusal's own moment, and /health for what it keeps
    assert detector.gate.status(refusal.at_ms) == "degraded"
    async with httpx.AsyncClient() as client:
        answer = await client.get(f"{detector.health_url}/health")
    health = answer.json()
    assert answer.status_code == (200 if health["status"] == "ok" else 503)
    assert health["refused_ahead"] == 1
    assert health["last_refused"]["open_time"] == "2100-01-01T00:00:00Z"
    evaluated = detector.engine.evaluations
    await until(lambda: detector.engine.evaluations >= evaluated + 50)  # still evaluating
    stop.set()
    await asyncio.wait_for(task, 30)
    live = await _recorded(settings, "detector/mom-f", detector.signals)
    got, want = _as_scanned(settings, path, live)
    assert got == want


async def test_candles_dated_ahead_that_got_past_the_gate_are_undone_by_a_rewarm(
    stack: tuple[Settings, Provider], tmp_path: Path, kernels: Kernels
) -> None:
    settings, _ = stack
    _, detector, stop, task = await _started(
        stack, tmp_path, kernels, instance="mom-j", join_registry=False
    )
    bus = RedisStreamsBus(REDIS_URL, settings.namespace)
    price = Decimal("100")
    start = datetime(2100, 1, 1, tzinfo=UTC)
    jump = [  # three in a row that continue each other: taken as a real jump
        make_event(
            CandleClosed(
                exchange="synthetic", symbol="BTC/USDT", timeframe="1m",
                open_time=start + timedelta(minutes=minute), open=price, high=price, low=price,
                close=price, volume=Decimal("1"),
            ),
            source="provider/somewhere-else",
        )
        for minute in range(3)
    ]  # fmt: skip
    await bus.publish_many(jump)  # in one go: no real candle between them
    await bus.close()
    await until(lambda: detector.rewarmed == 1)  # the real candles after it stalled it: undone
    last = detector.engine.last_open("BTC/USDT")
    assert last is not None and last < to_ms(start)
    evaluated = detector.engine.evaluations
    await until(lambda: detector.engine.evaluations >= evaluated + 20)
    assert detector.status()["status"] in ("ok", "degraded")
    stop.set()
    await asyncio.wait_for(task, 30)
