"""The gateway's Prometheus metrics, kept in a `prometheus_client` registry of its own.

Each app gets its own `CollectorRegistry` (never the process-global one), so several gateways in
one process, as tests and the single-process stack run them, count separately. Request and
WebSocket counters are updated as things happen; the registry's app counts, the webhook outcomes
and the uptime are read from the live objects when `/metrics` is scraped.

Names: `bfx_gateway_requests_total{method,route,status}`, `bfx_gateway_ws_clients`,
`bfx_gateway_ws_events_total`, `bfx_gateway_ws_dropped_total`, `bfx_registry_apps{status}`,
`bfx_webhook_deliveries_total{outcome}` (with webhooks) and `bfx_gateway_uptime_seconds`; per
connector, read from its `health()` at scrape time: `bfx_connector_faults_total{connector,kind}`
(kind: unavailable, timeout, unreachable, ws_drop, lost_order_answer),
`bfx_connector_reconnects_total`, `bfx_connector_gaps_total`, `bfx_connector_gaps_repaired_total`,
`bfx_connector_rate_limit_waits_total`, `bfx_connector_lost_orders_resolved_total`,
`bfx_connector_consecutive_failures` and `bfx_connector_degraded` (1 while degraded).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from barfinex_cli.contracts.market import ConnectorHealth
from barfinex_cli.provider.gateway.registry import AppRegistry

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
ConnectorHealths = Callable[[], Iterable[tuple[str, ConnectorHealth]]]
"""Return each connector's name and its measured health, now."""
_FAULTS = ("unavailable", "timeout", "unreachable", "ws_drop", "lost_order_answer")


class _Live(Collector):
    """Values read at scrape time from the objects that own them."""

    def __init__(
        self,
        registry: AppRegistry,
        webhook_counts: Callable[[], Mapping[str, int] | None],
        started: float,
        connectors: ConnectorHealths = tuple,
    ) -> None:
        self.registry = registry
        self.webhook_counts = webhook_counts
        self.started = started
        self.connectors = connectors

    def collect(self) -> Iterator[Metric]:
        apps = GaugeMetricFamily(
            "bfx_registry_apps", "Registered apps by status.", labels=["status"]
        )
        for status, count in sorted(self.registry.counts().items()):
            apps.add_metric([status], count)
        yield apps
        counts = self.webhook_counts()
        if counts is not None:
            hooks = CounterMetricFamily(
                "bfx_webhook_deliveries", "Webhook outcomes.", labels=["outcome"]
            )
            for outcome, count in sorted(counts.items()):
                hooks.add_metric([outcome], count)
            yield hooks
        yield GaugeMetricFamily(
            "bfx_gateway_uptime_seconds",
            "Seconds since the app started.",
            value=time.monotonic() - self.started,
        )
        yield from _connector_metrics(list(self.connectors()))


def _connector_metrics(healths: list[tuple[str, ConnectorHealth]]) -> Iterator[Metric]:
    """Yield the per-connector fault counters and state gauges."""
    faults = CounterMetricFamily(
        "bfx_connector_faults",
        "Exchange faults a connector met, by kind.",
        labels=["connector", "kind"],
    )
    counters = {
        "reconnects": "Websocket streams back after failing.",
        "gaps": "Holes reconnects left in candle streams.",
        "gaps_repaired": "Holes refilled from REST history.",
        "rate_limit_waits": "Requests held by the limiter or refused as too many.",
        "lost_orders_resolved": "Orders whose lost answer was found by lookup.",
    }
    families = {
        field: CounterMetricFamily(f"bfx_connector_{field}", text, labels=["connector"])
        for field, text in counters.items()
    }
    streak = GaugeMetricFamily(
        "bfx_connector_consecutive_failures",
        "REST calls in a row that failed with a fault.",
        labels=["connector"],
    )
    degraded = GaugeMetricFamily(
        "bfx_connector_degraded", "1 while the connector is degraded.", labels=["connector"]
    )
    for name, health in healths:
        counts = {
            "unavailable": health.unavailable,
            "timeout": health.timeouts,
            "unreachable": health.unreachable,
            "ws_drop": health.ws_drops,
            "lost_order_answer": health.lost_order_answers,
        }
        for kind in _FAULTS:
            faults.add_metric([name, kind], counts[kind])
        for field, family in families.items():
            family.add_metric([name], getattr(health, field))
        streak.add_metric([name], health.consecutive_failures)
        degraded.add_metric([name], 1 if health.status == "degraded" else 0)
    yield faults
    yield from families.values()
    yield streak
    yield degraded


class GatewayMetrics:
    """The gateway's counters and gauges, and the registry `/metrics` renders."""

    def __init__(
        self,
        registry: AppRegistry,
        webhook_counts: Callable[[], Mapping[str, int] | None],
        started: float,
        connectors: ConnectorHealths = tuple,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "bfx_gateway_requests",
            "HTTP requests by route/status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.ws_clients = Gauge(
            "bfx_gateway_ws_clients", "Connected WebSocket clients.", registry=self.registry
        )
        self.ws_events = Counter(
            "bfx_gateway_ws_events", "Events sent to WS clients.", registry=self.registry
        )
        self.ws_dropped = Counter(
            "bfx_gateway_ws_dropped", "Slow WS clients dropped.", registry=self.registry
        )
        self.registry.register(_Live(registry, webhook_counts, started, connectors))

    def render(self) -> bytes:
        """Return every metric in the Prometheus text exposition format."""
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Count HTTP requests by method, matched route template and status."""

    def __init__(self, app: ASGIApp, metrics: GatewayMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, watch)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.requests.labels(scope["method"], route, str(status)).inc()
