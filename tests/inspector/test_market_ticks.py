"""The inspector's periodic work on a market clock ticks with market time, not with wall time.

In a replay, reconcile, KPIs and the retry of deferred closes run from the consume loop when
market time has reached them, so a run's orders never depend on how long the run took.
"""

from __future__ import annotations

import asyncio

from barfinex_cli.errors import ServiceUnreachable
from barfinex_cli.inspector.watchers import MarketTicks
from barfinex_cli.runtime.clock import SimClock

MINUTE_MS = 60_000


async def test_jobs_run_when_market_time_reaches_them_however_much_wall_time_passed() -> None:
    clock = SimClock(0)
    ran: list[tuple[str, int]] = []

    async def reconcile() -> None:
        ran.append(("reconcile", clock.now_ms()))

    async def retry() -> None:
        ran.append(("retry", clock.now_ms()))

    ticks = MarketTicks(clock, [(900.0, reconcile), (60.0, retry)])
    await ticks.run_due()  # the first call sets each job's first time
    await asyncio.sleep(0.05)  # wall time passes; market time does not
    await ticks.run_due()
    assert ran == []
    for minute in range(1, 31):
        clock.advance_to(minute * MINUTE_MS)
        await ticks.run_due()
    assert [t for name, t in ran if name == "reconcile"] == [15 * MINUTE_MS, 30 * MINUTE_MS]
    assert [t for name, t in ran if name == "retry"] == [m * MINUTE_MS for m in range(1, 31)]


async def test_a_job_the_market_jumped_over_runs_once_and_a_failure_is_not_fatal() -> None:
    clock = SimClock(0)
    calls = 0

    async def flaky() -> None:
        nonlocal calls
        calls += 1
        raise ServiceUnreachable("provider down")

    ticks = MarketTicks(clock, [(60.0, flaky)])
    await ticks.run_due()
    clock.advance_to(10 * MINUTE_MS)  # ten intervals at once (a backtest's batch)
    await ticks.run_due()
    await ticks.run_due()
    assert calls == 1 and ticks.ticks == 1
    clock.advance_to(11 * MINUTE_MS)
    await ticks.run_due()
    assert calls == 2
