"""One inspector per name on a bus: a second is refused, a restart after a kill takes the lease.

Two inspectors of one name would join one consumer group and write one `inspector.db`: each
would judge part of the decisions against a store the other also moves.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys

import pytest

from barfinex_cli.bus.redis_streams import RedisStreamsBus
from barfinex_cli.errors import UsageError
from barfinex_cli.kernel.parts import Kernel
from barfinex_cli.runtime.config import InspectorConfig
from barfinex_cli.runtime.lease import InstanceLease
from conftest import REDIS_URL
from inspector.conftest import Market, StartInspector, until


def _run_second(market: Market) -> subprocess.CompletedProcess[str]:
    """Run `bfx inspector run` on the first one's data directory and namespace."""
    env = {**os.environ, "BFX_TOKEN": "t0ken", "BFX_REDIS_URL": market.settings.redis_url or ""}
    command = [
        sys.executable, "-m", "barfinex_cli", "--data-dir", str(market.settings.home),
        "--namespace", market.settings.namespace, "inspector", "run",
        "--provider", market.url, "--port", "0", "--clock", "wall",
    ]  # fmt: skip
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)


async def test_a_second_inspector_of_the_same_name_is_refused_and_the_first_judges_every_decision(
    market: Market, start_inspector: StartInspector
) -> None:
    first, _, _ = await start_inspector()
    second = await asyncio.to_thread(_run_second, market)
    assert second.returncode == 2, second.stderr
    line = second.stderr.strip()
    assert len(line.splitlines()) == 1 and "Traceback" not in line
    assert "inspector instance 'inspector' is already running on this bus" in line
    assert "one inspector per account" in line  # and what to change
    for symbol, entry, stop, take in (("BTC/USDT", "100", "98", "104"),
                                      ("ETH/USDT", "50", "49", "52")):  # fmt: skip
        await market.decide(symbol, entry=entry, stop=stop, take_profit=take)
    await until(lambda: first.verdicts == 2)  # none went to a second consumer
    assert first.lease.held


async def test_an_inspector_restarted_after_a_kill_waits_for_the_dead_runs_lease_then_runs(
    market: Market, start_inspector: StartInspector, caplog: pytest.LogCaptureFixture
) -> None:
    # a run killed with -9 leaves its lease behind, renewed by nobody
    dead = InstanceLease(market.bus, "inspector", role="inspector", lease_s=2.0)
    await dead.acquire()
    with caplog.at_level(logging.INFO, logger="bfx.inspector"):
        restarted, _, _ = await start_inspector()
    assert any("waiting for its lease" in r.getMessage() for r in caplog.records)
    assert restarted.entries_open and restarted.lease.held
    with pytest.raises(UsageError, match="already running"):
        await dead.renew()  # the dead run, were it to wake up, must stop: never split
    await market.decide()
    await until(lambda: restarted.verdicts == 1)


async def test_a_second_inspector_on_the_same_data_dir_but_another_bus_is_refused(
    market: Market, start_inspector: StartInspector
) -> None:
    first, _, _ = await start_inspector()
    elsewhere = f"{market.settings.namespace}-b"  # its own bus: the lease cannot see the first
    settings = market.settings.model_copy(update={"namespace": elsewhere})
    try:
        async with Kernel(settings) as kernel:
            config = InspectorConfig(provider_url=market.url, port=0, clock="wall")
            second = await kernel.inspector(config)
            with pytest.raises(UsageError, match="another inspector is using") as refused:
                await asyncio.wait_for(second.run(asyncio.Event()), 60)
        assert str(market.settings.home) in str(refused.value)
        assert "its own --data-dir" in str(refused.value)
        assert not second.lease.held  # given back: nothing of it stays on its bus
        await market.decide()
        await until(lambda: first.verdicts == 1)  # the first runs on
    finally:
        bus = RedisStreamsBus(REDIS_URL, elsewhere)
        await bus.delete_namespace()
        await bus.close()
