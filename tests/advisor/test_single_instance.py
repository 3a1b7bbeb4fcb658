"""One running advisor per consumer name on a bus; advisors with their own names share signals.

Two advisors of one consumer name read as one consumer of the group: each would get part of that
consumer's signals and both would publish as one source. Scale-out gives each host its own name.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from barfinex_cli.errors import UsageError
from barfinex_cli.runtime.config import AdvisorConfig, ProviderConfig
from barfinex_cli.runtime.settings import Settings, load_settings
from conftest import REDIS_URL, Kernels


@pytest.fixture
def settings(tmp_path: Path, namespace: str) -> Settings:
    return load_settings(home=tmp_path, namespace=namespace, redis_url=REDIS_URL, token="t0ken")


@pytest.fixture
async def provider_url(settings: Settings, kernels: Kernels) -> AsyncIterator[str]:
    provider = await (await kernels(settings)).provider(ProviderConfig(
        symbols=("BTC/USDT",), timeframes=("1m",), speed=3000, history=300, days=0.5,
        port=0, exit_at_end=False, health_interval_s=1,
    ))  # fmt: skip
    stop = asyncio.Event()
    task = asyncio.create_task(provider.run(stop))
    try:
        await asyncio.wait_for(provider.ready.wait(), 60)
        assert provider.gateway_url is not None
        yield provider.gateway_url
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def test_a_second_advisor_of_one_consumer_name_is_refused_and_another_name_runs_beside(
    settings: Settings, kernels: Kernels, provider_url: str
) -> None:
    config = AdvisorConfig(
        provider_url=provider_url, port=0, heartbeat_s=0.2, serve_api=False, join_registry=False
    )
    first = await (await kernels(settings)).advisor(config)
    stop = asyncio.Event()
    first_task = asyncio.create_task(first.run(stop))
    tasks = [first_task]
    try:
        await asyncio.wait_for(first.ready.wait(), 60)
        second = await (await kernels(settings)).advisor(config)
        with pytest.raises(UsageError) as refused:
            await asyncio.wait_for(second.run(asyncio.Event()), 60)
        assert refused.value.exit_code == 2
        assert "advisor instance 'advisor.advisor' is already running" in str(refused.value)
        assert "BFX_ADVISOR__CONSUMER" in str(refused.value)
        assert not first_task.done() and first.lease.held  # the first runs on, untouched

        beside = await (await kernels(settings)).advisor(config.with_overrides(consumer="host-b"))
        tasks.append(asyncio.create_task(beside.run(stop)))
        await asyncio.wait_for(beside.ready.wait(), 60)  # another host's name: shares signals
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 30)
