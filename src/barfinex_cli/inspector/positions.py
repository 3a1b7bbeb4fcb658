"""The inspector's one position per symbol, moved by its own orders' fills (see `netting`).

Every newly filled amount of an order of ours comes here once (`filled`, from the order's
running totals, so a fill read twice — the placing call's answer and then its event — counts
once). An entry opens the position, adds to it (the guards move to the next generation for the
whole size, the tighter stop and the newer take-profit), or, on the other side, reduces, closes
or flips it; a stop, a take-profit or a close reduces it. A position that reaches zero is closed
here: the trade is counted with the P&L its exits realised and every guard of the symbol still
live is cancelled. The provider is then asked whether it holds nothing of the symbol either
(`reconciling.verify_flat`): a remainder the store believes closed is a divergence at once.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from barfinex_cli.inspector import netting
from barfinex_cli.store.inspector import OrderRecord, PositionRecord

if TYPE_CHECKING:
    from barfinex_cli.inspector.service import Inspector

log = logging.getLogger("bfx.inspector")


class Positions:
    """Net the inspector's fills into its store's positions and keep their guards whole."""

    def __init__(self, inspector: Inspector) -> None:
        self.ins = inspector

    async def filled(self, order: OrderRecord, before: OrderRecord | None) -> None:
        """Net what `order` filled since `before` into the position of its symbol."""
        was = before.filled if before is not None else Decimal(0)
        amount = order.filled - was
        if amount <= 0:
            return
        fallback = order.intended_price or order.price or order.stop_price or Decimal(0)
        price = netting.fill_price(
            order.filled,
            order.average_price,
            was,
            before.average_price if before is not None else None,
            fallback,
        )
        if order.role == "entry":
            await self.entry(order, amount, price)
        else:
            await self.exit(order, amount, price)

    async def entry(self, order: OrderRecord, amount: Decimal, price: Decimal) -> None:
        """An entry filled `amount`: open, add to, reduce, close or flip the position."""
        held = self.ins.store.position(order.symbol)
        if held is None or held.status != "open" or not held.runtime:
            await self.open(order, amount, price, held)
            return
        if held.side == netting.side_of(order.side):
            row = self.ins.store.decision(order.decision_id)
            grown = netting.add(held, amount, price, _dec(row.get("stop")),
                                _dec(row.get("take_profit")))  # fmt: skip
            self.ins.store.save_position(grown)
            moved = (grown.stop, grown.take_profit) != (held.stop, held.take_profit)
            if moved or self.ins.protector.missing(grown):
                armed, sent = await self.ins.protector.rearm(grown, self.ins.now_ms())
                await self.ins.guard.announce_placed(armed, sent)
            await self.ins.guard.announce_emulated(self.ins.store.position(order.symbol) or grown)
            return
        cut = netting.reduce(held, amount, price)
        await self.reduced(cut.position, verify=cut.rest == 0)
        if cut.rest > 0:  # past the position's size: the rest opens the other side
            await self.open(order, cut.rest, price, self.ins.store.position(order.symbol))

    async def exit(self, order: OrderRecord, amount: Decimal, price: Decimal) -> None:
        """A stop, take-profit or close filled `amount`: take it off the position."""
        held = self.ins.store.position(order.symbol)
        if held is None or held.status != "open" or not held.runtime:
            return  # nothing of ours is held: the reconciliation says what the venue holds
        if held.side == netting.side_of(order.side):
            log.warning(
                "an exit order filled on the side of the position it guards",
                extra={"client_order_id": order.client_order_id, "symbol": order.symbol},
            )
            return
        # a close that left a remainder (a decision's reduce) leaves guards of the old size
        cut = netting.reduce(held, amount, price).position
        await self.reduced(cut, resize=order.role == "close")

    async def open(
        self, order: OrderRecord, amount: Decimal, price: Decimal, before: PositionRecord | None
    ) -> None:
        """Open a new runtime position of `order`'s decision and arm its guards."""
        row = self.ins.store.decision(order.decision_id)
        remote = self.ins.remote_positions.get(order.symbol)
        generation = 1
        if before is not None and before.decision_id == order.decision_id:
            # the same decision opens again (its first part was stopped out): new ids
            generation = before.generation + 1
        position = PositionRecord(
            symbol=order.symbol,
            side="long" if order.side == "buy" else "short",
            size=amount,
            entry=price,
            opened_ms=self.ins.now_ms(),
            runtime=True,
            decision_id=order.decision_id,
            strategy=str(row.get("strategy") or "unknown"),
            stop=_dec(row.get("stop")),
            take_profit=_dec(row.get("take_profit")),
            realised_at_open=remote.realised_pnl if remote is not None else Decimal(0),
            generation=generation,
        )
        self.ins.store.save_position(position)
        armed, sent = await self.ins.protector.arm(position, self.ins.now_ms())
        await self.ins.guard.announce_placed(armed, sent)
        await self.ins.guard.announce_emulated(self.ins.store.position(order.symbol) or armed)

    async def reduced(
        self, position: PositionRecord, *, verify: bool = True, resize: bool = False
    ) -> None:
        """Store a position a fill made smaller: closed at zero, else its guards kept whole.

        With `verify`, a position closed here is checked flat at the provider too; with
        `resize` (a reduce by decision), its guards move to the next generation of its size.
        """
        if position.size <= 0:
            await self.finish(position, position.realised)
            if verify:
                await self.ins.reconciler.verify_flat(position.symbol)
            return
        self.ins.store.save_position(position)
        if resize or self.ins.protector.missing(position):  # a filled guard left a remainder
            armed, sent = await self.ins.protector.rearm(position, self.ins.now_ms())
            await self.ins.guard.announce_placed(armed, sent)

    async def finish(self, position: PositionRecord, pnl: Decimal) -> None:
        """Close `position` in the store, cancel what still guards it, count the trade."""
        now = self.ins.now_ms()
        closed = replace(position, status="closed", size=Decimal(0), closed_ms=now)
        self.ins.store.save_position(closed)
        self.ins.closer.deferred.pop(position.symbol, None)  # nothing left to close
        if not position.runtime:
            return
        await self.ins.protector.cancel_all(position, now)
        counters = self.ins.roll_day()
        loss = pnl < 0
        self.ins.store.update_counters(
            realised_today=counters.realised_today + pnl,
            wins=counters.wins + (0 if loss else 1),
            losses=counters.losses + (1 if loss else 0),
            losing_trades_today=counters.losing_trades_today + (1 if loss else 0),
            loss_streak=counters.loss_streak + 1 if loss else 0,
            last_loss_ms=now if loss else counters.last_loss_ms,
        )


def _dec(value: Any) -> Decimal | None:
    if value is None or value == "":
        return None
    return Decimal(str(value))
