"""Decision handling: `advisor.decision` -> `Intent` -> the governor's verdict -> the order.

Every decision gets one `inspector.verdict` (a child of the decision). ALLOW sends the entry
through the executor under the decision's client order id; THROTTLE tells the detector on the
bus; STAND_DOWN and CLOSE_ALL act on the account. A decision held while the provider is away is
announced once as pending (`inspector.verdict.pending`, not a verdict: its one verdict follows).

The decision's `kind` says what it does to the strategy's position: an `open` (a decision from
before the field too) opens or adds, or flips when the other side is held; a `close` or
`reduce` takes the held amount (or the decision's size) off with a market exit order, never
deferred, and the guards follow the smaller position (`positions`). An entry whose stop or
take-profit is on the wrong side of its price is refused first (`levels`), and so is any
decision on a symbol held by a position the inspector did not open (legacy or adopted: policy
`legacy_position`), which it can neither net nor guard.

Exactly once across a crash: the verdict (and the pending notice, and a throttle) carries an id
derived from the decision's (`ids.derived_uuid7`), and the judgment is in the store before it is
published. An inspector killed after publishing a verdict and before acknowledging its decision
gets the decision again after its restart, finds it judged, publishes the stored verdict again
under the same id (the audit store and every consumer group keep the first copy) and does only
what the first run did not: an ALLOW whose entry order is in the store places nothing (start-up
settled it).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Mapping
from datetime import timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any, cast

from barfinex_cli.bus.base import Delivery
from barfinex_cli.contracts.advisor import DecisionMade
from barfinex_cli.contracts.envelope import Envelope
from barfinex_cli.contracts.ids import derived_uuid7
from barfinex_cli.contracts.inspector import (
    ThrottleOrdered,
    VerdictIssued,
    VerdictPending,
)
from barfinex_cli.contracts.times import from_ms, to_ms
from barfinex_cli.inspector.execution import client_order_id
from barfinex_cli.inspector.levels import wrong_side
from barfinex_cli.inspector.model import Action, Intent, Verdict
from barfinex_cli.inspector.policies.sizing import held
from barfinex_cli.inspector.quotes import top_of_book
from barfinex_cli.store.inspector import OrderRecord

if TYPE_CHECKING:
    from barfinex_cli.inspector.service import Inspector

log = logging.getLogger("bfx.inspector")

PENDING, VERDICT, THROTTLE = range(3)
"""Ranks of a decision's derived outcome ids: they sort in this order under the decision."""


def figures_of(figures: Mapping[str, float | str]) -> dict[str, int | float | str]:
    """Return a policy's figures as the verdict carries them: numbers stay numbers, a figure
    that is not a finite number (an infinite percentage of a zero equity) becomes its text."""
    out: dict[str, int | float | str] = {}
    for name, value in figures.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            out[name] = str(value)
        elif isinstance(value, int) or math.isfinite(value):
            out[name] = value
        else:
            out[name] = str(value)
    return out


def verdict_id(decision_id: str) -> str:
    """Return the id of the (final) `inspector.verdict` on a decision."""
    return derived_uuid7(decision_id, "inspector.verdict", VERDICT)


