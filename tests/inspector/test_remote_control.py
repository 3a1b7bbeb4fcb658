"""`bfx inspector ...` against a running inspector: through the provider's proxy, with the
gateway token, and when the inspector cannot reach its provider (no false all-clear)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from barfinex_cli.cli.main import app
from barfinex_cli.errors import ServiceUnreachable
from barfinex_cli.runtime.client import GatewayClient
from inspector.conftest import Market, StartInspector, armed, until


class Relay:
    """A TCP relay on loopback to the provider: closing it makes the provider vanish for every
    client that dialled the relay (refused connections, open ones cut)."""

    def __init__(self, target: str) -> None:
        self.target = httpx.URL(target)
        self.streams: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(self.target.host, self.target.port)
        self.streams += [writer, up_writer]

        async def pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError, OSError):
                while chunk := await source.read(65536):
                    sink.write(chunk)
                    await sink.drain()
            sink.close()

        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))

    async def close(self) -> None:
        assert self.server is not None
        self.server.close()
        for stream in self.streams:
            stream.close()
        await self.server.wait_closed()


def _invoke(args: list[str], env: dict[str, str] | None = None) -> Any:
    return CliRunner().invoke(app, args, env=env)


async def test_a_reconcile_that_cannot_reach_the_provider_says_so_and_is_never_an_all_clear(
    market: Market, start_inspector: StartInspector
) -> None:
    relay = Relay(market.url)
    client = GatewayClient(await relay.start(), "t0ken", retries=0)
    try:
        inspector, _, _ = await start_inspector(client=client, join_registry=False)
        assert inspector.api_url is not None and inspector.entries_open
        await relay.close()  # the provider is gone for this inspector
        home = ["--data-dir", str(market.settings.home)]
        for dry in (["--dry-run"], []):
            result = await asyncio.to_thread(
                _invoke, [*home, "inspector", "reconcile", *dry, "--url", inspector.api_url]
            )
            assert result.exit_code == 3, result.output
            assert "could not reach its provider" in result.output
            assert "bfx provider start" in result.output  # the fix is named
            assert "differences" not in result.output and "Traceback" not in result.output
            assert len(result.output.strip().splitlines()) == 1
        async with httpx.AsyncClient(base_url=inspector.api_url) as http:
            answer = await http.post("/api/v1/reconcile", json={"dry_run": True})
        assert answer.status_code == 503 and answer.json()["unreachable"] == "provider"
        passes = len(await market.published("inspector.reconciled"))
        with pytest.raises(ServiceUnreachable):
            await inspector.reconciler.reconcile_tick()  # the periodic pass
        last = inspector.status()["last_reconcile"]
        assert last["compared"] is False and "provider not reachable" in last["error"]
        assert len(await market.published("inspector.reconciled")) == passes  # no "0 divergences"
    finally:
        await client.aclose()


async def test_the_cli_reaches_the_inspector_through_the_provider_proxy_with_the_gateway_token(
    market: Market, start_inspector: StartInspector
) -> None:
    inspector, _, _ = await start_inspector()  # registers with the provider as "inspector"
    await market.decide()
    await until(lambda: armed(inspector, "BTC/USDT"))

    async def registered() -> bool:
        return any(a.name == "inspector" for a in await market.client.list_apps())

    await until(registered)
    proxy = f"{market.url}/proxy/inspector"
    home = ["--data-dir", str(market.settings.home)]
    token = {"BFX_TOKEN": "t0ken"}

    status = await asyncio.to_thread(
        _invoke, [*home, "inspector", "status", "--json", "--url", proxy], token
    )
    assert status.exit_code == 0, status.output
    assert '"symbol": "BTC/USDT"' in status.stdout
    dry = await asyncio.to_thread(
        _invoke, [*home, "inspector", "reconcile", "--dry-run", "--url", proxy], token
    )
    assert dry.exit_code == 0, dry.output
    assert "0 differences (dry run: nothing changed)" in dry.stdout  # the POST body got through

    for env, said in (({"BFX_TOKEN": "wrong"}, "refused the token"),
                      ({"BFX_TOKEN": ""}, "needs a token and none is set")):  # fmt: skip
        refused = await asyncio.to_thread(
            _invoke, [*home, "inspector", "status", "--url", proxy], env
        )
        assert refused.exit_code == 4, refused.output
        assert said in refused.output and "BFX_TOKEN" in refused.output
        assert len(refused.output.strip().splitlines()) == 1
