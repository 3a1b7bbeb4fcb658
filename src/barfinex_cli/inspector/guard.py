"""Protective management: arming the guards of a filled entry, firing, trailing, max hold.

`Protector` (in `protective`) sends the orders; this part decides when, and says so on the bus:
`inspector.protective.placed` for each guard placed, `...triggered` when one fires (its sibling
cancelled, one-cancels-other), `...moved` when the trailing stop or break-even moves the stop on
a closed candle. A position held past `hold.max_hold_minutes` is closed.

Guards the venue cannot hold (`emulation`) are watched here instead: every candle's range and
ticker's last price are checked against them, and one that is reached sends the position's
close (`closing`, which may defer it while the book is bad). Their events say `emulated`.

A venue guard's `inspector.protective.placed` carries an id derived from its client order id
(`placed_id`), and start-up announces every live guard of a runtime position again
(`announce_live`): a guard an inspector placed and died before announcing is announced by the
next one, and one that was announced is not doubled (the audit store and every consumer group
keep the first copy of an id). Every other guard event is derived the same way
(`guard_event_id`): an emulated guard's announcement from its decision, kind, generation and
price, a move from the guard and the new stop, a trigger from the guard. So the announcement of
the emulated guards that start-up makes again, or one repeated after a crash, is the same event,
never a second guard under a new id.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from barfinex_cli.contracts.ids import derived_uuid7
from barfinex_cli.contracts.inspector import (
    ProtectiveKind,
    ProtectiveMoved,
    ProtectivePlaced,
    ProtectiveTriggered,
)
from barfinex_cli.contracts.market import CandleClosed
from barfinex_cli.contracts.times import to_ms
from barfinex_cli.errors import BfxError
from barfinex_cli.inspector import emulation
from barfinex_cli.inspector.execution import client_order_id
from barfinex_cli.inspector.protective import Move, trail
from barfinex_cli.market.candles import timeframe_ms
from barfinex_cli.store.inspector import OrderRecord, PositionRecord

if TYPE_CHECKING:
    from barfinex_cli.inspector.service import Inspector

log = logging.getLogger("bfx.inspector")

PLACED_RANK = 3
"""Sorts a guard's announcement after the verdict and throttle of its decision (`decisions`)."""


def placed_id(order: OrderRecord) -> str:
    """Return the id of the `inspector.protective.placed` that announces a venue guard."""
    return guard_event_id(order.decision_id, order.client_order_id, "placed")


def guard_event_id(decision_id: str | None, guard_id: str, what: str, *facts: object) -> str:
    """Return the id of a guard's event `what` (placed, moved, triggered), from its identity.

    `guard_id` is the guard's client order id (an emulated guard's is the one it would have,
    decision + kind + generation); `facts` are what tells two events of one guard apart (the
    price an emulated guard is announced or moved at). The same guard and facts give the same
    id in any run, so an announcement repeated after a restart is no new event.
    """
    key = ":".join([f"inspector.protective.{what}", guard_id, *(_fact(f) for f in facts)])
    return derived_uuid7(decision_id or guard_id, key, PLACED_RANK)


