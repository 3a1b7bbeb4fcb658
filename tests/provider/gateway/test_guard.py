"""The gateway's front door: the token is checked, and the body capped, before any body is read.

Raw loopback sockets send a request head that announces a body and then send nothing: only a gate
that answers before it reads the body can reply. Chunked bodies stream from httpx generators.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from barfinex_cli.bus.memory import MemoryBus
from barfinex_cli.errors import ConfigError
from barfinex_cli.provider.service import ProviderOptions
from barfinex_cli.runtime.config import GatewayConfig
from barfinex_cli.runtime.settings import load_settings
from conftest import Kernels
from provider.gateway_server import AUTH, TOKEN, gateway, make_broker, make_context

CAP = 4096


@contextlib.asynccontextmanager
async def capped(tmp_path: Path, cap: int = CAP) -> AsyncIterator[httpx.AsyncClient]:
    bus = MemoryBus("guard")
    ctx = make_context(tmp_path, bus, broker=make_broker(bus))
    ctx.config = GatewayConfig(max_body_bytes=cap)
    async with gateway(ctx) as http:
        yield http


async def _head_only(base: str, head: str) -> tuple[int, bytes]:
    """Send a request head (no body) on a raw socket; return the status and body of the answer."""
    url = httpx.URL(base)
    reader, writer = await asyncio.open_connection(url.host, url.port)
    try:
        writer.write(head.encode("latin-1"))
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), 5)
        headers = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        length = next(
            int(line.split(b":", 1)[1])
            for line in headers.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        return int(status_line.split()[1]), await asyncio.wait_for(reader.readexactly(length), 5)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def test_a_post_without_the_token_is_refused_before_its_body_arrives(
    tmp_path: Path,
) -> None:
    async with capped(tmp_path, cap=100 * 1024 * 1024) as http:
        head = (
            "POST /api/v1/orders HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
            f"Content-Length: {10 * 1024 * 1024}\r\n\r\n"
        )
        status, body = await _head_only(str(http.base_url), head)
        assert status == 401
        assert b"missing bearer token" in body
        wrong = head.replace("Host: gw\r\n", "Host: gw\r\nAuthorization: Bearer nope\r\n")
        status, body = await _head_only(str(http.base_url), wrong)
        assert (status, body) == (403, b'{"detail": "wrong bearer token"}')


async def test_a_declared_length_over_the_cap_is_413_before_the_body_arrives(
    tmp_path: Path,
) -> None:
    async with capped(tmp_path) as http:
        for path in ("/api/v1/orders", "/api/v1/health", "/proxy/someapp/x", "/mcp"):
            head = (
                f"POST {path} HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {TOKEN}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {CAP + 1}\r\n\r\n"
            )
            status, body = await _head_only(str(http.base_url), head)
            assert status == 413, path
            assert b"max_body_bytes" in body


async def test_a_chunked_body_is_413_when_it_crosses_the_cap(tmp_path: Path) -> None:
    async def chunks(total: int) -> AsyncIterator[bytes]:
        sent = 0
        while sent < total:
            yield b" " * 1000
            sent += 1000

    async with capped(tmp_path) as http:
        for path in ("/api/v1/orders", "/api/v1/apps"):
            big = await http.post(path, content=chunks(CAP * 4), headers={"X-Kind": "chunked"})
            assert big.status_code == 413, path
            assert "max_body_bytes" in big.json()["detail"]
        order = {
            "client_order_id": "c-1", "account": "paper", "symbol": "BTC/USDT", "side": "buy",
            "type": "market", "amount": "0.01",
        }  # fmt: skip
        small = await http.post("/api/v1/orders", json=order)
        assert small.status_code == 201
        assert (await http.get("/api/v1/accounts")).status_code == 200  # nothing left broken


async def test_the_open_routes_stay_open_and_a_bad_length_is_400(tmp_path: Path) -> None:
    async with capped(tmp_path) as http:
        bare = httpx.AsyncClient(base_url=http.base_url)
        async with bare:
            for path in ("/api/v1/health", "/api/v1/ready", "/openapi.json", "/docs"):
                assert (await bare.get(path)).status_code == 200, path
            assert (await bare.get("/api/v1/series")).status_code == 401
        head = f"POST /api/v1/orders HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {TOKEN}\r\n"
        status, _ = await _head_only(str(http.base_url), head + "Content-Length: -5\r\n\r\n")
        assert status == 400


def test_the_gateway_section_is_read_from_bfx_toml_and_checked(tmp_path: Path) -> None:
    config = tmp_path / "bfx.toml"
    config.write_text('[gateway]\nmax_body_bytes = 2048\nallowed_app_hosts = ["10.1.2.3"]\n')
    settings = load_settings(config, home=tmp_path)
    assert settings.gateway == GatewayConfig(max_body_bytes=2048, allowed_app_hosts=("10.1.2.3",))
    assert load_settings(home=tmp_path).gateway.max_body_bytes == 1024 * 1024
    config.write_text('[gateway]\nallowed_app_hosts = ["http://10.1.2.3:80"]\n')
    with pytest.raises(ConfigError, match="allowed_app_hosts"):
        load_settings(config, home=tmp_path)


async def test_a_provider_caps_bodies_at_its_settings_max_body_bytes(
    kernels: Kernels, tmp_path: Path, namespace: str
) -> None:
    settings = load_settings(
        home=tmp_path, namespace=namespace, bus="memory", token=TOKEN,
        gateway={"max_body_bytes": 2048},
    )  # fmt: skip
    options = ProviderOptions(
        symbols=("BTC/USDT",), timeframes=("1m",), speed=None, history=60, days=0.05, port=0,
        health_interval_s=0.2,
    )  # fmt: skip
    provider = await (await kernels(settings)).provider(options)
    stop = asyncio.Event()
    task = asyncio.create_task(provider.run(stop))
    try:
        for _ in range(600):
            if provider.gateway_url is not None or task.done():
                break
            await asyncio.sleep(0.05)
        assert provider.gateway_url is not None
        async with httpx.AsyncClient(base_url=provider.gateway_url, headers=AUTH) as http:
            for _ in range(200):
                with contextlib.suppress(httpx.TransportError):
                    if (await http.get("/api/v1/health")).status_code == 200:
                        break
                await asyncio.sleep(0.05)
            big = await http.post("/api/v1/apps", content=b"{" + b" " * 3000 + b"}")
            fits = await http.post("/api/v1/apps", json={"name": "det-1", "role": "detector"})
        assert big.status_code == 413
        assert fits.status_code == 201
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)
