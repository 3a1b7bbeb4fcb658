"""The provider service: one process that is the only door to market data and orders.

It wires a market connector (replay or a live exchange) to the bus and the market store: every
closed candle is stored and published, higher timeframes are built from the base one, trades and
books are published and kept for the gateway, the paper broker (or the live exchange) takes
orders, the audit recorder writes every event to SQLite, health is measured and published, and
the REST/WS/MCP gateway serves it all behind one token.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from pydantic import BaseModel, ConfigDict, Field

from barfinex_cli.bus.base import Bus
from barfinex_cli.contracts.envelope import Envelope, make_event
from barfinex_cli.contracts.market import BookUpdated, CandleClosed, TradeExecuted
from barfinex_cli.contracts.times import from_ms, to_ms
from barfinex_cli.contracts.types import Payload
from barfinex_cli.errors import BfxError, ConfigError
from barfinex_cli.market.candles import CandleAggregator, timeframe_ms, to_event
from barfinex_cli.provider.connectors.base import Broker, MarketConnector
from barfinex_cli.runtime.connect import open_bus
from barfinex_cli.runtime.recording import record
from barfinex_cli.runtime.settings import Settings
from barfinex_cli.store.market import CandleRow, MarketStore, SeriesKey, TradeRow
from barfinex_cli.store.recorder import Recorder

if TYPE_CHECKING:
    from barfinex_cli.market.integrity.healing import Healer
    from barfinex_cli.provider.gateway.webhooks import WebhookSender

log = logging.getLogger("bfx.provider")

SHUTDOWN_GRACE_S = 10.0
"""How long the provider's tasks get to finish after stop before they are cancelled."""

TRADE_GRACE_MS = 2_000
"""How long after its bucket ends a candle built from trades waits for late trades."""


