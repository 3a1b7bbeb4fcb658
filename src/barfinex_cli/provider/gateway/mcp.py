"""The gateway's MCP endpoint `/mcp`: the provider's reads (and, if enabled, orders) as MCP tools.

Built on the `mcp` package's `MCPServer` (mcp 2.x; FastMCP of 1.x) served over streamable HTTP,
stateless with JSON responses, so any number of assistants can call it without server-side
sessions. The session manager is run by the gateway's lifespan; its ASGI app is mounted at `/mcp`
behind the same bearer token as the REST routes (header, or `?token=` for clients that take only a
URL). DNS-rebinding protection is off: it guards servers without credentials, and this one refuses
every request that lacks the token.

Tools: `candles`, `symbols`, `positions`, `account`, `health`, and `place_order` only when
`GatewayOptions.mcp_orders_enabled` is set. Tools return the same documents as the REST routes.
`role_tools` and `call_role_tool` list and forward the tools registered roles declared
(`role_tools.py`), so the advisor's and the inspector's tools are reached through this one URL.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, ParamSpec, TypeVar
from urllib.parse import parse_qsl

from fastapi.responses import JSONResponse
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.streamable_http_manager import StreamableHTTPASGIApp
from mcp.server.transport_security import TransportSecuritySettings
from pydantic import ValidationError
from starlette.types import ASGIApp, Receive, Scope, Send

from barfinex_cli import __version__
from barfinex_cli.contracts.market import Timeframe
from barfinex_cli.contracts.orders import OrderSide, OrderType
from barfinex_cli.contracts.rest import MAX_ROWS, PlaceOrderRequest, parse_time_ms
from barfinex_cli.errors import BfxError
from barfinex_cli.provider.gateway import auth
from barfinex_cli.provider.gateway import role_tools as role_tools_of
from barfinex_cli.provider.gateway import routes as gateway_routes
from barfinex_cli.provider.gateway.context import GatewayState
from barfinex_cli.store.market import SeriesKey

P = ParamSpec("P")
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class McpMount:
    """The guarded ASGI app to mount at `/mcp`, and the context manager that runs its sessions."""

    asgi: ASGIApp
    run: Callable[[], contextlib.AbstractAsyncContextManager[None]]


class _Guard:
    """Refuse MCP requests without the gateway token, exactly as the REST routes do."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
            verdict = auth.check_scope(scope["headers"], query, self.token)
            if verdict != "ok":
                refusal = JSONResponse(
                    {"detail": auth.reason_of(verdict)},
                    auth.status_of(verdict),
                    headers={"WWW-Authenticate": "Bearer"},
                )
                await refusal(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _tool_errors(fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """Turn the user-fixable failures of a tool into `ToolError`s the model can read."""

    @functools.wraps(fn)  # the SDK reads the tool's signature through `__wrapped__`
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await fn(*args, **kwargs)
        except ValidationError as exc:
            raise ToolError(_summarise(exc)) from exc
        except (BfxError, ValueError) as exc:
            raise ToolError(str(exc)) from exc

    return wrapper


def _summarise(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or 'arguments'}: {err['msg']}"
        for err in exc.errors()
    )


def _decimal(name: str, value: str | None) -> Decimal | None:
    if value is None:
        return None
    try:
        return Decimal(value)
    except InvalidOperation:
        raise ValueError(f"{name}: {value!r} is not a decimal number") from None


def _time(name: str, value: str | None) -> int | None:
    try:
        return parse_time_ms(value)
    except ValueError as exc:
        raise ValueError(f"{name}: {exc}") from None


def _dump(models: list[Any]) -> list[dict[str, Any]]:
    return [m.model_dump(mode="json") for m in models]


def build(state: GatewayState) -> McpMount:
    """Build the MCP server over the gateway state and return what the gateway mounts."""
    ctx = state.ctx
    server: MCPServer[Any] = MCPServer(
        "bfx-provider",
        version=__version__,
        instructions="Market data, positions and balances of a barfinex provider.",
        log_level="WARNING",
    )

    @_tool_errors
    async def candles(
        exchange: str,
        symbol: str,
        timeframe: Timeframe,
        since: str | None = None,
        until: str | None = None,
        limit: int = 200,
    ) -> dict[str, Any]:
        """Closed candles of one series; since/until are epoch ms or ISO 8601 (default: newest)."""
        if not 1 <= limit <= MAX_ROWS:
            raise ValueError(f"limit: must be between 1 and {MAX_ROWS}")
        key = SeriesKey(exchange, symbol, timeframe)
        found = gateway_routes.read_candles(
            ctx, key, _time("since", since), _time("until", until), limit
        )
        return found.model_dump(mode="json")

    @_tool_errors
    async def symbols() -> dict[str, Any]:
        """The symbols each connector serves, and the candle series the store holds."""
        return {
            "connectors": _dump(await gateway_routes.read_symbols(ctx)),
            "series": _dump(gateway_routes.held_series(ctx)),
        }

    @_tool_errors
    async def positions(account: str | None = None) -> dict[str, Any]:
        """Open positions per account and symbol, with entry price and profit."""
        return {"positions": _dump(await gateway_routes.read_positions(ctx, account))}

    @_tool_errors
    async def account(account: str | None = None) -> dict[str, Any]:
        """Balances per account and currency: total, free and used."""
        return {"accounts": _dump(await gateway_routes.read_balances(ctx, account))}

    @_tool_errors
    async def health() -> dict[str, Any]:
        """The gateway's uptime, each connector's measured health and the registered apps."""
        return {
            "uptime_s": round(time.monotonic() - state.started, 3),
            "connectors": _dump(gateway_routes.read_connectors(ctx)),
            "apps": _dump(ctx.registry.apps()),
        }

    @_tool_errors
    async def role_tools() -> dict[str, Any]:
        """Tools the registered roles offer (advisor, inspector): call them with call_role_tool."""
        return {"tools": role_tools_of.listing(state)}

    @_tool_errors
    async def call_role_tool(name: str, arguments: dict[str, Any] | None = None) -> dict[str, Any]:
        """Call a tool a registered role offers (see role_tools); arguments by parameter name."""
        return {"result": await role_tools_of.call(state, name, arguments or {})}

    for tool in (candles, symbols, positions, account, health, role_tools, call_role_tool):
        server.add_tool(tool, name=tool.__name__)

    if ctx.options.mcp_orders_enabled:

        @_tool_errors
        async def place_order(
            client_order_id: str,
            account: str,
            symbol: str,
            side: OrderSide,
            type: OrderType,
            amount: str,
            price: str | None = None,
            stop_price: str | None = None,
            reduce_only: bool = False,
        ) -> dict[str, Any]:
            """Place an order; amounts and prices as decimal strings; one order per id."""
            body = PlaceOrderRequest(
                client_order_id=client_order_id, account=account, symbol=symbol, side=side,
                type=type, amount=_decimal("amount", amount), price=_decimal("price", price),
                stop_price=_decimal("stop_price", stop_price), reduce_only=reduce_only,
            )  # fmt: skip
            order, created = await gateway_routes.place_order(state, body)
            return {"created": created, "order": order.model_dump(mode="json")}

        server.add_tool(place_order, name="place_order")

    server.streamable_http_app(
        stateless_http=True,
        json_response=True,
        transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
    )
    manager = server.session_manager

    @contextlib.asynccontextmanager
    async def run() -> AsyncIterator[None]:
        async with manager.run():
            yield

    return McpMount(_Guard(StreamableHTTPASGIApp(manager), ctx.token), run)
