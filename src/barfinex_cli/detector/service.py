"""The detector service: one strategy instance as a role on the bus.

It takes what the kernel built for it (the bus, the clock, the gateway client, the loaded
strategy, its typed config) and opens nothing itself but its `/health` socket. It joins its own
consumer group on `market.candle` (and `inspector.throttle`) before warming up, so no candle falls
between the warm-up and the live stream; warms the incremental engine from the provider's history
through the gateway client; then evaluates every closed candle of its symbols and timeframe and
publishes `detector.signal` as a child of the candle that fired it (so `bfx trace` reaches the
candle). On a market clock (the provider replays) a signal is stamped with its candle's close and
a throttle lasts in market time. It registers with the provider, heartbeats, serves `/health` and
`/metrics`, reports `detector.metrics` periodically, and obeys a THROTTLE addressed to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import datetime
from typing import Any

from barfinex_cli.bus.base import Bus, consume
from barfinex_cli.contracts.detector import DetectorMetricsReported, DetectorThrottled
from barfinex_cli.contracts.envelope import Envelope, make_event
from barfinex_cli.contracts.inspector import ThrottleOrdered
from barfinex_cli.contracts.market import CandleClosed
from barfinex_cli.contracts.times import from_ms
from barfinex_cli.contracts.types import Payload
from barfinex_cli.detector.engine import to_payload
from barfinex_cli.detector.engine_incremental import IncrementalEngine, candle_values
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
        self._tf_ms = timeframe_ms(strategy.timeframe)

    @property
    def provider_url(self) -> str:
        return self.client.base_url

    async def run(self, stop: asyncio.Event) -> int:
        """Run until `stop` is set; return how many signals were published."""
        bus = self.bus
        tasks: list[asyncio.Task[Any]] = []
        try:
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
            await self._publish(self._metrics())
        finally:
            stop.set()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(*tasks, return_exceptions=True)
        return self.signals

    async def _warm_up(self) -> None:
        """Feed the engine the provider's history of each symbol."""
        # Recursive indicators (EMA, RSI, ATR, ADX) remember all history: warm up on much more
        # than the strict need, so live values settle onto what a scan of the series gives.
        need = min(max(self.strategy.effective_warmup * 10, 1000), WARMUP_MAX)
        for symbol in self.strategy.symbols:
            exchange = self.exchange or await self._find_exchange(symbol)
            self.exchange = exchange
            try:
                answer = await self.client.candles(
                    exchange, symbol, self.strategy.timeframe, limit=need
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
        close_ms = int(values["open_ms"]) + timeframe_ms(payload.timeframe)
        self.clock.advance_to(close_ms)
        start = time.perf_counter()
        try:
            records = self.engine.on_candle(payload.symbol, values)
        except (StrategyError, UsageError) as exc:
            log.error("evaluation failed", extra={"instance": self.instance, "error": str(exc)})
            return
        self.latency.add((time.perf_counter() - start) * 1e6)
        # On a market clock a signal is stamped with its candle's close, whoever runs ahead.
        at = self.clock.now() if self.clock.kind == "wall" else from_ms(close_ms)
        for record in records:
            if self.throttled_until is not None and at < self.throttled_until:
                self.suppressed += 1
                continue
            signal = to_payload(record, self.instance, payload.exchange)
            await self._publish(signal, parent=event, at=at)
            self.signals += 1

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
        return {
            "status": "ok",
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

    def prometheus(self) -> str:
        """Return what `/metrics` answers (Prometheus text)."""
        labels = f'instance="{self.instance}",strategy="{self.strategy.name}"'
        lines = [
            "# HELP bfx_detector_evaluations_total Closed candles evaluated.",
            "# TYPE bfx_detector_evaluations_total counter",
            f"bfx_detector_evaluations_total{{{labels}}} {self.engine.evaluations}",
            "# HELP bfx_detector_signals_total Signals published.",
            "# TYPE bfx_detector_signals_total counter",
            f"bfx_detector_signals_total{{{labels}}} {self.signals}",
            "# HELP bfx_detector_suppressed_total Signals muted by a throttle.",
            "# TYPE bfx_detector_suppressed_total counter",
            f"bfx_detector_suppressed_total{{{labels}}} {self.suppressed}",
            "# HELP bfx_detector_rule_firing_rate Share of evaluations in which a rule held.",
            "# TYPE bfx_detector_rule_firing_rate gauge",
        ]
        for rule, rate in sorted(self.engine.firing_rates().items()):
            lines.append(f'bfx_detector_rule_firing_rate{{{labels},rule="{rule}"}} {rate}')
        lines += [
            "# HELP bfx_detector_eval_latency_us Evaluation latency per candle.",
            "# TYPE bfx_detector_eval_latency_us gauge",
            f'bfx_detector_eval_latency_us{{{labels},quantile="0.5"}} '
            f"{self.latency.quantile(0.5):.3f}",
            f'bfx_detector_eval_latency_us{{{labels},quantile="0.99"}} '
            f"{self.latency.quantile(0.99):.3f}",
        ]
        return "\n".join(lines) + "\n"
