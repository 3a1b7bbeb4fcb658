"""`bfx advisor run|explain`: a user's mistake is one line and the right exit code."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
from pathlib import Path

import httpx
from typer.testing import CliRunner

from barfinex_cli.cli.main import app
from barfinex_cli.contracts.envelope import make_event
from barfinex_cli.contracts.market import CandleClosed
from barfinex_cli.contracts.times import from_ms
from barfinex_cli.store.audit import AuditStore
from ports import free_port


def test_run_with_no_provider_exits_3_naming_the_fix(runner: CliRunner) -> None:
    result = runner.invoke(app, ["--bus", "memory", "advisor", "run", "--provider",
                                 "http://127.0.0.1:9"])  # fmt: skip
    assert result.exit_code == 3
    assert "provider not reachable at http://127.0.0.1:9" in result.output
    assert "bfx provider start" in result.output and "Traceback" not in result.output


def test_run_with_a_bad_port_or_a_missing_model_is_one_line(runner: CliRunner) -> None:
    bad_port = runner.invoke(app, ["--bus", "memory", "advisor", "run", "--port", "99999"])
    assert bad_port.exit_code == 2 and "--port:" in bad_port.output
    missing = runner.invoke(app, ["--bus", "memory", "advisor", "run", "--clock", "wall",
                                  "--model", "/nonexistent/m.model"])  # fmt: skip
    assert missing.exit_code == 1 and "no such model file" in missing.output
    assert "Traceback" not in missing.output


def test_run_with_a_corrupt_model_file_is_one_line_naming_it(
    runner: CliRunner, tmp_path: Path
) -> None:
    corrupt = tmp_path / "broken.model"
    corrupt.write_text('{"format": "bfx-advisor-model", "format_version": 1, "name": 3')
    result = runner.invoke(app, ["--bus", "memory", "advisor", "run", "--clock", "wall",
                                 "--model", str(corrupt)])  # fmt: skip
    assert result.exit_code == 1 and str(corrupt) in result.output
    assert "not a bfx advisor model" in result.output and "Traceback" not in result.output


def test_explain_an_unknown_id_or_an_event_that_is_no_decision(
    runner: CliRunner, cli_env: dict[str, str]
) -> None:
    candle = make_event(
        CandleClosed(exchange="x", symbol="BTC/USDT", timeframe="1m", open_time=from_ms(0),
                     open=1, high=1, low=1, close=1, volume=1),
        source="provider",
    )  # fmt: skip
    home = Path(cli_env["BFX_HOME"])
    home.mkdir(parents=True)
    with AuditStore(home / "audit.db") as audit:
        audit.append([candle])
    unknown = runner.invoke(app, ["advisor", "explain", "0123456789abcdef"])
    assert unknown.exit_code == 1 and "no event whose id" in unknown.output
    wrong = runner.invoke(app, ["advisor", "explain", candle.id])
    assert wrong.exit_code == 1 and "not an advisor decision" in wrong.output


async def test_run_serves_until_interrupted_then_exits_0(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    from barfinex_cli.kernel.parts import Kernel
    from barfinex_cli.runtime.config import ProviderConfig
    from barfinex_cli.runtime.settings import load_settings

    settings = load_settings(home=Path(cli_env["BFX_HOME"]), namespace=cli_env["BFX_NAMESPACE"],
                             redis_url=cli_env["BFX_REDIS_URL"], token="t0ken")  # fmt: skip
    config = ProviderConfig(symbols=("BTC/USDT",), timeframes=("1m",), days=0.2, history=200,
                            speed=60, port=0, record=False)  # fmt: skip
    stop = asyncio.Event()
    async with Kernel(settings) as kernel:
        provider = await kernel.provider(config)
        task = asyncio.create_task(provider.run(stop))
        await asyncio.wait_for(provider.ready.wait(), 30)
        port = free_port()
        command = [sys.executable, "-m", "barfinex_cli", "advisor", "run", "--provider",
                   provider.gateway_url or "", "--port", str(port), "--no-register"]  # fmt: skip
        advisor = await asyncio.to_thread(
            subprocess.Popen, command, env={**cli_env, "BFX_TOKEN": "t0ken"},
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            health: dict[str, object] = {}
            async with httpx.AsyncClient() as client:
                for _ in range(600):
                    if advisor.poll() is not None:
                        break
                    with contextlib.suppress(httpx.HTTPError):
                        health = (await client.get(f"http://127.0.0.1:{port}/health")).json()
                        break
                    await asyncio.sleep(0.1)
            advisor.send_signal(signal.SIGINT)
            _, err = await asyncio.to_thread(advisor.communicate, timeout=30)
        finally:
            advisor.kill()
            stop.set()
            await asyncio.wait_for(task, 30)
            await (await kernel.bus()).delete_namespace()  # type: ignore[attr-defined]
    assert health.get("status") == "ok" and health.get("clock") == "market", err
    assert advisor.returncode == 0, err
    assert "advisor advisor up: scorer rule, LLM none (stage skipped)" in err
    assert "stopped after" in err