class ProviderOptions(BaseModel):
    """How `bfx provider start` runs; validated before anything starts."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    exchange: str | None = Field(None, description="live ccxt exchange id; None replays")
    symbols: tuple[str, ...] = ()
    timeframes: tuple[str, ...] = ("1m", "5m", "15m", "1h")
    replay: Path | None = Field(None, description="replay file or folder; None is synthetic")
    speed: float | None = Field(60.0, gt=0, description="replay speed; None is as fast as possible")
    history: int = Field(720, ge=0, description="replay: base candles kept as history")
    days: float = Field(7.0, gt=0, description="synthetic replay: days of market to make")
    paper: bool = True
    host: str = "127.0.0.1"
    port: int = Field(8081, ge=0, le=65535)
    record: bool = True
    health_interval_s: float = Field(5.0, gt=0)
    exit_at_end: bool = False
    mcp_orders: bool = False
    integrity_interval_s: float = Field(60.0, gt=0, description="seconds between integrity scans")


@dataclass
class ProviderRuntime:
    """The moving parts of a running provider (exposed for tests and the gateway)."""

    bus: Bus
    market: MarketStore
    connector: MarketConnector
    source: str
    broker: Broker | None = None
    books: dict[str, BookUpdated] = field(default_factory=dict)
    aggregators: dict[str, CandleAggregator] = field(default_factory=dict)
    """Per symbol: base candles -> higher timeframes."""
    trade_aggregators: dict[str, CandleAggregator] = field(default_factory=dict)
    """Per trade-tape symbol: trades -> base candles."""
    clock_ms: int = 0
    reconnects: int = 0
    integrity: dict[SeriesKey, float] = field(default_factory=dict)
    """Latest data-quality score (0-100) per base series."""
    candles: int = 0
    events: int = 0
    outbox: list[Envelope[Any]] = field(default_factory=list)
    candle_rows: dict[SeriesKey, list[CandleRow]] = field(default_factory=dict)
    trade_rows: dict[tuple[str, str], list[TradeRow]] = field(default_factory=dict)

    async def publish(self, payload: Payload, parent: Envelope[Any] | None = None) -> None:
        """Queue `payload`, wrapped in an envelope from this provider, for the next flush."""
        self.outbox.append(make_event(payload, source=self.source, parent=parent))

    def keep_candle(self, key: SeriesKey, row: CandleRow) -> None:
        """Queue a closed candle for the store; written before its event is published."""
        self.candle_rows.setdefault(key, []).append(row)

    async def flush(self) -> None:
        """Write queued candles and trades, then publish queued events in one round trip.

        The store is written first, so anyone who reads an event can already fetch its candle.
        """
        for key, rows in self.candle_rows.items():
            self.market.upsert_candles(key, rows)
        for (exchange, symbol), trades in self.trade_rows.items():
            self.market.upsert_trades(exchange, symbol, trades)
        self.candle_rows.clear()
        self.trade_rows.clear()
        if self.outbox:
            batch, self.outbox = self.outbox, []
            await self.bus.publish_many(batch)
            self.events += len(batch)


def make_connector(options: ProviderOptions) -> MarketConnector:
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


def _row(candle: CandleClosed) -> CandleRow:
    buys, sells = candle.buy_volume, candle.sell_volume
    return CandleRow(
        to_ms(candle.open_time),
        float(candle.open), float(candle.high), float(candle.low), float(candle.close),
        float(candle.volume), candle.trades,
        None if buys is None else float(buys), None if sells is None else float(sells),
    )  # fmt: skip


class Provider:
    """Run the provider's loops until `stop` is set (or the replay ends with `exit_at_end`)."""

    def __init__(self, settings: Settings, options: ProviderOptions) -> None:
        self.settings = settings
        self.options = options
        self.runtime: ProviderRuntime | None = None
        self.ready = asyncio.Event()
        self.gateway_url: str | None = None
        self.recorder: Recorder[Any] | None = None
        self.healer: Healer | None = None
        self._stream_task: asyncio.Task[None] | None = None
        self._recovering = False
        self.webhook_sender: WebhookSender | None = None
        self.on_token_created: Callable[[str, Path], None] | None = None
        """Called once with a newly generated token and its file, so the CLI can show it."""

    async def run(self, stop: asyncio.Event) -> int:
        """Serve until stopped; return how many events were published."""
        settings, options = self.settings, self.options
        settings.home.mkdir(parents=True, exist_ok=True)
        connector = make_connector(options)
        try:
            await connector.start()
            bus = await open_bus(settings)
        except BaseException:
            await connector.stop()  # close what the failed start opened (sessions, sockets)
            raise
        market = MarketStore(settings.market_path)
        rt = ProviderRuntime(bus, market, connector, source=f"provider/{connector.name}")
        self.runtime = rt
        if options.paper:
            from barfinex_cli.provider.paper.broker import PaperBroker

            rt.broker = PaperBroker(rt.publish, clock=lambda: _utc(rt.clock_ms))
        elif hasattr(connector, "place"):  # a live exchange connector takes the orders itself
            rt.broker = cast(Broker, connector)
        tasks: list[asyncio.Task[Any]] = []
        try:
            await self._store_history(rt)
            record_stop = asyncio.Event()  # the recorder stops last, after the final flush
            if options.record:
                shared = bus if settings.bus == "memory" else None
                tasks.append(
                    asyncio.create_task(
                        record(settings, record_stop, bus=shared, started=self._recording),
                        name="recorder",
                    )
                )
            tasks.append(asyncio.create_task(self._health(rt, stop), name="health"))
            tasks.append(asyncio.create_task(self._flusher(rt, stop), name="flusher"))
            self.healer = self._healer(rt)
            await self._integrity_pass(rt)  # history as stored, before the live part joins it
            tasks.append(asyncio.create_task(self._integrity(rt, stop), name="integrity"))
            gateway = await self._gateway(rt, stop)
            if gateway is not None:
                tasks.append(gateway)
            if self.webhook_sender is not None:
                tasks.append(asyncio.create_task(self.webhook_sender.run(stop), name="webhooks"))
            self.ready.set()
            await self._stream(rt, stop)
            if not options.exit_at_end and not stop.is_set():
                log.info("replay finished; serving until stopped")
                await stop.wait()
            stop.set()
            await rt.flush()
            await self._drain_recorder(rt)
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
            market.close()
            await bus.close()
        return rt.events

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

    def _recording(self, recorder: Recorder[Any]) -> None:
        self.recorder = recorder

    async def _drain_recorder(self, rt: ProviderRuntime, timeout_s: float = 30.0) -> None:
        """Give the recorder time to write what this provider published before it stops."""
        if not self.options.record:
            return
        deadline = asyncio.get_running_loop().time() + timeout_s
        while asyncio.get_running_loop().time() < deadline:
            recorder = self.recorder
            if recorder is not None and recorder.written + recorder.duplicates >= rt.events:
                return
            await asyncio.sleep(0.05)
        log.warning("the recorder did not catch up in time; the rest stays pending on the bus")

    async def _store_history(self, rt: ProviderRuntime) -> None:
        """Keep the history the connector serves (the replay's warm-up part) in the store."""
        live_start = getattr(rt.connector, "live_start_ms", None)
        if not live_start:
            return
        base = getattr(rt.connector, "base_timeframe", "1m")
        for symbol in await rt.connector.symbols():
            rows = await rt.connector.fetch_candles(symbol, base, 0, live_start - 1)
            if not rows:
                continue
            key = SeriesKey(_exchange(rt.connector), symbol, base)
            rt.market.upsert_candles(key, rows)
            aggregator = self._aggregator(rt, symbol)
            higher: dict[str, list[CandleRow]] = {}
            for row in rows:
                for tf, closed in aggregator.add_candle(base, row):
                    higher.setdefault(tf, []).append(closed)
            for tf, closed_rows in higher.items():
                rt.market.upsert_candles(SeriesKey(key.exchange, symbol, tf), closed_rows)
            rt.clock_ms = max(rt.clock_ms, rows[-1].open_ms + timeframe_ms(base))
            log.info("history stored", extra={"symbol": symbol, "candles": len(rows)})

    def _aggregator(self, rt: ProviderRuntime, symbol: str) -> CandleAggregator:
        aggregator = rt.aggregators.get(symbol)
        if aggregator is None:
            timeframes = set(self.options.timeframes) | {"1m"}
            aggregator = rt.aggregators[symbol] = CandleAggregator(sorted(timeframes))
        return aggregator

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
        # Paced (live or a timed replay): publish each event as it comes. As fast as possible:
        # publish in batches, which is what lets a replay run at full speed.
        batch = 1 if (self.options.speed is not None or self.options.exchange) else 500
        stream = rt.connector.stream()
        pending = 0
        try:
            async for payload in stream:
                if stop.is_set():
                    break
                await self._handle(rt, payload)
                pending += 1
                if pending >= batch:
                    await rt.flush()
                    pending = 0
        finally:
            await stream.aclose()  # type: ignore[attr-defined]
            await rt.flush()

    async def reconnect(self, key: SeriesKey) -> None:
        """CONNECTOR_RECOVERY: restart the live stream (a real reconnect, not an alarm)."""
        task = self._stream_task
        if task is not None and not task.done():
            log.warning("recovering the connector", extra={"series": "/".join(key)})
            self._recovering = True
            task.cancel()

    def _healer(self, rt: ProviderRuntime) -> Healer:
        from barfinex_cli.market.integrity.healing import Healer

        live = bool(self.options.exchange)
        source: Any = rt.connector
        return Healer(
            rt.market,
            source,
            rt.publish,
            reconnect=self.reconnect if live else None,
            clock=time.time if live else (lambda: rt.clock_ms / 1000),
        )

    def _series(self, rt: ProviderRuntime) -> list[SeriesKey]:
        exchange = _exchange(rt.connector)
        base = getattr(rt.connector, "base_timeframe", "1m")
        return [
            SeriesKey(s.exchange, s.symbol, s.timeframe)
            for s in rt.market.series()
            if s.exchange == exchange and s.timeframe == base
        ]

    async def _integrity_pass(self, rt: ProviderRuntime) -> None:
        """Scan every base series this provider feeds; repair, verify or escalate as needed."""
        assert self.healer is not None
        await rt.flush()
        live = bool(self.options.exchange)
        for key in self._series(rt):
            outcome = await self.healer.heal(key, fresh=live)
            rt.integrity[key] = outcome.after.score if outcome.after else outcome.before.score
        await rt.flush()

    async def _integrity(self, rt: ProviderRuntime, stop: asyncio.Event) -> None:
        """Repair holes a reconnect left at once; scan every series each interval."""
        assert self.healer is not None
        holes: asyncio.Queue[Any] | None = getattr(rt.connector, "holes", None)
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
                    await self.healer.heal(key, since_ms=hole.start_ms, until_ms=hole.end_ms)
                for symbol, tape in rt.trade_aggregators.items():  # trade-built candles close
                    closed = tape.flush_until(rt.clock_ms - TRADE_GRACE_MS)
                    await self._from_trades(rt, _exchange(rt.connector), symbol, closed)
                if time.monotonic() >= next_scan:
                    next_scan = time.monotonic() + self.options.integrity_interval_s
                    await self._integrity_pass(rt)
            except BfxError as exc:  # a failed repair is an incident, never the end of the role
                log.error("integrity check failed", extra={"error": str(exc)})

    async def _flusher(self, rt: ProviderRuntime, stop: asyncio.Event) -> None:
        """Publish what the gateway and the broker queued between stream events."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.05)
            await rt.flush()

    async def _handle(self, rt: ProviderRuntime, payload: Payload) -> None:
        if isinstance(payload, CandleClosed):
            await self._candle(rt, payload)
        elif isinstance(payload, TradeExecuted):
            await self._trade(rt, payload)
        elif isinstance(payload, BookUpdated):
            rt.books[payload.symbol] = payload
            if rt.broker is not None and hasattr(rt.broker, "on_book"):
                rt.broker.on_book(payload.symbol, payload.bids, payload.asks)
            await rt.publish(payload)
        else:
            await rt.publish(payload)

    async def _candle(self, rt: ProviderRuntime, candle: CandleClosed) -> None:
        await self._base_candle(rt, candle, _row(candle))

    async def _base_candle(self, rt: ProviderRuntime, candle: CandleClosed, row: CandleRow) -> None:
        """Store and publish a closed base candle, build the higher ones, drive the broker."""
        rt.keep_candle(SeriesKey(candle.exchange, candle.symbol, candle.timeframe), row)
        rt.clock_ms = max(rt.clock_ms, row.open_ms + timeframe_ms(candle.timeframe))
        rt.candles += 1
        await rt.publish(candle)
        closed = self._aggregator(rt, candle.symbol).add_candle(candle.timeframe, row)
        await self._closed(rt, candle.exchange, candle.symbol, closed)
        if rt.broker is not None and hasattr(rt.broker, "on_candle"):
            await rt.broker.on_candle(candle.symbol, candle.timeframe, row, rt.clock_ms)

    async def _from_trades(
        self, rt: ProviderRuntime, exchange: str, symbol: str, closed: list[tuple[str, CandleRow]]
    ) -> None:
        """Base candles a trade aggregator closed go the way of streamed candles."""
        for tf, row in closed:
            await self._base_candle(rt, to_event((exchange, symbol), tf, row), row)

    async def _trade(self, rt: ProviderRuntime, trade: TradeExecuted) -> None:
        time_ms = to_ms(trade.time)
        row = TradeRow(time_ms, trade.trade_id, float(trade.price), float(trade.amount), trade.side)
        rt.trade_rows.setdefault((trade.exchange, trade.symbol), []).append(row)
        rt.clock_ms = max(rt.clock_ms, time_ms)
        await rt.publish(trade)
        if rt.broker is not None and hasattr(rt.broker, "on_trade"):
            rt.broker.on_trade(trade.symbol, row)
        candle_symbols = getattr(rt.connector, "candle_symbols", None)
        if candle_symbols is not None and trade.symbol not in candle_symbols:
            # A trade tape: trades build the base candle (with its order flow), which then goes
            # the way of a streamed candle; higher timeframes come from base candles, so the
            # history stored at start and the live candles build them alike.
            tape = rt.trade_aggregators.get(trade.symbol)
            if tape is None:
                base = getattr(rt.connector, "base_timeframe", "1m")
                tape = rt.trade_aggregators[trade.symbol] = CandleAggregator((base,))
            closed = tape.add_trade(time_ms, float(trade.price), float(trade.amount), trade.side)
            await self._from_trades(rt, trade.exchange, trade.symbol, closed)

    async def _closed(
        self, rt: ProviderRuntime, exchange: str, symbol: str, closed: list[tuple[str, CandleRow]]
    ) -> None:
        for tf, row in closed:
            rt.keep_candle(SeriesKey(exchange, symbol, tf), row)
            await rt.publish(to_event((exchange, symbol), tf, row))
            rt.candles += 1

    async def _health(self, rt: ProviderRuntime, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await rt.publish(rt.connector.health())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.options.health_interval_s)

    async def _gateway(self, rt: ProviderRuntime, stop: asyncio.Event) -> asyncio.Task[Any] | None:
        from barfinex_cli.provider.gateway import auth
        from barfinex_cli.provider.gateway.app import (
            GatewayContext,
            GatewayOptions,
            bind,
            create_app,
            serve,
        )

        token = auth.ensure_token(self.settings, on_created=self.on_token_created)
        ctx = GatewayContext(
            bus=rt.bus,
            market=rt.market,
            token=token,
            publish=rt.publish,
            broker=rt.broker,
            connectors={rt.connector.name: rt.connector},
            books=rt.books,
            options=GatewayOptions(mcp_orders_enabled=self.options.mcp_orders),
        )
        ctx.webhooks = self._webhooks(rt)
        sock = bind(self.options.host, self.options.port)
        host, port = sock.getsockname()[:2]
        self.gateway_url = f"http://{host}:{port}"
        return asyncio.create_task(serve(create_app(ctx), stop, sock), name="gateway")

    def _webhooks(self, rt: ProviderRuntime) -> WebhookSender | None:
        """Build the webhook sender from the `[webhooks]` settings table, if there is one."""
        table = self.settings.webhooks
        if not table or not table.get("targets"):
            return None
        from pydantic import ValidationError

        from barfinex_cli.provider.gateway.webhooks import (
            DEAD_LETTER_FILE,
            WebhooksConfig,
            WebhookSender,
        )

        data = dict(table)
        if self.settings.webhook_secret is not None and "secret" not in data:
            data["secret"] = self.settings.webhook_secret.get_secret_value()
        try:
            config = WebhooksConfig.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise ConfigError(
                f"webhooks.{where}: {first['msg']} (set BFX_WEBHOOK_SECRET for the signing secret)"
            ) from None
        sender = WebhookSender(rt.bus, config, self.settings.home / DEAD_LETTER_FILE)
        self.webhook_sender = sender
        return sender


def _exchange(connector: MarketConnector) -> str:
    return getattr(connector, "exchange", None) or connector.name


def _utc(ms: int) -> datetime:
    return from_ms(ms) if ms else datetime.now(UTC)
