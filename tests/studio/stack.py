"""Real parts for the studio's tests: a provider replaying on loopback, and polling helpers.

`running_provider` runs the real provider (synthetic replay, paper broker, gateway on a loopback
port) in the test's own event loop, so the Pilot-driven app and the provider share the loop; the
replay plays at full speed and the gateway keeps serving after it ends. `until` polls a condition
while the app runs (never a fixed sleep); it is `polling.until` under the studio tests' names.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polling
from barfinex_cli.bus.base import Bus
from barfinex_cli.contracts.envelope import make_event
from barfinex_cli.contracts.types import Payload
from barfinex_cli.kernel.parts import Kernel
from barfinex_cli.provider.service import Provider, ProviderOptions
from barfinex_cli.runtime.settings import load_settings
from ports import free_port as free_port  # test_roles imports it from here

TOKEN = "studio-test-token-0123456789"


@dataclass
class Running:
    """A provider serving on loopback."""

    provider: Provider
    url: str
    bus: Bus
    kernel: Kernel
    stop: asyncio.Event
    task: asyncio.Task[int]

    async def provider_stop(self) -> None:
        """Stop the provider now (its gateway closes; the block may go on)."""
        self.stop.set()
        await asyncio.wait_for(self.task, 30)

    async def publish(self, payload: Payload) -> None:
        """Publish one event on the provider's bus (the gateway streams it on /ws)."""
        await self.bus.publish(make_event(payload, source="test"))


@contextlib.asynccontextmanager
async def running_provider(
    home: Path, namespace: str, *, port: int = 0, days: float = 0.05, **options: Any
) -> AsyncIterator[Running]:
    """Run a replaying provider until the block ends; yield it once its gateway answers."""
    settings = load_settings(home=home, namespace=namespace, bus="memory", token=TOKEN)
    config = ProviderOptions(
        symbols=("BTC/USDT",), timeframes=("1m", "5m"), speed=None, history=30, days=days,
        port=port, exit_at_end=False, health_interval_s=0.2, record=False,
        **options,
    )  # fmt: skip
    stop = asyncio.Event()
    async with Kernel(settings) as kernel:
        provider = await kernel.provider(config)
        task = asyncio.create_task(provider.run(stop))
        ready = asyncio.ensure_future(provider.replay_done.wait())
        await asyncio.wait({ready, task}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            task.result()
        assert provider.gateway_url is not None
        try:
            yield Running(provider, provider.gateway_url, await kernel.bus(), kernel, stop, task)
        finally:
            stop.set()
            await asyncio.wait_for(task, 30)


async def until(
    condition: Callable[[], object],
    timeout: float = 20.0,  # noqa: ASYNC109 - a polling deadline, not a cancellation scope
    step: float = 0.02,
) -> None:
    """Wait until `condition()` is truthy; fail after `timeout` seconds (`polling.until`).

    Kept with the studio tests' own argument names (`timeout=`), which their calls use.
    """
    await polling.until(condition, timeout, step_s=step)
