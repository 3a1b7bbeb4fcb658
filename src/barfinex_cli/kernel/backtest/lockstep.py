"""Lock-step replay: the next market moment is played only once the stack has finished the last.

Why a backtest needs it: a paper market order fills at the price the broker holds when the order
arrives. In `bfx up` on a paced replay the roles answer a candle long before the next one comes,
so an order placed on a signal at 10:04 fills on the 10:04 close. A replay at full speed runs
ahead of the roles, so the same order could meet 10:09's price. The replay connector takes a
`barrier` it calls before each later market moment; the backtest's barrier writes out what the
provider queued and waits until every consumer group on the in-process bus has handled and
acknowledged everything published (`StackQuiet`, the in-process face of `bus.settle.Settle`,
which `bfx up` uses on Redis). Every role reaction to a moment (signal, decision, verdict,
order, protective stop) therefore lands before the market moves on: the timing a paced
`bfx up` gets by having time to spare, at the speed of the CPU.

What is skipped: when the vectorised pre-pass says no strategy fires on a moment and the broker
holds no position and no open order, no role can place an order in answer to that moment, so
the wait is skipped and the candles flow on in batches (the fast path; see docs/backtest.md).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from barfinex_cli.bus.base import StartFrom, matches
from barfinex_cli.bus.memory import MemoryBus, MemoryConsumer, _Group
from barfinex_cli.bus.settle import SETTLE_TIMEOUT_S, Settle
from barfinex_cli.provider.connectors.replay import Barrier, ReplayConnector
from barfinex_cli.store.market import CandleRow

log = logging.getLogger("bfx.backtest")

QUIET_TIMEOUT_S = SETTLE_TIMEOUT_S
"""The longest one moment may take to settle before the replay moves on with a warning."""

__all__ = ["BacktestBus", "Barrier", "LockstepReplay", "StackQuiet"]


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
        self._register(group, member.types)
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


class StackQuiet(Settle):
    """`Settle` on a `BacktestBus`: no pause between asks (each ask is a walk over memory)."""

    def __init__(
        self,
        bus: BacktestBus,
        flush: Callable[[], Awaitable[None]],
        queued: Callable[[], bool],
        ignore: frozenset[str] = frozenset(),
    ) -> None:
        super().__init__(bus, flush, queued, ignore, timeout_s=QUIET_TIMEOUT_S, poll_s=0.0)


class LockstepReplay(ReplayConnector):
    """The replay connector as a backtest uses it: loaded up front, its moments known."""

    def __init__(self, *args: Any, end_ms: int | None = None, **options: Any) -> None:
        super().__init__(*args, end_ms=end_ms, **options)

    @property
    def end_ms(self) -> int | None:
        """Play nothing that happens after this market time (a fold's end); None: to the end."""
        return self.config.end_ms

    def load(self) -> dict[str, list[CandleRow]]:
        """Load the source now (not on the loop) and return each symbol's base candles."""
        if not self._loaded:
            self._load()
        return self._candles

    def live_moments(self) -> set[int]:
        """Return the close times of the candles the replay will play (loaded by `start`)."""
        step = self.tf_ms
        end = self.end_ms
        return {
            row.open_ms + step
            for symbol in self.candle_symbols
            for row in self._candles[symbol]
            if row.open_ms >= self.live_start_ms and (end is None or row.open_ms + step <= end)
        }
