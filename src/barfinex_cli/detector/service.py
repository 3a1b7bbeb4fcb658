"""The detector service: one strategy instance as a role on the bus.

It takes what the kernel built for it (the bus, the clock, the gateway client, the loaded
strategy, its typed config) and opens nothing itself but its `/health` socket. It evaluates every
closed candle of its symbols and timeframe and publishes `detector.signal` as a child of the
candle that fired it (so `bfx trace` reaches the candle). On a market clock (the provider
replays) a signal is stamped with its candle's close and a throttle lasts in market time. It
registers with the provider, heartbeats, serves `/health` and `/metrics`, reports
`detector.metrics` periodically, and obeys a THROTTLE addressed to it.

Start, restart and crash (no signal lost, none doubled):

1. It takes its instance name's lease (`detector.resume.InstanceLease`): a second run of the same
   name (two `bfx detector run` of one strategy without `--instance`) refuses to start instead
   of splitting the candles with the first; a run restarted after a crash waits for the dead
   run's lease to lapse (a few seconds).
2. It joins its consumer group `detector.{instance}` as consumer `{instance}` (the same names on
   every run, so a restart gets back what the last run had not acknowledged: its pending
   entries, then everything published while it was down), then warms the engine on the
   provider's newest history. Joining first means no candle falls between history and stream.
3. A candle is acknowledged only after it was evaluated and its signal published. So the first
   candle delivered for a symbol is the first one no run has finished: if the warm-up already
   went past it (a restart, or candles published while warming), the symbol is reset and warmed
   again on the history *before* that candle, and it and every later one are evaluated live,
   with their signals. Nothing acknowledged is evaluated twice.
4. A run killed after publishing a signal but before acknowledging its candle gets that candle
   again; the newest signal this instance published for the symbol is read back from the
   `detector.signal` stream (`last_signal_open_ms`, only as far back as that candle's event was
   made) and no signal is published for a candle at or before it.

Candles dated far ahead are refused and a stall is reported and undone (`detector.gate`).

The module runs past 400 lines because that start/restart sequence, the gate and the evaluation
all move the one engine position per symbol; the pure parts live in `gate` and `resume`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import datetime
from typing import Any

from prometheus_client import CollectorRegistry

from barfinex_cli.bus.base import Bus, consume, trimmed_rows
from barfinex_cli.contracts.detector import DetectorMetricsReported, DetectorThrottled
from barfinex_cli.contracts.envelope import Envelope, make_event
from barfinex_cli.contracts.ids import uuid7_time_ms
from barfinex_cli.contracts.inspector import ThrottleOrdered
from barfinex_cli.contracts.market import CandleClosed
from barfinex_cli.contracts.times import from_ms, iso_ms, to_ms
from barfinex_cli.contracts.types import Payload
from barfinex_cli.detector.engine import to_payload
from barfinex_cli.detector.engine_incremental import IncrementalEngine, candle_values
from barfinex_cli.detector.gate import CandleGate
from barfinex_cli.detector.resume import InstanceLease, last_signal_open_ms
from barfinex_cli.detector.strategy import Strategy
from barfinex_cli.errors import NotFound, StrategyError, UsageError
from barfinex_cli.market.candles import timeframe_ms
from barfinex_cli.runtime.client import GatewayClient
from barfinex_cli.runtime.clock import Clock
from barfinex_cli.runtime.config import DetectorConfig
from barfinex_cli.runtime.health import bind_first_free, health_app, serve_health
from barfinex_cli.runtime.registration import Registration

log = logging.getLogger("bfx.detector")

WARMUP_MAX = 5000
"""The most history candles asked of the provider per symbol (its per-request cap)."""

CLOCK_SKEW_MS = 60_000
"""Slack between machines' clocks when reading the signal stream back to a candle's event."""

Candle = tuple[Envelope[Any], CandleClosed, dict[str, Any]]
"""A delivered candle: its event, its payload and the row the engine takes."""


DetectorOptions = DetectorConfig
"""The detector's typed config (`[detector]` in bfx.toml); the old name still reads well here."""


