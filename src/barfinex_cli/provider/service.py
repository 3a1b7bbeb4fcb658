"""The provider service: one role that is the only door to market data and orders.

It takes what the kernel built for it (the bus, the clock, the market store, the connector, the
gateway token, the recorder) and opens nothing of its own but the connector's connections and
the gateway's socket. Every payload from the connector goes through the pure `Pipeline`: closed
candles are stored and published, higher timeframes built from the base one, trades and books
published and kept for the gateway; the paper broker (or the live exchange) takes orders; health
is measured and published; the REST/WS/MCP gateway serves it all behind one token.

On a market clock (a replay) every event is stamped with market time and the periodic work
(health) ticks with the data, so a replay at full speed runs with no wall-clock pacing. With
`lockstep` (`bfx up`'s default) the replay plays each market moment only once every running
role's consumer group has handled the last (`bus.settle`), as a backtest does.

The module runs past 400 lines because the runtime's flush, the stream, recovery, integrity,
the flusher and the gateway all share the one outbox and data clock; the pure parts live in
`pipeline`, the connectors and the gateway package.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from barfinex_cli.bus.base import Bus
from barfinex_cli.contracts.envelope import Envelope, make_event
from barfinex_cli.contracts.ids import uuid7
from barfinex_cli.contracts.market import BookUpdated, BusRecovered, IncidentEscalated
from barfinex_cli.contracts.times import iso_ms, to_ms
from barfinex_cli.contracts.types import Payload
from barfinex_cli.errors import BfxError
from barfinex_cli.market.candles import timeframe_ms
from barfinex_cli.provider.connectors.base import Broker, MarketConnector, MarketFedBroker
from barfinex_cli.provider.pipeline import (
    FeedBook,
    FeedCandle,
    FeedTrade,
    KeepCandle,
    KeepTrade,
    Pipeline,
    Publish,
    Refuse,
    Step,
)
from barfinex_cli.runtime.clock import Clock
from barfinex_cli.runtime.config import GatewayConfig, ProviderConfig, WebhooksConfig
from barfinex_cli.runtime.recording import Recording
from barfinex_cli.store.market import CandleRow, MarketStore, SeriesKey, TradeRow

if TYPE_CHECKING:
    from fastapi import FastAPI

    from barfinex_cli.bus.settle import Settle
    from barfinex_cli.market.integrity.healing import Healer
    from barfinex_cli.provider.gateway.context import GatewayContext
    from barfinex_cli.provider.gateway.webhooks import WebhookSender
    from barfinex_cli.store.broker import BrokerStore

log = logging.getLogger("bfx.provider")

SHUTDOWN_GRACE_S = 10.0
"""How long the provider's tasks get to finish after stop before they are cancelled."""

FLUSH_COALESCE_S = 0.02
"""How long the flusher lets a burst of queued events gather before it writes them."""

FLUSH_BATCH = 500
"""Events a replay at full speed (or in lock-step) queues between two flushes."""

PUBLISH_AHEAD_MAX = 2_000
"""Events a paced stream may queue while a publish is in flight before it waits for the bus."""

LOCKSTEP_POLL_S = 0.003
"""Pause between two asks of a lock-step barrier while a group is behind (each is a round trip)."""

TRADE_GRACE_MS = 2_000
"""How long after its bucket ends a candle built from trades waits for late trades."""

ProviderOptions = ProviderConfig
"""The provider's typed config (`[provider]` in bfx.toml); the old name still reads well here."""


