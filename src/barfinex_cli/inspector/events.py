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

import asyncio
import logging
import time
from dataclasses import replace
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from barfinex_cli.contracts.advisor import DecisionRejected, SignalDropped, SignalReceived
from barfinex_cli.contracts.detector import SignalGenerated
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
from barfinex_cli.contracts.times import to_ms
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
            self.remember_strategy(payload.signal_id, payload.strategy)
        elif isinstance(payload, SignalGenerated):
            self.remember_strategy(event.id, payload.strategy)
        elif isinstance(payload, DecisionRejected):
            self.suppressed(payload.signal_id, payload.stage)
        elif isinstance(payload, SignalDropped):
            self.suppressed(payload.signal_id, "intake")
        elif event.type.startswith("advisor.") and event.type.endswith(".blocked"):
            stage = event.type.split(".")[1]
            self.suppressed(getattr(payload, "signal_id", event.id), stage)

    def remember_strategy(self, signal_id: str, strategy: str) -> None:
        """Keep which strategy a signal is of, for a stage that stops it (the latest 10,000)."""
        known = self.ins.strategy_of_signal
        known[signal_id] = strategy
        if len(known) > 10_000:
            known.pop(next(iter(known)))

    def suppressed(self, signal_id: str, stage: str) -> None:
        """Count, once per signal and in the store, a signal the advisor stopped at `stage`."""
        strategy = self.ins.strategy_of_signal.get(signal_id, "unknown")
        self.ins.store.record_suppressed(
            signal_id, strategy=strategy, stage=stage, at_ms=self.ins.now_ms()
        )

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
                # a state with its fees gave the total already (`merged`): only count the part
                fee = Decimal(0) if state.fees is not None else fill.fee
                updated = _with_fill(updated, fee, fill.amount, partial)
            self.ins.store.save_order(updated)
            final = isinstance(event.payload, OrderFilled | OrderCancelled) or (
                event.type == "order.rejected"
            )
            await self.order_changed(updated, record, final=final)

    async def order_changed(
        self, order: OrderRecord, before: OrderRecord | None, *, final: bool = False
    ) -> None:
        """React to an order of ours that moved: position, protective orders, audit.

        `final`: the change is the provider's last event of the order, so its fees are all in.
        """
        now = self.ins.now_ms()
        newly_filled = order.filled > (before.filled if before is not None else Decimal(0))
        if newly_filled:
            order = replace(order, last_fill_ms=now, last_fill_wall_ms=wall_ms())
            self.ins.store.save_order(order)
            await self.ins.positions.filled(order, before)
        fired = order.role in ("stop_loss", "take_profit") and order.status == "filled"
        if fired and (before is None or before.status != "filled"):
            await self.ins.guard.protective_fired(order)
        refused = order.role == "entry" and order.status == "rejected" and order.filled == 0
        if refused and (before is None or before.status != "rejected"):
            await self.entry_refused(order)
        ended = order.status in ("filled", "cancelled", "rejected")
        fees_in = final or order.fill_seen >= order.filled
        if ended and order.filled > 0 and fees_in and not order.audited:
            await self.publish_audit(order, now)

    async def publish_audit(self, order: OrderRecord, now: int) -> None:
        """Publish the order's `inspector.fill_audit` and keep that it is out."""
        row = self.ins.store.decision(order.decision_id) if order.role == "entry" else {}
        decided, decided_wall = row.get("received_ms"), row.get("received_wall_ms")
        tolerance = None
        if order.role == "entry":
            strategy = str(row.get("strategy") or "unknown")
            limits = self.ins.governor.policies.limits(order.symbol, strategy)
            tolerance = limits.market.max_slippage_bps
        audited = audit.audit(
            order,
            decided_ms=None if decided is None else int(decided),
            filled_ms=order.last_fill_ms if order.last_fill_ms is not None else now,
            fee_currency=self.ins.config.currency,
            asked=order.amount,
            decided_wall_ms=None if decided_wall is None else int(decided_wall),
            filled_wall_ms=order.last_fill_wall_ms,
            tolerance_bps=tolerance,
        )
        if audited is not None:
            await self.ins.publish(audited, event_id=audit.audit_id(order))
            if audited.past_tolerance and tolerance is not None:
                await self.ins.alerts.raise_(
                    "warning",
                    f"entry {order.client_order_id} of {order.symbol} filled at "
                    f"{audited.average_price}, {audited.slippage_bps:g} bps worse than its "
                    f"intended {audited.intended_price}: past the {tolerance:g} bps slippage "
                    "tolerance (a market order cannot be capped at the venue)",
                    policy="slippage",
                    subject=order.symbol,
                )
        self.ins.store.save_order(replace(order, audited=True))

    async def entry_refused(self, order: OrderRecord) -> None:
        """An entry the provider refused is no trade: take it off today's count, and say so."""
        counters = self.ins.roll_day()
        today = to_ms(self.ins.governor.policies.day_start(self.ins.clock.now()))
        if order.placed_ms >= today and counters.trades_today > 0:  # counted today, when sent
            self.ins.store.update_counters(trades_today=counters.trades_today - 1)
        await self.ins.alerts.raise_(
            "warning",
            f"entry {order.client_order_id} ({order.side} {order.amount} {order.symbol}) "
            "refused by the provider: nothing placed, not counted as a trade",
            subject=order.symbol,
        )

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
        """Read the account's balance and positions from the provider.

        Both asked at once: one round trip to a busy provider per decision instead of two.
        """
        account = self.ins.config.account
        balances, positions = await asyncio.gather(
            self.ins.client.accounts(account), self.ins.client.positions(account)
        )
        for balance in balances:
            held = balance.balances.get(self.ins.config.currency)
            if held is not None:
                self.ins.cash = held.total
        for position in positions:
            self.ins.remote_positions[position.symbol] = position
            if position.mark_price is not None:
                self.ins.marks.setdefault(position.symbol, position.mark_price)


def _with_fill(order: OrderRecord, fee: Decimal, amount: Decimal, partial: bool) -> OrderRecord:
    return replace(
        order,
        fees=order.fees + fee,
        fill_seen=min(order.fill_seen + amount, max(order.filled, order.fill_seen)),
        partials=order.partials + (1 if partial else 0),
    )


def wall_ms() -> int:
    """Return wall-clock time in ms (latency in a replay, whose clock is the market's)."""
    return time.time_ns() // 1_000_000
