"""Closing runtime positions, deferred while the book is too wide or too thin to close into.

Every close the inspector sends itself goes through `close_position`: an emulated stop or
take-profit that fired, the max hold time, CLOSE_ALL (a policy's or `bfx inspector close-all`).
It is a market order for the whole position under the id `i-<decision>-x<gen>`, reduce-only
where the venue takes reduce-only orders, so it can never be sent twice for the same position
generation; what still guards the position is cancelled once the provider reports it flat.

Deferral: while the provider's last book of the symbol (or its last ticker, `quotes`) says the
spread is wider than `execution.max_close_spread_bps` or the top level is worth less than
`execution.min_close_depth`, the close waits. It is retried on every candle and ticker of the
symbol and every `retry_s`, and goes as soon as the book allows — or, at the latest,
`execution.max_close_defer_minutes` (on the kernel's clock) after it was first held, anyway,
with a warning alert (a position must never stay open because the market stays thin). A
deferral raises an info alert when it starts. The flip's close is never deferred: the governor
judged the whole flip as an entry, spread included. Deferrals live in memory: after a restart
the max hold and an emulated guard fire again on the next price, and a drawdown CLOSE_ALL is
found again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Literal

from barfinex_cli.inspector.execution import client_order_id
from barfinex_cli.inspector.policies.config import ExecutionLimits
from barfinex_cli.inspector.quotes import close_wait, top_of_book
from barfinex_cli.store.inspector import OrderRecord, PositionRecord

if TYPE_CHECKING:
    from barfinex_cli.inspector.service import Inspector

log = logging.getLogger("bfx.inspector")

Outcome = Literal["sent", "deferred", "waiting"]
"""What `close_position` did: sent the order, started a deferral, or kept one waiting."""


@dataclass(slots=True)
class Deferral:
    """A close held back: why it is closing, since when (kernel ms), why it waits now."""

    reason: str
    since_ms: int
    wait: str


class Closer:
    """Send the market orders that close runtime positions, or hold them while the book is bad."""

    def __init__(self, inspector: Inspector) -> None:
        self.ins = inspector
        self.deferred: dict[str, Deferral] = {}

    def close_id(self, position: PositionRecord) -> str:
        """Return the one client order id a close of `position` (this generation) is sent under."""
        ref = position.decision_id or f"legacy-{position.symbol.replace('/', '')}"
        return client_order_id(ref, "close", position.generation)

    def closing(self, position: PositionRecord) -> bool:
        """Tell whether a close of `position` is deferred, in flight, open or done already."""
        if position.symbol in self.deferred:
            return True
        sent = self.ins.store.order(self.close_id(position))
        return sent is not None and sent.status not in ("rejected", "cancelled")

    async def close_all(self, reason: str) -> list[str]:
        """Flatten every runtime position now (or as soon as the book allows); return them."""
        outcomes: dict[str, Outcome] = {}
        for position in self.ins.store.positions():
            if position.runtime:
                outcomes[position.symbol] = await self.close_position(position, reason)
        if outcomes and all(o == "waiting" for o in outcomes.values()):
            return list(outcomes)  # asked again while every close still waits: nothing new
        waiting = [s for s, o in outcomes.items() if o != "sent"]
        held = f"; {len(waiting)} deferred while the book is thin: {', '.join(waiting)}"
        await self.ins.alerts.raise_(
            "critical",
            f"close all: {len(outcomes)} positions flattened ({reason}){held if waiting else ''}",
            policy="close_all",
        )
        return list(outcomes)

    async def close_position(
        self,
        position: PositionRecord,
        reason: str,
        *,
        defer: bool = True,
        intended: Decimal | None = None,
    ) -> Outcome:
        """Send a market order for the whole position, unless the book says wait (see module)."""
        symbol, now = position.symbol, self.ins.now_ms()
        side = "sell" if position.side == "long" else "buy"
        held = self.deferred.get(symbol)
        if defer:
            limits = self.ins.governor.policies.limits(symbol, position.strategy).execution
            wait = await self._wait(symbol, side, limits)
            longest_ms = int(limits.max_close_defer_minutes * 60_000)
            if wait is not None and held is None:
                self.deferred[symbol] = Deferral(reason, now, wait)
                minutes = f"{limits.max_close_defer_minutes:g}"
                await self.ins.alerts.raise_(
                    "info",
                    f"close of {symbol} ({reason}) deferred: {wait}; sent when the book "
                    f"allows, or anyway in {minutes} min",
                    subject=symbol,
                )
                return "deferred"
            if wait is not None and held is not None and now - held.since_ms < longest_ms:
                held.wait = wait
                return "waiting"
            if wait is not None and held is not None:
                waited = (now - held.since_ms) / 60_000
                await self.ins.alerts.raise_(
                    "warning",
                    f"close of {symbol} ({held.reason}) sent after waiting {waited:.1f} min, "
                    f"the longest allowed, although {wait}",
                    subject=symbol,
                )
        if held is not None:
            reason = held.reason
            self.deferred.pop(symbol, None)
        await self._send(position, side, reason, intended)
        return "sent"

    async def retry(self, symbol: str | None = None) -> None:
        """Try the deferred closes again (of `symbol`, or all); the caller holds the lock."""
        for name in [s for s in self.deferred if symbol in (None, s)]:
            position = self.ins.store.position(name)
            if position is None or position.status != "open" or not position.runtime:
                self.deferred.pop(name, None)  # closed meanwhile (a venue stop, by hand)
                continue
            await self.close_position(position, self.deferred[name].reason)

    async def retry_tick(self) -> None:
        """Retry every deferred close now (the periodic part, on the kernel's clock)."""
        if self.deferred and self.ins.entries_open:
            async with self.ins.lock:
                await self.retry()

    async def _wait(self, symbol: str, side: str, limits: ExecutionLimits) -> str | None:
        if limits.max_close_spread_bps is None and limits.min_close_depth is None:
            return None
        quote = await top_of_book(self.ins.client, self.ins.quotes, symbol)
        return close_wait(quote, side, limits)

    async def _send(
        self, position: PositionRecord, side: str, reason: str, intended: Decimal | None
    ) -> None:
        venue = self.ins.venue
        order = OrderRecord(
            client_order_id=self.close_id(position),
            decision_id=position.decision_id,
            role="close",
            symbol=position.symbol,
            side="sell" if side == "sell" else "buy",
            type="market",
            amount=position.size,
            reduce_only=venue is None or venue.reduce_only,
            intended_price=intended or self.ins.marks.get(position.symbol, position.entry),
        )
        log.info("closing position", extra={"symbol": position.symbol, "reason": reason})
        self.ins.m_orders.labels("close").inc()
        placed = await self.ins.executor.submit(order, self.ins.now_ms())
        if placed.filled > 0:
            await self.ins.events.order_changed(placed, None)
