"""The role's health server: `/health` from a status callable, `/metrics` from prometheus_client."""

from __future__ import annotations

from typing import Any

import httpx
from prometheus_client import CollectorRegistry, Counter

from barfinex_cli.runtime.health import health_app
from provider.gateway_server import serving


def _status(ok: bool) -> Any:
    return lambda: {"status": "ok" if ok else "stalled", "evaluations": 3}


async def _get(app: Any, *paths: str) -> list[httpx.Response]:
    """Serve `app` on loopback and GET each path from it."""
    async with (
        serving(app, ready_path="/metrics") as base,
        httpx.AsyncClient(base_url=base) as http,
    ):
        return [await http.get(path) for path in paths]


async def test_metrics_render_the_role_registry_and_health_says_ok_or_503() -> None:
    registry = CollectorRegistry()
    evaluations = Counter(
        "bfx_detector_evaluations", "Candles evaluated.", ["instance"], registry=registry
    )
    evaluations.labels("d-1").inc(3)
    health, metrics = await _get(health_app(_status(True), registry), "/health", "/metrics")
    assert (health.status_code, health.json()["evaluations"]) == (200, 3)
    assert metrics.headers["content-type"].startswith("text/plain")
    assert "# TYPE bfx_detector_evaluations_total counter" in metrics.text
    assert 'bfx_detector_evaluations_total{instance="d-1"} 3.0' in metrics.text
    stalled, again = await _get(health_app(_status(False), lambda: registry), "/health", "/metrics")
    assert stalled.status_code == 503
    assert 'instance="d-1"} 3.0' in again.text


async def test_a_role_still_rendering_its_own_text_is_served_as_it_is() -> None:
    text = "# TYPE bfx_x gauge\nbfx_x 1\n"
    (metrics,) = await _get(health_app(_status(True), lambda: text), "/metrics")
    assert metrics.text == text


def test_two_instances_binding_one_port_get_two_ports() -> None:
    # detectors started together under `bfx up` both ask for 8101 before either serves
    from barfinex_cli.runtime.health import bind_first_free

    first = bind_first_free("127.0.0.1", 0)
    port = first.getsockname()[1]
    second = bind_first_free("127.0.0.1", port)
    try:
        assert second.getsockname()[1] != port
    finally:
        first.close()
        second.close()
