"""The gateway answers on its event loop: no route needs a worker thread per request.

FastAPI runs a plain `def` endpoint or dependency in a worker thread; under load that hop cost
the provider more than the routes' own work, and the inspector waits on every answer.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from barfinex_cli.bus.memory import MemoryBus
from barfinex_cli.provider.gateway.app import create_app
from provider.gateway_server import make_context


def _sync(call: Any) -> bool:
    target = call if inspect.isfunction(call) or inspect.ismethod(call) else call.__call__
    return not inspect.iscoroutinefunction(target)


def _threaded(dependant: Dependant, path: str) -> list[str]:
    """Name every call under `dependant` that FastAPI would run in a worker thread."""
    found = [f"{path}: {dependant.call!r}"] if dependant.call and _sync(dependant.call) else []
    for sub in dependant.dependencies:
        found.extend(_threaded(sub, path))
    return found


def _walk(routes: list[Any]) -> tuple[list[APIRoute], list[str]]:
    """Return the API routes under `routes` (included routers opened), and sync router deps."""
    found: list[APIRoute] = []
    threaded: list[str] = []
    for route in routes:
        if isinstance(route, APIRoute):
            found.append(route)
        included = getattr(route, "original_router", None)
        if included is not None:
            inner, more = _walk(list(included.routes))
            found.extend(inner)
            threaded.extend(more)
            for dep in getattr(route.include_context, "dependencies", []):
                if _sync(dep.dependency):
                    threaded.append(f"router dependency {dep.dependency!r}")
    return found, threaded


def test_no_gateway_route_runs_its_endpoint_or_a_dependency_in_a_worker_thread(
    tmp_path: Path,
) -> None:
    ctx = make_context(tmp_path, MemoryBus("threads"))
    try:
        routes, threaded = _walk(list(create_app(ctx).routes))
        assert len([r for r in routes if r.path.startswith("/api/v1")]) > 15  # not an empty walk
        threaded += [name for r in routes for name in _threaded(r.dependant, r.path)]
        assert threaded == []
    finally:
        ctx.market.close()
