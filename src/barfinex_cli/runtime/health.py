"""A small HTTP server every role runs beside its work: `/health` and `/metrics` on its own port.

Roles other than the provider serve only these two routes (detector on 8101 + n, advisor 8009,
inspector 8008), so a supervisor or Prometheus can watch each process, and the provider's proxy
can reach them by the URL they registered. `/metrics` renders a `prometheus_client` registry the
role owns (its own, not the process-global one, so several roles in one process stay apart).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from barfinex_cli.bus.base import Bus
from barfinex_cli.errors import ServiceUnreachable

Status = Callable[[], dict[str, Any]]
Metrics = CollectorRegistry | Callable[[], CollectorRegistry | str]
"""A registry, or a callable returning one (or, from roles not yet on prometheus_client, text)."""


def bind_first_free(host: str, port: int, *, tries: int = 100) -> socket.socket:
    """Bind `host:port`, or the next free port above it (instances take 8101, 8102, ...)."""
    last: OSError | None = None
    for candidate in range(port, port + tries) if port else [0]:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, candidate))
            # listen at once: with SO_REUSEADDR, Linux lets a second socket bind a port that
            # nobody listens on yet, so two instances starting together took the same port
            sock.listen(128)
            return sock
        except OSError as exc:
            sock.close()
            last = exc
    raise ServiceUnreachable(
        f"no free port on {host} from {port} to {port + tries - 1} ({last}) — pass --port"
    )


class TrimmedCollector(Collector):
    """Report what the groups read on a bus lost to the stream cap (`Bus.trimmed`).

    `bfx_bus_trimmed_total{group,type}` counts the entries lost; `bfx_bus_trimmed_uncounted_total`
    the losses the server could not count (Redis 6.2). Every role's registry holds one.
    """

    def __init__(self, bus: Bus) -> None:
        self.bus = bus

    def collect(self) -> Iterator[Metric]:
        labels = ["group", "type"]
        entries = CounterMetricFamily(
            "bfx_bus_trimmed", "Entries a group lost to the stream cap.", labels=labels
        )
        uncounted = CounterMetricFamily(
            "bfx_bus_trimmed_uncounted",
            "Losses to the stream cap the server could not count (Redis 6.2).",
            labels=labels,
        )
        for (group, event_type), loss in sorted(self.bus.trimmed.items()):
            entries.add_metric([group, event_type], loss.entries)
            uncounted.add_metric([group, event_type], loss.uncounted)
        yield entries
        yield uncounted


def render_metrics(metrics: Metrics) -> tuple[bytes, str]:
    """Return the exposition text of `metrics` and its content type."""
    found = metrics if isinstance(metrics, CollectorRegistry) else metrics()
    if isinstance(found, CollectorRegistry):
        return generate_latest(found), CONTENT_TYPE_LATEST
    return found.encode(), "text/plain; version=0.0.4; charset=utf-8"


def health_app(status: Status, metrics: Metrics) -> Any:
    """Return an ASGI app serving `/health` (JSON) and `/metrics` (Prometheus text)."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    async def health(_: Request) -> JSONResponse:
        body = status()
        return JSONResponse(body, status_code=200 if body.get("status") == "ok" else 503)

    async def prometheus(_: Request) -> Response:
        body, content_type = render_metrics(metrics)
        return Response(body, media_type=content_type)

    return Starlette(routes=[Route("/health", health), Route("/metrics", prometheus)])


async def serve_health(app: Any, sock: socket.socket, stop: asyncio.Event) -> None:
    """Serve `app` on the bound `sock` until `stop` is set."""
    import uvicorn

    class _Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:  # the role's lifecycle owns signals
            yield

    host, port = sock.getsockname()[:2]
    server = _Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    await stop.wait()
    server.should_exit = True
    await task