class Guard:
    """Arm, announce, fire and trail the protective orders of runtime positions."""

    def __init__(self, inspector: Inspector) -> None:
        self.ins = inspector
        self._told: set[tuple[str, str, Decimal]] = set()
        """Emulated guards announced: (decision id, kind, price)."""

    # -- where each guard lives ----------------------------------------------------------------

    def held_by_venue(self, position: PositionRecord, kind: ProtectiveKind) -> bool:
        """Tell whether the venue holds `position`'s guard of `kind` (else it is emulated)."""
        limits = self.ins.governor.policies.limits(position.symbol, position.strategy)
        return emulation.held_by_venue(kind, self.ins.venue, limits.execution.protective)

    def emulated(self, position: PositionRecord) -> list[emulation.Guarded]:
        """Return the guards of `position` the inspector emulates (those with a price)."""
        out: list[emulation.Guarded] = []
        if position.stop is not None and not self.held_by_venue(position, "stop_loss"):
            out.append("stop_loss")
        if position.take_profit is not None and not self.held_by_venue(position, "take_profit"):
            out.append("take_profit")
        return out

    async def announce_emulated(self, position: PositionRecord) -> None:
        """Publish `inspector.protective.placed` (emulated) once per emulated guard and price."""
        assert position.decision_id is not None
        for kind in self.emulated(position):
            price = position.stop if kind == "stop_loss" else position.take_profit
            assert price is not None
            key = (position.decision_id, kind, price)
            if key in self._told:
                continue
            self._told.add(key)
            guard_id = client_order_id(position.decision_id, kind, position.generation)
            await self.ins.publish(
                ProtectivePlaced(
                    order_id=guard_id,
                    account=self.ins.config.account,
                    symbol=position.symbol,
                    kind=kind,
                    price=price,
                    amount=position.size,
                    decision_id=position.decision_id,
                    emulated=True,
                ),
                event_id=guard_event_id(position.decision_id, guard_id, "placed", price),
            )

    async def fire_emulated(
        self, position: PositionRecord, low: Decimal, high: Decimal, seen: str
    ) -> bool:
        """Close `position` if prices `low..high` reached an emulated guard; tell if one fired."""
        kinds = self.emulated(position)
        if not kinds or position.decision_id is None or self.ins.closer.closing(position):
            return False
        touch = emulation.touched(position, low, high, kinds, seen)
        if touch is None:
            return False
        outcome = await self.ins.closer.close_position(position, touch.reason, intended=touch.level)
        close_id = self.ins.closer.close_id(position)
        close = self.ins.store.order(close_id)
        waits = "" if outcome == "sent" else "; the close waits for a better book"
        guard_id = client_order_id(position.decision_id, touch.kind, position.generation)
        await self.ins.publish(
            ProtectiveTriggered(
                order_id=guard_id,
                symbol=position.symbol,
                kind=touch.kind,
                trigger_price=touch.level,
                fill_price=None if close is None else close.average_price,
                amount=position.size,
                emulated=True,
                close_order_id=close_id,
                reason=touch.reason + waits,
            ),
            event_id=guard_event_id(position.decision_id, guard_id, "triggered"),
        )
        if touch.kind == "stop_loss":
            self.ins.store.update_counters(last_loss_ms=self.ins.now_ms())
        return True

    async def on_ticker(self, symbol: str, last: Decimal) -> None:
        """A ticker of `symbol`: fire an emulated guard at its last price, retry its close."""
        async with self.ins.lock:
            position = self.ins.store.position(symbol)
            if position is not None and position.status == "open" and position.runtime:
                await self.ins.closer.retry(symbol)
                await self.fire_emulated(position, last, last, "ticker")

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
            await self.announce(kind, order)
            if order.filled > 0:  # a stop placed beyond the price filled as it was placed
                await self.ins.events.order_changed(order, None)

    async def announce(self, kind: ProtectiveKind, order: OrderRecord) -> None:
        """Publish `inspector.protective.placed` for a venue guard, under its derived id."""
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
            ),
            event_id=placed_id(order),
        )

    async def announce_live(self, position: PositionRecord) -> int:
        """Announce the live venue guards of `position` again (start-up); return how many.

        An inspector killed between placing a guard and announcing it leaves the guard at the
        venue unannounced; the derived id makes this announcement the first of that guard, or
        a repeat of one already made, which the audit store and the groups ignore.
        """
        told = 0
        guards: tuple[tuple[ProtectiveKind, str | None], ...] = (
            ("stop_loss", position.stop_order),
            ("take_profit", position.tp_order),
        )
        for kind, order_id in guards:
            order = self.ins.store.order(order_id) if order_id else None
            if order is not None and order.live and self.held_by_venue(position, kind):
                await self.announce(kind, order)
                told += 1
        return told

    async def protective_fired(self, order: OrderRecord) -> None:
        """A stop or take-profit filled: say so (its fill already closed the position and
        cancelled its sibling, or moved the guards onto what is left: `positions`)."""
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
            ),
            event_id=guard_event_id(order.decision_id, order.client_order_id, "triggered"),
        )
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
            low, high = Decimal(str(payload.low)), Decimal(str(payload.high))
            if await self.fire_emulated(position, low, high, "candle"):
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
            if str(best) != str(position.best_price):  # else the row is unchanged: no write
                position = replace(position, best_price=best)
                self.ins.store.save_position(position)
            if move is not None and not self.held_by_venue(position, "stop_loss"):
                await self.move_emulated(position, move)
            elif move is not None:
                _, placed = await self.ins.protector.move_stop(position, move, self.ins.now_ms())
                if placed is not None and placed.filled > 0:  # moved past the price: it fired
                    await self.ins.events.order_changed(placed, None)
                if placed is not None:
                    await self.ins.publish(
                        ProtectiveMoved(
                            order_id=placed.client_order_id,
                            symbol=position.symbol,
                            kind="stop_loss",
                            previous_price=move.previous,
                            price=move.price,
                            reason=move.reason,
                        ),
                        event_id=guard_event_id(
                            placed.decision_id, placed.client_order_id, "moved", move.price
                        ),
                    )
            expired = self.ins.governor.expired(
                self.ins.portfolio().positions, self.ins.clock.now()
            )
            for held in expired:
                if held.symbol == position.symbol:
                    await self.ins.closer.close_position(position, "max hold time")
            await self.ins.closer.retry(payload.symbol)

    async def move_emulated(self, position: PositionRecord, move: Move) -> None:
        """Move an emulated stop: only the price it is watched at changes (nothing is sent)."""
        assert position.decision_id is not None
        self.ins.store.save_position(replace(position, stop=move.price))
        guard_id = client_order_id(position.decision_id, "stop_loss", position.generation)
        await self.ins.publish(
            ProtectiveMoved(
                order_id=guard_id,
                symbol=position.symbol,
                kind="stop_loss",
                previous_price=move.previous,
                price=move.price,
                reason=f"{move.reason} (emulated)",
                emulated=True,
            ),
            event_id=guard_event_id(position.decision_id, guard_id, "moved", move.price),
        )


def _fact(value: object) -> str:
    """Return `value` as an id's key spells it: a price by its value (107.80 is 107.8)."""
    return format(value.normalize(), "f") if isinstance(value, Decimal) else str(value)


def _dec(value: Any) -> Decimal | None:
    if value is None or value == "":
        return None
    return Decimal(str(value))
