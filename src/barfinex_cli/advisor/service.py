"""The advisor service: the decision pipeline as a role on the bus.

It takes what the kernel built (bus, clock, gateway client, typed config, an optional trained
model and LLM stage) and opens nothing but its HTTP socket. It joins its consumer group on
`detector.signal` (shared by every advisor of the instance, one consumer per host) and a group of
its own on the events that keep its `MarketContext` current, warms the context over
the gateway client, then runs the eight stages on each signal and publishes every stage's event
as a child of the signal (so `bfx trace` shows candle -> signal -> decision).

A signal is acknowledged only once handled, and its run's events are published in one atomic
step with the signal's mark as handled (`Bus.publish_many(handled=...)`): an advisor killed
between publishing and acknowledging finds the signal marked after its restart and publishes no
second outcome. While the provider is down (its heartbeat fails, or a
series' warm-up cannot reach it) signals stay pending — each says so once with a retryable
`advisor.stage.failed` — and are handled in order when it answers again. A signal for a series
the provider does not hold, a stale one, or one that is not an opening signal is dropped with an
`advisor.signal.dropped` naming the reason. It registers with the provider, heartbeats, and
serves `/health`, `/metrics` and its REST API (`advisor.api`). It holds a lease on its
instance and consumer name (`runtime.lease`) while it runs: a second advisor with the same
consumer name on the bus refuses to start instead of splitting that consumer's signals (advisors
sharing the signals have distinct consumer names); one restarted after a kill waits for the dead
run's lease to lapse.

The module runs past 400 lines because holding signals while the provider is down touches the
consume loop, the heartbeat and the intake at once, and splitting those apart would scatter one
acknowledgement rule across files; the pure parts live in `pipeline` and `stages`, the memory in
`context` and `recent`, the HTTP face in `api`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Summary

from barfinex_cli.advisor.context import CONTEXT_TYPES, MarketContext, SeriesKey, Snapshot
from barfinex_cli.advisor.pipeline import Pipeline, RunResult, llm_options
from barfinex_cli.advisor.recent import RecentRuns, Run
from barfinex_cli.advisor.stages.base import SignalView
from barfinex_cli.advisor.stages.intent import make_exit
from barfinex_cli.advisor.stages.scoring import ScorerLike
from barfinex_cli.bus.base import Bus, Delivery, Handled, trimmed_rows
from barfinex_cli.contracts.advisor import SignalDropped, StageFailed
from barfinex_cli.contracts.detector import SignalGenerated
from barfinex_cli.contracts.envelope import Envelope, make_event
from barfinex_cli.contracts.market import CandleClosed
from barfinex_cli.contracts.times import to_ms
from barfinex_cli.contracts.types import Payload
from barfinex_cli.errors import BfxError, NotFound, ServiceUnreachable
from barfinex_cli.market.candles import timeframe_ms
from barfinex_cli.runtime.client import GatewayClient
from barfinex_cli.runtime.clock import Clock
from barfinex_cli.runtime.config import AdvisorConfig
from barfinex_cli.runtime.health import TrimmedCollector
from barfinex_cli.runtime.lease import InstanceLease
from barfinex_cli.runtime.registration import Registration

if TYPE_CHECKING:
    from barfinex_cli.advisor.llm import LlmStage
    from barfinex_cli.advisor.models import ModelBundle

log = logging.getLogger("bfx.advisor")

IDLE_BLOCK_MS = 25
"""How long an idle advisor blocks on its signals before it reads its context streams again."""


LEASE_HINT = (
    "give this one its own consumer name (BFX_ADVISOR__CONSUMER=NAME): advisors sharing the "
    "signals each need their own"
)
"""What a refused second advisor of one consumer name is told to change."""


class Advisor:
    """The running advisor role."""

    def __init__(
        self,
        config: AdvisorConfig,
        *,
        bus: Bus,
        clock: Clock,
        client: GatewayClient,
        model: ModelBundle | None = None,
        llm: LlmStage | None = None,
    ) -> None:
        from barfinex_cli.advisor.llm import LlmStage
        from barfinex_cli.advisor.models import RuleScorer

        self.config = config
        self.bus = bus
        self.clock = clock
        self.client = client
        self.model = model
        self.instance = config.instance
        self.consumer_name = config.consumer or config.instance
        """Its name in the group `advisor.{instance}` and the registry: one per host when
        advisors on several hosts share the signals (`bfx up --roles advisor` sets it)."""
        self.source = f"advisor/{self.consumer_name}"
        self.lease = InstanceLease(
            bus, f"{self.instance}.{self.consumer_name}", role="advisor", hint=LEASE_HINT
        )
        """One running advisor per consumer name (two would split that consumer's signals)."""
        scorer: ScorerLike = model.scorer if model is not None else RuleScorer()
        self.pipeline = Pipeline(
            config,
            scorer=scorer,
            calibrators=model.calibrators if model is not None else None,
            llm=llm or LlmStage(llm_options(config)),
        )
        self.context = MarketContext()
        self.ready = asyncio.Event()
        self.api_url: str | None = None
        self.provider_down = False
        self.signals_seen = 0
        """`detector.signal` events handled (decided, rejected or dropped) — not held ones."""
        self.published = 0
        self.decisions = 0
        self.rejections = 0
        self.dropped = 0
        self.started = time.monotonic()
        self.runs = RecentRuns(config.recent)
        self._waiting: dict[str, float] = {}
        """When each held signal began to wait for its candles (monotonic seconds)."""
        self._warmed: set[SeriesKey] = set()
        """Series read over the gateway once; a signal of another series warms it first."""
        self._held: deque[Delivery] = deque()
        self._held_ids: set[str] = set()
        self._announced: set[str] = set()
        self._wake = asyncio.Event()
        self.registry = CollectorRegistry()
        self.registry.register(TrimmedCollector(bus))  # bfx_bus_trimmed_total
        self._m_signals = Counter(
            "bfx_advisor_signals", "Signals handled.", ["outcome"], registry=self.registry
        )
        self._m_rejected = Counter(
            "bfx_advisor_rejected", "Runs stopped, by stage.", ["stage"], registry=self.registry
        )
        self._m_held = Gauge(
            "bfx_advisor_pending_signals",
            "Signals held while the provider is down.",
            registry=self.registry,
        )
        self._m_latency = Summary(
            "bfx_advisor_run_seconds", "Time through the eight stages.", registry=self.registry
        )
        self._m_held.set_function(lambda: len(self._held))

    # -- lifecycle -------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> int:
        """Run until `stop` is set; return how many decisions were published."""
        tasks: list[asyncio.Task[Any]] = []
        await self.lease.acquire()  # before the groups: a second run must not take a signal
        try:
            tasks.append(asyncio.create_task(self.lease.hold(stop), name="lease"))
            # signals are shared by the instance's group; the context events come through a
            # group of this consumer alone, so each advisor sharing the signals sees every candle
            consumer = await self.bus.consumer(
                f"advisor.{self.instance}", self.consumer_name, ["detector.signal"], start="$"
            )
            context = await self.bus.consumer(
                f"advisor.{self.instance}.context.{self.consumer_name}",
                self.consumer_name,
                list(CONTEXT_TYPES),
                start="$",
            )
            await self._warm_up()
            if self.config.serve_api:
                from barfinex_cli.advisor.api import api_app
                from barfinex_cli.runtime.health import bind_first_free, serve_health

                sock = bind_first_free(self.config.host, self.config.port)
                host, port = sock.getsockname()[:2]
                self.api_url = f"http://{host}:{port}"
                app = api_app(self)
                tasks.append(asyncio.create_task(serve_health(app, sock, stop), name="api"))
            tasks.append(asyncio.create_task(self._watch_provider(stop), name="heartbeat"))
            self.ready.set()
            log.info(
                "advisor running",
                extra={
                    "instance": self.instance,
                    "consumer": self.consumer_name,
                    "api": self.api_url,
                    "scorer": self.pipeline.scorer.name,
                },
            )
            while not stop.is_set():
                behind = bool(self._held) and not self.provider_down  # held for its candles
                updates = await context.fetch(500, 50 if behind else 1)
                await self._absorb(context, updates)
                # the two groups cannot share one blocking read: an idle wait here is short, or
                # a candle would sit unread on the context streams for its length (a lock-step
                # replay waits for this group before the next moment)
                deliveries = await consumer.fetch(100, 1 if updates or behind else IDLE_BLOCK_MS)
                signals = await self._absorb(consumer, deliveries)
                for delivery in signals:
                    if delivery.event.id not in self._held_ids:
                        self._held.append(delivery)
                        self._held_ids.add(delivery.event.id)
                await self._drain(consumer, stop)
                if self._held and not deliveries and not updates and self.provider_down:
                    await self._pause(stop)
            if self.lease.lost is not None:
                raise self.lease.lost
        finally:
            stop.set()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(*tasks, return_exceptions=True)
            await self.lease.release()
        return self.decisions

    async def _absorb(self, consumer: Any, deliveries: Sequence[Delivery]) -> list[Delivery]:
        """Apply context events (acknowledged at once); return the signals, in order."""
        signals: list[Delivery] = []
        context: list[Delivery] = []
        for delivery in deliveries:
            payload = delivery.event.payload
            if isinstance(payload, SignalGenerated):
                signals.append(delivery)
                continue
            self.context.apply(payload)
            if isinstance(payload, CandleClosed):
                self.clock.advance_to(to_ms(payload.open_time) + timeframe_ms(payload.timeframe))
            context.append(delivery)
        if context:
            await consumer.ack(context)
        return signals

    async def _drain(self, consumer: Any, stop: asyncio.Event) -> None:
        """Handle held signals in order while the provider answers; ack each once handled."""
        dedup = self.bus.deduplicator()
        group = f"advisor.{self.instance}"
        while self._held and not stop.is_set():
            delivery = self._held[0]
            event = delivery.event
            if self.provider_down:
                # what intake drops needs no provider: drop it now, hold the rest
                for waiting in [d for d in self._held if _needs_no_provider(d.event)]:
                    await self.handle(waiting.event, handled=Handled(group, waiting.event.id))
                    await self._done(consumer, dedup, group, waiting)
                await self._announce_pending(list(self._held), "the provider is down")
                return
            if (await dedup.seen(group, [event.id]))[0]:
                await self._done(consumer, dedup, group, delivery)
                continue
            if self._context_behind(event):
                return  # its candles are still on their way: read more first
            try:
                await self.handle(event, handled=Handled(group, event.id))
            except ServiceUnreachable as exc:
                self.provider_down = True
                await self._announce_pending(list(self._held), str(exc))
                return
            await self._done(consumer, dedup, group, delivery)

    def _context_behind(self, event: Envelope[Any]) -> bool:
        """Tell whether the signal should wait for the context of its moment (`context_wait_s`).

        Signals, candles and books travel on separate streams, so a signal can arrive before
        the candles that precede it, or before the book of its own moment; judged at once, its
        context would look stale, or its entry be priced from the book of the moment before.
        It waits while the context lacks its candle or, on a market clock, while the newest
        book of its symbol (once books were seen) is older than the signal candle's close, up
        to `context_wait_s`; after that the quality gate judges the context as it is. Live, the
        newest book is the one to price from, whatever its time.
        """
        signal = event.payload
        if not isinstance(signal, SignalGenerated) or signal.action != "open":
            return False
        opened = to_ms(signal.candle_time)
        newest = self.context.newest_open((signal.exchange, signal.symbol, signal.timeframe))
        candle_behind = newest is not None and newest < opened
        book_behind = False
        if self.clock.kind == "market":
            book = self.context.book_ms(signal.exchange, signal.symbol)
            book_behind = book is not None and book < opened + timeframe_ms(signal.timeframe)
        if not candle_behind and not book_behind:
            return False
        since = self._waiting.setdefault(event.id, time.monotonic())
        return time.monotonic() - since < self.config.context_wait_s

    async def _done(self, consumer: Any, dedup: Any, group: str, delivery: Delivery) -> None:
        await dedup.mark(group, [delivery.event.id])
        await consumer.ack([delivery])
        self._held.remove(delivery)
        self._held_ids.discard(delivery.event.id)
        self._announced.discard(delivery.event.id)
        self._waiting.pop(delivery.event.id, None)

    async def _pause(self, stop: asyncio.Event) -> None:
        """Wait `retry_s` (or until the provider is seen again) before retrying held signals."""
        self._wake.clear()
        waiters = {asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self._wake.wait())}
        await asyncio.wait(
            waiters, timeout=self.config.retry_s, return_when=asyncio.FIRST_COMPLETED
        )
        for waiter in waiters:
            waiter.cancel()
        if self.provider_down and not stop.is_set():
            with contextlib.suppress(BfxError):
                await self.client.health()
                self._provider_back()

    async def _announce_pending(self, deliveries: list[Delivery], reason: str) -> None:
        """Say once per signal that it waits for the provider (it stays pending, not dropped)."""
        for delivery in deliveries:
            if delivery.event.id in self._announced:
                continue
            self._announced.add(delivery.event.id)
            log.warning(
                "signal held: provider unreachable",
                extra={"signal": delivery.event.id, "reason": reason},
            )
            failed = StageFailed(
                signal_id=delivery.event.id,
                stage="context",
                error_type="ServiceUnreachable",
                message=reason[:500],
                retryable=True,
            )
            await self._publish([failed], delivery.event)

    def _provider_back(self) -> None:
        if self.provider_down:
            log.info("provider answers again", extra={"held": len(self._held)})
        self.provider_down = False
        self._wake.set()

    async def _watch_provider(self, stop: asyncio.Event) -> None:
        """Heartbeat (or ping) the provider; its answer says whether signals may be handled."""
        registration = None
        if self.config.join_registry:
            from barfinex_cli.advisor.api import MCP_TOOLS
            from barfinex_cli.contracts.rest import AppTool

            registration = Registration(
                self.client,
                name=self.consumer_name,
                role="advisor",
                url=self.api_url,
                interval_s=self.config.heartbeat_s,
                tools=[AppTool.model_validate(t) for t in MCP_TOOLS] if self.api_url else (),
            )
        while not stop.is_set():
            ok = registration is not None and await registration.heartbeat()
            if not ok:  # a refused registration is no outage: ask whether the provider answers
                try:
                    await self.client.health()
                    ok = True
                except BfxError:
                    ok = False
            if ok:
                self._provider_back()
            elif not self.provider_down:
                log.warning("provider unreachable: holding signals until it answers")
                self.provider_down = True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.config.heartbeat_s)

    # -- warm-up ---------------------------------------------------------------------------

    async def _warm_up(self) -> None:
        """Read balances, positions and every held series over the gateway (once, at start)."""
        try:
            for balance in await self.client.accounts():
                for currency, amounts in balance.balances.items():
                    self.context.set_quote_total(balance.exchange, currency, float(amounts.total))
            for position in await self.client.positions():
                self.context.apply(position)
            for connector in await self.client.connectors():  # the gateway's health of each
                self.context.apply(connector)
            for series in await self.client.series():
                await self._warm_series((series.exchange, series.symbol, series.timeframe))
        except ServiceUnreachable as exc:
            self.provider_down = True
            log.warning("warm-up incomplete: provider unreachable", extra={"error": str(exc)})

    async def _warm_series(self, key: SeriesKey) -> None:
        """Load a series' recent candles and its top of book (NotFound: the provider lacks it)."""
        exchange, symbol, timeframe = key
        answer = await self.client.candles(exchange, symbol, timeframe, limit=self.config.warmup)
        self.context.warm(key, [c.model_dump() for c in answer.candles])
        self._warmed.add(key)
        with contextlib.suppress(NotFound):
            book = await self.client.orderbook(symbol, exchange=exchange, depth=1)
            bid = float(book.bids[0][0]) if book.bids else None
            ask = float(book.asks[0][0]) if book.asks else None
            if self.context.snapshot(key).bid is None:
                self.context.set_quote(exchange, symbol, bid, ask)

    # -- one signal ------------------------------------------------------------------------

    async def handle(self, event: Envelope[Any], *, handled: Handled | None = None) -> Run | None:
        """Decide one `detector.signal`, publish every stage's event; return the run.

        The run's events go out in one atomic publish which, given `handled`, also marks the
        signal handled by the group: an advisor killed before it acknowledges the signal finds
        it marked after its restart and publishes no second outcome.

        Raises:
            ServiceUnreachable: the series had to be warmed and the provider did not answer
                (the caller keeps the signal pending).
        """
        signal = event.payload
        if not isinstance(signal, SignalGenerated):
            return None
        key = (signal.exchange, signal.symbol, signal.timeframe)
        if signal.action == "flip":
            return await self._drop(
                event,
                "unsupported_action",
                "action 'flip': the advisor plans opens, closes and reduces (an open of the "
                "other side is judged as a flip by the inspector)",
                handled,
            )
        # On a market clock a replay at full speed handles signals long after their market time
        # by design; there the quality gate's lag check is what catches a stale context.
        age_s = (self.clock.now_ms() - to_ms(event.ts)) / 1000
        if self.clock.kind == "wall" and age_s > self.config.max_signal_age_s:
            return await self._drop(
                event,
                "stale_signal",
                f"{age_s:.0f} s old (at most {self.config.max_signal_age_s:g})",
                handled,
            )
        if signal.action in ("close", "reduce"):
            return await self._exit(event, signal, handled)
        if key not in self._warmed:  # once per series; afterwards the bus keeps it current
            try:
                await self._warm_series(key)
            except NotFound:
                if self.context.has(key):  # the bus carries it though the store has none yet
                    self._warmed.add(key)
                else:
                    return await self._drop(
                        event,
                        "unknown_symbol",
                        f"the provider holds no {signal.exchange} {signal.symbol} "
                        f"{signal.timeframe} candles",
                        handled,
                    )
        start = time.perf_counter()
        try:
            result = await self.pipeline.run(SignalView(event.id, signal), self._snapshot(signal))
        except Exception as exc:  # a bug or data no stage foresaw: say so, keep the role up
            return await self._failed(event, exc, handled)
        self._m_latency.observe(time.perf_counter() - start)
        run = Run(signal=event, result=result)
        run.events = await self._publish(result.events, event, handled)
        self.signals_seen += 1
        if result.decision is not None:
            self.decisions += 1
            self._m_signals.labels("decided").inc()
        else:
            self.rejections += 1
            self._m_signals.labels("rejected").inc()
            stage = result.rejected.stage if result.rejected is not None else "?"
            self._m_rejected.labels(stage).inc()
            log.info(
                "signal rejected",
                extra={
                    "signal": event.id,
                    "stage": stage,
                    "reason": result.rejected.reason if result.rejected else "",
                },
            )
        self.runs.add(run)
        return run

    async def _exit(
        self, event: Envelope[Any], signal: SignalGenerated, handled: Handled | None
    ) -> Run:
        """Decide a `close` or `reduce` signal at once: no entry stage judges an exit."""
        decision = make_exit(
            SignalView(event.id, signal), self._snapshot(signal), self.config.reduce_fraction
        )
        result = RunResult(events=[decision], stages=list(decision.stages), decision=decision)
        run = Run(signal=event, result=result)
        run.events = await self._publish([decision], event, handled)
        self.signals_seen += 1
        self.decisions += 1
        self._m_signals.labels("decided").inc()
        self.runs.add(run)
        return run

    async def evaluate(self, signal: SignalGenerated) -> RunResult:
        """Run the pipeline on `signal` against the current context, publishing nothing."""
        key = (signal.exchange, signal.symbol, signal.timeframe)
        if key not in self._warmed:
            await self._warm_series(key)
        saved = dict(self.pipeline.regimes)
        try:
            view = SignalView(f"evaluation-{time.monotonic_ns()}", signal)
            return await self.pipeline.run(view, self._snapshot(signal))
        finally:
            self.pipeline.regimes = saved

    def _snapshot(self, signal: SignalGenerated) -> Snapshot:
        """Return the context of the signal's series as of its candle.

        On a market clock the connector's state is left out: a replay's connector reports itself
        disconnected once the replay ends, which says nothing of the candles before.
        """
        key = (signal.exchange, signal.symbol, signal.timeframe)
        snapshot = self.context.snapshot(key, until_ms=to_ms(signal.candle_time))
        if self.clock.kind == "market":
            snapshot = dataclasses.replace(snapshot, connected=None)
        return snapshot

    async def _failed(
        self, event: Envelope[Any], exc: Exception, handled: Handled | None = None
    ) -> Run:
        """Record a run that raised: one `advisor.stage.failed` (not retried) and the traceback."""
        log.error("advisor run failed", exc_info=exc, extra={"signal": event.id})
        failed = StageFailed(
            signal_id=event.id,
            stage="intake",
            error_type=type(exc).__name__,
            message=str(exc)[:500] or type(exc).__name__,
            retryable=False,
        )
        run = Run(signal=event)
        run.events = await self._publish([failed], event, handled)
        self.signals_seen += 1
        self.rejections += 1
        self._m_signals.labels("failed").inc()
        self.runs.add(run)
        return run

    async def _drop(
        self, event: Envelope[Any], reason: str, detail: str, handled: Handled | None = None
    ) -> Run:
        log.warning(
            "signal dropped", extra={"signal": event.id, "reason": reason, "detail": detail}
        )
        dropped = SignalDropped(signal_id=event.id, reason=reason, detail=detail)
        run = Run(signal=event)
        run.events = await self._publish([dropped], event, handled)
        self.signals_seen += 1
        self.dropped += 1
        self._m_signals.labels("dropped").inc()
        self.runs.add(run)
        return run

    async def _publish(
        self, payloads: Sequence[Payload], parent: Envelope[Any], handled: Handled | None = None
    ) -> list[Envelope[Any]]:
        at = parent.ts if self.clock.kind == "market" else self.clock.now()
        events = [make_event(p, source=self.source, parent=parent, ts=at) for p in payloads]
        if events or handled is not None:
            await self.bus.publish_many(events, handled=handled)
            self.published += len(events)
        return events

    def find(self, ref: str) -> Run:
        """Return a recent run (see `RecentRuns.find`)."""
        return self.runs.find(ref)

    def regimes(self) -> dict[str, str]:
        """Return the current regime of every series a signal was decided on."""
        return {" ".join(key): regime for key, regime in self.pipeline.regimes.items()}

    def status(self) -> dict[str, Any]:
        """Return what `/health` answers."""
        return {
            "status": "ok",
            "instance": self.instance,
            "clock": self.clock.kind,
            "scorer": self.pipeline.scorer.name,
            "model": self.model.name if self.model is not None else None,
            "llm_models": list(self.config.llm_models),
            "provider_down": self.provider_down,
            "bus_trimmed": trimmed_rows(self.bus.trimmed),  # entries lost to the stream cap
            "signals": self.signals_seen,
            "decisions": self.decisions,
            "rejections": self.rejections,
            "dropped": self.dropped,
            "pending": len(self._held),
            "published": self.published,
            "series": len(self.context.series()),
            "uptime_s": round(time.monotonic() - self.started, 3),
        }


def _needs_no_provider(event: Envelope[Any]) -> bool:
    """Tell whether intake decides this signal without asking the provider (not an opening one:
    an exit is decided from what the context holds, a flip is dropped)."""
    payload = event.payload
    return isinstance(payload, SignalGenerated) and payload.action != "open"
