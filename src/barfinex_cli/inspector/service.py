"""The inspector service: the risk governor as a role on the bus, and the only role that trades.

It takes what the kernel built (bus, clock, gateway client, its store and governor) and opens
nothing but its HTTP socket. Every `advisor.decision` becomes an `Intent`; the governor's
`Verdict` is published as `inspector.verdict`, a child of the decision (so `bfx trace` reaches
candle -> signal -> decision -> verdict -> order). ALLOW places the order, THROTTLE tells the
detector on the bus, STAND_DOWN stops new entries until cleared or a time passes, CLOSE_ALL
flattens every runtime position. Order and position events from the provider drive the rest:
protective orders placed as an entry fills, the sibling cancelled when one fires, fill audits,
the day's counters the policies judge by.

Start, restart, crash: state lives in `inspector.db` (`store.inspector`). On start it takes its
instance name's lease (`runtime.lease`): a second inspector of the same name on the bus refuses
to start (one line, exit 2) instead of splitting the decisions and writing the same store; one
restarted after a kill waits for the dead run's lease to lapse. It also locks its store file, so
a second inspector on the same data directory but another bus is refused too. Then it joins its
consumer group, then settles orders left in flight, reconciles against the provider (positions
it did not open are legacy: alert only), re-arms any missing protective order, and only then
takes decisions. While the provider does not answer, decisions stay pending (not acknowledged),
each verdict saying so once, and are judged in order when it answers again. A decision judged
before a crash (its row in the store) is not judged again when it is delivered again: its
stored verdict is published under the same derived id and only what it did not do yet is done;
protective orders found live at start-up are announced under derived ids too, so one placed
just before a crash is announced once.

This module holds the shared state, the account figures and the consumer loop; the parts that
act on them are its siblings, each given the `Inspector`: `decisions` (verdicts and entries),
`events` (the provider's order, position, balance and quote events), `positions` (the one
position per symbol, moved by the inspector's own fills), `guard` (protective orders, held by
the venue or emulated), `closing` (closes, deferred while the book is bad),
`reconciling` (start-up, the store against the provider, account breaches), `reports` (KPIs,
status) and `watchers` (heartbeat, periodic work, the policy file).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from barfinex_cli.bus.base import Bus, Consumer, Delivery
from barfinex_cli.contracts.advisor import DecisionMade
from barfinex_cli.contracts.envelope import Envelope, make_event
from barfinex_cli.contracts.orders import PositionChanged
from barfinex_cli.contracts.rest import BrokerCapabilities
from barfinex_cli.contracts.times import from_ms, to_ms
from barfinex_cli.contracts.types import Payload
from barfinex_cli.errors import ServiceUnreachable
from barfinex_cli.inspector import watchers
from barfinex_cli.inspector.alerts import Alerts, Telegram
from barfinex_cli.inspector.closing import Closer
from barfinex_cli.inspector.decisions import Decisions
from barfinex_cli.inspector.events import Events
from barfinex_cli.inspector.execution import Executor
from barfinex_cli.inspector.governor import Governor
from barfinex_cli.inspector.guard import Guard
from barfinex_cli.inspector.model import Portfolio, Position
from barfinex_cli.inspector.positions import Positions
from barfinex_cli.inspector.protective import Protector
from barfinex_cli.inspector.quotes import Quotes
from barfinex_cli.inspector.reconciling import Reconciler
from barfinex_cli.inspector.reports import Reports
from barfinex_cli.runtime.client import GatewayClient
from barfinex_cli.runtime.clock import Clock
from barfinex_cli.runtime.config import InspectorConfig
from barfinex_cli.runtime.health import TrimmedCollector
from barfinex_cli.runtime.lease import InstanceLease, StoreLock
from barfinex_cli.store.inspector import STAND_DOWN_LATEST_MS, InspectorStore

log = logging.getLogger("bfx.inspector")

TYPES = (
    "advisor.decision",
    "advisor.signal.received",
    "advisor.*.blocked",
    "advisor.decision.rejected",
    "advisor.signal.dropped",
    "detector.signal",
    "order.*",
    "position.changed",
    "account.balance",
    "market.candle",
    "market.ticker",
)
FOREVER = from_ms(STAND_DOWN_LATEST_MS)
"""A stand-down with no end: it holds until `bfx inspector resume` (9999-12-31, UTC)."""
MAX_STAND_DOWN = timedelta(days=366)
"""The longest timed stand-down an operator may ask for; longer is 'until resumed'."""

LEASE_HINT = (
    "run one inspector per account: a second of the same name would split the decisions and "
    "share inspector.db (another account: its own BFX_INSPECTOR__INSTANCE and --data-dir)"
)
"""What a refused second `bfx inspector run` is told to change."""


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
        self.venue: BrokerCapabilities | None = None
        """What the provider's broker venue holds (read at start); None: it did not say."""
        self.quotes = Quotes()
        self.alerts = Alerts(self.publish_alert, telegram)
        self.decisions = Decisions(self)
        self.events = Events(self)
        self.guard = Guard(self)
        self.positions = Positions(self)
        self.closer = Closer(self)
        self.reconciler = Reconciler(self)
        self.reports = Reports(self)
        self.protector.holds = self.guard.held_by_venue
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
        self.lease = InstanceLease(bus, self.instance, role="inspector", hint=LEASE_HINT)
        """One running inspector per name on a bus (a second would split the decisions)."""
        self.store_lock = StoreLock(
            store.path, role="inspector", hint="give this one its own --data-dir"
        )
        """One inspector writing this store (another namespace on the same data dir too)."""
        self.last_reconcile: dict[str, Any] | None = None
        """The last applied reconciliation: when, and its divergences or why it compared nothing."""
        self.started = time.monotonic()
        self.log: list[str] = []
        """What the start-up sequence did, in order (for `/health` and the tests)."""
        self.held: deque[Delivery] = deque()
        self.held_ids: set[str] = set()
        self.announced: set[str] = set()
        self.strategy_of_signal: dict[str, str] = {}
        self.lock = asyncio.Lock()
        self.balance_suspect: tuple[Decimal, Decimal] | None = None
        self.ticks: watchers.MarketTicks | None = None
        """Periodic work on a market clock (reconcile, KPIs, deferred closes), run inline."""
        self.registry = CollectorRegistry()
        self.registry.register(TrimmedCollector(self.bus))  # bfx_bus_trimmed_total
        self.m_verdicts = Counter(
            "bfx_inspector_verdicts", "Verdicts by action.", ["action"], registry=self.registry
        )
        self.m_orders = Counter(
            "bfx_inspector_orders", "Orders sent, by role.", ["role"], registry=self.registry
        )
        self.m_divergences = Counter(
            "bfx_inspector_divergences", "Divergences found.", ["kind"], registry=self.registry
        )
        held = Gauge("bfx_inspector_pending_decisions", "Decisions held.", registry=self.registry)
        held.set_function(lambda: len(self.held))
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
        counters = self.roll_day()
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

    def roll_day(self) -> Any:
        """Start a new trading day when it changed; return the counters.

        The trading day starts at local midnight of the policy file's `timezone`, on the kernel
        clock (market time in a replay), the same day the daily limits judge; it is kept as the
        local date (`2024-01-01`), so a store written in UTC keeps its day.
        """
        counters = self.store.counters()
        policies = self.governor.policies
        start = policies.day_start(self.clock.now())
        day = start.astimezone(policies.day_zone).date().isoformat()
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
        await self.lease.acquire()  # before the group: a second run must not take a decision
        try:
            self.store_lock.acquire()
            tasks.append(asyncio.create_task(self.lease.hold(stop), name="lease"))
            consumer = await self.bus.consumer(
                f"inspector.{self.instance}", self.instance, list(TYPES), start="$"
            )
            await self.reconciler.start_up()
            if self.config.serve_api:
                from barfinex_cli.inspector.api import api_app
                from barfinex_cli.runtime.health import bind_first_free, serve_health

                sock = bind_first_free(self.config.host, self.config.port)
                host, port = sock.getsockname()[:2]
                self.api_url = f"http://{host}:{port}"
                app = api_app(self)
                tasks.append(asyncio.create_task(serve_health(app, sock, stop), name="api"))
            tasks.append(asyncio.create_task(watchers.watch_provider(self, stop), name="heartbeat"))
            periodic = [
                (self.config.kpi_interval_s, self.reports.publish_kpi, "kpi"),
                (self.config.reconcile_interval_s, self.reconciler.reconcile_tick, "reconcile"),
                (self.config.retry_s, self.closer.retry_tick, "deferred-closes"),
            ]
            if self.clock.kind == "market":  # ticked by the consume loop, in market time
                floors = watchers.MARKET_FLOORS_S
                jobs = [(max(s, floors.get(n, 0.0)), w) for s, w, n in periodic]
                self.ticks = watchers.MarketTicks(self.clock, jobs)
            else:
                for seconds, work, name in periodic:
                    tasks.append(
                        asyncio.create_task(watchers.every(stop, seconds, work), name=name)
                    )
            if self.policy_path is not None:
                tasks.append(
                    asyncio.create_task(watchers.watch_policies(self, stop), name="policies")
                )
            self.ready.set()
            log.info("inspector running", extra={"instance": self.instance, "api": self.api_url})
            self.store.counters()  # a stored value no clock can hold is replaced (and alerted)
            while not stop.is_set():
                if self.store.repairs:
                    await self._alert_repairs()
                # up to 500 per stream: candles arrive by the hundred while decisions are
                # judged, and 100 a round held the inspector behind a replay at 180/s
                deliveries = await consumer.fetch(500, 250)
                await self._absorb(consumer, deliveries)
                await self._drain(consumer, stop)
                if self.held and not deliveries:
                    await self._pause(stop)
            if self.lease.lost is not None:
                raise self.lease.lost
        finally:
            stop.set()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(*tasks, return_exceptions=True)
            await self.alerts.aclose()
            await self.lease.release()
            self.store_lock.release()
        return self.verdicts

    async def _absorb(self, consumer: Consumer, deliveries: list[Delivery]) -> None:
        """Handle every event but decisions at once (acknowledged); hold decisions in order."""
        done: list[Delivery] = []
        # one fetch reads several streams one after the other: handle their events in the
        # order they were made (ids are time-ordered), so an older position event never lands
        # after a newer candle
        for delivery in sorted(deliveries, key=lambda d: d.event.id):
            if isinstance(delivery.event.payload, DecisionMade):
                if delivery.event.id not in self.held_ids:
                    self.held.append(delivery)
                    self.held_ids.add(delivery.event.id)
                continue
            try:
                await self.events.on_event(delivery.event)
            except ServiceUnreachable as exc:
                log.warning(
                    "provider unreachable while handling an event",
                    extra={"type": delivery.event.type, "error": str(exc)},
                )
                self.provider_down = True
            done.append(delivery)
        if done and self.entries_open:  # prices, fills or balances moved: any breach now?
            try:
                await self.reconciler.check_account()
            except ServiceUnreachable as exc:
                log.warning("cannot act on a breach now", extra={"error": str(exc)})
        if done and self.ticks is not None and self.entries_open:
            await self.ticks.run_due()  # before the ack: a lock-step replay waits for it
        if done:
            await consumer.ack(done)

    async def _drain(self, consumer: Consumer, stop: asyncio.Event) -> None:
        """Judge held decisions in order while the provider answers; ack each once judged."""
        dedup = self.bus.deduplicator()
        group = f"inspector.{self.instance}"
        while self.held and not stop.is_set():
            if not self.entries_open and not await self.reconciler.start_up():
                await self.decisions.announce_pending(
                    list(self.held), "the provider is unreachable"
                )
                return
            delivery = self.held[0]
            if not (await dedup.seen(group, [delivery.event.id]))[0]:
                try:
                    await self.decisions.decide(delivery.event)
                except ServiceUnreachable as exc:
                    self.provider_down = True
                    await self.decisions.announce_pending(list(self.held), str(exc))
                    return
            await dedup.mark(group, [delivery.event.id])
            await consumer.ack([delivery])
            self.held.popleft()
            self.held_ids.discard(delivery.event.id)
            self.announced.discard(delivery.event.id)

    async def _alert_repairs(self) -> None:
        """Alert on each value the store could not use as stored (see `InspectorStore.repairs`)."""
        while self.store.repairs:
            note = self.store.repairs.pop(0)
            log.error("inspector store repaired", extra={"detail": note})
            await self.alerts.raise_("error", note, policy="stand_down")

    async def _pause(self, stop: asyncio.Event) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), self.config.retry_s)

    # -- operator actions ------------------------------------------------------------------

    async def stand_down(
        self, until: datetime | None, reason: str, *, extend: bool = False
    ) -> None:
        """Stop new entries until `until` (None: until `resume`); open positions stay managed.

        With `extend`, a stand-down already in force at least as long is left as it is. The
        alert is raised when the stand-down changes, not for each decision it refuses.
        """
        end = FOREVER if until is None else min(until, FOREVER)
        held = self.store.counters().stand_down_until_ms
        if held is not None and (held == to_ms(end) or (extend and held >= to_ms(end))):
            return  # the stand-down in force already says so: no second alert
        self.store.update_counters(stand_down_until_ms=to_ms(end), stand_down_reason=reason)
        when = "until resumed" if until is None else f"until {end.isoformat()}"
        await self.alerts.raise_("warning", f"stand down {when}: {reason}", policy="stand_down")

    async def resume(self) -> None:
        """Clear a stand-down."""
        self.store.update_counters(stand_down_until_ms=None, stand_down_reason="")
        await self.alerts.raise_("info", "stand-down cleared: entries accepted again")

    async def close_all(self, reason: str) -> list[str]:
        """Flatten every runtime position now; return the symbols closed."""
        return await self.closer.close_all(reason)

    # -- views (see `reports`) --------------------------------------------------------------

    def positions_view(self) -> list[dict[str, Any]]:
        """Return open positions with their protective orders, for `/positions` and status."""
        return self.reports.positions_view()

    def status(self) -> dict[str, Any]:
        """Return what `/health` answers."""
        return self.reports.status()

    # -- publishing ------------------------------------------------------------------------

    async def publish(
        self, payload: Payload, parent: Envelope[Any] | None = None, *, event_id: str | None = None
    ) -> None:
        """Publish `payload` as this inspector, at the kernel clock's time.

        `event_id` (derived, `ids.derived_uuid7`) is given for outcomes a restart may publish
        again: the copy keeps the id, so the audit store and every group keep one.
        """
        at = self.clock.now()
        event = make_event(payload, source=self.source, parent=parent, ts=at, event_id=event_id)
        await self.bus.publish(event)
        self.published += 1

    async def publish_alert(self, payload: Payload) -> None:
        await self.publish(payload)