@dataclass
class ProviderRuntime:
    """The moving parts of a running provider (exposed for tests and the gateway)."""

    bus: Bus
    market: MarketStore
    connector: MarketConnector
    source: str
    clock: Clock
    pipeline: Pipeline
    broker: Broker | None = None
    fed: MarketFedBroker | None = None
    """The broker again if it fills against the market data (the paper broker)."""
    reconnects: int = 0
    integrity: dict[SeriesKey, float] = field(default_factory=dict)
    """Latest data-quality score (0-100) per base series."""
    events: int = 0
    outbox: list[Envelope[Any]] = field(default_factory=list)
    candle_rows: dict[SeriesKey, list[CandleRow]] = field(default_factory=dict)
    trade_rows: dict[tuple[str, str], list[TradeRow]] = field(default_factory=dict)
    queued: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when something was queued outside the stream (the gateway, the broker, a timer)."""
    on_published: Callable[[Sequence[Envelope[Any]]], None] | None = None
    """Told of every batch the bus took (the paper broker's outbox forgets its events then)."""
    flushing: asyncio.Lock = field(default_factory=asyncio.Lock)
    """Held by the flush in flight: flushes from the stream, the flusher, the barrier and the
    integrity checks go one at a time, so batches reach the bus in the order they were queued."""
    reported_outages: int = field(init=False)
    """The bus outages already announced as `provider.bus.recovered` (the bus's count at start).

    Counted against the bus, not around one publish: the bus is shared (in one process, every
    role's calls go through it), so another role's read can be the call that meets the outage
    first, before the provider's next publish begins."""

    def __post_init__(self) -> None:
        self.reported_outages = self.bus.outages

    @property
    def books(self) -> dict[str, BookUpdated]:
        return self.pipeline.books

    @property
    def clock_ms(self) -> int:
        """The data clock: where the market data has reached."""
        return self.pipeline.clock_ms

    @property
    def candles(self) -> int:
        return self.pipeline.candles

    async def publish(self, payload: Payload, parent: Envelope[Any] | None = None) -> None:
        """Queue `payload`, wrapped in an envelope from this provider, for the next flush."""
        self.outbox.append(
            make_event(payload, source=self.source, parent=parent, ts=self.clock.now())
        )
        self.queued.set()

    async def send(self, event: Envelope[Any]) -> None:
        """Queue an event already wrapped (its id fixed by the paper broker's outbox)."""
        self.outbox.append(event)
        self.queued.set()

    def keep_candle(self, key: SeriesKey, row: CandleRow) -> None:
        """Queue a closed candle for the store; written before its event is published."""
        self.candle_rows.setdefault(key, []).append(row)

    async def flush(self) -> None:
        """Write queued candles and trades, then publish queued events in one round trip.

        The store is written first, so anyone who reads an event can already fetch its candle.
        """
        async with self.flushing:
            await self._flush()

    async def _flush(self) -> None:
        self.queued.clear()
        for key, rows in self.candle_rows.items():
            self.market.upsert_candles(key, rows)
        for (exchange, symbol), trades in self.trade_rows.items():
            self.market.upsert_trades(exchange, symbol, trades)
        self.candle_rows.clear()
        self.trade_rows.clear()
        if self.outbox:
            batch, self.outbox = self.outbox, []
            await self.bus.publish_many(batch)  # in a Redis outage: waits, holding the batch
            self.events += len(batch)
            if self.on_published is not None:
                self.on_published(batch)
            ended = self.bus.last_outage
            if self.bus.outages != self.reported_outages and ended and not self.bus.degraded:
                # Redis answers again: say what happened, now that it can be heard.
                self.reported_outages = self.bus.outages
                started, lasted = ended
                recovered = BusRecovered(
                    started_at=started, lasted_s=round(lasted, 3), held_events=len(batch),
                    lost_types=list(self.bus.lost_in_outage),
                )  # fmt: skip
                await self.bus.publish(
                    make_event(recovered, source=self.source, ts=self.clock.now())
                )
                self.events += 1

    async def apply(self, step: Step) -> None:
        """Carry out a pipeline step in its order: keep rows, publish, feed the broker.

        The clock moves first: a closed candle's event carries its close time.
        """
        self.clock.advance_to(self.pipeline.clock_ms)
        for action in step.actions:
            if isinstance(action, Publish):
                await self.publish(action.payload)
            elif isinstance(action, KeepCandle):
                self.keep_candle(action.key, action.row)
            elif isinstance(action, KeepTrade):
                self.trade_rows.setdefault((action.exchange, action.symbol), []).append(action.row)
            elif isinstance(action, FeedCandle):
                if self.fed is not None:
                    await self.fed.on_candle(
                        action.symbol, action.timeframe, action.row, action.closed_ms
                    )
            elif isinstance(action, FeedTrade):
                if self.fed is not None:
                    self.fed.on_trade(action.symbol, action.row)
            elif isinstance(action, FeedBook) and self.fed is not None:
                self.fed.on_book(action.book.symbol, action.book.bids, action.book.asks)
            elif isinstance(action, Refuse):
                await self.refuse(action)

    async def refuse(self, refusal: Refuse) -> None:
        """Report a candle (or trade) refused as dated too far ahead: a warning and an incident.

        Nothing of it is kept or published; the incident is escalated at once, as there is
        nothing the provider can repair (the source sent a bad date).
        """
        key = refusal.key
        log.warning(
            "candle refused: dated too far ahead",
            extra={"series": "/".join(key), "open_ms": refusal.open_ms, "reason": refusal.reason},
        )
        base = SeriesKey(key.exchange, key.symbol, self.connector.base_timeframe)
        timeframe = self.connector.base_timeframe if key.timeframe == "trade" else key.timeframe
        await self.publish(
            IncidentEscalated(
                incident_id=uuid7(), exchange=key.exchange, symbol=key.symbol,
                timeframe=timeframe, action="ESCALATE",
                quality_score=self.integrity.get(base, 100.0),
                reason=f"refused a candle opening at {iso_ms(refusal.open_ms)}: {refusal.reason}",
                attempts=0, escalated_at=self.clock.now(),
            )
        )  # fmt: skip


def make_connector(options: ProviderConfig) -> MarketConnector:
    """Return the connector the options name: a live exchange through ccxt, or a replay."""
    if options.exchange:
        from barfinex_cli.provider.connectors.ccxt_conn import CcxtConnector, overrides_from_env

        ccxt_options, urls = overrides_from_env(options.exchange)
        return CcxtConnector(
            options.exchange,
            symbols=list(options.symbols),
            timeframes=list(options.timeframes),
            options=ccxt_options,
            urls_override=urls,
        )
    from barfinex_cli.provider.connectors.replay import ReplayConnector

    return ReplayConnector(
        source=options.replay,
        symbols=options.symbols or None,
        timeframes=tuple(options.timeframes),
        speed=options.speed,
        skip=options.history,
        days=options.days,
    )


class Provider:
    """Run the provider's loops until `stop` is set (or the replay ends with `exit_at_end`)."""

    def __init__(
        self,
        config: ProviderConfig,
        *,
        bus: Bus,
        clock: Clock,
        market: MarketStore,
        connector: MarketConnector,
        token: str | Callable[[], str],
        home: Path,
        recording: Recording | None = None,
        webhooks: WebhooksConfig | None = None,
        gateway: GatewayConfig | None = None,
        paper_store: BrokerStore | None = None,
        calendars: Mapping[str, str] | None = None,
    ) -> None:
        self.options = config
        self.bus = bus
        self.clock = clock
        self.market = market
        self.connector = connector
        self._token = token
        """The gateway token, or how to get it once the connector started (a bad source then
        leaves no token file behind)."""
        self.home = home
        self.recording = recording
        self.webhooks_config = webhooks
        self.gateway_config = gateway or GatewayConfig()
        self.paper_store = paper_store
        self.calendars = dict(calendars or {})
        self.runtime: ProviderRuntime | None = None
        self.ready = asyncio.Event()
        self.gateway_url: str | None = None
        self.gate: asyncio.Event | None = None
        """Set by an in-process stack: the live stream waits until it is set."""
        self.replay_done = asyncio.Event()
        """Set when the connector's stream has ended (a replay reached its end)."""
        self.gateway_ctx: GatewayContext | None = None
        self.app: FastAPI | None = None
        """The gateway app once built (an in-process client can talk to it with no socket)."""
        self.healer: Healer | None = None
        self.webhook_sender: WebhookSender | None = None
        self._stream_task: asyncio.Task[None] | None = None
        self.settle: Settle | None = None
        """The lock-step barrier's waits and timeouts, when the replay runs in lock-step."""
        self._recovering = False

    @property
    def live(self) -> bool:
        return bool(self.options.exchange)

    async def run(self, stop: asyncio.Event) -> int:
        """Serve until stopped; return how many events were published."""
        options, connector = self.options, self.connector
        try:
            await connector.start()
        except BaseException:
            await connector.stop()  # close what the failed start opened (sessions, sockets)
            raise
        pipeline = Pipeline(
            options.timeframes,
            base_timeframe=connector.base_timeframe,
            candle_symbols=connector.candle_symbols,
            max_ahead_s=options.max_candle_ahead_s,
        )
        rt = ProviderRuntime(
            self.bus, self.market, connector, f"provider/{connector.name}", self.clock, pipeline
        )
        self.runtime = rt
        if connector.live_start_ms:  # a market clock starts where the replay's data does
            self.clock.advance_to(connector.live_start_ms)
        if options.paper:
            from barfinex_cli.provider.paper.broker import PaperBroker

            paper = PaperBroker(
                rt.send, source=rt.source, clock=self.clock.now, store=self.paper_store
            )
            rt.broker, rt.fed, rt.on_published = paper, paper, paper.published
            await paper.flush()  # events a provider killed before publishing them left behind
        else:
            rt.broker = connector.broker()
        tasks: list[asyncio.Task[Any]] = []
        record_stop = asyncio.Event()  # the recorder stops last, after the final flush
        try:
            await self._store_history(rt)
            if self.recording is not None:
                tasks.append(asyncio.create_task(self.recording.run(record_stop), name="recorder"))
            tasks.append(asyncio.create_task(self._health(rt, stop), name="health"))
            tasks.append(asyncio.create_task(self._flusher(rt, stop), name="flusher"))
            self.healer = self._healer(rt)
            await self._integrity_pass(rt)  # history as stored, before the live part joins it
            tasks.append(asyncio.create_task(self._integrity(rt, stop), name="integrity"))
            gateway = await self._gateway(rt, stop)
            if gateway is not None:
                tasks.append(gateway)
            await self._webhooks_reading(gateway)
            self._lockstep(rt)
            self.ready.set()
            await self._hold(stop)
            await self._stream(rt, stop)
            self.replay_done.set()
            if not options.exit_at_end and not stop.is_set():
                log.info("replay finished; serving until stopped")
                await stop.wait()
            stop.set()
            await rt.flush()
            if self.recording is not None:
                await self.recording.drain(rt.events)
            record_stop.set()
            await self._join(tasks)
        finally:
            stop.set()
            record_stop.set()
            for task in tasks:
                if not task.done():
                    task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(*tasks, return_exceptions=True)
            await connector.stop()
        return rt.events

    def _lockstep(self, rt: ProviderRuntime) -> None:
        """With `lockstep`, make the replay wait before each market moment for the stack.

        The barrier publishes what is queued, then waits until no consumer group of a running
        role (but `lockstep_ignore`, the recorder) has anything unhandled on any stream, again
        and again until it stays so: a candle's signal, its decision, verdict, order and fill
        all land on the moment that started them, however slow the machine (see
        docs/backtest.md, "Parity"). A backtest sets its own barrier, which is kept.
        """
        from barfinex_cli.bus.settle import Settle
        from barfinex_cli.provider.connectors.replay import ReplayConnector

        connector, options = rt.connector, self.options
        if not options.lockstep or self.live or not isinstance(connector, ReplayConnector):
            return
        if connector.barrier is not None:
            return
        settle = Settle(
            rt.bus, rt.flush, lambda: bool(rt.outbox or rt.candle_rows),
            options.lockstep_ignore, timeout_s=options.lockstep_timeout_s, poll_s=LOCKSTEP_POLL_S,
        )  # fmt: skip
        self.settle = settle

        async def barrier(moment_ms: int, next_ms: int | None) -> None:
            await settle.wait()

        connector.barrier = barrier
        log.info("replay in lock-step with the stack", extra={"ignore": options.lockstep_ignore})

    async def _webhooks_reading(self, gateway: asyncio.Task[Any] | None) -> None:
        """Wait until the webhook sender reads the bus, so the first candles are delivered too."""
        sender = self.webhook_sender
        if sender is None or gateway is None:
            return
        reading = asyncio.ensure_future(sender.ready.wait())
        await asyncio.wait({reading, gateway}, timeout=10, return_when=asyncio.FIRST_COMPLETED)
        reading.cancel()

    async def _hold(self, stop: asyncio.Event) -> None:
        """Hold the live part until `gate` opens, and a replay's until `wait_for_apps` registered.

        A role registers once it has joined its consumer group and warmed up, so a replay held
        this way is seen whole by every role that was asked for.
        """
        if self.gate is not None:
            opened = asyncio.ensure_future(self.gate.wait())
            stopped = asyncio.ensure_future(stop.wait())
            await asyncio.wait({opened, stopped}, return_when=asyncio.FIRST_COMPLETED)
            opened.cancel()
            stopped.cancel()
        want, ctx = self.options.wait_for_apps, self.gateway_ctx
        if not want or self.live or ctx is None:
            return
        log.info("replay held until apps register", extra={"apps": want})
        while not stop.is_set() and len(ctx.registry.apps()) < want:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.05)

    async def _join(self, tasks: list[asyncio.Task[Any]]) -> None:
        """Wait for the service's tasks to finish after stop; cancel any that hang, by name.

        Stopping must never hang (Ctrl-C on a provider has to end it), so a task still running
        after `SHUTDOWN_GRACE_S` is cancelled and named in a warning.
        """
        if not tasks:
            return
        done, pending = await asyncio.wait(tasks, timeout=SHUTDOWN_GRACE_S)
        for task in pending:
            log.warning("task did not stop in time; cancelled", extra={"task": task.get_name()})
            task.cancel()
        for task in done:
            if not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]

    async def _store_history(self, rt: ProviderRuntime) -> None:
        """Keep the history the connector serves (the replay's warm-up part) in the store.

        A replay restarted on the same data directory resumes after the last base candle it
        stored: those candles (already published by the earlier run) warm the aggregators like
        history, and the connector skips them, so no candle is published twice.
        """
        live_start = rt.connector.live_start_ms
        if not live_start:
            return
        base = rt.connector.base_timeframe
        exchange = rt.connector.exchange
        step = timeframe_ms(base)
        marks: dict[str, int] = {}
        for symbol in await rt.connector.symbols():
            rows = await rt.connector.fetch_candles(symbol, base, 0, live_start - 1)
            key = SeriesKey(exchange, symbol, base)
            replayed = rt.market.candles(key, since_ms=live_start)
            if not rows and not replayed:
                continue
            rt.market.upsert_candles(key, rows)
            if replayed:
                marks[symbol] = replayed[-1].open_ms + step
            higher: dict[SeriesKey, list[CandleRow]] = {}
            for kept in rt.pipeline.history(exchange, symbol, [*rows, *replayed]):
                higher.setdefault(kept.key, []).append(kept.row)
            for higher_key, closed_rows in higher.items():
                rt.market.upsert_candles(higher_key, closed_rows)
            rt.clock.advance_to(rt.pipeline.clock_ms)
            log.info(
                "history stored",
                extra={"symbol": symbol, "candles": len(rows), "resumed": len(replayed)},
            )
        if marks:
            rt.connector.resume_after(marks)
            log.info("replay resumes after what an earlier run stored", extra={"marks": marks})

    async def _stream(self, rt: ProviderRuntime, stop: asyncio.Event) -> None:
        """Run the connector's stream until it ends or `stop`; restart it when recovery asks."""
        stopped = asyncio.create_task(stop.wait())
        try:
            while not stop.is_set():
                self._stream_task = task = asyncio.create_task(self._stream_once(rt, stop))
                await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
                if not task.done():  # stopped while the feed is quiet: end the stream now
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
                    return
                if not task.cancelled():
                    task.result()  # the stream ended (a replay), or raised
                    return
                if not self._recovering:
                    raise asyncio.CancelledError
                await self._recover(rt)
        finally:
            stopped.cancel()

    async def _recover(self, rt: ProviderRuntime) -> None:
        """Close and reopen the connector after `reconnect` cancelled its stream."""
        self._recovering = False
        rt.reconnects += 1
        log.warning("connector recovery: reconnecting", extra={"connector": rt.connector.name})
        await rt.connector.stop()
        await rt.connector.start()

    async def _stream_once(self, rt: ProviderRuntime, stop: asyncio.Event) -> None:
        # Paced (live or a timed replay): each event goes out as soon as the publish before it
        # is done, by a publisher beside the stream (`_publish_behind`), so the stream never
        # waits for a round trip and a burst (a replay behind its schedule) is published in
        # as few round trips as its events took. As fast as possible: publish in batches of
        # 500, which is what lets a replay run at full speed. In lock-step the barrier
        # publishes each moment whole, so its events land together.
        lockstep = getattr(rt.connector, "barrier", None) is not None
        paced = (self.options.speed is not None or self.live) and not lockstep
        streamed = asyncio.Event()
        publisher = (
            asyncio.create_task(self._publish_behind(rt, streamed), name="publisher")
            if paced
            else None
        )
        stream = rt.connector.stream()
        pending = 0
        try:
            async for payload in stream:
                if stop.is_set():
                    break
                # Live, a candle is judged against the wall clock; a replay's against its series.
                now_ms = to_ms(datetime.now(UTC)) if self.live else None
                await rt.apply(rt.pipeline.feed(payload, now_ms=now_ms))
                if publisher is not None:
                    if publisher.done():
                        publisher.result()  # it raised: the stream ends with its error
                    streamed.set()
                    if len(rt.outbox) >= PUBLISH_AHEAD_MAX:
                        await rt.flush()  # the bus is slower than the feed: wait for it
                    continue
                pending += 1
                if pending >= FLUSH_BATCH:
                    await rt.flush()
                    pending = 0
        finally:
            if publisher is not None:
                publisher.cancel()  # cancelled only between flushes (see _publish_behind)
                with contextlib.suppress(asyncio.CancelledError):
                    await publisher
            await stream.aclose()  # type: ignore[attr-defined]
            await rt.flush()

    @staticmethod
    async def _publish_behind(rt: ProviderRuntime, streamed: asyncio.Event) -> None:
        """Flush whenever the stream queued something, one flush at a time, until cancelled.

        A flush in flight is shielded from the cancel: it has taken its batch off the outbox,
        so cutting it short would lose the batch; the stream's last flush follows it.
        """
        while True:
            await streamed.wait()
            streamed.clear()
            flushing = asyncio.ensure_future(rt.flush())
            try:
                await asyncio.shield(flushing)
            except asyncio.CancelledError:
                await flushing
                raise

    async def reconnect(self, key: SeriesKey) -> None:
        """CONNECTOR_RECOVERY: restart the live stream (a real reconnect, not an alarm)."""
        task = self._stream_task
        if task is not None and not task.done():
            log.warning("recovering the connector", extra={"series": "/".join(key)})
            self._recovering = True
            task.cancel()

    def _healer(self, rt: ProviderRuntime) -> Healer:
        from barfinex_cli.market.integrity.healing import Healer

        return Healer(
            rt.market,
            rt.connector,
            rt.publish,
            reconnect=self.reconnect if self.live else None,
            clock=time.time if self.live else (lambda: rt.clock_ms / 1000),
            calendars=self.calendars,
        )

    def _series(self, rt: ProviderRuntime) -> list[SeriesKey]:
        exchange, base = rt.connector.exchange, rt.connector.base_timeframe
        return [
            SeriesKey(s.exchange, s.symbol, s.timeframe)
            for s in rt.market.series()
            if s.exchange == exchange and s.timeframe == base
        ]

    async def _integrity_pass(self, rt: ProviderRuntime) -> None:
        """Scan every base series this provider feeds; repair, verify or escalate as needed."""
        assert self.healer is not None
        await rt.flush()
        for key in self._series(rt):
            outcome = await self.healer.heal(key, fresh=self.live)
            rt.integrity[key] = outcome.after.score if outcome.after else outcome.before.score
        await rt.flush()

    async def _integrity(self, rt: ProviderRuntime, stop: asyncio.Event) -> None:
        """Repair holes a reconnect left at once; scan every series each interval.

        The scan interval is wall time on purpose: a scan reads the whole series, and at replay
        speed a market-time interval would scan after nearly every candle. So a replay on a
        market clock scans only at start, as a backtest does: a periodic scan there would run
        at a market moment that depends on how fast the machine plays, and what it publishes
        (an incident lowers a series' quality score) could change decisions.
        """
        assert self.healer is not None
        holes = rt.connector.holes
        periodic = self.live or self.clock.kind == "wall"
        next_scan = time.monotonic() + self.options.integrity_interval_s
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5)
            if stop.is_set():
                return
            try:
                while holes is not None and not holes.empty():
                    hole = holes.get_nowait()
                    key = SeriesKey(hole.exchange, hole.symbol, hole.timeframe)
                    await rt.flush()
                    healed = await self.healer.heal(
                        key, since_ms=hole.start_ms, until_ms=hole.end_ms
                    )
                    rt.connector.hole_repaired(hole, healed.resolved, healed.reason)
                if rt.pipeline.trade_aggregators:  # trade-built candles close on time
                    until = rt.clock_ms - TRADE_GRACE_MS
                    await rt.apply(rt.pipeline.close_trade_candles(rt.connector.exchange, until))
                if periodic and time.monotonic() >= next_scan:
                    next_scan = time.monotonic() + self.options.integrity_interval_s
                    await self._integrity_pass(rt)
            except BfxError as exc:  # a failed repair is an incident, never the end of the role
                log.error("integrity check failed", extra={"error": str(exc)})

    async def _flusher(self, rt: ProviderRuntime, stop: asyncio.Event) -> None:
        """Publish what the gateway, the broker and the timers queued between stream events."""
        stopped = asyncio.ensure_future(stop.wait())
        try:
            while not stop.is_set():
                queued = asyncio.ensure_future(rt.queued.wait())
                await asyncio.wait({queued, stopped}, return_when=asyncio.FIRST_COMPLETED)
                queued.cancel()
                # Coalesce: at replay speed the stream flushes its own batches; a flush per
                # wake-up here would split them into many small store transactions.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), FLUSH_COALESCE_S)
                await rt.flush()
        finally:
            stopped.cancel()

    async def _health(self, rt: ProviderRuntime, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await rt.publish(rt.connector.health())
            if await self.clock.wait(stop, self.options.health_interval_s):
                return

    async def _gateway(self, rt: ProviderRuntime, stop: asyncio.Event) -> asyncio.Task[Any] | None:
        from barfinex_cli.provider.gateway.app import bind, create_app, serve
        from barfinex_cli.provider.gateway.context import GatewayContext, GatewayOptions

        ctx = GatewayContext(
            bus=rt.bus,
            market=rt.market,
            token=self._token if isinstance(self._token, str) else self._token(),
            publish=rt.publish,
            broker=rt.broker,
            connectors={rt.connector.name: rt.connector},
            books=rt.books,
            options=GatewayOptions(mcp_orders_enabled=self.options.mcp_orders),
            config=self.gateway_config,
            clock=self.clock.kind,
            market_time=self._market_time,
            replay_done=None if self.live else self.replay_done.is_set,
        )
        ctx.webhooks = self._webhooks(rt)
        self.gateway_ctx = ctx
        self.app = create_app(ctx)
        if not self.options.serve:  # in-process: clients reach the app through ASGI, no socket
            return None
        sock = bind(self.options.host, self.options.port)
        host, port = sock.getsockname()[:2]
        self.gateway_url = f"http://{host}:{port}"
        return asyncio.create_task(serve(self.app, stop, sock), name="gateway")

    def _market_time(self) -> datetime | None:
        rt = self.runtime
        return None if rt is None or not rt.clock_ms else self.clock.now()

    def _webhooks(self, rt: ProviderRuntime) -> WebhookSender | None:
        """Build the webhook sender from the `[webhooks]` settings table, if it has targets."""
        config = self.webhooks_config
        if config is None or not config.targets:
            return None
        from barfinex_cli.provider.gateway.webhooks import DEAD_LETTER_FILE, WebhookSender

        sender = WebhookSender(rt.bus, config, self.home / DEAD_LETTER_FILE)
        self.webhook_sender = sender
        return sender
