"""The detector service: one strategy instance as its own process, on the bus.

It joins its own consumer group on `market.candle` (and `inspector.throttle`) before warming up,
so no candle falls between the warm-up and the live stream; warms the incremental engine from the
provider's REST history; then evaluates every closed candle of its symbols and timeframe and
publishes `detector.signal` as a child of the candle that fired it (so `bfx trace` reaches the
candle). It registers with the provider, heartbeats, serves `/health` and `/metrics`, reports
`detector.metrics` periodically, and obeys a THROTTLE addressed to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, Field

from barfinex_cli.bus.base import Bus, consume
from barfinex_cli.contracts.detector import DetectorMetricsReported, DetectorThrottled
from barfinex_cli.contracts.envelope import Envelope, make_event
from barfinex_cli.contracts.inspector import ThrottleOrdered
from barfinex_cli.contracts.market import CandleClosed
from barfinex_cli.contracts.types import Payload
from barfinex_cli.detector.engine import to_payload
from barfinex_cli.detector.engine_incremental import IncrementalEngine, candle_values
from barfinex_cli.detector.loader import load_strategy
from barfinex_cli.detector.strategy import Strategy
from barfinex_cli.errors import ServiceUnreachable, StrategyError, UsageError
from barfinex_cli.runtime.connect import open_bus
from barfinex_cli.runtime.health import bind_first_free, health_app, serve_health
from barfinex_cli.runtime.registration import Registration
from barfinex_cli.runtime.settings import Settings

log = logging.getLogger("bfx.detector")

WARMUP_MAX = 5000
"""The most history candles asked of the provider per symbol (its per-request cap)."""


class DetectorOptions(BaseModel):
    """How one detector instance runs; validated before anything starts."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    strategy: Path
    instance: str | None = Field(None, pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    exchange: str | None = None
    provider_url: str | None = None
    host: str = "127.0.0.1"
    port: int = Field(8101, ge=0, le=65535)
    metrics_interval_s: float = Field(30.0, gt=0)
    heartbeat_s: float = Field(5.0, gt=0)
    join_registry: bool = True


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

    def __init__(self, settings: Settings, options: DetectorOptions) -> None:
        self.settings = settings
        self.options = options
        self.strategy: Strategy = load_strategy(options.strategy)
        self.engine = IncrementalEngine(self.strategy)
        self.instance = options.instance or self.strategy.name
        self.source = f"detector/{self.instance}"
        self.exchange = options.exchange
        self.signals = 0
        self.suppressed = 0
        self.throttled_until: datetime | None = None
        self.latency = _Latency()
        self.started = time.monotonic()
        self.ready = asyncio.Event()
        self.health_url: str | None = None
        self.warmed: dict[str, int] = {}
        self._bus: Bus | None = None
        self._last_metrics_evaluations = 0

    @property
    def provider_url(self) -> str:
        return (self.options.provider_url or self.settings.provider_url).rstrip("/")

    async def run(self, stop: asyncio.Event) -> int:
        """Run until `stop` is set; return how many signals were published."""
        bus = self._bus = await open_bus(self.settings)
        tasks: list[asyncio.Task[Any]] = []
        try:
            consumer = await bus.consumer(
                f"detector.{self.instance}",
                self.instance,
                ["market.candle", "inspector.throttle"],
                start="$",
            )
            token = await self._warm_up()
            sock = bind_first_free(self.options.host, self.options.port)
            host, port = sock.getsockname()[:2]
            self.health_url = f"http://{host}:{port}"
            app = health_app(self.status, self.prometheus)
            tasks.append(asyncio.create_task(serve_health(app, sock, stop), name="health"))
            if self.options.join_registry and token is not None:
                registration = Registration(
                    self.provider_url, token, name=self.instance, role="detector",
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
            await bus.close()
        return self.signals

    async def _warm_up(self) -> str | None:
        """Feed the engine the provider's history of each symbol; return the token used."""
        token = _token(self.settings)
        # Recursive indicators (EMA, RSI, ATR, ADX) remember all history: warm up on much more
        # than the strict need, so live values settle onto what a scan of the series gives.
        need = min(max(self.strategy.effective_warmup * 10, 1000), WARMUP_MAX)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        try:
            async with httpx.AsyncClient(
                base_url=self.provider_url, headers=headers, timeout=10
            ) as client:
                for symbol in self.strategy.symbols:
                    exchange = self.exchange or await self._find_exchange(client, symbol)
                    self.exchange = exchange
                    response = await self._get(
                        client,
                        "/api/v1/candles",
                        {"exchange": exchange, "symbol": symbol,
                         "timeframe": self.strategy.timeframe, "limit": need},
                    )  # fmt: skip
                    if response.status_code == 404:
                        raise UsageError(
                            f"the provider holds no {exchange} {symbol} "
                            f"{self.strategy.timeframe} candles — check the strategy's symbols "
                            "and timeframe against `bfx data list`"
                        )
                    response.raise_for_status()
                    rows = response.json()["candles"]
                    self.warmed[symbol] = self.engine.warm(symbol, rows)
        except httpx.HTTPError as exc:
            raise ServiceUnreachable(
                f"provider not reachable at {self.provider_url} ({exc}) — start it with "
                "`bfx provider start`, or pass --provider URL"
            ) from None
        return token

    async def _get(
        self, client: httpx.AsyncClient, path: str, params: dict[str, Any] | None = None
    ) -> httpx.Response:
        """GET from the provider; a refused token is a clear error, not an HTTP status."""
        response = await client.get(path, params=params)
        if response.status_code in (401, 403):
            raise ServiceUnreachable(
                f"the provider at {self.provider_url} refused the token — set BFX_TOKEN to the "
                "provider's token (DATA_DIR/token), or run with the provider's --data-dir"
            )
        return response

    async def _find_exchange(self, client: httpx.AsyncClient, symbol: str) -> str:
        response = await self._get(client, "/api/v1/series")
        response.raise_for_status()
        held = {
            s["exchange"]
            for s in response.json()["series"]
            if s["symbol"] == symbol and s["timeframe"] == self.strategy.timeframe
        }
        if len(held) == 1:
            return str(held.pop())
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
        if payload.timeframe != self.strategy.timeframe:
            return
        if payload.symbol not in self.strategy.symbols:
            return
        if self.exchange is not None and payload.exchange != self.exchange:
            return
        start = time.perf_counter()
        try:
            records = self.engine.on_candle(payload.symbol, candle_values(payload))
        except (StrategyError, UsageError) as exc:
            log.error("evaluation failed", extra={"instance": self.instance, "error": str(exc)})
            return
        self.latency.add((time.perf_counter() - start) * 1e6)
        for record in records:
            if self.throttled_until is not None and datetime.now(UTC) < self.throttled_until:
                self.suppressed += 1
                continue
            await self._publish(to_payload(record, self.instance, payload.exchange), parent=event)
            self.signals += 1

    async def _publish(self, payload: Payload, parent: Envelope[Any] | None = None) -> None:
        assert self._bus is not None
        await self._bus.publish(make_event(payload, source=self.source, parent=parent))

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


def _token(settings: Settings) -> str | None:
    """Return the gateway token: BFX_TOKEN, else the provider's token file in the data dir."""
    if settings.token is not None and settings.token.get_secret_value():
        return settings.token.get_secret_value()
    path = settings.home / "token"
    if path.is_file():
        text = path.read_text().strip()
        return text or None
    return None
