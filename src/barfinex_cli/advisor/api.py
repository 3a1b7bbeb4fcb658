"""The advisor's HTTP face on port 8009: `/health`, `/metrics` and a small REST API.

    GET  /api/v1/decisions?limit=N     the latest runs, newest first (outcome, side, conviction)
    GET  /api/v1/decisions/{id}        one run explained: the eight stages and every event
    GET  /api/v1/regime                the current regime of each series
    POST /api/v1/evaluate              run the pipeline on a `detector.signal` payload (JSON),
                                       against the current context; nothing is published
    GET  /api/v1/tools                 the MCP tools the advisor offers (name, description, route)

It binds 127.0.0.1 by default and holds nothing secret (evaluation is a dry run); reach it from
elsewhere through the provider's `/proxy/advisor/...`, which checks the gateway token.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from barfinex_cli.advisor.pipeline import RunResult
from barfinex_cli.contracts.advisor import StageOutcome
from barfinex_cli.contracts.detector import SignalGenerated
from barfinex_cli.errors import BfxError, NotFound, ServiceUnreachable

if TYPE_CHECKING:
    from barfinex_cli.advisor.recent import Run
    from barfinex_cli.advisor.service import Advisor

MCP_TOOLS: tuple[dict[str, str], ...] = (
    {
        "name": "advisor_evaluate_signal",
        "method": "POST",
        "path": "/api/v1/evaluate",
        "description": "Run the advisor's eight stages on a detector.signal payload against the "
        "current market context and return every stage's outcome (a dry run).",
    },
    {
        "name": "advisor_explain_decision",
        "method": "GET",
        "path": "/api/v1/decisions/{id}",
        "description": "Explain one advisor decision: each stage's outcome, reason and events.",
    },
    {
        "name": "advisor_recent_decisions",
        "method": "GET",
        "path": "/api/v1/decisions",
        "description": "List the advisor's most recent decisions and rejections, newest first.",
    },
    {
        "name": "advisor_current_regime",
        "method": "GET",
        "path": "/api/v1/regime",
        "description": "Return the market regime (trend, range, high_vol) of each series.",
    },
)
"""The tools an MCP client may call, each a route of this API (see docs/advisor.md)."""


def summary(run: Run) -> dict[str, Any]:
    """Return one run in a line: what it decided, or where and why it stopped."""
    last = run.outcome_event
    payload = last.payload if last is not None else None
    out: dict[str, Any] = {
        "id": last.id if last is not None else None,
        "type": last.type if last is not None else None,
        "signal_id": run.signal.id,
        "trace_id": run.signal.trace_id,
        "ts": last.ts.isoformat() if last is not None else None,
        "symbol": run.signal.payload.symbol,
        "direction": run.signal.payload.direction,
    }
    if payload is not None:
        for name in (
            "side",
            "entry",
            "stop",
            "take_profit",
            "size",
            "conviction",
            "stage",
            "reason",
            "regime",
        ):
            if name in type(payload).model_fields:
                value = getattr(payload, name)
                out[name] = (
                    str(value)
                    if value is not None and name in ("entry", "stop", "take_profit", "size")
                    else value
                )
    return out


def explanation(run: Run) -> dict[str, Any]:
    """Return a run with its stages and every event, as JSON-able data."""
    stages: list[StageOutcome] = []
    if run.result is not None:
        stages = list(run.result.stages)
    return {
        **summary(run),
        "stages": [s.model_dump(mode="json") for s in stages],
        "events": [e.model_dump(mode="json", by_alias=True) for e in run.events],
    }


def result_json(result: RunResult) -> dict[str, Any]:
    """Return an evaluation's outcome, stages and payloads as JSON-able data."""
    end = result.decision or result.rejected
    return {
        "outcome": "decision" if result.decision is not None else "rejected",
        "result": end.model_dump(mode="json") if end is not None else None,
        "stages": [s.model_dump(mode="json") for s in result.stages],
        "events": [
            {"type": p.event_type, "payload": p.model_dump(mode="json")} for p in result.events
        ],
    }


def api_app(advisor: Advisor) -> Any:
    """Return the ASGI app serving health, metrics and the REST API of `advisor`."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    from barfinex_cli.runtime.health import render_metrics

    async def health(_: Request) -> JSONResponse:
        return JSONResponse(advisor.status())

    async def metrics(_: Request) -> Response:
        body, content_type = render_metrics(advisor.registry)
        return Response(body, media_type=content_type)

    async def decisions(request: Request) -> JSONResponse:
        try:
            limit = int(request.query_params.get("limit", "20"))
        except ValueError:
            return JSONResponse({"detail": "limit: a whole number, 1 to 1000"}, status_code=422)
        limit = max(1, min(limit, 1000))
        runs = advisor.runs.latest(limit)
        return JSONResponse({"decisions": [summary(r) for r in runs]})

    async def explain(request: Request) -> JSONResponse:
        try:
            run = advisor.find(request.path_params["ref"])
        except NotFound as exc:
            return JSONResponse({"detail": str(exc)}, status_code=404)
        return JSONResponse(explanation(run))

    async def regime(_: Request) -> JSONResponse:
        return JSONResponse({"regimes": advisor.regimes()})

    async def evaluate(request: Request) -> JSONResponse:
        body = await request.body()
        try:
            signal = SignalGenerated.model_validate_json(body)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "body"
            return JSONResponse(
                {"detail": f"not a detector.signal payload ({where}: {first['msg']})"},
                status_code=422,
            )
        try:
            result = await advisor.evaluate(signal)
        except NotFound as exc:
            return JSONResponse({"detail": str(exc)}, status_code=404)
        except ServiceUnreachable as exc:
            return JSONResponse({"detail": str(exc)}, status_code=503)
        except BfxError as exc:
            return JSONResponse({"detail": str(exc)}, status_code=422)
        return JSONResponse(result_json(result))

    async def tools(_: Request) -> JSONResponse:
        return JSONResponse({"tools": list(MCP_TOOLS)})

    return Starlette(
        routes=[
            Route("/health", health),
            Route("/metrics", metrics),
            Route("/api/v1/decisions", decisions),
            Route("/api/v1/decisions/{ref}", explain),
            Route("/api/v1/regime", regime),
            Route("/api/v1/evaluate", evaluate, methods=["POST"]),
            Route("/api/v1/tools", tools),
        ]
    )
