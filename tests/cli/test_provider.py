"""`bfx provider`: mistakes get one line naming the fix and the right exit code, no traceback;
`status` asks a real gateway on loopback, one of them over a live connector its exchange fails."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from barfinex_cli.bus.memory import MemoryBus
from barfinex_cli.errors import ServiceUnreachable
from barfinex_cli.provider.connectors.ccxt_conn import CcxtConnector
from barfinex_cli.provider.connectors.replay import ReplayConnector
from barfinex_cli.provider.gateway.app import create_app
from cli.conftest import BfxRun
from provider.fake_exchange import FakeBinance
from provider.gateway_server import TOKEN, make_context, serving


@pytest.mark.parametrize(
    ("args", "code", "says"),
    [
        (["--redis-url", "redis://127.0.0.1:1/0", "provider", "start"], 3, "Redis not reachable"),
        (["provider", "start", "--speed", "fast"], 2, "--speed takes a multiple"),
        (["provider", "start", "--replay", "/nonexistent.csv", "--port", "0"], 1,
         "omit --replay"),
        (["provider", "start", "--timeframes", "7m", "--port", "0"], 2, "'1m'"),
        (["provider", "start", "--exchange", "binanse"], 2, "did you mean binance"),
        (["provider", "status"], 3, "bfx provider start"),
    ],
)  # fmt: skip
def test_provider_mistakes_get_one_line_with_the_fix(
    bfx: BfxRun, args: list[str], code: int, says: str
) -> None:
    result = bfx(*args)
    assert result.returncode == code, result.stderr
    assert says in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().startswith("error:")


def test_a_live_exchange_that_cannot_be_reached_exits_3_and_closes_cleanly(
    bfx: BfxRun, cli_env: dict[str, str]
) -> None:
    dead = "http://127.0.0.1:1"  # loopback, nothing listening: the offline path, no traffic out
    cli_env["BFX_BINANCE_URLS"] = json.dumps({"api": {"public": dead, "private": dead}})
    cli_env["BFX_BINANCE_OPTIONS"] = json.dumps(
        {"fetchMarkets": {"types": ["spot"]}, "fetchMargins": False, "fetchCurrencies": False}
    )
    result = bfx("provider", "start", "--exchange", "binance", "--symbols", "BTC/USDT")
    assert result.returncode == 3, result.stderr
    assert result.stderr.startswith("error: cannot reach binance")
    assert result.stderr.strip().count("\n") == 0  # one line: no unclosed-session noise


# --- status against a running gateway -----------------------------------------------------------


@pytest.fixture
async def gateway_url(tmp_path: Path) -> AsyncIterator[str]:
    ctx = make_context(
        tmp_path / "gw", MemoryBus("status"), connectors={"replay": ReplayConnector()}
    )
    try:
        async with serving(create_app(ctx), ready_path="/api/v1/health") as base:
            yield base
    finally:
        ctx.market.close()


async def test_status_shows_health_clock_and_connectors_with_the_token(
    bfx: BfxRun, cli_env: dict[str, str], gateway_url: str
) -> None:
    cli_env.update(BFX_PROVIDER_URL=gateway_url, BFX_TOKEN=TOKEN)
    result = await asyncio.to_thread(bfx, "provider", "status")
    assert result.returncode == 0, result.stderr
    assert f"provider {gateway_url}: ok" in result.stdout
    assert "wall clock" in result.stdout
    assert "replay" in result.stdout and "connected=False" in result.stdout
    as_json = await asyncio.to_thread(bfx, "provider", "status", "--json")
    body = json.loads(as_json.stdout)
    assert body["health"]["clock"] == "wall"
    assert [c["name"] for c in body["connectors"]] == ["replay"]


async def test_status_without_a_token_says_how_to_get_one_and_creates_none(
    bfx: BfxRun, cli_env: dict[str, str], gateway_url: str
) -> None:
    cli_env["BFX_PROVIDER_URL"] = gateway_url
    result = await asyncio.to_thread(bfx, "provider", "status")
    assert result.returncode == 4, result.stderr  # refused (no credentials), not unreachable
    assert "none is set" in result.stderr and "BFX_TOKEN" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (Path(cli_env["BFX_HOME"]) / "token").exists()


async def test_status_with_a_wrong_token_exits_4_naming_the_fix(
    bfx: BfxRun, cli_env: dict[str, str], gateway_url: str
) -> None:
    cli_env.update(BFX_PROVIDER_URL=gateway_url, BFX_TOKEN="wrong")
    result = await asyncio.to_thread(bfx, "provider", "status")
    assert result.returncode == 4, result.stderr  # the provider answered: refused, not down
    assert result.stderr.strip().startswith("error: the provider at")
    assert "refused the token" in result.stderr and "--data-dir" in result.stderr


async def test_status_shows_a_failing_exchange_degraded_with_each_fault_and_the_last_error(
    bfx: BfxRun, cli_env: dict[str, str], tmp_path: Path
) -> None:
    exchange = FakeBinance()
    await exchange.start()
    conn = CcxtConnector("binance", rate_limit_ms=1, **exchange.connector_kwargs())
    ctx = make_context(tmp_path / "gw", MemoryBus("status"), connectors={"binance": conn})
    try:
        await conn.start()
        exchange.fail_next("klines", 503, body="Service Unavailable")
        with pytest.raises(ServiceUnreachable) as caught:
            await conn.fetch_candles("BTC/USDT", "1m", 0, 60_000)
        async with serving(create_app(ctx), ready_path="/api/v1/health") as base:
            cli_env.update(BFX_PROVIDER_URL=base, BFX_TOKEN=TOKEN)
            result = await asyncio.to_thread(bfx, "provider", "status")
    finally:
        ctx.market.close()
        await conn.stop()
        await exchange.stop()
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"provider {base}: degraded")
    assert lines[1].split()[:3] == ["binance", "binance", "degraded"]
    assert "5xx=1 timeouts=0 unreachable=0" in lines[2] and "failed calls in a row=1" in lines[2]
    assert "lost order answers=0 (resolved 0), gaps repaired=0" in lines[3]
    assert lines[4].startswith("    last 5xx/unavailable at ")
    assert lines[4].endswith(f": {caught.value}")
