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
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from barfinex_cli.bus.base import Bus
from barfinex_cli.errors import ServiceUnreachable

if TYPE_CHECKING:
    import uvicorn

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
    await serve_until(server, sock, stop)


async def serve_until(
    server: uvicorn.Server, sock: socket.socket, stop: asyncio.Event, *, grace_s: float = 5.0
) -> None:
    """Run `server` on the bound `sock` until `stop` is set or it ends; leave nothing open.

    The server shuts down gracefully for up to `grace_s`; then, or at once if this coroutine is
    cancelled, its listener and every connection are closed and its shutdown given `grace_s`
    more before it is cancelled. A server cut off mid-shutdown (a role cancelling its tasks, a
    stop that outlived its grace) used to keep its listening socket and connections open until
    the event loop closed, for the garbage collector to find in some later test or call.
    """
    task = asyncio.create_task(server.serve(sockets=[sock]), name="uvicorn")
    stopper = asyncio.create_task(stop.wait(), name="uvicorn-stop")
    try:
        await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
        server.should_exit = True
        await asyncio.wait({task}, timeout=grace_s)
    finally:
        stopper.cancel()
        try:
            if not task.done():
                await _stop_now(server, task, grace_s)
        finally:
            sock.close()  # uvicorn closes it only once started: a failed startup left it open
    if not task.cancelled():  # cancelled by `_stop_now` only, once nothing was left open
        task.result()


async def _stop_now(server: uvicorn.Server, task: asyncio.Task[None], grace_s: float) -> None:
    """Close `server`'s listener and connections so its shutdown ends; cancel it if it hangs."""
    server.should_exit = True
    for listener in server.servers:
        listener.close()
    for connection in list(server.server_state.connections):
        transport = getattr(connection, "transport", None)
        if transport is not None:
            transport.abort()  # closed even if nothing awaits again: the loop's next pass does it
    for running in list(server.server_state.tasks):
        running.cancel()
    await asyncio.wait({task}, timeout=grace_s)  # connections gone: its lifespan shutdown runs
    if not task.done():
        server.force_exit = True
        task.cancel()
        await asyncio.wait({task})
