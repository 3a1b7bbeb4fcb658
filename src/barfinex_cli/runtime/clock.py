"""The clock every role asks for the time: wall time live, market time in a replay or backtest.

Roles never call `datetime.now()` for anything that matters to logic (event times, cooldowns,
throttles, order times); they ask the clock the kernel gave them. `LiveClock` is wall time.
`SimClock` is driven by the data: the feed advances it to each replayed candle's close time, so
a replay of 2024 candles stamps its events in 2024 and judges cooldowns in market time, and a
backtest runs with no wall-clock sleeps at all (waits end when the market reaches them).

Timers that only keep a process alive (registry heartbeats, log throttling) stay on wall time.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import datetime
from typing import Literal, Protocol

from barfinex_cli.contracts.times import from_ms, to_ms

ClockKind = Literal["wall", "market"]


class Clock(Protocol):
    """What a role asks for the time."""

    kind: ClockKind

    def now(self) -> datetime:
        """Return the current time (aware, UTC)."""
        ...

    def now_ms(self) -> int:
        """Return the current time as epoch milliseconds."""
        ...

    def advance_to(self, ms: int) -> None:
        """Tell the clock the data reached `ms` (a market clock moves; wall time ignores it)."""
        ...

    async def wait(self, stop: asyncio.Event, seconds: float) -> bool:
        """Wait `seconds` of this clock's time or until `stop`; return True if stopped."""
        ...


class LiveClock:
    """Wall time."""

    kind: ClockKind = "wall"

    def now(self) -> datetime:
        return from_ms(self.now_ms())

    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000

    def advance_to(self, ms: int) -> None:
        """Wall time moves by itself; the data does not drive it."""

    async def wait(self, stop: asyncio.Event, seconds: float) -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), seconds)
        return stop.is_set()


class SimClock:
    """Market time: stands still until the feed advances it, never goes back.

    `wait` returns when the market time has moved `seconds` past the moment it was called, so
    periodic work in a role (health, metrics, integrity scans) ticks with the replay, as fast or
    as slow as the data comes.
    """

    kind: ClockKind = "market"

    def __init__(self, start_ms: int = 0) -> None:
        self._ms = start_ms
        self._moved: asyncio.Event | None = None

    @classmethod
    def at(cls, moment: datetime) -> SimClock:
        """Return a clock standing at `moment`."""
        return cls(to_ms(moment))

    def now(self) -> datetime:
        return from_ms(self._ms)

    def now_ms(self) -> int:
        return self._ms

    def advance_to(self, ms: int) -> None:
        if ms <= self._ms:
            return
        self._ms = ms
        if self._moved is not None:
            self._moved.set()
            self._moved = None

    async def wait(self, stop: asyncio.Event, seconds: float) -> bool:
        deadline = self._ms + int(seconds * 1000)
        stopped = asyncio.ensure_future(stop.wait())
        try:
            while self._ms < deadline and not stop.is_set():
                if self._moved is None:
                    self._moved = asyncio.Event()
                moved = asyncio.ensure_future(self._moved.wait())
                await asyncio.wait({moved, stopped}, return_when=asyncio.FIRST_COMPLETED)
                moved.cancel()
        finally:
            stopped.cancel()
        return stop.is_set()


def clock_for(kind: ClockKind, start_ms: int = 0) -> Clock:
    """Return a fresh clock of `kind`."""
    return LiveClock() if kind == "wall" else SimClock(start_ms)
