"""The inspector's HTTP face on port 8008: health, metrics, KPIs, positions, policies, controls.

    GET  /health                     liveness (503 while start-up waits or the provider is away)
    GET  /metrics                    Prometheus text
    GET  /kpi                        the `inspector.kpi` payload as things stand
    GET  /positions                  open positions with their protective orders
    GET  /policies                   the policy file in force (source, digest, every section)
    GET  /api/v1/status              health, KPIs and positions at once (`bfx inspector status`)
    POST /api/v1/stand-down          {"until": ISO time} or {"for": seconds} or neither (until
                                     resumed): no new entries until then; `for` counts on the
                                     inspector's clock (market time in a replay)
    POST /api/v1/resume              clear a stand-down
    POST /api/v1/close-all           flatten every runtime position now
    POST /api/v1/reconcile           {"dry_run": bool}: the differences and what each rule does

A control's body, when it has one, is a JSON object: anything else (a form, a list, `"dry_run":
"false"`) is a 422 naming what to send, never read as an empty body.

A control that needs the provider and cannot reach it answers 503 with `detail` (the reason) and
`"unreachable": "provider"`, never a report of a comparison it did not make.

It binds 127.0.0.1 by default: the controls act on the account, so reach it from elsewhere only
through the provider's `/proxy/inspector/...`, which checks the gateway token.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from barfinex_cli.errors import BfxError, ServiceUnreachable

if TYPE_CHECKING:
    from barfinex_cli.inspector.service import Inspector


def stand_down_end(data: dict[str, Any], now: datetime) -> datetime | None:
    """Return when a stand-down asked for by `data` ends (None: until resumed), from `now`.

    `until` is an ISO 8601 time with a zone; `for` a number of seconds counted on the inspector's
    clock. Either must land after `now` and at most `MAX_STAND_DOWN` after it, so every end the
    store keeps is a time a clock can hold.

    Raises:
        ValueError: The body asks for something else; the message says what to send.
    """
    from barfinex_cli.inspector.service import MAX_STAND_DOWN

    days = MAX_STAND_DOWN.days
    limit = f"at most {days} days ahead; send neither to stand down until resumed"
    if data.get("until") is not None and data.get("for") is not None:
        raise ValueError("give `until` or `for`, not both")
    if data.get("for") is not None:
        seconds = data["for"]
        if isinstance(seconds, bool) or not isinstance(seconds, int | float):
            raise ValueError("for: expected a number of seconds")
        if not 0 < seconds <= MAX_STAND_DOWN.total_seconds():  # False for nan too
            raise ValueError(f"for: {seconds!r} seconds; give more than 0, {limit}")
        return now + timedelta(seconds=seconds)
    if data.get("until") is None:
        return None
    try:
        until = datetime.fromisoformat(str(data["until"]))
    except ValueError:
        raise ValueError("until: expected an ISO 8601 time with a zone") from None
    if until.tzinfo is None:
        raise ValueError("until: give a time zone (e.g. Z)")
    try:
        until = until.astimezone(UTC)
    except OverflowError:
        raise ValueError(f"until: {data['until']} is outside the calendar; {limit}") from None
    if until <= now:
        raise ValueError(
            f"until: {until.isoformat()} is not after the inspector's clock ({now.isoformat()})"
        )
    if until - now > MAX_STAND_DOWN:
        raise ValueError(
            f"until: {until.isoformat()} is more than {days} days after the inspector's clock "
            f"({now.isoformat()}); send neither to stand down until resumed"
        )
    return until


def body_of(raw: bytes) -> dict[str, Any]:
    """Return a control's JSON object body; an empty body is `{}`.

    A body that is there but is not a JSON object is refused rather than read as empty: a
    reconcile asked for as a form (`dry_run=true`) once ran as a real one, rules applied.

    Raises:
        ValueError: The body is not JSON, or not an object; the message says what to send.
    """
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except ValueError:
        raise ValueError(
            'the body is not JSON: send a JSON object (e.g. {"dry_run": true}) with '
            "content-type application/json, or no body"
        ) from None
    if not isinstance(data, dict):
        raise ValueError(f"the body must be a JSON object, not {type(data).__name__}")
    return data


def reconcile_mode(data: dict[str, Any]) -> bool:
    """Return whether a reconcile asked for with `data` is a dry run (absent: it is not).

    Raises:
        ValueError: `dry_run` is not true or false (a string "false" would have been true).
    """
    dry_run = data.get("dry_run", False)
    if not isinstance(dry_run, bool):
        raise ValueError(f"dry_run: expected true or false, not {dry_run!r}")
    return dry_run


def api_app(inspector: Inspector) -> Any:
    """Return the Starlette app serving the inspector's routes."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    from barfinex_cli.runtime.health import render_metrics

    def fail(exc: BfxError) -> JSONResponse:
        if isinstance(exc, ServiceUnreachable):  # nothing was compared or done: say why
            return JSONResponse({"detail": str(exc), "unreachable": "provider"}, 503)
        return JSONResponse({"detail": str(exc)}, status_code=409)

    async def health(_: Request) -> JSONResponse:
        body = inspector.status()
        return JSONResponse(body, status_code=200 if body["status"] == "ok" else 503)

    async def metrics(_: Request) -> Response:
        body, content_type = render_metrics(inspector.registry)
        return Response(body, media_type=content_type)

    async def kpi(_: Request) -> JSONResponse:
        return JSONResponse(inspector.reports.kpi().model_dump(mode="json"))

    async def positions(_: Request) -> JSONResponse:
        return JSONResponse({"positions": inspector.positions_view()})

    async def policies(_: Request) -> JSONResponse:
        return JSONResponse(inspector.governor.policies.describe())

    async def status(_: Request) -> JSONResponse:
        return JSONResponse(
            {
                "health": inspector.status(),
                "policies": inspector.reports.policy_states(),
                "kpi": inspector.reports.kpi().model_dump(mode="json"),
                "positions": inspector.positions_view(),
            }
        )

    async def stand_down(request: Request) -> JSONResponse:
        try:
            data = body_of(await request.body())
            until = stand_down_end(data, inspector.clock.now())
        except ValueError as exc:
            return JSONResponse({"detail": str(exc)}, 422)
        await inspector.stand_down(until, str(data.get("reason") or "operator")[:500])
        return JSONResponse(inspector.status())

    async def resume(_: Request) -> JSONResponse:
        await inspector.resume()
        return JSONResponse(inspector.status())

    async def close_all(_: Request) -> JSONResponse:
        try:
            closed = await inspector.close_all("operator: bfx inspector close-all")
        except BfxError as exc:
            return fail(exc)
        return JSONResponse({"closed": closed})

    async def reconcile(request: Request) -> JSONResponse:
        try:
            dry_run = reconcile_mode(body_of(await request.body()))
        except ValueError as exc:
            return JSONResponse({"detail": str(exc)}, 422)
        try:
            report = await inspector.reconciler.reconcile_now(dry_run)
        except BfxError as exc:
            return fail(exc)
        return JSONResponse(report)

    return Starlette(
        routes=[
            Route("/health", health),
            Route("/metrics", metrics),
            Route("/kpi", kpi),
            Route("/positions", positions),
            Route("/policies", policies),
            Route("/api/v1/status", status),
            Route("/api/v1/stand-down", stand_down, methods=["POST"]),
            Route("/api/v1/resume", resume, methods=["POST"]),
            Route("/api/v1/close-all", close_all, methods=["POST"]),
            Route("/api/v1/reconcile", reconcile, methods=["POST"]),
        ]
    )
