"""Which closed candles a detector evaluates, and whether it has stalled.

The incremental engine evaluates each symbol's candles in time order and ignores one that is not
newer than the last (a redelivery). So a single candle dated far ahead (year 2100) would make it
ignore every real candle after it: a silent freeze. The gate stands in front of the engine:

- a candle dated too far ahead (`market.horizon`: past the wall clock on a live feed, past the
  last evaluated close of its series on a market clock) is refused and reported;
- on a market clock a real jump (a replay resuming after a long hole) is told apart from a bad
  date by what follows: `CONFIRM` candles in a row that continue each other are the new present
  and are evaluated in order; a candle that continues the old present drops the refused ones;
- when candles keep arriving and none is evaluated (`STALL_CANDLES` in a row), the detector is
  stalled, and the service re-warms the symbol on the provider's history before the candle at
  hand, so it never stays stuck.

Pure state and decisions, no IO: the service feeds it and acts on its answers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Generic, Literal, TypeVar

from barfinex_cli.market.horizon import too_far_ahead

T = TypeVar("T")

CONFIRM = 3
"""Refused candles in a row, each continuing the one before, that are taken as a real jump."""

STALL_CANDLES = 3
"""Candles of its series in a row not evaluated after which a detector counts as stalled."""

DEGRADED_TIMEFRAMES = 10
"""How long (in timeframes of clock time) health stays `degraded` after a refused candle."""

Status = Literal["ok", "degraded", "stalled"]


@dataclass(frozen=True, slots=True)
class Refusal:
    """The last candle the gate refused, for `/health`."""

    symbol: str
    open_ms: int
    reason: str
    at_ms: int


@dataclass(slots=True)
class _Held(Generic[T]):
    item: T
    close_ms: int


@dataclass
class CandleGate(Generic[T]):
    """Admit one detector's candles; remember refusals and the run of unevaluated candles."""

    tf_ms: int
    live: bool
    refused: int = 0
    streak: int = 0
    """Candles of the detector's series in a row that were not evaluated."""
    last_refusal: Refusal | None = None
    _held: dict[str, list[_Held[T]]] = field(default_factory=dict)

    def admit(
        self, symbol: str, item: T, open_ms: int, *, last_open: int | None, now_ms: int
    ) -> list[T]:
        """Return what to evaluate now: `[item]`, nothing (refused), or a confirmed jump.

        Args:
            symbol: The candle's symbol.
            item: What the caller evaluates later (the event and its values).
            open_ms: The candle's open time.
            last_open: The open time of the symbol's last evaluated candle, if any.
            now_ms: The detector's clock (the wall clock on a live feed).
        """
        close_ms = open_ms + self.tf_ms
        reference: int | None = now_ms
        if not self.live:
            reference = None if last_open is None else last_open + self.tf_ms
        reason = too_far_ahead(close_ms, reference, self.tf_ms, live=self.live)
        held = self._held.setdefault(symbol, [])
        if reason is None:
            held.clear()  # the old present goes on: what was held was a bad date
            return [item]
        continues = (
            not self.live
            and held
            and too_far_ahead(close_ms, held[-1].close_ms, self.tf_ms, live=False) is None
        )
        if continues:  # it continues the refused ones: perhaps a real jump
            held.append(_Held(item, close_ms))
            if len(held) >= CONFIRM:
                jump = [h.item for h in held]
                held.clear()
                return jump
            self.streak += 1
            return []
        if not self.live:
            held[:] = [_Held(item, close_ms)]
        self.refused += 1
        self.streak += 1
        self.last_refusal = Refusal(symbol, open_ms, reason, now_ms)
        return []

    def evaluated(self) -> None:
        """Record that a candle was evaluated: the detector is moving."""
        self.streak = 0

    def skipped(self) -> None:
        """Record a candle the engine did not evaluate (not newer than its last)."""
        self.streak += 1

    @property
    def stalled(self) -> bool:
        """Tell whether the last `STALL_CANDLES` candles of the series all went unevaluated."""
        return self.streak >= STALL_CANDLES

    def status(self, now_ms: int) -> Status:
        """Return `stalled`, `degraded` (a refusal within `DEGRADED_TIMEFRAMES`), or `ok`."""
        if self.stalled:
            return "stalled"
        refusal = self.last_refusal
        if refusal is not None and now_ms - refusal.at_ms < DEGRADED_TIMEFRAMES * self.tf_ms:
            return "degraded"
        return "ok"
