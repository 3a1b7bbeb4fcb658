"""Several roles in one process, on one bus and one clock: the single-process stack.

This is the path `bfx up --single-process` and `bfx backtest` take: the provider replays, the
detectors consume, the recorder writes, all in one event loop. The detectors talk to the
provider's gateway through an in-process transport (no socket), and the provider holds its live
stream until every detector has subscribed and warmed up, so each sees the whole replay. On a
market clock nothing waits on wall time: a replay at full speed runs as fast as the CPU allows.

Stopping is ordered: after the replay ends (or `stop`), the detectors finish the candles already
published, then they stop, then the provider, and the recorder last, once it has written every
event the others published.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from barfinex_cli.kernel.parts import Kernel
from barfinex_cli.runtime.config import (
    AdvisorConfig,
    DetectorConfig,
    InspectorConfig,
    ProviderConfig,
)

if TYPE_CHECKING:
    from barfinex_cli.advisor.service import Advisor
    from barfinex_cli.detector.service import Detector
    from barfinex_cli.inspector.service import Inspector
    from barfinex_cli.provider.connectors.base import MarketConnector
    from barfinex_cli.provider.service import Provider
    from barfinex_cli.runtime.recording import Recording


@dataclass
class StackRun:
    """What a single-process run did."""

    provider: Provider
    detectors: list[Detector] = field(default_factory=list)
    advisors: list[Advisor] = field(default_factory=list)
    inspectors: list[Inspector] = field(default_factory=list)
    recording: Recording | None = None
    events: int = 0
    """Events published by every role together."""


async def _until(condition: Any, stop: asyncio.Event, poll_s: float = 0.02) -> None:
    """Wait until `condition()` holds or `stop` is set."""
    while not condition() and not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), poll_s)


async def _started(ready: asyncio.Event, task: asyncio.Task[Any], what: str) -> None:
    """Wait until a role is ready; if its task ends first, raise what ended it."""
    waiter = asyncio.ensure_future(ready.wait())
    await asyncio.wait({waiter, task}, return_when=asyncio.FIRST_COMPLETED)
    waiter.cancel()
    if not ready.is_set():
        task.result()  # raises the role's error
        raise RuntimeError(f"{what} stopped before it was ready")


async def run_in_process(
    kernel: Kernel,
    provider_config: ProviderConfig,
    detector_configs: Sequence[DetectorConfig],
    stop: asyncio.Event,
    *,
    record: bool = True,
    advisor_configs: Sequence[AdvisorConfig] = (),
    inspector_configs: Sequence[InspectorConfig] = (),
    connector: MarketConnector | None = None,
    on_ready: Callable[[StackRun], Awaitable[None]] | None = None,
) -> StackRun:
    """Run a provider, detectors, advisors and the recorder in this process until the replay ends.

    Advisors start after the detectors, inspectors after the advisors; each stops once it has
    handled everything upstream published (inspectors first, then advisors, then detectors).

    A live provider (or one that does not exit at the end) runs until `stop` is set.
    `connector` replaces the replay the provider config names; `on_ready` runs once every role
    is ready, before the replay starts (a backtest hooks its collector and broker in there).
    """
    import httpx

    exit_at_end = provider_config.exit_at_end
    config = provider_config.model_copy(update={"record": False, "exit_at_end": False})
    provider = await kernel.provider(config, connector=connector)
    provider.gate = asyncio.Event()
    run = StackRun(provider)
    stops: list[tuple[asyncio.Event, asyncio.Task[Any]]] = []

    def start(work: Any, name: str) -> tuple[asyncio.Event, asyncio.Task[Any]]:
        role_stop = asyncio.Event()
        task = asyncio.create_task(work(role_stop), name=name)
        stops.append((role_stop, task))
        return role_stop, task

    try:
        if record:
            run.recording = await kernel.recording()
            _, recorder_task = start(run.recording.run, "recorder")
            await _started(run.recording.ready, recorder_task, "the recorder")
        _, provider_task = start(provider.run, "provider")
        await _started(provider.ready, provider_task, "the provider")
        assert provider.app is not None
        client = kernel.client(
            provider.gateway_url or "http://provider.in-process",
            transport=httpx.ASGITransport(app=provider.app),
        )
        for i, detector_config in enumerate(detector_configs):
            detector = await kernel.detector(detector_config, client=client)
            run.detectors.append(detector)
            _, task = start(detector.run, f"detector-{i}")
            await _started(detector.ready, task, f"detector {detector.instance}")
        for i, advisor_config in enumerate(advisor_configs):
            advisor = await kernel.advisor(advisor_config, client=client)
            run.advisors.append(advisor)
            _, task = start(advisor.run, f"advisor-{i}")
            await _started(advisor.ready, task, f"advisor {advisor.instance}")
        for i, inspector_config in enumerate(inspector_configs):
            inspector = await kernel.inspector(inspector_config, client=client)
            run.inspectors.append(inspector)
            _, task = start(inspector.run, f"inspector-{i}")
            await _started(inspector.ready, task, "the inspector")
        if on_ready is not None:
            await on_ready(run)
        provider.gate.set()
        ended = asyncio.ensure_future(provider.replay_done.wait())
        stopped = asyncio.ensure_future(stop.wait())
        await asyncio.wait({ended, stopped, provider_task}, return_when=asyncio.FIRST_COMPLETED)
        ended.cancel()
        if not exit_at_end:
            await asyncio.wait({stopped, provider_task}, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        if provider_task.done():
            provider_task.result()
        rt = provider.runtime
        assert rt is not None
        # candles a Redis restarted empty lost before a detector read them never come
        await _until(
            lambda: (
                all(d.candles_seen >= rt.candles for d in run.detectors)
                or bool(rt.bus.lost_in_outage)
            ),
            stop,
        )
        signals = sum(d.signals for d in run.detectors)
        await _until(lambda: all(a.signals_seen >= signals for a in run.advisors), stop)
        decisions = sum(a.decisions for a in run.advisors)
        await _until(lambda: all(i.verdicts >= decisions for i in run.inspectors), stop)
        await _stop_in_order(stops[1 if record else 0 :])
        run.events = rt.events + sum(d.published for d in run.detectors)
        run.events += sum(a.published for a in run.advisors)
        run.events += sum(i.published for i in run.inspectors)
        if run.recording is not None:
            if rt.bus.lost_in_outage:  # what Redis lost never comes: wait for what is left
                await run.recording.settle()
            else:
                await run.recording.drain(run.events)
        await _stop_in_order(stops)
        return run
    finally:
        for role_stop, task in stops:
            role_stop.set()
            if not task.done():
                task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*(t for _, t in stops), return_exceptions=True)


async def _stop_in_order(stops: Sequence[tuple[asyncio.Event, asyncio.Task[Any]]]) -> None:
    """Stop consumers before producers: the last started stops first."""
    for role_stop, task in reversed(stops):
        role_stop.set()
        if not task.done():
            result: Awaitable[Any] = task
            await result