class _Latency:
    """Evaluation latency samples of the current metrics window."""

    def __init__(self) -> None:
        self.samples: list[float] = []

    def add(self, micros: float) -> None:
        self.samples.append(micros)

    def quantile(self, q: float) -> float:
        if not self.samples:
            return 0.0
        ordered = sorted(self.samples)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Detector:
    """One running strategy instance."""

    def __init__(
        self,
        config: DetectorConfig,
        *,
        strategy: Strategy,
        bus: Bus,
        clock: Clock,
        client: GatewayClient,
    ) -> None:
        self.options = config
        self.strategy = strategy
        self.bus = bus
        self.clock = clock
        self.client = client
        self.engine = IncrementalEngine(self.strategy)
        self.instance = config.instance or self.strategy.name
        self.source = f"detector/{self.instance}"
        self.exchange = config.exchange
        self.signals = 0
        self._registry: CollectorRegistry | None = None
        self.published = 0
        """Events this instance published (signals, metrics, throttle notices)."""
        self.candles_seen = 0
        """`market.candle` events delivered to it (any series), for a stack to know it caught up."""
        self.suppressed = 0
        self.throttled_until: datetime | None = None
        self.latency = _Latency()
        self.started = time.monotonic()
        self.ready = asyncio.Event()
        self.health_url: str | None = None
        self.warmed: dict[str, int] = {}
        """Per symbol: history candles the engine was (last) warmed on."""
        self.resumed: dict[str, int] = {}
        """Per symbol: the open time of the first candle this run evaluated live after a
        warm-up that had gone past it (a restart picking up what the last run left)."""
        self.republish_skipped = 0
        """Signals not published again: the last run published them but died before the ack."""
        self.rewarmed = 0
        """Times a stalled symbol was warmed again on history (a candle dated ahead got in)."""
        self._tf_ms = timeframe_ms(strategy.timeframe)
        self.gate: CandleGate[Candle] = CandleGate(self._tf_ms, live=clock.kind == "wall")
        self.lease = InstanceLease(bus, self.instance)
        self._first: set[str] = set()
        """Symbols whose first delivered candle of this run was handled (see `_resume`)."""
        self._published_until: dict[str, int] = {}
        """Per symbol: open time of the last run's newest signal (no signal again up to it)."""

    @property
    def provider_url(self) -> str:
        return self.client.base_url

    async def run(self, stop: asyncio.Event) -> int:
        """Run until `stop` is set; return how many signals were published."""
        bus = self.bus
        tasks: list[asyncio.Task[Any]] = []
        await self.lease.acquire()
        try:
            tasks.append(asyncio.create_task(self.lease.hold(stop), name="lease"))
            consumer = await bus.consumer(
                f"detector.{self.instance}",
                self.instance,
                ["market.candle", "inspector.throttle"],
                start="$",
            )
            await self._warm_up()
            if self.options.serve_health:
                sock = bind_first_free(self.options.host, self.options.port)
                host, port = sock.getsockname()[:2]
                self.health_url = f"http://{host}:{port}"
                app = health_app(self.status, self.prometheus)
                tasks.append(asyncio.create_task(serve_health(app, sock, stop), name="health"))
            if self.options.join_registry:
                registration = Registration(
                    self.client, name=self.instance, role="detector",
                    url=self.health_url, interval_s=self.options.heartbeat_s,
                )  # fmt: skip
                tasks.append(asyncio.create_task(registration.run(stop), name="heartbeat"))
            tasks.append(asyncio.create_task(self._report(stop), name="metrics"))
            self.ready.set()
            log.info(
                "detector running",
                extra={"instance": self.instance, "strategy": self.strategy.name,
                       "health": self.health_url},
            )  # fmt: skip
            await consume(consumer, self._handle, stop, dedup=bus.deduplicator(), block_ms=250)
            if self.lease.lost is not None:
                raise self.lease.lost
            await self._publish(self._metrics())
        finally:
            stop.set()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(*tasks, return_exceptions=True)
            await self.lease.release()
        return self.signals

    async def _warm_up(self) -> None:
        """Feed the engine the provider's history of each symbol."""
        # Recursive indicators (EMA, RSI, ATR, ADX) remember all history: warm up on much more
        # than the strict need, so live values settle onto what a scan of the series gives.
        for symbol in self.strategy.symbols:
            self.exchange = self.exchange or await self._find_exchange(symbol)
            await self._warm(symbol)

    async def _warm(self, symbol: str, before_ms: int | None = None) -> None:
        """Warm `symbol` on the provider's newest history, or on the history before `before_ms`."""
        # Recursive indicators (EMA, RSI, ATR, ADX) remember all history: warm up on much more
        # than the strict need, so live values settle onto what a scan of the series gives.
        need = min(max(self.strategy.effective_warmup * 10, 1000), WARMUP_MAX)
        exchange = self.exchange
        assert exchange is not None
        until = None if before_ms is None else before_ms - 1
        try:
            answer = await self.client.candles(
                exchange, symbol, self.strategy.timeframe, limit=need, until_ms=until
            )
        except NotFound:
            raise UsageError(
                f"the provider holds no {exchange} {symbol} {self.strategy.timeframe} "
                "candles — check the strategy's symbols and timeframe against `bfx data list`"
            ) from None
        rows = [candle.model_dump() for candle in answer.candles]
        self.warmed[symbol] = self.engine.warm(symbol, rows)
        if rows:
            self.clock.advance_to(int(rows[-1]["open_ms"]) + self._tf_ms)

    async def _find_exchange(self, symbol: str) -> str:
        held = {
            s.exchange
            for s in await self.client.series()
            if s.symbol == symbol and s.timeframe == self.strategy.timeframe
        }
        if len(held) == 1:
            return held.pop()
        if not held:
            raise UsageError(
                f"the provider holds no {symbol} {self.strategy.timeframe} candles — start the "
                "provider with that symbol, or check the strategy file"
            )
        raise UsageError(
            f"{symbol} is held on several exchanges ({', '.join(sorted(held))}) — pass --exchange"
        )

    async def _handle(self, event: Envelope[Any]) -> None:
        payload = event.payload
        if isinstance(payload, ThrottleOrdered):
            if payload.instance == self.instance:
                self.throttled_until = payload.until
                await self._publish(
                    DetectorThrottled(instance=self.instance, until=payload.until,
                                      reason=payload.reason, suppressed=self.suppressed),
                    parent=event,
                )  # fmt: skip
            return
        if not isinstance(payload, CandleClosed):
            return
        self.candles_seen += 1
        if payload.timeframe != self.strategy.timeframe:
            return
        if payload.symbol not in self.strategy.symbols:
            return
        if self.exchange is not None and payload.exchange != self.exchange:
            return
        values = candle_values(payload)
        symbol, open_ms = payload.symbol, int(values["open_ms"])
        admitted = self.gate.admit(
            symbol, (event, payload, values), open_ms,
            last_open=self.engine.last_open(symbol), now_ms=to_ms(self.clock.now()),
        )  # fmt: skip
        if not admitted:
            refusal = self.gate.last_refusal
            if refusal is not None and refusal.open_ms == open_ms:
                log.warning(
                    "candle refused: dated too far ahead",
                    extra={"instance": self.instance, "symbol": symbol,
                           "open_time": iso_ms(open_ms), "reason": refusal.reason},
                )  # fmt: skip
            return
        for candle in admitted:
            await self._evaluate(*candle)

    async def _evaluate(
        self, event: Envelope[Any], payload: CandleClosed, values: dict[str, Any]
    ) -> None:
        """Evaluate one admitted candle of the detector's series; publish what it fires."""
        symbol, open_ms = payload.symbol, int(values["open_ms"])
        if symbol not in self._first:
            await self._resume(symbol, open_ms, event)
        last = self.engine.last_open(symbol)
        if last is not None and open_ms <= last:
            self.gate.skipped()
            if self.gate.stalled:  # something dated ahead got in: start the symbol over
                log.warning(
                    "detector stalled; warming the symbol again on history",
                    extra={"instance": self.instance, "symbol": symbol,
                           "stuck_at": iso_ms(last), "candle": iso_ms(open_ms)},
                )  # fmt: skip
                self.engine.reset(symbol)
                await self._warm(symbol, before_ms=open_ms)
                self.rewarmed += 1
            else:
                return
        close_ms = open_ms + timeframe_ms(payload.timeframe)
        self.clock.advance_to(close_ms)
        start = time.perf_counter()
        try:
            records = self.engine.on_candle(symbol, values)
        except (StrategyError, UsageError) as exc:
            log.error("evaluation failed", extra={"instance": self.instance, "error": str(exc)})
            return
        self.gate.evaluated()
        self.latency.add((time.perf_counter() - start) * 1e6)
        if records and open_ms <= self._published_until.get(symbol, -1):
            self.republish_skipped += len(records)  # the last run published these
            return
        # On a market clock a signal is stamped with its candle's close, whoever runs ahead.
        at = self.clock.now() if self.clock.kind == "wall" else from_ms(close_ms)
        for record in records:
            if self.throttled_until is not None and at < self.throttled_until:
                self.suppressed += 1
                continue
            signal = to_payload(record, self.instance, payload.exchange)
            await self._publish(signal, parent=event, at=at)
            self.signals += 1

    async def _resume(self, symbol: str, open_ms: int, event: Envelope[Any]) -> None:
        """On the first candle of `symbol` this run gets: undo a warm-up that went past it.

        Every candle before it was evaluated by a run (acknowledged) or is history from before
        this instance first started; it and those after it were not. So when the warm-up
        already covers it, the symbol is warmed again on the history before it, and the last
        run's newest signal is looked up so none is published twice.
        """
        self._first.add(symbol)
        last = self.engine.last_open(symbol)
        if last is None or open_ms > last:
            return
        self.engine.reset(symbol)
        await self._warm(symbol, before_ms=open_ms)
        since = uuid7_time_ms(event.id) - CLOCK_SKEW_MS
        published = await last_signal_open_ms(self.bus, self.source, symbol, since)
        if published is not None:
            self._published_until[symbol] = published
        self.resumed[symbol] = open_ms
        log.info(
            "resuming where the last run stopped",
            extra={"instance": self.instance, "symbol": symbol, "from": iso_ms(open_ms),
                   "candles_behind": (last - open_ms) // self._tf_ms + 1,
                   "last_signal": None if published is None else iso_ms(published)},
        )  # fmt: skip

    async def _publish(
        self, payload: Payload, parent: Envelope[Any] | None = None, at: datetime | None = None
    ) -> None:
        ts = at or self.clock.now()
        await self.bus.publish(make_event(payload, source=self.source, parent=parent, ts=ts))
        self.published += 1

    def _metrics(self) -> DetectorMetricsReported:
        window = time.monotonic() - self.started
        return DetectorMetricsReported(
            instance=self.instance,
            strategy=self.strategy.name,
            window_s=round(window, 3),
            evaluations=self.engine.evaluations,
            signals=self.signals,
            firing_rate=self.engine.firing_rates(),
            latency_p50_us=round(self.latency.quantile(0.5), 3),
            latency_p99_us=round(self.latency.quantile(0.99), 3),
            broken_rules=sorted(self.engine.broken),
        )

    async def _report(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.options.metrics_interval_s)
            if not stop.is_set():
                await self._publish(self._metrics())

    def status(self) -> dict[str, Any]:
        """Return what `/health` answers."""
        refusal = self.gate.last_refusal
        state = self.gate.status(to_ms(self.clock.now()))
        if state == "ok" and self.bus.degraded:  # Redis away: the bus waits it out
            state = "degraded"
        return {
            "status": state,
            "bus": "waiting for Redis" if self.bus.degraded else "ok",
            "bus_trimmed": trimmed_rows(self.bus.trimmed),  # entries lost to the stream cap
            "stalled_candles": self.gate.streak,
            "refused_ahead": self.gate.refused,
            "last_refused": None
            if refusal is None
            else {
                "symbol": refusal.symbol,
                "open_time": iso_ms(refusal.open_ms),
                "reason": refusal.reason,
            },
            "rewarmed": self.rewarmed,
            "resumed": {s: iso_ms(ms) for s, ms in self.resumed.items()},
            "instance": self.instance,
            "strategy": self.strategy.name,
            "symbols": list(self.strategy.symbols),
            "timeframe": self.strategy.timeframe,
            "evaluations": self.engine.evaluations,
            "signals": self.signals,
            "published": self.published,
            "candles_seen": self.candles_seen,
            "clock": self.clock.kind,
            "broken_rules": dict(self.engine.broken),
            "throttled_until": self.throttled_until.isoformat() if self.throttled_until else None,
            "uptime_s": round(time.monotonic() - self.started, 3),
        }

    def prometheus(self) -> CollectorRegistry:
        """Return what `/metrics` renders: this instance's own registry."""
        if self._registry is None:
            from barfinex_cli.detector.metrics import registry_of

            self._registry = registry_of(self)
        return self._registry
