"""Protective management: arming the guards of a filled entry, firing, trailing, max hold.

`Protector` (in `protective`) sends the orders; this part decides when, and says so on the bus:
`inspector.protective.placed` for each guard placed, `...triggered` when one fires (its sibling
cancelled, one-cancels-other), `...moved` when the trailing stop or break-even moves the stop on
a closed candle. A position held past `hold.max_hold_minutes` is closed.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from barfinex_cli.contracts.inspector import (
    ProtectiveMoved,
    ProtectivePlaced,
    ProtectiveTriggered,
)
from barfinex_cli.contracts.market import CandleClosed
from barfinex_cli.contracts.times import to_ms
from barfinex_cli.errors import BfxError
from barfinex_cli.inspector.protective import trail
from barfinex_cli.market.candles import timeframe_ms
from barfinex_cli.store.inspector import OrderRecord, PositionRecord

if TYPE_CHECKING:
    from barfinex_cli.inspector.service import Inspector

log = logging.getLogger("bfx.inspector")


class Guard:
    """Arm, announce, fire and trail the protective orders of runtime positions."""

    def __init__(self, inspector: Inspector) -> None:
        self.ins = inspector

    async def entry_filled(self, order: OrderRecord) -> None:
        """Open (or grow) the runtime position of a filled entry and arm its protection."""
        row = self.ins.store.decision(order.decision_id)
        side: Any = "long" if order.side == "buy" else "short"
        held = self.ins.store.position(order.symbol)
        if held is not None and held.status == "open" and held.decision_id == order.decision_id:
            position = replace(held, size=max(held.size, order.filled))
        else:
            remote = self.ins.remote_positions.get(order.symbol)
            position = PositionRecord(
                symbol=order.symbol,
                side=side,
                size=order.filled,
                entry=order.average_price or order.intended_price or Decimal(0),
                opened_ms=self.ins.now_ms(),
                runtime=True,
                decision_id=order.decision_id,
                strategy=str(row.get("strategy") or "unknown"),
                stop=_dec(row.get("stop")),
                take_profit=_dec(row.get("take_profit")),
                realised_at_open=remote.realised_pnl if remote is not None else Decimal(0),
            )
        self.ins.store.save_position(position)
        if position.stop_order is None and position.tp_order is None:
            armed, sent = await self.ins.protector.arm(position, self.ins.now_ms())
            await self.announce_placed(armed, sent)
        elif self.ins.protector.missing(position):
            armed, sent = await self.ins.protector.rearm(position, self.ins.now_ms())
            await self.announce_placed(armed, sent)

    async def closed_at_provider(self, symbol: str) -> bool:
        """Tell whether the provider holds no position in `symbol` (False if it cannot say)."""
        try:
            held = await self.ins.client.positions(self.ins.config.account)
        except BfxError:
            return False
        return not any(p.symbol == symbol and p.size > 0 for p in held)

    async def announce_placed(
        self, position: PositionRecord, sent: list[tuple[Any, OrderRecord]]
    ) -> None:
        for kind, order in sent:
            self.ins.m_orders.labels(kind).inc()
            if order.status == "rejected":
                if await self.closed_at_provider(position.symbol):
                    # A stop placed beyond the price filled at once and closed the position:
                    # its sibling has nothing left to guard. That is protection, not a failure.
                    log.info(
                        "protective order refused: the position is already closed",
                        extra={"symbol": position.symbol, "kind": str(kind)},
                    )
                    continue
                await self.ins.alerts.raise_(
                    "error",
                    f"{kind} for {position.symbol} refused by the provider: the "
                    "position is not protected",
                    subject=position.symbol,
                )
                continue
            price = order.stop_price or order.price
            assert price is not None
            await self.ins.publish(
                ProtectivePlaced(
                    order_id=order.client_order_id,
                    account=self.ins.config.account,
                    symbol=order.symbol,
                    kind=kind,
                    price=price,
                    amount=order.amount,
                    decision_id=order.decision_id,
                )
            )

    async def protective_fired(self, order: OrderRecord) -> None:
        """A stop or take-profit filled: say so and cancel its sibling (OCO)."""
        kind: Any = order.role
        trigger = order.stop_price or order.price
        assert trigger is not None
        await self.ins.publish(
            ProtectiveTriggered(
                order_id=order.client_order_id,
                symbol=order.symbol,
                kind=kind,
                trigger_price=trigger,
                fill_price=order.average_price,
                amount=order.filled,
            )
        )
        position = self.ins.store.position(order.symbol)
        if position is None:
            return
        sibling = position.tp_order if order.role == "stop_loss" else position.stop_order
        record = self.ins.store.order(sibling) if sibling else None
        if record is not None and record.live:
            await self.ins.executor.cancel(record.client_order_id, self.ins.now_ms())
        if order.role == "stop_loss":
            self.ins.store.update_counters(last_loss_ms=self.ins.now_ms())

    async def on_candle(self, payload: CandleClosed) -> None:
        close_ms = to_ms(payload.open_time) + timeframe_ms(payload.timeframe)
        self.ins.clock.advance_to(close_ms)
        price = Decimal(str(payload.close))
        self.ins.marks[payload.symbol] = price
        async with self.ins.lock:
            position = self.ins.store.position(payload.symbol)
            if position is None or position.status != "open" or not position.runtime:
                return
            best = position.best_price or position.entry
            best = max(best, price) if position.side == "long" else min(best, price)
            initial = _dec(self.ins.store.decision(position.decision_id).get("stop"))
            move = trail(
                position,
                price,
                trailing_pct=self.ins.config.trailing_stop_pct,
                breakeven_at_r=self.ins.config.breakeven_at_r,
                initial_stop=initial,
            )
            position = replace(position, best_price=best)
            self.ins.store.save_position(position)
            if move is not None:
                _, placed = await self.ins.protector.move_stop(position, move, self.ins.now_ms())
                if placed is not None:
                    await self.ins.publish(
                        ProtectiveMoved(
                            order_id=placed.client_order_id,
                            symbol=position.symbol,
                            kind="stop_loss",
                            previous_price=move.previous,
                            price=move.price,
                            reason=move.reason,
                        )
                    )
            expired = self.ins.governor.expired(
                self.ins.portfolio().positions, self.ins.clock.now()
            )
            for held in expired:
                if held.symbol == position.symbol:
                    await self.ins.closer.close_position(position, "max hold time")


def _dec(value: Any) -> Decimal | None:
    if value is None or value == "":
        return None
    return Decimal(str(value))
