"""An advisor that dies right after publishing a signal's outcome publishes no second one.

The first advisor runs on a bus that ends it (`Died`, raised like a SIGKILL: nothing after it
runs, so the signal is never acknowledged) right after the run's events land on Redis. The
second advisor joins the same group under the same name and gets the signal back: it finds the
signal marked handled by the very publish that carried the outcome, acknowledges it, and
publishes nothing. The bus half of the rule runs on both transports in
`tests/bus/test_semantics.py`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from barfinex_cli.bus.base import AnyEnvelope, Bus, Handled
from barfinex_cli.bus.redis_streams import FIELD, RedisStreamsBus
from barfinex_cli.contracts.detector import SignalGenerated
from barfinex_cli.contracts.envelope import Envelope, make_event
from barfinex_cli.contracts.times import from_ms
from barfinex_cli.runtime.config import AdvisorConfig, ProviderConfig
from barfinex_cli.runtime.settings import Settings, load_settings
from conftest import REDIS_URL, Kernels

OUTCOMES = ("advisor.decision", "advisor.decision.rejected", "advisor.signal.dropped")


class Died(BaseException):
    """The role's death at a chosen point: nothing after it runs, nothing is acknowledged."""


class DiesAfterOutcome:
    """The real bus, ending its role right after a batch holding an outcome landed."""

    def __init__(self, bus: Bus) -> None:
        self._bus = bus

    def __getattr__(self, name: str) -> Any:
        return getattr(self._bus, name)

    async def publish_many(
        self, events: Sequence[AnyEnvelope], *, handled: Handled | None = None
    ) -> list[str]:
        ids = await self._bus.publish_many(events, handled=handled)
        for event in events:
            if event.type in OUTCOMES:
                raise Died(f"killed after {event.type} {event.id}")
        return ids


@pytest.fixture
def settings(tmp_path: Path, namespace: str) -> Settings:
    return load_settings(home=tmp_path, namespace=namespace, redis_url=REDIS_URL, token="t0ken")


@pytest.fixture
async def bus(settings: Settings) -> AsyncIterator[RedisStreamsBus]:
    redis = RedisStreamsBus(REDIS_URL, settings.namespace)
    try:
        yield redis
    finally:
        await redis.delete_namespace()
        await redis.close()


async def _until(predicate: Callable[[], Any], within_s: float = 60.0) -> None:
    """Poll `predicate` (sync or async) every 20 ms until it holds."""
    for _ in range(int(within_s / 0.02)):
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("timed out waiting")


async def _outcomes(bus: RedisStreamsBus, signal_id: str) -> list[Envelope[Any]]:
    out = []
    for kind in OUTCOMES:
        for _, fields in await bus.redis.xrange(bus.key(kind)):
            event = bus.decode(fields[FIELD], kind)
            if event.parent_id == signal_id:
                out.append(event)
    return out


async def _pending(bus: RedisStreamsBus) -> int:
    reply = await bus.redis.xpending(bus.key("detector.signal"), "advisor.advisor")
    return int(reply["pending"])


async def _acked(bus: RedisStreamsBus) -> bool:
    return await _pending(bus) == 0


async def test_an_advisor_killed_after_publishing_an_outcome_publishes_no_second_one(
    settings: Settings, kernels: Kernels, bus: RedisStreamsBus
) -> None:
    provider = await (await kernels(settings)).provider(ProviderConfig(
        symbols=("BTC/USDT",), timeframes=("1m",), speed=3000, history=300, days=0.5,
        port=0, exit_at_end=False, health_interval_s=1,
    ))  # fmt: skip
    provider_stop = asyncio.Event()
    provider_task = asyncio.create_task(provider.run(provider_stop))
    config = AdvisorConfig(
        provider_url="", port=0, heartbeat_s=0.2, serve_api=False, join_registry=False
    )
    try:
        await asyncio.wait_for(provider.ready.wait(), 60)
        config = config.model_copy(update={"provider_url": provider.gateway_url})
        first = await (await kernels(settings)).advisor(config)
        first.bus = DiesAfterOutcome(first.bus)  # type: ignore[assignment]
        first_task = asyncio.create_task(first.run(asyncio.Event()))
        await asyncio.wait_for(first.ready.wait(), 60)
        signal = make_event(SignalGenerated(
            strategy="manual", instance="manual", exchange="synthetic", symbol="BTC/USDT",
            timeframe="1m", candle_time=from_ms(1_704_067_200_000), direction="long",
            score=2.0, threshold=2.0, attribution=[],
        ), source="detector/manual")  # fmt: skip
        await bus.publish(signal)
        await asyncio.wait_for(asyncio.gather(first_task, return_exceptions=True), 60)
        assert isinstance(first_task.exception(), Died), first_task.exception()
        (outcome,) = await _outcomes(bus, signal.id)
        assert await _pending(bus) == 1  # never acknowledged: the restart gets it back

        second = await (await kernels(settings)).advisor(config)
        stop = asyncio.Event()
        second_task = asyncio.create_task(second.run(stop))
        try:
            await asyncio.wait_for(second.ready.wait(), 60)
            await _until(lambda: _acked(bus))  # delivered again, then acknowledged
        finally:
            stop.set()
            await asyncio.wait_for(second_task, 30)
        assert second.signals_seen == 0 and second.published == 0  # handled nothing again
        assert [e.id for e in await _outcomes(bus, signal.id)] == [outcome.id]
    finally:
        provider_stop.set()
        await asyncio.wait_for(provider_task, 30)
