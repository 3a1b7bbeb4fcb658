"""The proxy is not an open door: where apps may register, what is forwarded, and where it may go.

A real gateway on a loopback port forwards to a real loopback receiver that records every request
it gets, so "not forwarded" and "never reached" are checked where they would show.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import Receive, Scope, Send

from barfinex_cli.bus.memory import MemoryBus
from barfinex_cli.contracts.rest import RegisterRequest
from barfinex_cli.provider.gateway.proxy import PathRefused, confined_path
from barfinex_cli.provider.gateway.registry import AppRegistry, NameTaken
from barfinex_cli.runtime.config import GatewayConfig
from provider.gateway_server import TOKEN, gateway, make_context, serving


@dataclass
class Receiver:
    """An ASGI app that answers every request with what it saw, and keeps what it saw."""

    seen: list[dict[str, Any]] = field(default_factory=list)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        record = {
            "raw_path": scope["raw_path"].decode(),
            "path": scope["path"],
            "query": scope["query_string"].decode(),
            "headers": {k.lower(): v for k, v in request.headers.items()},
            "body": (await request.body()).decode(),
        }
        if scope["path"] != "/ping":
            self.seen.append(record)
        await JSONResponse(record)(scope, receive, send)


@contextlib.asynccontextmanager
async def setup(
    tmp_path: Path, config: GatewayConfig | None = None, registry: AppRegistry | None = None
) -> AsyncIterator[tuple[httpx.AsyncClient, Receiver, str]]:
    receiver = Receiver()
    ctx = make_context(tmp_path, MemoryBus("proxy"), registry=registry)
    ctx.config = config or GatewayConfig()
    async with serving(receiver, ready_path="/ping") as app_url, gateway(ctx) as http:
        yield http, receiver, app_url


async def _register(http: httpx.AsyncClient, name: str, url: str | None) -> httpx.Response:
    body: dict[str, Any] = {"name": name, "role": "advisor"}
    if url is not None:
        body["url"] = url
    return await http.post("/api/v1/apps", json=body)


async def test_registration_needs_the_gateway_token(tmp_path: Path) -> None:
    async with setup(tmp_path) as (http, _, _):
        async with httpx.AsyncClient(base_url=http.base_url) as bare:
            refused = await bare.post("/api/v1/apps", json={"name": "x", "role": "advisor"})
        assert refused.status_code == 401
        assert (await http.get("/api/v1/apps")).json()["apps"] == []


async def test_app_urls_outside_the_allowed_loopback_hosts_are_refused(tmp_path: Path) -> None:
    async with setup(tmp_path) as (http, receiver, app_url):
        port = httpx.URL(app_url).port
        refused = {
            "http://169.254.169.254/latest/meta-data": "not an allowed app host",
            "http://10.0.0.7:8009": "not an allowed app host",
            f"http://127.0.0.2:{port}": "not an allowed app host",
            f"http://0.0.0.0:{port}": "not an allowed app host",
            "http://[fe80::1]:80": "not an allowed app host",
            "http://metadata.google.internal/": "not an allowed app host",
            f"http://user:pw@127.0.0.1:{port}": "credentials",
            f"http://127.0.0.1:{port}/proxy/other": "/proxy/",
        }
        for url, why in refused.items():
            answer = await _register(http, "evil", url)
            assert answer.status_code == 422, url
            detail = answer.json()["detail"][0]
            assert detail["loc"] == ["body", "url"]
            assert why in detail["msg"], url
        assert (await http.get("/api/v1/apps")).json()["apps"] == []
        for name, url in (("a", app_url), ("b", f"http://localhost:{port}"), ("c", None)):
            assert (await _register(http, name, url)).status_code == 201, url
        ipv6 = await _register(http, "d", f"http://[::1]:{port}/x")
        assert ipv6.status_code == 201
        decimal = await _register(http, "e", f"http://2130706433:{port}")  # parsed as 127.0.0.1
        assert decimal.json()["url"] == f"http://127.0.0.1:{port}"
    assert receiver.seen == []


async def test_the_gateways_own_port_is_refused_on_every_loopback_alias(tmp_path: Path) -> None:
    async with setup(tmp_path) as (http, _, _):
        own = httpx.URL(str(http.base_url)).port
        for url in (
            f"http://127.0.0.1:{own}",
            f"http://localhost:{own}/api/v1",
            f"http://[::1]:{own}",
        ):
            answer = await _register(http, "loop", url)
            assert answer.status_code == 422, url
            assert "this gateway itself" in answer.json()["detail"][0]["msg"]


async def test_the_allowed_hosts_setting_replaces_the_loopback_default(tmp_path: Path) -> None:
    config = GatewayConfig(allowed_app_hosts=("127.0.0.2",))
    async with setup(tmp_path, config) as (http, _, app_url):
        assert (await _register(http, "x", app_url)).status_code == 422
        assert (await _register(http, "y", "http://127.0.0.2:9")).status_code == 201


async def test_the_gateway_token_is_never_forwarded_and_the_proxy_presents_its_secret(
    tmp_path: Path,
) -> None:
    async with setup(tmp_path) as (http, receiver, app_url):
        registered = await _register(http, "rec", app_url + "/base")
        secret = registered.headers["x-bfx-proxy-secret"]
        assert len(secret) >= 32
        got = await http.post(
            "/proxy/rec/a%20b/c",
            params={"token": TOKEN, "x": "1"},
            content=b"hello",
            headers={"Cookie": "c=1", "X-Bfx-Proxy-Secret": "spoof"},
        )
        assert got.status_code == 200
    [seen] = receiver.seen
    headers = seen["headers"]
    assert "authorization" not in headers
    assert TOKEN not in repr(seen)
    assert headers["x-bfx-proxy"] == secret
    assert "x-bfx-proxy-secret" not in headers
    assert (seen["path"], seen["query"], seen["body"]) == ("/base/a b/c", "x=1", "hello")
    assert headers["x-forwarded-prefix"] == "/proxy/rec"


async def test_a_new_registration_rotates_the_proxy_secret(tmp_path: Path) -> None:
    async with setup(tmp_path) as (http, receiver, app_url):
        first = (await _register(http, "rec", app_url)).headers["x-bfx-proxy-secret"]
        second = (await _register(http, "rec", app_url)).headers["x-bfx-proxy-secret"]
        assert first != second
        assert (await http.get("/proxy/rec/x")).status_code == 200
    assert receiver.seen[0]["headers"]["x-bfx-proxy"] == second


@pytest.mark.parametrize(
    "path",
    [
        "..%2f..%2fsecret",
        "..%2Fsecret",
        "%2e%2e/secret",
        "%2E%2E%2Fsecret",
        "%252e%252e%252fsecret",
        "..%5csecret",
        "a%2fb",
        "x/%2e/y",
        "a%00b",
    ],
)
async def test_a_path_that_escapes_the_app_prefix_is_400_and_never_sent(
    tmp_path: Path, path: str
) -> None:
    async with setup(tmp_path) as (http, receiver, app_url):
        await _register(http, "rec", app_url + "/base")
        base = httpx.URL(str(http.base_url))
        reader, writer = await asyncio.open_connection(base.host, base.port)
        writer.write(
            f"GET /proxy/rec/{path} HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {TOKEN}\r\n"
            "Connection: close\r\n\r\n".encode()
        )
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
    assert receiver.seen == []


def test_confined_path_reencodes_each_segment_once_decoded() -> None:
    assert confined_path("a%20b/c+d/%25/") == "a%20b/c+d/%25/"
    assert confined_path("caf%C3%A9/%3Fq") == "caf%C3%A9/%3Fq"
    with pytest.raises(PathRefused, match="leave the app's path"):
        confined_path("ok/%25%32%65%25%32%65/x")


async def test_the_proxy_refuses_to_call_the_gateway_itself_or_a_proxied_request(
    tmp_path: Path,
) -> None:
    registry = AppRegistry()
    async with setup(tmp_path, registry=registry) as (http, receiver, app_url):
        own = httpx.URL(str(http.base_url)).port
        # a URL the routes refuse, put straight into the registry (as an older gateway let in)
        registry.register(
            RegisterRequest(name="self", role="advisor", url=f"http://localhost:{own}")
        )
        itself = await http.get("/proxy/self/proxy/self/api/v1/health")
        assert itself.status_code == 403
        assert "gateway itself" in itself.json()["detail"]
        await _register(http, "rec", app_url)
        looped = await http.get("/proxy/rec/x", headers={"X-Bfx-Proxy": "anything"})
        assert looped.status_code == 403
        assert "proxy loop" in looped.json()["detail"]
    assert receiver.seen == []


async def test_a_name_cannot_move_to_another_url_while_its_app_is_alive(tmp_path: Path) -> None:
    registry = AppRegistry(heartbeat_interval_s=0.05, missed=2)
    async with setup(tmp_path, registry=registry) as (http, _, app_url):
        assert (await _register(http, "adv", app_url)).status_code == 201
        again = await _register(http, "adv", app_url)
        assert again.status_code == 201  # a restart at the same URL keeps the name
        moved = await _register(http, "adv", "http://127.0.0.1:9")
        assert moved.status_code == 409
        assert "held by an alive app" in moved.json()["detail"]
        assert (await _register(http, "adv", None)).status_code == 409
        for _ in range(200):  # no heartbeats: the app is lost, and the name is free again
            if (await http.get("/api/v1/apps")).json()["apps"][0]["status"] == "lost":
                break
            await asyncio.sleep(0.02)
        assert (await _register(http, "adv", "http://127.0.0.1:9")).status_code == 201


def test_the_registry_refuses_a_live_name_at_another_url_and_frees_it_once_lost() -> None:
    registry = AppRegistry(heartbeat_interval_s=1.0, missed=1)
    first, _ = registry.register(RegisterRequest(name="adv", role="advisor", url="http://h:1"))
    with pytest.raises(NameTaken, match="register under another name"):
        registry.register(RegisterRequest(name="adv", role="advisor", url="http://h:2"))
    assert registry.proxy_secret("adv") == registry.proxy_secret(first.id)
