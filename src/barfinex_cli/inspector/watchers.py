"""The inspector's background loops: heartbeat to the provider, periodic work, the policy file.

Each runs until the inspector's `stop` event is set; none raises out of its loop.

Periodic work that can change orders (reconcile, KPIs and the account check behind them, the
retry of deferred closes) ticks on the kernel clock. Live that is wall time, in loops (`every`).
On a market clock (a replay, a backtest) it is market time, and it runs inside the consume
loop (`MarketTicks`): after the events of a fetch are handled and before they are
acknowledged, so a lock-step replay holds the next market moment until it is done. A wall-time
timer there would fire at a market moment that depends on how fast the machine plays, and a
reconcile or a new trading day's start equity read then could change the orders of the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from barfinex_cli.errors import BfxError, ServiceUnreachable
from barfinex_cli.inspector.governor import Governor
from barfinex_cli.inspector.policies import PolicyWatcher
from barfinex_cli.runtime.clock import Clock
from barfinex_cli.runtime.registration import Registration

if TYPE_CHECKING:
    from barfinex_cli.inspector.service import Inspector

log = logging.getLogger("bfx.inspector")


async def watch_provider(ins: Inspector, stop: asyncio.Event) -> None:
    """Register with the provider and heartbeat (or poll its health); track whether it answers.

    While an order sent earlier got no answer, each beat first tries to settle it.
    """
    registration = None
    if ins.config.join_registry:
        registration = Registration(
            ins.client,
            name=ins.instance,
            role="inspector",
            url=ins.api_url,
            interval_s=ins.config.heartbeat_s,
        )
    while not stop.is_set():
        if ins.executor.unsettled and ins.entries_open:
            # before registering again: a replay held until its apps register (lock-step after
            # a provider restart) resumes only once the order is placed, at the same moment
            await _settle(ins)
        if registration is not None:
            ok = await registration.heartbeat()
        else:
            try:
                await ins.client.health()
                ok = True
            except BfxError:
                ok = False
        ins.provider_down = not ok
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), ins.config.heartbeat_s)


async def _settle(ins: Inspector) -> None:
    """Settle orders sent with no answer now that the provider answers (see `Reconciler.settle`).

    An entry sent while the provider restarted would otherwise wait for the next decision,
    and a protective order sent then would leave its position unguarded until one came.
    """
    if ins.lock.locked():
        return  # a decision is being judged: it settles them first, and the beat must not wait
    try:
        async with ins.lock:
            await ins.reconciler.settle()
    except ServiceUnreachable:
        return  # still down: the heartbeat says so; tried again on the next beat
    except BfxError as exc:
        log.warning("cannot settle in-flight orders yet", extra={"error": str(exc)})


async def every(stop: asyncio.Event, seconds: float, work: Callable[[], Awaitable[Any]]) -> None:
    """Run `work` every `seconds` until `stop`; a failure is logged, never fatal."""
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), seconds)
        if stop.is_set():
            return
        try:
            await work()
        except BfxError as exc:
            log.warning("periodic work failed", extra={"error": str(exc)})


MARKET_FLOORS_S = {"kpi": 900.0, "reconcile": 86_400.0}
"""On a market clock, KPIs run at most every 15 market minutes and reconcile once a market day:
at one candle a minute a 30 s interval would reconcile (three gateway calls) on every candle,
and a backtest of a million candles would spend most of its time reconciling a paper account
that cannot diverge from the inspector's store on its own."""


class MarketTicks:
    """Periodic work on a market clock, run by the consume loop when market time reached it.

    Each job is (interval in seconds, work). The first tick of each is one interval after the
    first call; a job whose time came while the market moved on by several intervals runs once.
    """

    def __init__(
        self, clock: Clock, jobs: Sequence[tuple[float, Callable[[], Awaitable[Any]]]]
    ) -> None:
        self.clock = clock
        self.jobs = list(jobs)
        self.due: list[int | None] = [None] * len(self.jobs)
        self.ticks = 0

    async def run_due(self) -> None:
        """Run every job whose time has come on the clock; a failure is logged, never fatal."""
        now = self.clock.now_ms()
        for i, (seconds, work) in enumerate(self.jobs):
            due = self.due[i]
            if due is None:
                self.due[i] = now + int(seconds * 1000)
                continue
            if now < due:
                continue
            self.due[i] = now + int(seconds * 1000)
            self.ticks += 1
            try:
                await work()
            except BfxError as exc:
                log.warning("periodic work failed", extra={"error": str(exc)})


async def watch_policies(ins: Inspector, stop: asyncio.Event) -> None:
    """Poll the policy file; apply a valid edit, alert on an invalid one (old policies kept)."""
    assert ins.policy_path is not None
    watcher = PolicyWatcher(ins.policy_path, ins.governor.policies)
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), ins.config.policy_poll_s)
        reload = watcher.poll()
        if reload is None:
            continue
        if reload.policies is None:
            await ins.alerts.raise_(
                "error",
                reload.alert or "policy file not reloaded, old policies kept",
                subject=str(ins.policy_path),
            )
        else:
            ins.governor = Governor(reload.policies)
            await ins.alerts.raise_("info", "policies reloaded", subject=str(ins.policy_path))
            await rearm(ins)


async def rearm(ins: Inspector) -> None:
    """Re-arm runtime positions whose guards moved between venue and emulation (a reload)."""
    if not ins.entries_open:
        return  # start-up re-arms once it runs
    async with ins.lock:
        for position in ins.store.positions():
            if not position.runtime:
                continue
            try:
                if ins.protector.missing(position):
                    armed, sent = await ins.protector.rearm(position, ins.now_ms())
                    await ins.guard.announce_placed(armed, sent)
            except BfxError as exc:
                log.warning("re-arm after a reload failed", extra={"error": str(exc)})
            await ins.guard.announce_emulated(ins.store.position(position.symbol) or position)
