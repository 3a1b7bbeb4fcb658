"""Closing runtime positions: CLOSE_ALL, a flip, the max hold time.

A close is a reduce-only market order for the whole position under the id `i-<decision>-x<gen>`,
so it can never be sent twice for the same position generation; what still guards the position
is cancelled once the provider reports it flat.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from barfinex_cli.inspector.execution import client_order_id
from barfinex_cli.store.inspector import OrderRecord, PositionRecord

if TYPE_CHECKING:
    from barfinex_cli.inspector.service import Inspector

log = logging.getLogger("bfx.inspector")


class Closer:
    """Send the reduce-only market orders that close runtime positions."""

    def __init__(self, inspector: Inspector) -> None:
        self.ins = inspector

    async def close_all(self, reason: str) -> list[str]:
        """Flatten every runtime position now; return the symbols closed."""
        closed = []
        for position in self.ins.store.positions():
            if position.runtime:
                await self.close_position(position, reason)
                closed.append(position.symbol)
        await self.ins.alerts.raise_(
            "critical",
            f"close all: {len(closed)} positions flattened ({reason})",
            policy="close_all",
        )
        return closed

    async def close_position(self, position: PositionRecord, reason: str) -> None:
        """Send a reduce-only market order for the whole position (protectives go after)."""
        ref = position.decision_id or f"legacy-{position.symbol.replace('/', '')}"
        order = OrderRecord(
            client_order_id=client_order_id(ref, "close", position.generation),
            decision_id=position.decision_id,
            role="close",
            symbol=position.symbol,
            side="sell" if position.side == "long" else "buy",
            type="market",
            amount=position.size,
            reduce_only=True,
            intended_price=self.ins.marks.get(position.symbol, position.entry),
        )
        log.info("closing position", extra={"symbol": position.symbol, "reason": reason})
        self.ins.m_orders.labels("close").inc()
        placed = await self.ins.executor.submit(order, self.ins.now_ms())
        if placed.filled > 0:
            await self.ins.events.order_changed(placed, None)
