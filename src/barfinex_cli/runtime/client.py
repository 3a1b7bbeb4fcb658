"""The one async client of the provider's REST gateway, shared by every role and the CLI.

One `httpx.AsyncClient` per `GatewayClient` (build one per process and pass it to the roles), the
bearer token on every request, answers parsed into the `contracts.rest` models the routes declare.
A connection error is retried with exponential backoff and jitter (tenacity) and then becomes
`ServiceUnreachable` naming the URL and `bfx provider start`; the gateway's refusals become the
matching `BfxError`. Each method returns the models its route declares (a route that answers
one list, such as `{"series": [...]}`, gives the list itself).

Refusals:

    401/403 -> TokenRefused (exit 4)      404 -> NotFound          409 -> RiskViolation
    422     -> UsageError (the fields)    503 -> ServiceUnreachable
    other   -> BfxError with the status and the server's detail

Only connection failures are retried: every route is safe to send twice (orders are idempotent by
`client_order_id`, registration by name), but a status the gateway chose is its answer.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from types import TracebackType
from typing import Any, NamedTuple, Self, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ValidationError
from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    stop_after_attempt,
    wait_random_exponential,
)

from barfinex_cli.contracts.apps import Role
from barfinex_cli.contracts.market import BookUpdated
from barfinex_cli.contracts.orders import BalanceUpdated, OrderState, PositionChanged
from barfinex_cli.contracts.rest import (
    AccountsResponse,
    AppInfo,
    AppsResponse,
    AppTool,
    BrokerCapabilities,
    CandlesResponse,
    ConnectorsResponse,
    ConnectorStatus,
    ConnectorSymbols,
    Health,
    HealthResponse,
    HeartbeatRequest,
    OrdersResponse,
    PlaceOrderRequest,
    PositionsResponse,
    ReadyResponse,
    RegisterRequest,
    SeriesInfo,
    SeriesResponse,
    SymbolsResponse,
    TradesResponse,
)
from barfinex_cli.errors import (
    BfxError,
    ConfigError,
    NotFound,
    RiskViolation,
    ServiceUnreachable,
    TokenRefused,
    UsageError,
)
from barfinex_cli.runtime.settings import Settings

M = TypeVar("M", bound=BaseModel)
TOKEN_FILE = "token"
ORDER_IDS_PER_CALL = 100
"""Client order ids asked for in one `GET /orders` (the gateway takes at most 200)."""


class PlacedOrder(NamedTuple):
    """An order as the gateway holds it, and whether this call created it (False: a repeat)."""

    order: OrderState
    created: bool


def token_from(settings: Settings) -> str | None:
    """Return the gateway token: BFX_TOKEN, else `<data dir>/token`; None if neither has one.

    Never creates the file: only the provider generates a token.

    Raises:
        ConfigError: The token file exists but cannot be read.
    """
    if settings.token is not None and settings.token.get_secret_value():
        return settings.token.get_secret_value()
    path = settings.home / TOKEN_FILE
    if not path.is_file():
        return None
    try:
        text = path.read_text().strip()
    except OSError as exc:
        raise ConfigError(f"token file {path}: cannot read it ({exc.strerror})") from None
    return text or None


def _transient(exc: BaseException) -> bool:
    # a URL without http(s) will not start working on the next try
    return isinstance(exc, httpx.TransportError) and not isinstance(exc, httpx.UnsupportedProtocol)


class GatewayClient:
    """Typed calls to one provider gateway; an async context manager (or call `aclose()`)."""

    def __init__(
        self,
        base_url: str,
        token: str | None,
        *,
        timeout: float = 10,
        retries: int = 3,
        transport: httpx.AsyncBaseTransport | None = None,
        backoff_s: float = 0.1,
        max_backoff_s: float = 2.0,
    ) -> None:
        """Prepare the client; nothing is opened until the first request.

        Args:
            base_url: The gateway, e.g. `http://127.0.0.1:8081`.
            token: The bearer token; None sends none (health and readiness need none).
            timeout: Seconds per request.
            retries: How many times a connection failure is retried before giving up.
            transport: An httpx transport to use instead of the network one.
            backoff_s: The scale of the wait between tries: a random wait up to `backoff_s`
                times 2 to the number of tries so far (full jitter), capped by `max_backoff_s`.
            max_backoff_s: The longest wait between tries.
        """
        if retries < 0:
            raise ValueError("retries must be >= 0")
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.retries = retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.AsyncClient(
            base_url=self.base_url, headers=headers, timeout=timeout, transport=transport
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    # --- health ---------------------------------------------------------------------------------

    async def health(self) -> HealthResponse:
        """Return liveness, the version and which clock the provider follows (no token needed)."""
        return _parse(HealthResponse, await self._call("GET", "/api/v1/health"))

    async def ready(self) -> ReadyResponse:
        """Return whether the bus and the store answer, and which check failed if not."""
        response = await self._call("GET", "/api/v1/ready", accept=(503,))
        return _parse(ReadyResponse, response)

    # --- market ---------------------------------------------------------------------------------

    async def symbols(self) -> list[ConnectorSymbols]:
        """Return the symbols each connector serves."""
        return _parse(SymbolsResponse, await self._call("GET", "/api/v1/symbols")).connectors

    async def series(self) -> list[SeriesInfo]:
        """Return every candle series the provider's store holds."""
        return _parse(SeriesResponse, await self._call("GET", "/api/v1/series")).series

    async def candles(
        self,
        exchange: str,
        symbol: str,
        timeframe: str,
        *,
        limit: int = 500,
        since_ms: int | None = None,
        until_ms: int | None = None,
    ) -> CandlesResponse:
        """Return closed candles: from `since_ms` on if given, else the newest `limit`.

        Raises:
            NotFound: The store holds no such series (the message lists the held ones).
        """
        params = _params(
            exchange=exchange, symbol=symbol, timeframe=timeframe, limit=limit,
            since=since_ms, until=until_ms,
        )  # fmt: skip
        return _parse(CandlesResponse, await self._call("GET", "/api/v1/candles", params=params))

    async def trades(
        self,
        exchange: str,
        symbol: str,
        *,
        limit: int = 1000,
        since_ms: int | None = None,
        until_ms: int | None = None,
    ) -> TradesResponse:
        """Return trades in time order (the gateway's default window is the last hour)."""
        params = _params(
            exchange=exchange, symbol=symbol, limit=limit, since=since_ms, until=until_ms
        )
        return _parse(TradesResponse, await self._call("GET", "/api/v1/trades", params=params))

    async def orderbook(
        self, symbol: str, *, exchange: str | None = None, depth: int | None = None
    ) -> BookUpdated:
        """Return the last book the provider saw for `symbol`."""
        params = _params(symbol=symbol, exchange=exchange, depth=depth)
        return _parse(BookUpdated, await self._call("GET", "/api/v1/orderbook", params=params))

    async def connectors(self) -> list[ConnectorStatus]:
        """Return the measured health of every connector."""
        response = await self._call("GET", "/api/v1/connectors")
        return _parse(ConnectorsResponse, response).connectors

    # --- accounts and orders --------------------------------------------------------------------

    async def accounts(self, account: str | None = None) -> list[BalanceUpdated]:
        """Return the balances of every account (or of one)."""
        response = await self._call("GET", "/api/v1/accounts", params=_params(account=account))
        return _parse(AccountsResponse, response).accounts

    balances = accounts

    async def positions(self, account: str | None = None) -> list[PositionChanged]:
        """Return the position per account and symbol."""
        response = await self._call("GET", "/api/v1/positions", params=_params(account=account))
        return _parse(PositionsResponse, response).positions

    async def orders(
        self,
        account: str | None = None,
        open_only: bool = False,
        ids: Collection[str] | None = None,
        limit: int | None = None,
    ) -> list[OrderState]:
        """Return orders, oldest first; with `ids`, only those orders, whatever their status.

        `ids` is asked for in chunks of `ORDER_IDS_PER_CALL` (oldest first within each), and an
        empty `ids` asks nothing: a role settling its few live orders reads those, not every
        order the provider ever placed (a list that grows with the run). `limit` asks for only
        the latest that many (1 to 10,000), still oldest first: a screen showing recent orders
        reads those.

        Raises:
            ValueError: both `ids` and `limit` (chunks answer separately, so no single latest).
        """
        if ids is None:
            params = _params(account=account, open_only=open_only, limit=limit)
            return _parse(
                OrdersResponse, await self._call("GET", "/api/v1/orders", params=params)
            ).orders
        if limit is not None:
            raise ValueError("ask for orders by ids or for the latest ones, not both")
        wanted = list(dict.fromkeys(ids))
        out: list[OrderState] = []
        for start in range(0, len(wanted), ORDER_IDS_PER_CALL):
            query: dict[str, str | list[str]] = {
                **_params(account=account, open_only=open_only),
                "client_order_id": wanted[start : start + ORDER_IDS_PER_CALL],
            }
            response = await self._call("GET", "/api/v1/orders", params=query)
            out += _parse(OrdersResponse, response).orders
        return out

    async def broker(self) -> BrokerCapabilities:
        """Return what the provider's broker venue holds (stop orders, reduce-only)."""
        return _parse(BrokerCapabilities, await self._call("GET", "/api/v1/broker"))

    async def place_order(self, request: PlaceOrderRequest) -> PlacedOrder:
        """Place an order once per `client_order_id`; a repeat returns the first order."""
        body = request.model_dump(mode="json")
        response = await self._call("POST", "/api/v1/orders", json=body)
        return PlacedOrder(_parse(OrderState, response), response.status_code == 201)

    async def cancel_order(self, client_order_id: str) -> OrderState:
        """Cancel an open order; an order already closed comes back as it stands."""
        path = f"/api/v1/orders/{quote(client_order_id, safe='')}"
        return _parse(OrderState, await self._call("DELETE", path))

    # --- app registry ---------------------------------------------------------------------------

    async def register_app(
        self,
        name: str,
        role: Role,
        *,
        url: str | None = None,
        version: str = "",
        tools: Sequence[AppTool] = (),
    ) -> AppInfo:
        """Register (or re-register) an app under its unique name; return it with its id.

        `tools` are routes of the app's own API that the gateway's `/mcp` offers assistants.
        """
        request = RegisterRequest.model_validate(
            {"name": name, "role": role, "url": url, "version": version, "tools": list(tools)}
        )
        body = request.model_dump(mode="json", exclude_none=True)
        return _parse(AppInfo, await self._call("POST", "/api/v1/apps", json=body))

    async def heartbeat(self, app_id: str, status: Health = "ok") -> AppInfo:
        """Send a heartbeat.

        Raises:
            NotFound: The registry does not know `app_id` (the provider restarted): register again.
        """
        path = f"/api/v1/apps/{quote(app_id, safe='')}/heartbeat"
        body = HeartbeatRequest(status=status).model_dump(mode="json")
        return _parse(AppInfo, await self._call("POST", path, json=body))

    async def list_apps(self) -> list[AppInfo]:
        """Return every registered app, alive or lost."""
        return _parse(AppsResponse, await self._call("GET", "/api/v1/apps")).apps

    # --- transport ------------------------------------------------------------------------------

    async def _call(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str | list[str]] | None = None,
        json: Any = None,
        accept: tuple[int, ...] = (),
    ) -> httpx.Response:
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.retries + 1),
            wait=wait_random_exponential(multiplier=self.backoff_s, max=self.max_backoff_s),
            retry=retry_if_exception(_transient),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    response = await self._http.request(method, path, params=params, json=json)
        except httpx.TransportError as exc:
            reason = str(exc) or type(exc).__name__
            raise ServiceUnreachable(
                f"provider not reachable at {self.base_url} ({reason}) — "
                "start it with `bfx provider start`, or point BFX_PROVIDER_URL at a running one"
            ) from None
        if response.is_success or response.status_code in accept:
            return response
        raise self._refusal(response)

    def _refusal(self, response: httpx.Response) -> BfxError:
        code = response.status_code
        detail = _detail(response)
        if code in (401, 403):
            return TokenRefused(self.base_url, missing=self.token is None)
        if code == 404:
            return NotFound(detail)
        if code == 409:
            return RiskViolation(detail)
        if code == 422:
            return UsageError(f"the provider refused the request: {detail}")
        if code == 503:
            return ServiceUnreachable(f"the provider at {self.base_url}: {detail}")
        where = f"{response.request.method} {response.request.url.path}"
        return BfxError(f"the provider at {self.base_url} answered {code} to {where}: {detail}")


def _params(**values: str | int | bool | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in values.items():
        if value is None:
            continue
        out[name] = str(value).lower() if isinstance(value, bool) else str(value)
    return out


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200] or response.reason_phrase
    detail = body.get("detail") if isinstance(body, dict) else None
    if isinstance(detail, list):  # FastAPI's validation errors: name each field
        return "; ".join(
            f"{'.'.join(str(p) for p in err.get('loc', [])[1:]) or 'body'}: {err.get('msg')}"
            for err in detail
            if isinstance(err, dict)
        )
    return str(detail) if detail is not None else response.text[:200]


def _parse(model: type[M], response: httpx.Response) -> M:
    try:
        return model.model_validate_json(response.content)
    except ValidationError as exc:
        where = f"{response.request.method} {response.request.url.path}"
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "body"
        raise BfxError(
            f"unexpected answer from the provider to {where} ({field}: {first['msg']}) — "
            "is it the same bfx version?"
        ) from None
