"""The gateway's REST routes, the token that guards them and the order routes, over real HTTP.

Each test runs uvicorn on a free loopback port with a real `MarketStore` in `tmp_path`, the
in-process bus and a real `PaperBroker`, and talks to it with httpx.
"""

from __future__ import annotations

import os
import stat
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from barfinex_cli.bus.memory import MemoryBus
from barfinex_cli.contracts.market import BookUpdated
from barfinex_cli.errors import ConfigError
from barfinex_cli.provider.connectors.replay import ReplayConnector
from barfinex_cli.provider.gateway.auth import ensure_token
from barfinex_cli.provider.gateway.context import GatewayOptions
from barfinex_cli.runtime.settings import Settings
from barfinex_cli.store.market import CandleRow, SeriesKey, TradeRow
from provider.gateway_server import TOKEN, gateway, make_broker, make_context

T0 = 1_700_000_040_000  # a minute boundary
KEY = SeriesKey("binance", "BTC/USDT", "1m")
PROTECTED = [
    ("GET", "/api/v1/symbols"),
    ("GET", "/api/v1/series"),
    ("GET", "/api/v1/candles?exchange=binance&symbol=BTC/USDT&timeframe=1m"),
    ("GET", "/api/v1/trades?exchange=binance&symbol=BTC/USDT"),
    ("GET", "/api/v1/orderbook?symbol=BTC/USDT"),
    ("GET", "/api/v1/accounts"),
    ("GET", "/api/v1/orders"),
    ("POST", "/api/v1/orders"),
    ("DELETE", "/api/v1/orders/abc"),
    ("GET", "/api/v1/positions"),
    ("GET", "/api/v1/connectors"),
    ("GET", "/api/v1/apps"),
    ("POST", "/api/v1/apps"),
    ("POST", "/api/v1/apps/x/heartbeat"),
    ("GET", "/proxy/someapp/x"),
    ("GET", "/metrics"),
]


def _book() -> BookUpdated:
    return BookUpdated(
        exchange="binance",
        symbol="BTC/USDT",
        bids=[(Decimal("99.5"), Decimal(2)), (Decimal(99), Decimal(5))],
        asks=[(Decimal("100.5"), Decimal(1)), (Decimal(101), Decimal(3))],
        time=datetime(2024, 1, 1, tzinfo=UTC),
    )


@pytest.fixture
def mem_bus() -> MemoryBus:
    return MemoryBus("gw")


@pytest.fixture
async def client(tmp_path: Path, mem_bus: MemoryBus) -> AsyncIterator[httpx.AsyncClient]:
    bus = mem_bus
    ctx = make_context(
        tmp_path,
        bus,
        broker=make_broker(bus),
        connectors={"replay": ReplayConnector(days=0.05)},
        books={"BTC/USDT": _book()},
    )
    rows = [
        CandleRow(T0 + i * 60_000, 100 + i, 101 + i, 99 + i, 100.5 + i, 10.0, 5) for i in range(10)
    ]
    ctx.market.upsert_candles(KEY, rows)
    trades = [TradeRow(T0 + i * 1000, f"t{i}", 100.0 + i, 0.5, "buy") for i in range(5)]
    ctx.market.upsert_trades("binance", "BTC/USDT", trades)
    async with gateway(ctx) as http:
        yield http


def _order(**overrides: Any) -> dict[str, Any]:
    body = {
        "client_order_id": "ord-1",
        "account": "paper",
        "symbol": "BTC/USDT",
        "side": "buy",
        "type": "market",
        "amount": "0.5",
    }
    return {**body, **overrides}


def _locs(response: httpx.Response) -> list[str]:
    return [str(err["loc"][-1]) for err in response.json()["detail"]]


async def test_health_and_ready_answer_without_a_token(client: httpx.AsyncClient) -> None:
    bare = {"Authorization": ""}
    health = await client.get("/api/v1/health", headers=bare)
    assert health.status_code == 200
    assert health.json()["status"] == "ok"
    ready = await client.get("/api/v1/ready", headers=bare)
    assert ready.status_code == 200
    assert ready.json() == {"ready": True, "checks": {"bus": "ok", "store": "ok"}}


