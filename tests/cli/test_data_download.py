"""`bfx data download`: pages into the store, resumes, and is honest when the exchange is away.

The real ccxt client talks to the Binance-shaped server of `provider.fake_exchange`, run in a
thread (the command owns its event loop); the command is mounted as the lead mounts it, on a
`data` group under the root group that turns errors into one red line.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from barfinex_cli.cli.data_download import download
from barfinex_cli.cli.main import BfxGroup
from barfinex_cli.store.market import MarketStore, SeriesKey
from provider.fake_exchange import FakeBinance, expected, running_in_thread

MINUTE = 60_000
KEY = SeriesKey("binance", "BTC/USDT", "1m")


def bfx_app() -> typer.Typer:
    """Return a root group with `data download` mounted."""
    app = typer.Typer(cls=BfxGroup)

    @app.callback()
    def root() -> None:
        """The bfx root, as far as this command needs it."""

    data = typer.Typer()
    data.command("download")(download)
    app.add_typer(data, name="data")
    return app


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeBinance]:
    with running_in_thread() as server:
        yield server


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat()


def run(runner: CliRunner, env: dict[str, str], *args: str) -> Any:
    return runner.invoke(bfx_app(), ["data", "download", *args], env=env)


def store_rows(cli_env: dict[str, str]) -> list[tuple[Any, ...]]:
    with MarketStore(Path(cli_env["BFX_HOME"]) / "market.db") as store:
        return [tuple(r[:6]) for r in store.candles(KEY)]


def test_download_pages_into_the_store_and_a_rerun_fetches_only_the_tail(
    fake: FakeBinance, runner: CliRunner, cli_env: dict[str, str]
) -> None:
    env = cli_env | fake.env()
    since = int(time.time() * 1000) // MINUTE * MINUTE - 1500 * MINUTE
    until = since + 1399 * MINUTE
    first = run(runner, env, "binance", "BTC/USDT", "--since", iso(since), "--until", iso(until),
                "--json")  # fmt: skip
    assert first.exit_code == 0, first.output
    summary = json.loads(first.stdout)
    assert (summary["rows"], summary["expected"], summary["pages"]) == (1400, 1400, 2)
    assert summary["resumed_after"] is None
    assert store_rows(cli_env) == [expected("BTCUSDT", since + i * MINUTE) for i in range(1400)]

    requests_before = len(fake.seen("klines"))
    second = run(runner, env, "binance", "btcusdt", "--since", iso(since))
    assert second.exit_code == 0, second.output
    tail = fake.seen("klines")[requests_before:]
    assert int(tail[0].params["startTime"]) == until + MINUTE  # only what the store lacks
    assert "resumed after" in second.stdout and "wrote" in second.stdout
    rows = store_rows(cli_env)
    assert [r[0] for r in rows] == [since + i * MINUTE for i in range(len(rows))]
    assert len(rows) >= 1499  # every closed candle up to now, none forming


def test_offline_download_is_one_red_line_exit_3_and_writes_nothing(
    runner: CliRunner, cli_env: dict[str, str]
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    base = f"http://127.0.0.1:{port}/api/v3"
    env = cli_env | {"BFX_BINANCE_URLS": json.dumps({"api": {"public": base, "private": base}})}
    result = run(runner, env, "binance", "BTC/USDT", "--since", "2h")
    assert result.exit_code == 3
    assert result.stderr == (
        "error: cannot reach binance (offline?): connection refused — check the network, "
        "or work offline: `bfx data synth`, or `bfx data import FILE`\n"
    )
    assert result.stdout == ""
    assert not (Path(cli_env["BFX_HOME"]) / "market.db").exists()


def test_download_cut_off_midway_keeps_its_pages_and_says_how_far(
    fake: FakeBinance, runner: CliRunner, cli_env: dict[str, str]
) -> None:
    env = cli_env | fake.env()
    since = int(time.time() * 1000) // MINUTE * MINUTE - 1500 * MINUTE
    until = since + 1199 * MINUTE
    fake.fail_next("klines", 503, after=1, body="Service Unavailable")
    cut = run(runner, env, "binance", "BTC/USDT", "--since", iso(since), "--until", iso(until))
    assert cut.exit_code == 3
    assert cut.stderr.count("\n") == 1 and cut.stderr.startswith("error: binance is not available")
    assert "stored 1000 candles" in cut.stderr and "run the same command again" in cut.stderr
    assert len(store_rows(cli_env)) == 1000

    resumed = run(runner, env, "binance", "BTC/USDT", "--since", iso(since), "--until", iso(until),
                  "--json")  # fmt: skip
    assert resumed.exit_code == 0, resumed.output
    assert json.loads(resumed.stdout)["rows"] == 200
    assert store_rows(cli_env) == [expected("BTCUSDT", since + i * MINUTE) for i in range(1200)]


def test_rate_limited_download_retries_and_reports_the_wait(
    fake: FakeBinance, runner: CliRunner, cli_env: dict[str, str]
) -> None:
    fake.fail_next("klines", 429)
    since = int(time.time() * 1000) // MINUTE * MINUTE - 100 * MINUTE
    result = run(runner, cli_env | fake.env(), "binance", "ETH/USDT", "--since", iso(since),
                 "--until", iso(since + 49 * MINUTE), "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["rows"] == 50 and summary["rate_limited_by_exchange"] == 1
    assert summary["rate_limit_waits"] >= 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["binanse", "BTC/USDT"], "unknown exchange 'binanse'; did you mean binance"),
        (["binance", "BTC/USDX"], "no market 'BTC/USDX'; close matches: BTC/USDT"),
        (["binance", "BTC/USDT", "-t", "7m"], "unknown timeframe '7m'"),
        (["binance", "BTC/USDT", "--since", "1d", "--until", "2d"], "is before --since"),
    ],
)
def test_bad_names_are_usage_errors_with_the_fix(
    fake: FakeBinance, runner: CliRunner, cli_env: dict[str, str], args: list[str], message: str
) -> None:
    result = run(runner, cli_env | fake.env(), *args)
    assert result.exit_code == 2
    assert message in result.stderr and "Traceback" not in result.output
