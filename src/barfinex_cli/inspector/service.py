"""The inspector service: the risk governor as a role on the bus, and the only role that trades.

It takes what the kernel built (bus, clock, gateway client, its store and governor) and opens
nothing but its HTTP socket. Every `advisor.decision` becomes an `Intent`; the governor's
`Verdict` is published as `inspector.verdict`, a child of the decision (so `bfx trace` reaches
candle -> signal -> decision -> verdict -> order). ALLOW places the order (`execution`), THROTTLE
tells the detector on the bus, STAND_DOWN stops new entries until cleared or a time passes,
CLOSE_ALL flattens every runtime position. Order and position events from the provider drive the
rest: protective orders placed as an entry fills (`protective`), the sibling cancelled when one
fires, fill audits (`audit`), the day's counters the policies judge by.

Start, restart, crash: state lives in `inspector.db` (`store.inspector`). On start it joins its
consumer group, then settles orders left in flight, reconciles against the provider (positions
it did not open are legacy: alert only), re-arms any missing protective order, and only then
takes decisions. While the provider does not answer, decisions stay pending (not acknowledged),
each verdict saying so once, and are judged in order when it answers again.

The module runs past 400 lines because the decision path, the order/position event path and the
start-up sequence all move the same store records; the pure parts live in the sibling modules.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from prometheus_client import CollectorRegistry, Counter, Gauge

from barfinex_cli.bus.base import Bus, Consumer, Delivery
from barfinex_cli.contracts.advisor import DecisionMade, SignalReceived
from barfinex_cli.contracts.envelope import Envelope, make_event
from barfinex_cli.contracts.inspector import (
    AccountReconciled,
    DivergenceFound,
    ProtectiveMoved,
    ProtectivePlaced,
    ProtectiveTriggered,
    ThrottleOrdered,
    VerdictIssued,
)
from barfinex_cli.contracts.market import CandleClosed
from barfinex_cli.contracts.orders import (
    BalanceUpdated,
    OrderCancelled,
    OrderFilled,
    OrderPartiallyFilled,
    OrderState,
    PositionChanged,
)
from barfinex_cli.contracts.times import from_ms, to_ms
from barfinex_cli.contracts.types import Payload
from barfinex_cli.errors import BfxError, ServiceUnreachable
from barfinex_cli.inspector import audit, kpi, reconcile
from barfinex_cli.inspector.alerts import Alerts, Telegram
from barfinex_cli.inspector.execution import Executor, client_order_id, merged
from barfinex_cli.inspector.governor import Governor
from barfinex_cli.inspector.model import Intent, Portfolio, Position, Verdict
from barfinex_cli.inspector.policies import PolicyWatcher
from barfinex_cli.inspector.protective import Protector, trail
from barfinex_cli.market.candles import timeframe_ms
from barfinex_cli.runtime.client import GatewayClient
from barfinex_cli.runtime.clock import Clock
from barfinex_cli.runtime.config import InspectorConfig
from barfinex_cli.runtime.registration import Registration
from barfinex_cli.store.inspector import InspectorStore, OrderRecord, PositionRecord

log = logging.getLogger("bfx.inspector")

TYPES = (
    "advisor.decision",
    "advisor.signal.received",
    "advisor.*.blocked",
    "order.*",
    "position.changed",
    "account.balance",
    "market.candle",
)
FOREVER = datetime(9999, 12, 31, tzinfo=UTC)
"""A stand-down with no end: it holds until `bfx inspector resume`."""


class Inspector:
    """The running inspector role."""

    def __init__(
        self,
        config: InspectorConfig,
        *,
        bus: Bus,
        clock: Clock,
        client: GatewayClient,
        store: InspectorStore,
        governor: Governor,
        policy_path: Path | None = None,
        telegram: Telegram | None = None,
    ) -> None:
        self.config = config
        self.bus = bus
        self.clock = clock
        self.client = client
        self.store = store
        self.governor = governor
        self.policy_path = policy_path
        self.instance = config.instance
        self.source = f"inspector/{self.instance}"
        self.executor = Executor(client, store, config.account)
        self.protector = Protector(self.executor)
        self.alerts = Alerts(self._publish_alert, telegram)
        self.suppression = kpi.Suppression()
        self.ready = asyncio.Event()
        self.entries_open = False
        """False until start-up reconciled and re-armed: no decision is judged before."""
        self.provider_down = False
        self.api_url: str | None = None
        self.cash = Decimal(0)
        self.marks: dict[str, Decimal] = {}
        self.remote_positions: dict[str, PositionChanged] = {}
        self.seen_balance: Decimal | None = None
        self.published = 0
        self.verdicts = 0
        self.last_reconcile: dict[str, Any] | None = None
        self.started = time.monotonic()
        self.log: list[str] = []
        """What the start-up sequence did, in order (for `/health` and the tests)."""
        self._held: deque[Delivery] = deque()
        self._held_ids: set[str] = set()
        self._announced: set[str] = set()
        self._strategy_of_signal: dict[str, str] = {}
        self._lock = asyncio.Lock()
        self._balance_suspect: tuple[Decimal, Decimal] | None = None
        self.registry = CollectorRegistry()
        self._m_verdicts = Counter(
            "bfx_inspector_verdicts", "Verdicts by action.", ["action"], registry=self.registry
        )
        self._m_orders = Counter(
            "bfx_inspector_orders", "Orders sent, by role.", ["role"], registry=self.registry
        )
        self._m_divergences = Counter(
            "bfx_inspector_divergences", "Divergences found.", ["kind"], registry=self.registry
        )
        held = Gauge("bfx_inspector_pending_decisions", "Decisions held.", registry=self.registry)
        held.set_function(lambda: len(self._held))
        open_pos = Gauge("bfx_inspector_positions", "Open positions.", registry=self.registry)
        open_pos.set_function(lambda: len(self.store.positions()))
        equity = Gauge("bfx_inspector_equity", "Equity.", registry=self.registry)
        equity.set_function(lambda: float(self.equity))

    # -- figures ---------------------------------------------------------------------------

    @property
    def equity(self) -> Decimal:
        """Cash plus the unrealised P&L of every position."""
        return self.cash + self.unrealised

    @property
    def unrealised(self) -> Decimal:
        """Unrealised P&L of every position at the latest mark (a candle's close, or the
        provider's mark when no candle was seen since)."""
        total = Decimal(0)
        for position in self.remote_positions.values():
            if position.size <= 0 or position.entry_price is None:
                continue
            mark = self.marks.get(position.symbol)
            if mark is None:
                total += position.unrealised_pnl
                continue
            sign = 1 if position.side == "long" else -1
            total += (mark - position.entry_price) * position.size * sign
        return total

    def now_ms(self) -> int:
        return self.clock.now_ms()

    def portfolio(self) -> Portfolio:
        """Return the account as the governor sees it now."""
        counters = self._roll_day()
        stand_down = (
            None if counters.stand_down_until_ms is None else from_ms(counters.stand_down_until_ms)
        )
        positions = tuple(
            Position(
                symbol=p.symbol,
                strategy=p.strategy,
                side=p.side,
                size=p.size,
                entry=p.entry,
                opened_at=from_ms(p.opened_ms),
                runtime=p.runtime,
            )
            for p in self.store.positions()
        )
        reserved = Decimal(0)
        for order in self.store.orders(live_only=True, role="entry"):
            price = order.price or order.stop_price or order.intended_price or Decimal(0)
            reserved += (order.amount - order.filled) * price
        return Portfolio(
            equity=self.equity,
            peak_equity=max(counters.peak_equity, self.equity),
            day_start_equity=counters.day_start_equity or self.equity,
            positions=positions,
            open_orders_notional=reserved,
            trades_today=counters.trades_today,
            losing_trades_today=counters.losing_trades_today,
            loss_streak=counters.loss_streak,
            last_loss_at=None if counters.last_loss_ms is None else from_ms(counters.last_loss_ms),
            realised_today=counters.realised_today,
            stand_down_until=stand_down,
        )

    def _roll_day(self) -> Any:
        """Start a new trading day (market time, UTC) when the date changed; return counters."""
        counters = self.store.counters()
        day = self.clock.now().date().isoformat()
        if counters.day != day:
            counters = self.store.update_counters(
                day=day,
                day_start_equity=self.equity,
                trades_today=0,
                losing_trades_today=0,
                realised_today=Decimal(0),
                peak_equity=max(counters.peak_equity, self.equity),
            )
        return counters

    # -- lifecycle -------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> int:
        """Run until `stop` is set; return how many verdicts were issued."""
        tasks: list[asyncio.Task[Any]] = []
        try:
            consumer = await self.bus.consumer(
                f"inspector.{self.instance}", self.instance, list(TYPES), start="$"
            )
            await self._start_up()
            if self.config.serve_api:
                from barfinex_cli.inspector.api import api_app
                from barfinex_cli.runtime.health import bind_first_free, serve_health

                sock = bind_first_free(self.config.host, self.config.port)
                host, port = sock.getsockname()[:2]
                self.api_url = f"http://{host}:{port}"
                app = api_app(self)
                tasks.append(asyncio.create_task(serve_health(app, sock, stop), name="api"))
            tasks.append(asyncio.create_task(self._watch_provider(stop), name="heartbeat"))
            tasks.append(
                asyncio.create_task(
                    self._every(stop, self.config.kpi_interval_s, self.publish_kpi), name="kpi"
                )
            )
            tasks.append(
                asyncio.create_task(
                    self._every(stop, self.config.reconcile_interval_s, self._reconcile_tick),
                    name="reconcile",
                )
            )
            if self.policy_path is not None:
                tasks.append(asyncio.create_task(self._watch_policies(stop), name="policies"))
            self.ready.set()
            log.info("inspector running", extra={"instance": self.instance, "api": self.api_url})
            while not stop.is_set():
                deliveries = await consumer.fetch(100, 250)
                await self._absorb(consumer, deliveries)
                await self._drain(consumer, stop)
                if self._held and not deliveries:
                    await self._pause(stop)
        finally:
            stop.set()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(*tasks, return_exceptions=True)
            await self.alerts.aclose()
        return self.verdicts

    async def _start_up(self) -> bool:
        """Settle in-flight orders, reconcile, re-arm; then open entries. False: provider down."""
        if self.entries_open:
            return True
        try:
            async with self._lock:
                if self.clock.kind == "market":  # start where the replay has reached
                    reached = (await self.client.health()).market_time
                    if reached is not None:
                        self.clock.advance_to(to_ms(reached))
                now = self.now_ms()
                settled = await self.executor.resolve(now)
                self.log.append(f"resolved {len(settled)} in-flight orders")
                for order in settled:
                    await self._order_changed(order, None)
                await self._reconcile(dry_run=False, initial=True)
                self.log.append("reconciled")
                for position in self.store.positions():
                    if position.runtime and self.protector.missing(position):
                        armed, sent = await self.protector.rearm(position, self.now_ms())
                        await self._announce_placed(armed, sent)
                        self.log.append(f"re-armed {position.symbol}")
        except ServiceUnreachable as exc:
            if not self.provider_down:
                log.warning("start-up waits for the provider", extra={"error": str(exc)})
            self.provider_down = True
            return False
        self.provider_down = False
        self.entries_open = True
        self.log.append("entries open")
        return True

    async def _absorb(self, consumer: Consumer, deliveries: list[Delivery]) -> None:
        """Handle every event but decisions at once (acknowledged); hold decisions in order."""
        done: list[Delivery] = []
        # one fetch reads several streams one after the other: handle their events in the
        # order they were made (ids are time-ordered), so an older position event never lands
        # after a newer candle
        for delivery in sorted(deliveries, key=lambda d: d.event.id):
            if isinstance(delivery.event.payload, DecisionMade):
                if delivery.event.id not in self._held_ids:
                    self._held.append(delivery)
                    self._held_ids.add(delivery.event.id)
                continue
            try:
                await self._on_event(delivery.event)
            except ServiceUnreachable as exc:
                log.warning(
                    "provider unreachable while handling an event",
                    extra={"type": delivery.event.type, "error": str(exc)},
                )
                self.provider_down = True
            done.append(delivery)
        if done and self.entries_open:  # prices, fills or balances moved: any breach now?
            try:
                await self.check_account()
            except ServiceUnreachable as exc:
                log.warning("cannot act on a breach now", extra={"error": str(exc)})
        if done:
            await consumer.ack(done)

    async def _drain(self, consumer: Consumer, stop: asyncio.Event) -> None:
        """Judge held decisions in order while the provider answers; ack each once judged."""
        dedup = self.bus.deduplicator()
        group = f"inspector.{self.instance}"
        while self._held and not stop.is_set():
            if not self.entries_open and not await self._start_up():
                await self._announce_pending(list(self._held), "the provider is unreachable")
                return
            delivery = self._held[0]
            if not (await dedup.seen(group, [delivery.event.id]))[0]:
                try:
                    await self.decide(delivery.event)
                except ServiceUnreachable as exc:
                    self.provider_down = True
                    await self._announce_pending(list(self._held), str(exc))
                    return
            await dedup.mark(group, [delivery.event.id])
            await consumer.ack([delivery])
            self._held.popleft()
            self._held_ids.discard(delivery.event.id)
            self._announced.discard(delivery.event.id)

    async def _pause(self, stop: asyncio.Event) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), self.config.retry_s)

    async def _announce_pending(self, deliveries: list[Delivery], reason: str) -> None:
        """Publish, once per decision, a verdict saying it waits for the provider."""
        for delivery in deliveries:
            if delivery.event.id in self._announced:
                continue
            self._announced.add(delivery.event.id)
            payload = delivery.event.payload
            self.store.record_decision(
                delivery.event.id,
                symbol=payload.symbol,
                strategy=payload.strategy or "unknown",
                received_ms=self.now_ms(),
                status="pending",
            )
            verdict = VerdictIssued(
                decision_id=delivery.event.id,
                verdict="BLOCK",
                policy="provider_unreachable",
                reason=f"pending: {reason[:300]}; no order placed — judged again when it answers",
            )
            await self._publish(verdict, delivery.event)

    async def _watch_provider(self, stop: asyncio.Event) -> None:
        registration = None
        if self.config.join_registry:
            registration = Registration(
                self.client,
                name=self.instance,
                role="inspector",
                url=self.api_url,
                interval_s=self.config.heartbeat_s,
            )
        while not stop.is_set():
            if registration is not None:
                ok = await registration.heartbeat()
            else:
                try:
                    await self.client.health()
                    ok = True
                except BfxError:
                    ok = False
            self.provider_down = not ok
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.config.heartbeat_s)

    async def _every(self, stop: asyncio.Event, seconds: float, work: Any) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), seconds)
            if stop.is_set():
                return
            try:
                await work()
            except BfxError as exc:
                log.warning("periodic work failed", extra={"error": str(exc)})

    async def _watch_policies(self, stop: asyncio.Event) -> None:
        assert self.policy_path is not None
        watcher = PolicyWatcher(self.policy_path, self.governor.policies)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.config.policy_poll_s)
            reload = watcher.poll()
            if reload is None:
                continue
            if reload.policies is None:
                await self.alerts.raise_(
                    "error",
                    reload.alert or "policy file not reloaded, old policies kept",
                    subject=str(self.policy_path),
                )
            else:
                self.governor = Governor(reload.policies)
                await self.alerts.raise_("info", "policies reloaded", subject=str(self.policy_path))

    # -- decisions -------------------------------------------------------------------------

    def intent_of(self, event: Envelope[Any]) -> Intent:
        """Return the intent of an `advisor.decision` event, against the store's positions."""
        decision: DecisionMade = event.payload
        held = self.store.position(decision.symbol)
        kind: Any = "open"
        if held is not None and held.status == "open" and held.runtime:
            same = (held.side == "long") == (decision.side == "buy")
            kind = "open" if same else "flip"
        spread = None
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
            spread_bps=spread,
            at=self.clock.now(),
        )

    async def decide(self, event: Envelope[Any]) -> Verdict:
        """Judge one decision, publish the verdict and act on it.

        Raises:
            ServiceUnreachable: the account could not be read (the caller keeps it pending).
        """
        async with self._lock:
            await self._refresh_account()
            intent = self.intent_of(event)
            now = self.clock.now()
            verdict = self.governor.evaluate(intent, self.portfolio(), now)
            self.verdicts += 1
            self._m_verdicts.labels(verdict.action).inc()
            self.suppression.decided(intent.strategy)
            if verdict.action != "ALLOW":
                self.suppression.policy(intent.strategy, verdict.policy)
            figures = ", ".join(f"{k}={v}" for k, v in verdict.figures.items())
            reason = f"{verdict.reason} ({figures})" if figures else verdict.reason
            payload = event.payload
            self.store.record_decision(
                event.id,
                symbol=intent.symbol,
                strategy=intent.strategy,
                instance=intent.instance or "",
                received_ms=to_ms(now),
                verdict=verdict.action,
                policy=verdict.policy,
                reason=reason[:1000],
                status="judged",
                side=intent.side,
                entry=str(intent.entry),
                stop=str(intent.stop or ""),
                take_profit=str(intent.take_profit or ""),
                order_type=payload.order_type,
            )
            await self._publish(
                VerdictIssued(
                    decision_id=event.id,
                    verdict=verdict.action,
                    policy=verdict.policy,
                    reason=reason[:2000],
                    until=verdict.until,
                ),
                event,
            )
            await self._act(event, intent, verdict)
            return verdict

    async def _act(self, event: Envelope[Any], intent: Intent, verdict: Verdict) -> None:
        action = verdict.action
        if action == "ALLOW" and verdict.size is not None and verdict.size > 0:
            await self._execute(event, intent, verdict.size)
        elif action == "THROTTLE":
            until = verdict.until or (self.clock.now() + timedelta(minutes=15))
            await self._publish(
                ThrottleOrdered(
                    instance=intent.instance or intent.strategy,
                    until=until,
                    policy=verdict.policy,
                    reason=verdict.reason,
                ),
                event,
            )
        elif action == "STAND_DOWN":
            await self.stand_down(verdict.until, f"{verdict.policy}: {verdict.reason}")
        elif action == "CLOSE_ALL":
            await self.close_all(f"{verdict.policy}: {verdict.reason}")

    async def _execute(self, event: Envelope[Any], intent: Intent, size: Decimal) -> None:
        decision: DecisionMade = event.payload
        now = self.now_ms()
        if intent.kind == "flip":
            held = self.store.position(intent.symbol)
            if held is not None:
                await self._close_position(held, "flip")
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
        self.store.update_counters(trades_today=self.store.counters().trades_today + 1)
        self._m_orders.labels("entry").inc()
        placed = await self.executor.submit(order, now)
        if placed.filled > 0:
            await self._order_changed(placed, None)

    # -- operator actions ------------------------------------------------------------------

    async def stand_down(self, until: datetime | None, reason: str) -> None:
        """Stop new entries until `until` (None: until `resume`); open positions stay managed."""
        end = until or FOREVER
        self.store.update_counters(stand_down_until_ms=to_ms(end), stand_down_reason=reason)
        when = "until resumed" if until is None else f"until {end.isoformat()}"
        await self.alerts.raise_("warning", f"stand down {when}: {reason}", policy="stand_down")

    async def resume(self) -> None:
        """Clear a stand-down."""
        self.store.update_counters(stand_down_until_ms=None, stand_down_reason="")
        await self.alerts.raise_("info", "stand-down cleared: entries accepted again")

    async def close_all(self, reason: str) -> list[str]:
        """Flatten every runtime position now; return the symbols closed."""
        closed = []
        for position in self.store.positions():
            if position.runtime:
                await self._close_position(position, reason)
                closed.append(position.symbol)
        await self.alerts.raise_(
            "critical",
            f"close all: {len(closed)} positions flattened ({reason})",
            policy="close_all",
        )
        return closed

    async def _close_position(self, position: PositionRecord, reason: str) -> None:
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
            intended_price=self.marks.get(position.symbol, position.entry),
        )
        log.info("closing position", extra={"symbol": position.symbol, "reason": reason})
        self._m_orders.labels("close").inc()
        placed = await self.executor.submit(order, self.now_ms())
        if placed.filled > 0:
            await self._order_changed(placed, None)

    # -- events from the provider ----------------------------------------------------------

    async def _on_event(self, event: Envelope[Any]) -> None:
        payload = event.payload
        if isinstance(payload, OrderPartiallyFilled | OrderFilled | OrderCancelled) or (
            event.type.startswith("order.") and hasattr(payload, "order")
        ):
            await self._on_order(event)
        elif isinstance(payload, PositionChanged):
            await self._on_position(payload)
        elif isinstance(payload, BalanceUpdated):
            self._on_balance(payload)
        elif isinstance(payload, CandleClosed):
            await self._on_candle(payload)
        elif isinstance(payload, SignalReceived):
            self._strategy_of_signal[payload.signal_id] = payload.strategy
            if len(self._strategy_of_signal) > 10_000:
                self._strategy_of_signal.pop(next(iter(self._strategy_of_signal)))
        elif event.type.startswith("advisor.") and event.type.endswith(".blocked"):
            stage = event.type.split(".")[1]
            strategy = self._strategy_of_signal.get(getattr(payload, "signal_id", ""), "unknown")
            self.suppression.stage(strategy, stage)

    async def _on_order(self, event: Envelope[Any]) -> None:
        state: OrderState = event.payload.order
        async with self._lock:
            record = self.store.order(state.client_order_id)
            if record is None:
                return  # not ours: reconciliation flags it
            updated = merged(record, state, self.now_ms())
            fill = getattr(event.payload, "fill", None)
            if fill is not None:
                partial = isinstance(event.payload, OrderPartiallyFilled)
                updated = _with_fill(updated, fill.fee, partial)
            self.store.save_order(updated)
            await self._order_changed(updated, record)

    async def _order_changed(self, order: OrderRecord, before: OrderRecord | None) -> None:
        """React to an order of ours that moved: position, protective orders, audit."""
        now = self.now_ms()
        newly_filled = order.filled > (before.filled if before is not None else Decimal(0))
        if order.role == "entry" and newly_filled:
            await self._entry_filled(order)
        fired = order.role in ("stop_loss", "take_profit") and order.status == "filled"
        if fired and (before is None or before.status != "filled"):
            await self._protective_fired(order)
        ended = order.status in ("filled", "cancelled", "rejected")
        if ended and order.filled > 0 and (before is None or before.live):
            decided = self._decided_ms(order.decision_id)
            asked = order.amount
            audited = audit.audit(
                order,
                decided_ms=decided if order.role == "entry" else None,
                filled_ms=now,
                fee_currency=self.config.currency,
                asked=asked,
            )
            if audited is not None:
                await self._publish(audited)

    def _decided_ms(self, decision_id: str | None) -> int | None:
        if decision_id is None:
            return None
        row = self.store.decision(decision_id)
        return int(row["received_ms"]) if row.get("received_ms") is not None else None

    async def _entry_filled(self, order: OrderRecord) -> None:
        """Open (or grow) the runtime position of a filled entry and arm its protection."""
        row = self.store.decision(order.decision_id)
        side: Any = "long" if order.side == "buy" else "short"
        held = self.store.position(order.symbol)
        if held is not None and held.status == "open" and held.decision_id == order.decision_id:
            position = replace(held, size=max(held.size, order.filled))
        else:
            remote = self.remote_positions.get(order.symbol)
            position = PositionRecord(
                symbol=order.symbol,
                side=side,
                size=order.filled,
                entry=order.average_price or order.intended_price or Decimal(0),
                opened_ms=self.now_ms(),
                runtime=True,
                decision_id=order.decision_id,
                strategy=str(row.get("strategy") or "unknown"),
                stop=_dec(row.get("stop")),
                take_profit=_dec(row.get("take_profit")),
                realised_at_open=remote.realised_pnl if remote is not None else Decimal(0),
            )
        self.store.save_position(position)
        if position.stop_order is None and position.tp_order is None:
            armed, sent = await self.protector.arm(position, self.now_ms())
            await self._announce_placed(armed, sent)
        elif self.protector.missing(position):
            armed, sent = await self.protector.rearm(position, self.now_ms())
            await self._announce_placed(armed, sent)

    async def _closed_at_provider(self, symbol: str) -> bool:
        """Tell whether the provider holds no position in `symbol` (False if it cannot say)."""
        try:
            held = await self.client.positions(self.config.account)
        except BfxError:
            return False
        return not any(p.symbol == symbol and p.size > 0 for p in held)

    async def _announce_placed(
        self, position: PositionRecord, sent: list[tuple[Any, OrderRecord]]
    ) -> None:
        for kind, order in sent:
            self._m_orders.labels(kind).inc()
            if order.status == "rejected":
                if await self._closed_at_provider(position.symbol):
                    # A stop placed beyond the price filled at once and closed the position:
                    # its sibling has nothing left to guard. That is protection, not a failure.
                    log.info(
                        "protective order refused: the position is already closed",
                        extra={"symbol": position.symbol, "kind": str(kind)},
                    )
                    continue
                await self.alerts.raise_(
                    "error",
                    f"{kind} for {position.symbol} refused by the provider: the "
                    "position is not protected",
                    subject=position.symbol,
                )
                continue
            price = order.stop_price or order.price
            assert price is not None
            await self._publish(
                ProtectivePlaced(
                    order_id=order.client_order_id,
                    account=self.config.account,
                    symbol=order.symbol,
                    kind=kind,
                    price=price,
                    amount=order.amount,
                    decision_id=order.decision_id,
                )
            )

    async def _protective_fired(self, order: OrderRecord) -> None:
        """A stop or take-profit filled: say so and cancel its sibling (OCO)."""
        kind: Any = order.role
        trigger = order.stop_price or order.price
        assert trigger is not None
        await self._publish(
            ProtectiveTriggered(
                order_id=order.client_order_id,
                symbol=order.symbol,
                kind=kind,
                trigger_price=trigger,
                fill_price=order.average_price,
                amount=order.filled,
            )
        )
        position = self.store.position(order.symbol)
        if position is None:
            return
        sibling = position.tp_order if order.role == "stop_loss" else position.stop_order
        record = self.store.order(sibling) if sibling else None
        if record is not None and record.live:
            await self.executor.cancel(record.client_order_id, self.now_ms())
        if order.role == "stop_loss":
            self.store.update_counters(last_loss_ms=self.now_ms())

    async def _on_position(self, payload: PositionChanged) -> None:
        if payload.account != self.config.account:
            return
        self.remote_positions[payload.symbol] = payload
        if payload.mark_price is not None:  # candles are the price; this only until one comes
            self.marks.setdefault(payload.symbol, payload.mark_price)
        async with self._lock:
            position = self.store.position(payload.symbol)
            if position is None or position.status != "open":
                return
            if payload.side == "flat" or payload.size == 0:
                await self._closed(position, payload)
                return
            side: Any = payload.side
            if side != position.side:
                return  # a flip in progress: the entry fill opens the new one
            entry = payload.entry_price or position.entry
            updated = replace(position, size=payload.size, entry=entry)
            self.store.save_position(updated)
            grown = updated.runtime and updated.size > position.size
            if grown and self.protector.missing(updated):
                armed, sent = await self.protector.rearm(updated, self.now_ms())
                await self._announce_placed(armed, sent)

    async def _closed(self, position: PositionRecord, payload: PositionChanged) -> None:
        """A position went flat: count the trade, cancel what still guards it."""
        pnl = payload.realised_pnl - position.realised_at_open
        closed = replace(position, status="closed", size=Decimal(0), closed_ms=self.now_ms())
        self.store.save_position(closed)
        if position.runtime:
            await self.protector.cancel_all(position, self.now_ms())
            counters = self._roll_day()
            loss = pnl < 0
            self.store.update_counters(
                realised_today=counters.realised_today + pnl,
                wins=counters.wins + (0 if loss else 1),
                losses=counters.losses + (1 if loss else 0),
                losing_trades_today=counters.losing_trades_today + (1 if loss else 0),
                loss_streak=counters.loss_streak + 1 if loss else 0,
                last_loss_ms=self.now_ms() if loss else counters.last_loss_ms,
            )

    def _on_balance(self, payload: BalanceUpdated) -> None:
        if payload.account != self.config.account:
            return
        held = payload.balances.get(self.config.currency)
        if held is not None:
            self.cash = held.total
            self.seen_balance = held.total
            counters = self.store.counters()
            if self.equity > counters.peak_equity:
                self.store.update_counters(peak_equity=self.equity)

    async def _on_candle(self, payload: CandleClosed) -> None:
        close_ms = to_ms(payload.open_time) + timeframe_ms(payload.timeframe)
        self.clock.advance_to(close_ms)
        price = Decimal(str(payload.close))
        self.marks[payload.symbol] = price
        async with self._lock:
            position = self.store.position(payload.symbol)
            if position is None or position.status != "open" or not position.runtime:
                return
            best = position.best_price or position.entry
            best = max(best, price) if position.side == "long" else min(best, price)
            initial = _dec(self.store.decision(position.decision_id).get("stop"))
            move = trail(
                position,
                price,
                trailing_pct=self.config.trailing_stop_pct,
                breakeven_at_r=self.config.breakeven_at_r,
                initial_stop=initial,
            )
            position = replace(position, best_price=best)
            self.store.save_position(position)
            if move is not None:
                _, placed = await self.protector.move_stop(position, move, self.now_ms())
                if placed is not None:
                    await self._publish(
                        ProtectiveMoved(
                            order_id=placed.client_order_id,
                            symbol=position.symbol,
                            kind="stop_loss",
                            previous_price=move.previous,
                            price=move.price,
                            reason=move.reason,
                        )
                    )
            expired = self.governor.expired(self.portfolio().positions, self.clock.now())
            for held in expired:
                if held.symbol == position.symbol:
                    await self._close_position(position, "max hold time")

    async def _refresh_account(self) -> None:
        """Read the account's balance and positions from the provider."""
        for balance in await self.client.accounts(self.config.account):
            held = balance.balances.get(self.config.currency)
            if held is not None:
                self.cash = held.total
        for position in await self.client.positions(self.config.account):
            self.remote_positions[position.symbol] = position
            if position.mark_price is not None:
                self.marks.setdefault(position.symbol, position.mark_price)

    # -- reconciliation --------------------------------------------------------------------

    async def _reconcile_tick(self) -> None:
        if self.entries_open:
            async with self._lock:
                await self._reconcile(dry_run=False)
            await self.check_account()

    async def check_account(self) -> Verdict | None:
        """Act on an account-level breach (drawdown, daily loss) with no decision in hand."""
        breach = self.governor.check(self.portfolio(), self.clock.now())
        if breach is None:
            return None
        reason = f"{breach.policy}: {breach.reason}"
        if breach.action == "CLOSE_ALL":
            await self.close_all(reason)
            await self.stand_down(breach.until, reason)
        elif breach.action == "STAND_DOWN":
            await self.stand_down(breach.until, reason)
        return breach

    async def reconcile_now(self, dry_run: bool) -> dict[str, Any]:
        """Reconcile now (for the API and the CLI); return the report."""
        async with self._lock:
            return await self._reconcile(dry_run=dry_run)

    async def _reconcile(self, *, dry_run: bool, initial: bool = False) -> dict[str, Any]:
        """Compare the store with the provider and apply each difference's rule."""
        start = time.perf_counter()
        remote_orders = await self.client.orders(self.config.account)
        remote_positions = await self.client.positions(self.config.account)
        balances = await self.client.accounts(self.config.account)
        total = None
        for balance in balances:
            held = balance.balances.get(self.config.currency)
            if held is not None:
                total = held.total
        balance_pair = None
        if total is not None and self.seen_balance is not None and not initial:
            # fills move the balance and its event may still be on its way: a mismatch counts
            # only when the next reconciliation finds the very same one
            pair = (self.seen_balance, total)
            if pair[0] != pair[1] and pair == self._balance_suspect:
                balance_pair = pair
            elif not dry_run:
                self._balance_suspect = pair if pair[0] != pair[1] else None
        rules: dict[reconcile.Kind, reconcile.Rule] = {
            "order": self.config.divergence_order,
            "position": self.config.divergence_position,
            "balance": self.config.divergence_balance,
        }
        differences = reconcile.diff(
            orders=self.store.orders(),
            positions=self.store.positions(),
            remote_orders=remote_orders,
            remote_positions=remote_positions,
            rules=rules,
            balance=balance_pair,
        )
        report: dict[str, Any] = {
            "dry_run": dry_run,
            "orders_checked": len(remote_orders),
            "positions_checked": len(remote_positions),
            "differences": [
                {
                    "kind": d.kind,
                    "key": d.key,
                    "store": d.local,
                    "provider": d.remote,
                    "rule": d.rule,
                    "action": d.action,
                    "line": reconcile.describe(d),
                }
                for d in differences
            ],
        }
        if dry_run:
            return report
        if total is not None:
            self.cash = total
        for position in remote_positions:
            self.remote_positions[position.symbol] = position
        divergences = 0
        for difference in differences:
            if initial and difference.kind == "position" and difference.local is None:
                await self._legacy(difference)
                continue
            if difference.rule != "sync":
                divergences += 1
            await self._apply(difference)
        elapsed = (time.perf_counter() - start) * 1000
        await self._publish(
            AccountReconciled(
                account=self.config.account,
                exchange=self._exchange(remote_positions, balances),
                orders_checked=len(remote_orders),
                positions_checked=len(remote_positions),
                balances_checked=len(balances),
                divergences=divergences,
                duration_ms=round(elapsed, 3),
            )
        )
        report["divergences"] = divergences
        self.last_reconcile = report
        return report

    @staticmethod
    def _exchange(positions: list[PositionChanged], balances: list[BalanceUpdated]) -> str:
        for balance in balances:
            return balance.exchange
        for position in positions:
            return position.exchange
        return "unknown"

    async def _legacy(self, difference: reconcile.Difference) -> None:
        """A position found at start that the inspector did not open: legacy, alert only."""
        remote = difference.remote_position
        assert remote is not None
        record = PositionRecord(
            symbol=remote.symbol,
            side="long" if remote.side == "long" else "short",
            size=remote.size,
            entry=remote.entry_price or Decimal(0),
            opened_ms=self.now_ms(),
            runtime=False,
            strategy="legacy",
            realised_at_open=remote.realised_pnl,
        )
        self.store.save_position(record)
        self.log.append(f"legacy {remote.symbol}")
        await self.alerts.raise_(
            "warning",
            f"legacy position {remote.side} {remote.size} {remote.symbol} found at "
            "start: not opened by the inspector, alert only (not managed)",
            subject=remote.symbol,
        )

    async def _apply(self, difference: reconcile.Difference) -> None:
        now = self.now_ms()
        if difference.rule == "sync":
            assert difference.remote_order is not None
            record = self.store.order(difference.key)
            if record is not None:
                updated = merged(record, difference.remote_order, now)
                self.store.save_order(updated)
                await self._order_changed(updated, record)
            return
        self._m_divergences.labels(difference.kind).inc()
        action = difference.action
        if difference.rule == "adopt":
            await self._adopt(difference, now)
        await self._publish(
            DivergenceFound(
                account=self.config.account,
                exchange="provider",
                kind=difference.kind,
                key=difference.key,
                local=difference.local,
                remote=difference.remote,
                action=action,
            )
        )
        await self.alerts.raise_(
            "warning", f"divergence: {reconcile.describe(difference)}", subject=difference.key
        )
        if difference.rule == "stand_down":
            await self.stand_down(None, f"divergence on {difference.kind} {difference.key}")

    async def _adopt(self, difference: reconcile.Difference, now: int) -> None:
        if difference.kind == "order":
            state = difference.remote_order
            record = self.store.order(difference.key)
            if state is not None and record is None:
                self.store.save_order(
                    OrderRecord(
                        client_order_id=state.client_order_id,
                        decision_id=state.decision_id,
                        role="entry",
                        symbol=state.symbol,
                        side=state.side,
                        type=state.type,
                        amount=state.amount,
                        price=state.price,
                        stop_price=state.stop_price,
                        reduce_only=state.reduce_only,
                        status="open",
                        filled=state.filled,
                        placed_ms=now,
                        updated_ms=now,
                        adopted=True,
                    )
                )
            elif record is not None and state is None:
                self.store.save_order(replace(record, status="cancelled", updated_ms=now))
        elif difference.kind == "position":
            remote = difference.remote_position
            held = self.store.position(difference.key)
            if remote is None and held is not None:
                self.store.save_position(
                    replace(held, status="closed", size=Decimal(0), closed_ms=now)
                )
            elif remote is not None:
                base = held or PositionRecord(
                    symbol=remote.symbol,
                    side="long",
                    size=remote.size,
                    entry=remote.entry_price or Decimal(0),
                    opened_ms=now,
                    runtime=False,
                    strategy="adopted",
                )
                self.store.save_position(
                    replace(
                        base,
                        size=remote.size,
                        side=_side_of(remote),
                        status="open",
                    )
                )
        elif difference.kind == "balance" and difference.remote is not None:
            self.seen_balance = Decimal(difference.remote)

    # -- KPIs and status -------------------------------------------------------------------

    def policy_states(self) -> dict[str, str]:
        """Return each policy's state now: `ok`, or what a portfolio breach would do."""
        states = {"stand_down": "ok"}
        counters = self.store.counters()
        until = counters.stand_down_until_ms
        if until is not None and until > self.now_ms():
            states["stand_down"] = f"STAND_DOWN until {from_ms(until).isoformat()}"
        breach = self.governor.check(self.portfolio(), self.clock.now())
        if breach is not None:
            states[breach.policy] = f"{breach.action}: {breach.reason}"
        return states

    def kpi(self) -> Any:
        """Return the KPI event payload as things stand."""
        counters = self._roll_day()
        strategy_of = {str(r["decision_id"]): str(r["strategy"]) for r in self.store.decisions()}
        now = self.clock.now()
        return kpi.report(
            account=self.config.account,
            currency=self.config.currency,
            now=now,
            day_start=datetime.combine(now.date(), datetime.min.time(), tzinfo=UTC),
            equity=self.equity,
            unrealised=self.unrealised,
            counters=counters,
            positions=self.store.positions(),
            open_orders=self.store.orders(live_only=True),
            strategy_of=strategy_of,
            suppression=self.suppression,
            policies=self.policy_states(),
        )

    async def publish_kpi(self) -> None:
        """Publish `inspector.kpi` now."""
        await self._publish(self.kpi())

    def positions_view(self) -> list[dict[str, Any]]:
        """Return open positions with their protective orders, for `/positions` and status."""
        out = []
        for position in self.store.positions():
            guards = []
            for order_id in (position.stop_order, position.tp_order):
                order = self.store.order(order_id) if order_id else None
                if order is not None:
                    guards.append(
                        {
                            "id": order.client_order_id,
                            "role": order.role,
                            "price": str(order.stop_price or order.price),
                            "amount": str(order.amount),
                            "status": order.status,
                        }
                    )
            out.append(
                {
                    "symbol": position.symbol,
                    "side": position.side,
                    "size": str(position.size),
                    "entry": str(position.entry),
                    "strategy": position.strategy,
                    "managed": "runtime" if position.runtime else "legacy",
                    "stop": None if position.stop is None else str(position.stop),
                    "take_profit": None
                    if position.take_profit is None
                    else str(position.take_profit),
                    "protective": guards,
                }
            )
        return out

    def status(self) -> dict[str, Any]:
        """Return what `/health` answers."""
        counters = self.store.counters()
        healthy = self.entries_open and not self.provider_down and not self.bus.degraded
        return {
            "status": "ok" if healthy else "degraded",
            "instance": self.instance,
            "account": self.config.account,
            "clock": self.clock.kind,
            "entries_open": self.entries_open,
            "provider_down": self.provider_down,
            "bus": "waiting for Redis" if self.bus.degraded else "ok",
            "pending": len(self._held),
            "verdicts": self.verdicts,
            "in_flight": len(
                [o for o in self.store.orders(live_only=True) if o.status == "in_flight"]
            ),
            "positions": len(self.store.positions()),
            "stand_down_until": None
            if counters.stand_down_until_ms is None
            else from_ms(counters.stand_down_until_ms).isoformat(),
            "started": list(self.log),
            "uptime_s": round(time.monotonic() - self.started, 3),
        }

    # -- publishing ------------------------------------------------------------------------

    async def _publish(self, payload: Payload, parent: Envelope[Any] | None = None) -> None:
        at = self.clock.now()
        await self.bus.publish(make_event(payload, source=self.source, parent=parent, ts=at))
        self.published += 1

    async def _publish_alert(self, payload: Payload) -> None:
        await self._publish(payload)


def _with_fill(order: OrderRecord, fee: Decimal, partial: bool) -> OrderRecord:
    return replace(order, fees=order.fees + fee, partials=order.partials + (1 if partial else 0))


def _side_of(position: PositionChanged) -> Literal["long", "short"]:
    return "long" if position.side == "long" else "short"


def _dec(value: Any) -> Decimal | None:
    if value is None or value == "":
        return None
    return Decimal(str(value))