async def test_every_other_route_refuses_a_missing_or_wrong_token(
    client: httpx.AsyncClient,
) -> None:
    for method, path in PROTECTED:
        missing = await client.request(method, path, headers={"Authorization": ""})
        assert missing.status_code == 401, (method, path)
        assert missing.headers["www-authenticate"] == "Bearer"
        assert "missing bearer token" in missing.json()["detail"]
        wrong = await client.request(method, path, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 403, (method, path)
        assert wrong.json()["detail"] == "wrong bearer token"


async def test_metrics_count_requests_by_route_and_status(client: httpx.AsyncClient) -> None:
    await client.get("/api/v1/series")
    await client.get("/api/v1/candles", params={"exchange": "x", "symbol": "y", "timeframe": "1m"})
    text = (await client.get("/metrics")).text
    assert 'bfx_gateway_requests_total{method="GET",route="/api/v1/series",status="200"} 1' in text
    assert 'route="/api/v1/candles",status="404"} 1' in text
    assert "bfx_gateway_ws_clients 0" in text
    assert 'bfx_registry_apps{status="alive"} 0' in text


async def test_metrics_can_be_served_without_the_token(tmp_path: Path) -> None:
    ctx = make_context(tmp_path, MemoryBus("m"), options=GatewayOptions(metrics_public=True))
    async with gateway(ctx) as http:
        response = await http.get("/metrics", headers={"Authorization": ""})
    assert response.status_code == 200
    assert "# TYPE bfx_gateway_requests_total counter" in response.text


async def test_candles_default_to_the_newest_and_take_ms_or_iso_bounds(
    client: httpx.AsyncClient,
) -> None:
    params = {"exchange": "binance", "symbol": "BTC/USDT", "timeframe": "1m"}
    newest = (await client.get("/api/v1/candles", params={**params, "limit": 3})).json()
    assert [c["open_ms"] for c in newest["candles"]] == [T0 + i * 60_000 for i in (7, 8, 9)]
    first = newest["candles"][0]
    assert first["close"] == 107.5
    assert first["time"] == "2023-11-14T22:21:00Z"
    since_iso = datetime.fromtimestamp((T0 + 120_000) / 1000, UTC).isoformat()
    ranged = await client.get(
        "/api/v1/candles", params={**params, "since": since_iso, "until": T0 + 240_000}
    )
    assert [c["open_ms"] for c in ranged.json()["candles"]] == [T0 + i * 60_000 for i in (2, 3, 4)]
    empty = await client.get("/api/v1/candles", params={**params, "since": T0 + 10**9})
    assert empty.status_code == 200
    assert empty.json()["candles"] == []


async def test_bad_candle_parameters_get_422_naming_the_field(client: httpx.AsyncClient) -> None:
    params = {"exchange": "binance", "symbol": "BTC/USDT", "timeframe": "1m"}
    bad_since = await client.get("/api/v1/candles", params={**params, "since": "yesterday-ish"})
    assert bad_since.status_code == 422
    assert _locs(bad_since) == ["since"]
    assert "ISO 8601" in bad_since.json()["detail"][0]["msg"]
    bad_tf = await client.get("/api/v1/candles", params={**params, "timeframe": "7m"})
    assert (bad_tf.status_code, _locs(bad_tf)) == (422, ["timeframe"])
    bad_limit = await client.get("/api/v1/candles", params={**params, "limit": 0})
    assert (bad_limit.status_code, _locs(bad_limit)) == (422, ["limit"])
    no_symbol = await client.get("/api/v1/candles", params={"exchange": "x", "timeframe": "1m"})
    assert (no_symbol.status_code, _locs(no_symbol)) == (422, ["symbol"])


async def test_unknown_series_is_404_listing_the_held_series(client: httpx.AsyncClient) -> None:
    params = {"exchange": "binance", "symbol": "ETH/USDT", "timeframe": "1m"}
    response = await client.get("/api/v1/candles", params=params)
    assert response.status_code == 404
    body = response.json()
    assert "binance BTC/USDT 1m" in body["detail"]
    assert body["series"] == [
        {"exchange": "binance", "symbol": "BTC/USDT", "timeframe": "1m", "rows": 10,
         "first_ms": T0, "last_ms": T0 + 9 * 60_000}
    ]  # fmt: skip
    series = (await client.get("/api/v1/series")).json()["series"]
    assert series == body["series"]


async def test_trades_come_from_the_store_in_time_order(client: httpx.AsyncClient) -> None:
    params: dict[str, str | int] = {"exchange": "binance", "symbol": "BTC/USDT", "since": T0 + 2000}
    trades = (await client.get("/api/v1/trades", params=params)).json()["trades"]
    assert [t["trade_id"] for t in trades] == ["t2", "t3", "t4"]
    assert trades[0]["price"] == 102.0
    recent = await client.get(
        "/api/v1/trades", params={"exchange": "binance", "symbol": "BTC/USDT"}
    )
    assert recent.json()["trades"] == []  # the default window is the last hour


async def test_orderbook_serves_the_last_book_and_404s_an_unknown_symbol(
    client: httpx.AsyncClient,
) -> None:
    book = (await client.get("/api/v1/orderbook", params={"symbol": "BTC/USDT", "depth": 1})).json()
    assert book["bids"] == [["99.5", "2"]]
    assert book["asks"] == [["100.5", "1"]]
    missing = await client.get("/api/v1/orderbook", params={"symbol": "DOGE/USDT"})
    assert missing.status_code == 404
    assert "binance BTC/USDT" in missing.json()["detail"]


async def test_symbols_and_connectors_come_from_the_connectors(client: httpx.AsyncClient) -> None:
    symbols = (await client.get("/api/v1/symbols")).json()["connectors"]
    assert symbols == [
        {"connector": "replay", "exchange": "synthetic",
         "symbols": ["BTC/USDT", "ETH/USDT", "SOL/USDT"]}
    ]  # fmt: skip
    health = (await client.get("/api/v1/connectors")).json()["connectors"]
    assert health[0]["name"] == "replay"
    assert health[0]["connected"] is False
    assert health[0]["reconnects"] == 0


async def test_the_same_client_order_id_twice_places_one_order(
    client: httpx.AsyncClient, mem_bus: MemoryBus
) -> None:
    first = await client.post("/api/v1/orders", json=_order())
    assert first.status_code == 201
    again = await client.post("/api/v1/orders", json=_order(amount="9"))
    assert again.status_code == 200
    assert again.json() == first.json()
    assert first.json()["client_order_id"] == "ord-1"
    assert Decimal(first.json()["filled"]) == Decimal("0.5")
    orders = (await client.get("/api/v1/orders")).json()["orders"]
    assert [o["client_order_id"] for o in orders] == ["ord-1"]
    positions = (await client.get("/api/v1/positions")).json()["positions"]
    assert [(p["symbol"], p["side"], Decimal(p["size"])) for p in positions] == [
        ("BTC/USDT", "long", Decimal("0.5"))
    ]
    consumer = await mem_bus.consumer("check", "check", ["order.*"], start="0")
    events = [d.type for d in await consumer.fetch(100, 0)]
    assert events.count("order.submitted") == 1
    assert events.count("order.filled") == 1
    accounts = (await client.get("/api/v1/accounts")).json()["accounts"]
    assert accounts[0]["account"] == "paper"
    assert Decimal(accounts[0]["balances"]["USDT"]["total"]) < 10_000


async def test_a_bad_order_body_gets_422_naming_the_field(client: httpx.AsyncClient) -> None:
    no_id = {k: v for k, v in _order().items() if k != "client_order_id"}
    cases = [
        (no_id, "client_order_id"),
        (_order(leverage=10), "leverage"),
        (_order(type="limit"), "price"),
        (_order(amount="-1"), "amount"),
        (_order(side="hold"), "side"),
        (_order(type="market", stop_price="90"), "stop_price"),
    ]
    for body, field in cases:
        response = await client.post("/api/v1/orders", json=body)
        assert response.status_code == 422, body
        assert field in _locs(response), (body, response.json())
    assert (await client.get("/api/v1/orders")).json()["orders"] == []


async def test_an_open_order_is_cancelled_and_an_unknown_one_is_404(
    client: httpx.AsyncClient,
) -> None:
    placed = await client.post("/api/v1/orders", json=_order(type="limit", price="50"))
    assert placed.status_code == 201
    assert (
        len((await client.get("/api/v1/orders", params={"open_only": True})).json()["orders"]) == 1
    )
    cancelled = await client.delete("/api/v1/orders/ord-1")
    assert cancelled.status_code == 200
    assert cancelled.json()["client_order_id"] == "ord-1"
    assert (await client.get("/api/v1/orders", params={"open_only": True})).json()["orders"] == []
    unknown = await client.delete("/api/v1/orders/never-placed")
    assert unknown.status_code == 404
    assert "never-placed" in unknown.json()["detail"]


async def test_orders_asked_for_by_client_order_id_come_alone_whatever_their_status(
    client: httpx.AsyncClient,
) -> None:
    for cid, extra in (("filled-1", {}), ("open-2", {"type": "limit", "price": "50"})):
        assert (
            await client.post("/api/v1/orders", json=_order(client_order_id=cid, **extra))
        ).is_success
    assert (await client.post("/api/v1/orders", json=_order(client_order_id="other-3"))).is_success
    asked = {"client_order_id": ["filled-1", "open-2", "never-placed"]}
    orders = (await client.get("/api/v1/orders", params=asked)).json()["orders"]
    assert [(o["client_order_id"], o["status"]) for o in orders] == [
        ("filled-1", "filled"), ("open-2", "open"),
    ]  # fmt: skip
    both = {**asked, "open_only": "true"}
    assert [
        o["client_order_id"]
        for o in (await client.get("/api/v1/orders", params=both)).json()["orders"]
    ] == ["open-2"]
    too_many = await client.get(
        "/api/v1/orders", params={"client_order_id": [f"c{i}" for i in range(201)]}
    )
    assert too_many.status_code == 422
    assert "client_order_id" in _locs(too_many)


async def test_a_limit_lists_the_latest_orders_oldest_first_with_open_only_and_account(
    client: httpx.AsyncClient,
) -> None:
    for cid in ("f1", "o2", "f3", "o4", "f5"):
        extra = {"type": "limit", "price": "50"} if cid.startswith("o") else {}
        placed = await client.post("/api/v1/orders", json=_order(client_order_id=cid, **extra))
        assert placed.status_code == 201

    async def listed(**params: Any) -> list[tuple[str, str]]:
        response = await client.get("/api/v1/orders", params=params)
        assert response.status_code == 200, response.text
        return [(o["client_order_id"], o["status"]) for o in response.json()["orders"]]

    assert await listed(limit=2) == [("o4", "open"), ("f5", "filled")]
    assert await listed(limit=10_000) == await listed()
    assert await listed(open_only="true", limit=1) == [("o4", "open")]
    assert [cid for cid, _ in await listed(account="paper", limit=3)] == ["f3", "o4", "f5"]
    assert await listed(account="nobody", limit=3) == []
    assert [cid for cid, _ in await listed(client_order_id=["f1", "o2", "f5"], limit=2)] == [
        "o2", "f5",
    ]  # fmt: skip
    for bad in (0, -1, 10_001, "many"):
        refused = await client.get("/api/v1/orders", params={"limit": bad})
        assert refused.status_code == 422, bad
        assert _locs(refused) == ["limit"]


async def test_order_routes_say_so_when_there_is_no_broker(tmp_path: Path) -> None:
    async with gateway(make_context(tmp_path, MemoryBus("nb"))) as http:
        response = await http.get("/api/v1/orders")
        placed = await http.post("/api/v1/orders", json=_order())
    assert response.status_code == placed.status_code == 503
    assert "without a broker" in response.json()["detail"]


async def test_the_broker_route_says_the_paper_broker_holds_stops_and_reduce_only_orders(
    client: httpx.AsyncClient, tmp_path: Path
) -> None:
    body = (await client.get("/api/v1/broker")).json()
    assert (body["broker"], body["stop_orders"], body["reduce_only"]) == ("paper", True, True)
    async with gateway(make_context(tmp_path, MemoryBus("nb"))) as http:
        assert (await http.get("/api/v1/broker")).status_code == 503


async def test_openapi_lists_every_route(client: httpx.AsyncClient) -> None:
    paths = (await client.get("/openapi.json", headers={"Authorization": ""})).json()["paths"]
    routes = [
        "/api/v1/candles", "/api/v1/orders", "/api/v1/orders/{client_order_id}",
        "/api/v1/apps/{app_id}/heartbeat", "/proxy/{app}/{path}", "/metrics",
    ]  # fmt: skip
    assert set(routes) <= set(paths)


def test_token_comes_from_settings_then_the_file_then_is_generated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("BFX_TOKEN", raising=False)
    assert ensure_token(Settings(home=tmp_path, token=TOKEN)) == TOKEN
    created: list[tuple[str, Path]] = []
    settings = Settings(home=tmp_path / "home")
    token = ensure_token(settings, on_created=lambda t, p: created.append((t, p)))
    path = tmp_path / "home" / "token"
    assert created == [(token, path)]
    assert len(token) >= 40
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert ensure_token(settings, on_created=lambda t, p: created.append((t, p))) == token
    assert len(created) == 1
    path.write_text("\n")
    with pytest.raises(ConfigError, match="is empty"):
        ensure_token(settings)


# --- schemas and bounds at the edge -------------------------------------------------------------


def _bare(schema: dict[str, Any], components: dict[str, Any]) -> bool:
    """Tell whether a response schema says nothing about its shape (`{}` or a bare object)."""
    if "$ref" in schema:
        target = components[schema["$ref"].rsplit("/", 1)[-1]]
        return _bare(target, components)
    if "anyOf" in schema:
        return any(_bare(s, components) for s in schema["anyOf"])
    if schema.get("type") == "object":
        return not schema.get("properties") and not schema.get("additionalProperties")
    return not schema


async def test_openapi_describes_a_real_shape_for_every_api_answer(
    client: httpx.AsyncClient,
) -> None:
    spec = (await client.get("/openapi.json", headers={"Authorization": ""})).json()
    components = spec["components"]["schemas"]
    checked = []
    for path, operations in spec["paths"].items():
        if not path.startswith("/api/v1"):
            continue
        for method, operation in operations.items():
            ok = operation["responses"].get("200") or operation["responses"]["201"]
            schema = ok["content"]["application/json"]["schema"]
            assert not _bare(schema, components), (method, path, schema)
            checked.append((method, path))
    assert len(checked) == 17  # every /api/v1 route, so none slipped past the walk
    health = components["HealthResponse"]["properties"]
    assert {"clock", "market_time"} <= set(health)


async def test_health_says_which_clock_the_provider_follows(tmp_path: Path) -> None:
    wall = make_context(tmp_path / "wall", MemoryBus("w"))
    async with gateway(wall) as http:
        body = (await http.get("/api/v1/health")).json()
    assert (body["clock"], body["market_time"]) == ("wall", None)
    replay = make_context(tmp_path / "replay", MemoryBus("r"))
    replay.clock = "market"
    replay.market_time = lambda: datetime(2024, 3, 1, 12, tzinfo=UTC)
    async with gateway(replay) as http:
        body = (await http.get("/api/v1/health")).json()
    assert (body["clock"], body["market_time"]) == ("market", "2024-03-01T12:00:00Z")


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ('"amount": NaN', "amount"),
        ('"amount": Infinity', "amount"),
        ('"amount": "1e30"', "amount"),
        ('"amount": 1e30', "amount"),
        ('"amount": "0.5", "type": "limit", "price": "NaN"', "price"),
        ('"amount": "0.5", "type": "limit", "price": 1e16', "price"),
        ('"amount": "0.5", "type": "stop_market", "stop_price": -Infinity', "stop_price"),
    ],
)  # fmt: skip
async def test_non_finite_or_huge_amounts_get_422_and_leave_the_broker_working(
    client: httpx.AsyncClient, raw: str, field: str
) -> None:
    base = '{"client_order_id": "o-1", "account": "paper", "symbol": "BTC/USDT", "side": "buy"'
    kind = "" if '"type"' in raw else ', "type": "market"'
    content = f"{base}{kind}, {raw}}}"
    response = await client.post(
        "/api/v1/orders", content=content, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 422, response.text
    assert field in _locs(response)
    assert (await client.get("/api/v1/accounts")).status_code == 200
    assert (await client.post("/api/v1/orders", json=_order())).status_code == 201


@pytest.mark.parametrize("path", ["/api/v1/candles", "/api/v1/trades"])
@pytest.mark.parametrize(
    ("name", "value"),
    [("since", str(2**63)), ("until", str(2**63)), ("since", "1e30"), ("until", "-1e30"),
     ("since", str(-(2**63))), ("limit", str(2**63)), ("limit", "-1")],
)  # fmt: skip
async def test_out_of_range_times_and_limits_get_422_naming_the_field(
    client: httpx.AsyncClient, path: str, name: str, value: str
) -> None:
    params = {"exchange": "binance", "symbol": "BTC/USDT", "timeframe": "1m", name: value}
    response = await client.get(path, params=params)
    assert response.status_code == 422, response.text
    assert _locs(response) == [name]


def test_the_fast_candles_json_is_exactly_the_candles_response_model(tmp_path: Path) -> None:
    import json

    from barfinex_cli.bus.memory import MemoryBus
    from barfinex_cli.contracts.rest import CandlesResponse
    from barfinex_cli.provider.gateway.routes import candles_json, read_candles
    from barfinex_cli.store.market import CandleRow, SeriesKey

    ctx = make_context(tmp_path, MemoryBus("fast-json"))
    key = SeriesKey("replay", "BTC/USDT", "1m")
    rows = [
        CandleRow(1_704_067_200_000 + i * 60_000, 100.1 + i, 101.25, 99.5, 100.7, 2.5, 3,
                  None if i % 2 else 1.25, None if i % 2 else 1.25)
        for i in range(50)
    ]  # fmt: skip
    ctx.market.upsert_candles(key, rows)
    fast = json.loads(candles_json(ctx, key, limit=50))
    assert fast == json.loads(read_candles(ctx, key, limit=50).model_dump_json())
    assert CandlesResponse.model_validate(fast).candles[1].buy_volume is None
    ctx.market.close()
