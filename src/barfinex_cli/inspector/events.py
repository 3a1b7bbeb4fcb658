"""The provider's order, position and balance events, as they move the inspector's store.

An order event of ours updates its record and drives what follows (`order_changed`): what it
newly filled moves the symbol's one position (`positions`: an entry opens, adds to, reduces or
flips it and its guards follow; a stop, take-profit or close takes its amount off, and a
position at zero is closed, its trade counted, its guards cancelled), a filled guard is
announced, and every settled order with fills gets its `inspector.fill_audit`.

Position events are the provider's snapshots, read off the bus possibly late: a runtime
position's size is never taken from them (an event from before an add would shrink or close
what is held). They keep legacy positions (which have no fills of ours) and an entry price in
step, and a flat one closes a runtime position only once the provider confirms it holds nothing
(closed by hand, behind the inspector's back).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from barfinex_cli.contracts.advisor import SignalReceived
from barfinex_cli.contracts.envelope import Envelope
from barfinex_cli.contracts.market import CandleClosed, TickerUpdated
from barfinex_cli.contracts.orders import (
    BalanceUpdated,
    OrderCancelled,
    OrderFilled,
    OrderPartiallyFilled,
    OrderState,
    PositionChanged,
)
from barfinex_cli.inspector import audit
from barfinex_cli.inspector.execution import merged
from barfinex_cli.store.inspector import OrderRecord, PositionRecord

if TYPE_CHECKING:
    from barfinex_cli.inspector.service import Inspector

log = logging.getLogger("bfx.inspector")


class Events:
    """Route the provider's events to the store, the guards and the day's counters."""

    def __init__(self, inspector: Inspector) -> None:
        self.ins = inspector

    async def on_event(self, event: Envelope[Any]) -> None:
        payload = event.payload
        if isinstance(payload, OrderPartiallyFilled | OrderFilled | OrderCancelled) or (
            event.type.startswith("order.") and hasattr(payload, "order")
        ):
            await self.on_order(event)
        elif isinstance(payload, PositionChanged):
            await self.on_position(payload)
        elif isinstance(payload, BalanceUpdated):
            self.on_balance(payload)
        elif isinstance(payload, CandleClosed):
            await self.ins.guard.on_candle(payload)
        elif isinstance(payload, TickerUpdated):
            self.ins.quotes.ticker(payload)
            await self.ins.guard.on_ticker(payload.symbol, payload.last)
        elif isinstance(payload, SignalReceived):
            self.ins.strategy_of_signal[payload.signal_id] = payload.strategy
            if len(self.ins.strategy_of_signal) > 10_000:
                self.ins.strategy_of_signal.pop(next(iter(self.ins.strategy_of_signal)))
        elif event.type.startswith("advisor.") and event.type.endswith(".blocked"):
            stage = event.type.split(".")[1]
            strategy = self.ins.strategy_of_signal.get(getattr(payload, "signal_id", ""), "unknown")
            self.ins.suppression.stage(strategy, stage)

    async def on_order(self, event: Envelope[Any]) -> None:
        state: OrderState = event.payload.order
        async with self.ins.lock:
            record = self.ins.store.order(state.client_order_id)
            if record is None:
                return  # not ours: reconciliation flags it
            updated = merged(record, state, self.ins.now_ms())
            fill = getattr(event.payload, "fill", None)
            if fill is not None:
                partial = isinstance(event.payload, OrderPartiallyFilled)
                updated = _with_fill(updated, fill.fee, partial)
            self.ins.store.save_order(updated)
            await self.order_changed(updated, record)

    async def order_changed(self, order: OrderRecord, before: OrderRecord | None) -> None:
        """React to an order of ours that moved: position, protective orders, audit."""
        now = self.ins.now_ms()
        newly_filled = order.filled > (before.filled if before is not None else Decimal(0))
        if newly_filled:
            await self.ins.positions.filled(order, before)
        fired = order.role in ("stop_loss", "take_profit") and order.status == "filled"
        if fired and (before is None or before.status != "filled"):
            await self.ins.guard.protective_fired(order)
        ended = order.status in ("filled", "cancelled", "rejected")
        if ended and order.filled > 0 and (before is None or before.live):
            decided = self.decided_ms(order.decision_id)
            asked = order.amount
            audited = audit.audit(
                order,
                decided_ms=decided if order.role == "entry" else None,
                filled_ms=now,
                fee_currency=self.ins.config.currency,
                asked=asked,
            )
            if audited is not None:
                await self.ins.publish(audited)

    def decided_ms(self, decision_id: str | None) -> int | None:
        if decision_id is None:
            return None
        row = self.ins.store.decision(decision_id)
        return int(row["received_ms"]) if row.get("received_ms") is not None else None

    async def on_position(self, payload: PositionChanged) -> None:
        if payload.account != self.ins.config.account:
            return
        self.ins.remote_positions[payload.symbol] = payload
        if payload.mark_price is not None:  # candles are the price; this only until one comes
            self.ins.marks.setdefault(payload.symbol, payload.mark_price)
        async with self.ins.lock:
            position = self.ins.store.position(payload.symbol)
            if position is None or position.status != "open":
                return
            flat = payload.side == "flat" or payload.size == 0
            if position.runtime:
                if flat and await self.ins.guard.closed_at_provider(payload.symbol):
                    await self.closed(position, payload)  # closed without an order of ours
                elif payload.side == position.side and payload.size == position.size:
                    entry = payload.entry_price or position.entry
                    if entry != position.entry:
                        self.ins.store.save_position(replace(position, entry=entry))
                return
            if flat:
                await self.closed(position, payload)
                return
            side: Any = payload.side
            entry = payload.entry_price or position.entry
            self.ins.store.save_position(replace(position, side=side, size=payload.size,
                                                 entry=entry))  # fmt: skip

    async def closed(self, position: PositionRecord, payload: PositionChanged) -> None:
        """The provider reports the position flat: count the trade, cancel what guards it."""
        pnl = payload.realised_pnl - position.realised_at_open
        await self.ins.positions.finish(position, pnl)

    def on_balance(self, payload: BalanceUpdated) -> None:
        if payload.account != self.ins.config.account:
            return
        held = payload.balances.get(self.ins.config.currency)
        if held is not None:
            self.ins.cash = held.total
            self.ins.seen_balance = held.total
            counters = self.ins.store.counters()
            if self.ins.equity > counters.peak_equity:
                self.ins.store.update_counters(peak_equity=self.ins.equity)

    async def refresh_account(self) -> None:
        """Read the account's balance and positions from the provider."""
        for balance in await self.ins.client.accounts(self.ins.config.account):
            held = balance.balances.get(self.ins.config.currency)
            if held is not None:
                self.ins.cash = held.total
        for position in await self.ins.client.positions(self.ins.config.account):
            self.ins.remote_positions[position.symbol] = position
            if position.mark_price is not None:
                self.ins.marks.setdefault(position.symbol, position.mark_price)


def _with_fill(order: OrderRecord, fee: Decimal, partial: bool) -> OrderRecord:
    return replace(order, fees=order.fees + fee, partials=order.partials + (1 if partial else 0))
