"""Lock-step replay: the next market moment is played only once the stack has finished the last.

Why a backtest needs it: a paper market order fills at the price the broker holds when the order
arrives. In `bfx up` on a paced replay the roles answer a candle long before the next one comes,
so an order placed on a signal at 10:04 fills on the 10:04 close. A replay at full speed runs
ahead of the roles, so the same order could meet 10:09's price. `LockstepReplay` is the replay
connector with one change: before it yields an item of a later market time, it writes out what
the provider queued and waits until every consumer group on the in-process bus has handled and
acknowledged everything published (`StackQuiet`). Every role reaction to a moment (signal,
decision, verdict, order, protective stop) therefore lands before the market moves on: the
timing a paced `bfx up` gets by having time to spare, at the speed of the CPU.

What is skipped: when the vectorised pre-pass says no strategy fires on a moment and the broker
holds no position and no open order, no role can place an order in answer to that moment, so
the wait is skipped and the candles flow on in batches (the fast path; see docs/backtest.md).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from typing import Any

from barfinex_cli.bus.base import StartFrom, matches
from barfinex_cli.bus.memory import MemoryBus, MemoryConsumer, _Group
from barfinex_cli.contracts.types import Payload
from barfinex_cli.provider.connectors.replay import ReplayConnector
from barfinex_cli.store.market import CandleRow

log = logging.getLogger("bfx.backtest")

QUIET_TIMEOUT_S = 30.0
"""The longest one moment may take to settle before the replay moves on with a warning."""


class BacktestBus(MemoryBus):
    """The in-process bus, remembering its consumers so `StackQuiet` knows who must catch up."""

    def __init__(self, *args: Any, **options: Any) -> None:
        super().__init__(*args, **options)
        self.members: list[MemoryConsumer] = []

    async def consumer(
        self,
        group: str,
        name: str,
        types: Sequence[str] = ("*",),
        *,
        start: StartFrom = "$",
        claim_idle_ms: int = 30_000,
    ) -> MemoryConsumer:
        member = _Member(self, group, name, tuple(types), start, claim_idle_ms)
        member._join()  # join now, so "$" means from this call on (as MemoryBus does)
        self.members.append(member)
        return member


class _Member(MemoryConsumer):
    """A `MemoryConsumer` that remembers which streams it reads.

    `MemoryConsumer` matches every stream's type against its patterns on every fetch; at
    backtest speed that glob matching was the largest single cost of a run (a third of the
    bus time). Streams are only ever added, so the streams joined so far are kept and only new
    ones are matched.
    """

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self._joined: list[tuple[str, Any]] = []
        self._seen = 0

    def _join(self) -> list[tuple[str, Any]]:
        streams = self.bus._streams
        if len(streams) == self._seen and self._initialised:
            return self._joined
        from_end = self.start == "$" and not self._initialised
        for event_type, stream in list(streams.items())[self._seen :]:
            if not matches(event_type, self.types):
                continue
            if stream.groups.get(self.group) is None:
                stream.groups[self.group] = _Group(stream.end if from_end else stream.base)
            self._joined.append((event_type, stream))
        self._seen = len(streams)
        self._initialised = True
        return self._joined


class StackQuiet:
    """Tell when every consumer group on a `BacktestBus` (but the ignored ones) is caught up.

    A role acknowledges an event only after handling it, so a group with nothing undelivered
    and nothing pending has finished everything published so far. A group its consumer has not
    made yet on a stream it reads (the first `order.filled` of a run) counts as behind. `flush`
    writes out what the provider queued (orders the broker answered, candles kept).
    """

    def __init__(
        self,
        bus: BacktestBus,
        flush: Callable[[], Awaitable[None]],
        queued: Callable[[], bool],
        ignore: frozenset[str] = frozenset(),
    ) -> None:
        self.bus = bus
        self.flush = flush
        self.queued = queued
        self.ignore = ignore
        self.waits = 0
        self.timeouts = 0
        self._reads: dict[tuple[str, str], bool] = {}

    def _watched(self, event_type: str) -> list[str]:
        groups = []
        for member in self.bus.members:
            if member.group in self.ignore:
                continue
            key = (member.group, event_type)
            reads = self._reads.get(key)
            if reads is None:
                reads = self._reads[key] = matches(event_type, member.types)
            if reads:
                groups.append(member.group)
        return groups

    def busy(self) -> bool:
        """Tell whether any watched group has something undelivered or unacknowledged."""
        for event_type, stream in self.bus._streams.items():
            end = stream.end
            if end == 0:
                continue
            for name in self._watched(event_type):
                group = stream.groups.get(name)
                if group is None or group.pending or group.next_index < end:
                    return True
        return False

    async def wait(self) -> None:
        """Return once the stack has settled: twice in a row nothing queued and nothing busy."""
        self.waits += 1
        loop = asyncio.get_running_loop()
        deadline = loop.time() + QUIET_TIMEOUT_S
        calm = 0
        while calm < 2:
            if self.queued():
                await self.flush()
            calm = 0 if self.queued() or self.busy() else calm + 1
            if loop.time() > deadline:
                self.timeouts += 1
                log.warning("backtest: the stack did not settle in time; moving on")
                return
            await asyncio.sleep(0)


Barrier = Callable[[int, int | None], Awaitable[None]]
"""Called with the moment just played and the next one (None at the end), before the next."""


class LockstepReplay(ReplayConnector):
    """A replay connector that calls `barrier` before each later market moment it plays."""

    def __init__(self, *args: Any, end_ms: int | None = None, **options: Any) -> None:
        super().__init__(*args, **options)
        self.barrier: Barrier | None = None
        self.end_ms = end_ms
        """Play nothing that happens after this market time (a fold's end); None: to the end."""
        self.moments = 0
        """Distinct market times played so far."""

    def load(self) -> dict[str, list[CandleRow]]:
        """Load the source now (not on the loop) and return each symbol's base candles."""
        if not self._loaded:
            self._load()
        return self._candles

    def live_moments(self) -> set[int]:
        """Return the close times of the candles the replay will play (loaded by `start`)."""
        step = self.tf_ms
        return {
            row.open_ms + step
            for symbol in self.candle_symbols
            for row in self._candles[symbol]
            if row.open_ms >= self.live_start_ms
            and (self.end_ms is None or row.open_ms + step <= self.end_ms)
        }

    async def stream(self) -> AsyncGenerator[Payload, None]:
        last: int | None = None
        inner = super().stream()
        try:
            async for payload in inner:
                at = self._clock_ms
                if self.end_ms is not None and at > self.end_ms:
                    self._clock_ms = last if last is not None else at
                    break
                if at != last:
                    if last is not None and self.barrier is not None:
                        # the replay clock already moved to `at`; while the stack settles the
                        # last moment, history served to it must end there (no look-ahead)
                        self._clock_ms = last
                        await self.barrier(last, at)
                        self._clock_ms = at
                    last = at
                    self.moments += 1
                yield payload
            if last is not None and self.barrier is not None:
                await self.barrier(last, None)  # the last moment settles before the end
        finally:
            await inner.aclose()