class Decisions:
    """Judge decisions and act on their verdicts."""

    def __init__(self, inspector: Inspector) -> None:
        self.ins = inspector

    async def announce_pending(self, deliveries: list[Delivery], reason: str) -> None:
        """Publish, once per decision, a notice saying it waits for the provider."""
        for delivery in deliveries:
            if delivery.event.id in self.ins.announced:
                continue
            self.ins.announced.add(delivery.event.id)
            payload = delivery.event.payload
            self.ins.store.record_decision(
                delivery.event.id,
                symbol=payload.symbol,
                strategy=payload.strategy or "unknown",
                received_ms=self.ins.now_ms(),
                status="pending",
            )
            notice = VerdictPending(
                decision_id=delivery.event.id,
                reason=f"{reason[:300]}; no order placed — judged when the provider answers",
            )
            pending_id = derived_uuid7(delivery.event.id, "inspector.verdict.pending", PENDING)
            await self.ins.publish(notice, delivery.event, event_id=pending_id)

    # -- decisions -------------------------------------------------------------------------

    def intent_of(self, event: Envelope[Any], spread_bps: float | None = None) -> Intent:
        """Return the intent of an `advisor.decision` event, against the store's positions."""
        decision: DecisionMade = event.payload
        held = self.ins.store.position(decision.symbol)
        kind: Any = decision.kind if decision.kind in ("close", "reduce") else "open"
        if kind == "open" and held is not None and held.status == "open" and held.runtime:
            same = (held.side == "long") == (decision.side == "buy")
            kind = "open" if same else "flip"
        return Intent(
            decision_id=event.id,
            strategy=decision.strategy or "unknown",
            instance=decision.strategy,
            symbol=decision.symbol,
            side=decision.side,
            kind=kind,
            entry=decision.entry,
            stop=decision.stop if decision.stop > 0 else None,
            take_profit=decision.take_profit if decision.take_profit > 0 else None,
            size_hint=decision.size if decision.size > 0 else None,
            conviction=decision.conviction,
            spread_bps=spread_bps,
            at=self.ins.clock.now(),
        )

    async def spread_of(self, decision: DecisionMade) -> float | None:
        """Return the spread the `market` policies judge an entry by: the provider's last book
        (or ticker) of the symbol, asked only when one of those policies is on."""
        strategy = decision.strategy or "unknown"
        market = self.ins.governor.policies.limits(decision.symbol, strategy).market
        if market.max_spread_bps is None and market.max_slippage_bps is None:
            return None
        quote = await top_of_book(self.ins.client, self.ins.quotes, decision.symbol)
        return None if quote is None else quote.spread_bps

    async def decide(self, event: Envelope[Any]) -> Verdict:
        """Judge one decision, publish the verdict and act on it.

        Raises:
            ServiceUnreachable: the account could not be read (the caller keeps it pending).
        """
        async with self.ins.lock:
            judged = self.ins.store.decision(event.id)
            if judged.get("status") == "judged" and judged.get("verdict"):
                return await self.judged_before(event, judged)
            await self.ins.events.refresh_account()
            await self.ins.reconciler.settle()  # an order sent with no answer, before judging
            await self.ins.reconciler.catch_up(event.payload.symbol)
            intent = self.intent_of(event, await self.spread_of(event.payload))
            now = self.ins.clock.now()
            verdict = (
                self.once_per_signal(event)
                or self.not_ours(intent)
                or wrong_side(intent)
                or self.ins.governor.evaluate(intent, self.ins.portfolio(), now)
            )
            self.ins.verdicts += 1
            self.ins.m_verdicts.labels(verdict.action).inc()
            figures = ", ".join(f"{k}={v}" for k, v in verdict.figures.items())
            reason = f"{verdict.reason} ({figures})" if figures else verdict.reason
            payload = event.payload
            self.ins.store.record_decision(
                event.id,
                symbol=intent.symbol,
                strategy=intent.strategy,
                instance=intent.instance or "",
                received_ms=to_ms(now),
                verdict=verdict.action,
                policy=verdict.policy,
                reason=reason[:1000],
                status="judged",
                signal_id=event.payload.signal_id,
                side=intent.side,
                entry=str(intent.entry),
                stop=str(intent.stop or ""),
                take_profit=str(intent.take_profit or ""),
                order_type=payload.order_type,
                size=None if verdict.size is None else str(verdict.size),
                until_ms=None if verdict.until is None else to_ms(verdict.until),
                figures=json.dumps(figures_of(verdict.figures)),
                received_wall_ms=time.time_ns() // 1_000_000,
            )
            refused = None if verdict.action == "ALLOW" else verdict.policy
            self.ins.store.count_decision(intent.strategy, refused)  # for the KPIs' suppression
            await self.publish_verdict(event, verdict, reason)
            await self.act(event, intent, verdict)
            return verdict

    async def publish_verdict(self, event: Envelope[Any], verdict: Verdict, reason: str) -> None:
        """Publish the verdict on `event` under its derived id (a repeat keeps the id)."""
        await self.ins.publish(
            VerdictIssued(
                decision_id=event.id,
                verdict=verdict.action,
                policy=verdict.policy,
                reason=reason[:2000],
                until=verdict.until,
                figures=figures_of(verdict.figures),
            ),
            event,
            event_id=verdict_id(event.id),
        )

    async def judged_before(self, event: Envelope[Any], row: dict[str, Any]) -> Verdict:
        """Finish a decision judged before a crash: its stored verdict, not a new judgment.

        The verdict goes out again under its derived id (a no-op if the first copy landed).
        An ALLOW whose entry order is in the store is done: the order was saved before it was
        sent, and start-up settled it with the provider. Anything else is acted on again, as
        idempotently as its action allows (the entry's client order id, a throttle's id).
        """
        until_ms = row.get("until_ms")
        size = row.get("size")
        verdict = Verdict(
            action=cast(Action, row["verdict"]),
            policy=str(row.get("policy") or ""),
            reason=str(row.get("reason") or ""),
            size=Decimal(str(size)) if size not in (None, "") else None,
            until=from_ms(int(until_ms)) if until_ms is not None else None,
            figures=json.loads(row["figures"]) if row.get("figures") else {},
        )
        log.info(
            "decision judged before a restart: its verdict again, under the same id",
            extra={"decision": event.id, "verdict": verdict.action},
        )
        await self.publish_verdict(event, verdict, verdict.reason)
        entry = self.ins.store.order(client_order_id(event.id, "entry"))
        if verdict.action == "ALLOW" and entry is not None:
            return verdict
        await self.act(event, self.intent_of(event), verdict)
        return verdict

    def once_per_signal(self, event: Envelope[Any]) -> Verdict | None:
        """Return a BLOCK if another decision of the same signal was judged already.

        An advisor killed between publishing a decision and acknowledging its signal decides
        that signal again after its restart (a new decision id); the second one must not trade.
        """
        signal_id: str = event.payload.signal_id
        first = self.ins.store.decision_of_signal(signal_id, other_than=event.id)
        if first is None:
            return None
        return Verdict(
            action="BLOCK",
            policy="duplicate_signal",
            reason=f"signal {signal_id} was decided already by {first}; no second order",
        )

    def not_ours(self, intent: Intent) -> Verdict | None:
        """Return a BLOCK if the symbol holds a position the inspector did not open.

        A legacy position (found at start) or one adopted from the provider is not managed:
        its fills are not the inspector's, so an entry could neither be netted into it nor
        guarded for the sum, and a close or reduce would act on what it does not own.
        """
        held = self.ins.store.position(intent.symbol)
        if held is None or held.status != "open" or held.runtime:
            return None
        return Verdict(
            action="BLOCK",
            policy="legacy_position",
            reason=(
                f"{intent.symbol} holds a {held.strategy} position ({held.side} {held.size}) "
                "the inspector did not open and does not manage; no order until it is closed "
                "at the venue"
            ),
        )

    async def act(self, event: Envelope[Any], intent: Intent, verdict: Verdict) -> None:
        action = verdict.action
        if action == "ALLOW" and verdict.size is not None and verdict.size > 0:
            await self.execute(event, intent, verdict.size)
        elif action == "THROTTLE":
            until = verdict.until or (self.ins.clock.now() + timedelta(minutes=15))
            await self.ins.publish(
                ThrottleOrdered(
                    instance=intent.instance or intent.strategy,
                    until=until,
                    policy=verdict.policy,
                    reason=verdict.reason,
                ),
                event,
                event_id=derived_uuid7(event.id, "inspector.throttle", THROTTLE),
            )
        elif action == "STAND_DOWN":
            # extend: a verdict never shortens a longer stand-down (the operator's, say)
            reason = f"{verdict.policy}: {verdict.reason}"
            await self.ins.stand_down(verdict.until, reason, extend=True)
        elif action == "CLOSE_ALL":
            await self.ins.close_all(f"{verdict.policy}: {verdict.reason}")

    async def execute(self, event: Envelope[Any], intent: Intent, size: Decimal) -> None:
        decision: DecisionMade = event.payload
        now = self.ins.now_ms()
        if intent.kind in ("close", "reduce"):
            await self.exit(event, intent, size)
            return
        if intent.kind == "flip":
            # the governor judged the held amount and the new side together; the held position
            # goes with its own close, the entry opens only the new side (sending both the
            # close and an entry for the sum doubled the position on the other side)
            size -= held(intent, self.ins.portfolio())
            position = self.ins.store.position(intent.symbol)
            if position is not None:
                await self.ins.closer.close_position(position, "flip", defer=False)
            if size <= 0:
                return
        kind = decision.order_type
        order = OrderRecord(
            client_order_id=client_order_id(event.id, "entry"),
            decision_id=event.id,
            role="entry",
            symbol=intent.symbol,
            side=intent.side,
            type=kind,
            amount=size,
            price=intent.entry if kind in ("limit", "stop_limit") else None,
            stop_price=intent.entry if kind in ("stop_market", "stop_limit") else None,
            intended_price=intent.entry,
            placed_ms=now,
        )
        self.ins.store.update_counters(trades_today=self.ins.store.counters().trades_today + 1)
        self.ins.m_orders.labels("entry").inc()
        placed = await self.ins.executor.submit(order, now)
        if placed.filled > 0 or placed.status == "rejected":
            await self.ins.events.order_changed(placed, None)

    async def exit(self, event: Envelope[Any], intent: Intent, size: Decimal) -> None:
        """Send the market order of an allowed close or reduce of `size` (once per decision).

        Its id is the decision's own (`-x1`), so a decision acted on again after a restart sends
        nothing twice; the fill takes the amount off the position and, short of zero, moves
        the guards to the smaller size (`positions.exit`).
        """
        position = self.ins.store.position(intent.symbol)
        if position is None or position.status != "open" or not position.runtime:
            return  # closed between the verdict and now: nothing left to take off
        order_id = client_order_id(event.id, "close")
        if self.ins.store.order(order_id) is not None:
            return
        venue = self.ins.venue
        order = OrderRecord(
            client_order_id=order_id,
            decision_id=event.id,
            role="close",
            symbol=intent.symbol,
            side=intent.side,
            type="market",
            amount=min(size, position.size),
            reduce_only=venue is None or venue.reduce_only,
            intended_price=self.ins.marks.get(intent.symbol, intent.entry),
        )
        log.info(
            "exit by decision",
            extra={"symbol": intent.symbol, "kind": intent.kind, "amount": str(order.amount)},
        )
        self.ins.m_orders.labels("close").inc()
        placed = await self.ins.executor.submit(order, self.ins.now_ms())
        if placed.filled > 0 or placed.status == "rejected":
            await self.ins.events.order_changed(placed, None)
