"""`bfx data gaps` and `bfx data repair` against a real market store in a temporary home."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from barfinex_cli.cli import data_integrity
from barfinex_cli.cli.main import BfxGroup
from barfinex_cli.errors import ServiceUnreachable
from barfinex_cli.market.synthetic import default_dataset
from barfinex_cli.store.market import CandleRow, MarketStore, SeriesKey

KEY = SeriesKey("synthetic", "BTC/USDT", "1m")
ROWS = default_dataset(["BTC/USDT"], days=0.1)["BTC/USDT"]  # 144 candles from 2024-01-01
MIN = 60_000


def _root() -> typer.Typer:
    """The two commands under a root with bfx's error exit point (until `data` mounts them)."""
    root = typer.Typer(cls=BfxGroup)

    @root.callback()
    def _root_callback() -> None:
        """Test root."""

    root.command("gaps")(data_integrity.gaps)
    root.command("repair")(data_integrity.repair)
    return root


@pytest.fixture
def home(cli_env: dict[str, str]) -> Path:
    """A market store holding the synthetic BTC/USDT with a 10-candle hole and a bad row."""
    path = Path(cli_env["BFX_HOME"])
    with MarketStore(path / "market.db") as store:
        store.upsert_candles(KEY, [r for i, r in enumerate(ROWS) if not 20 <= i < 30])
        store.upsert_candles(KEY, [ROWS[40]._replace(high=ROWS[40].low - 1)])
        store.upsert_candles(SeriesKey("synthetic", "ETH/USDT", "1m"), ROWS[:50])
    return path


def _rows(home: Path) -> list[CandleRow]:
    with MarketStore(home / "market.db") as store:
        return store.candles(KEY)


def test_gaps_prints_a_table_per_series_and_exits_0(runner: CliRunner, home: Path) -> None:
    result = runner.invoke(_root(), ["gaps"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == [
        "series",
        "rows",
        "holes",
        "missing",
        "duplicates",
        "score",
        "severity",
    ]
    btc = next(line for line in lines if line.startswith("synthetic BTC/USDT 1m"))
    assert btc.split()[3:] == ["134", "1", "10", "0", "59.28", "CRITICAL"]
    assert "synthetic ETH/USDT 1m" in result.stdout and " OK" in result.stdout
    assert "bad_ohlc 2024-01-01 00:40..2024-01-01 00:40Z" in result.stdout


def test_gaps_json_filters_and_reports_holes_at_the_range_ends(
    runner: CliRunner, home: Path
) -> None:
    args = [
        "gaps",
        "-s",
        "ETH/USDT",
        "--since",
        "2023-12-31T23:55",
        "--until",
        "2024-01-01T01:00",
        "--json",
    ]
    result = runner.invoke(_root(), args)
    assert result.exit_code == 0, result.output
    (report,) = json.loads(result.stdout)
    assert report["symbol"] == "ETH/USDT"
    assert [d["detail"] for d in report["defects"]] == [
        "5 candle(s) missing before the first row",
        "11 candle(s) missing after the last row",
    ]
    assert report["severity"] == "warn"


def test_gaps_without_a_store_names_the_fix(runner: CliRunner) -> None:
    result = runner.invoke(_root(), ["gaps"])
    assert result.exit_code == 1
    assert "no market store at" in result.stderr and "bfx data synth" in result.stderr


def test_repair_dry_run_prints_the_plan_and_changes_nothing(runner: CliRunner, home: Path) -> None:
    before = _rows(home)
    result = runner.invoke(
        _root(), ["repair", "-e", "synthetic", "-s", "BTC/USDT", "-t", "1m", "--dry-run"]
    )
    assert result.exit_code == 0, result.output
    assert "TARGETED_REPAIR" in result.stdout
    assert "drop 1 row(s): 2024-01-01 00:40Z" in result.stdout
    assert "backfill 11 candle(s) in 2 range(s)" in result.stdout
    assert "dry run: nothing changed" in result.stdout
    assert _rows(home) == before


def test_repair_backfills_from_the_synthetic_market_and_verifies(
    runner: CliRunner, home: Path
) -> None:
    result = runner.invoke(
        _root(), ["repair", "-e", "synthetic", "-s", "BTC/USDT", "-t", "1m", "--json"]
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["outcome"]["resolved"] and data["outcome"]["score_after"] == 100.0
    types = [e["type"] for e in data["events"]]
    assert types[0] == "market.gap" and types[-1] == "provider.incident.resolved"
    assert _rows(home) == ROWS
    again = runner.invoke(_root(), ["repair", "-e", "synthetic", "-s", "BTC/USDT", "-t", "1m"])
    assert again.exit_code == 0 and "NONE" in again.stdout


def test_repair_of_an_unreachable_exchange_says_how_to_proceed(
    runner: CliRunner, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Offline:
        """An exchange whose history endpoint cannot be reached (no network)."""

        async def start(self) -> None:
            raise ServiceUnreachable("cannot reach binance (offline?): name lookup failed — check")

        async def stop(self) -> None:
            pass

    with MarketStore(home / "market.db") as store:
        store.upsert_candles(SeriesKey("binance", "BTC/USDT", "1m"), [ROWS[0], ROWS[5]])
    monkeypatch.setattr(
        "barfinex_cli.provider.connectors.sources.history_source_for", lambda *_: Offline()
    )
    result = runner.invoke(_root(), ["repair", "-e", "binance", "-s", "BTC/USDT", "-t", "1m"])
    assert result.exit_code == 3
    assert result.stderr.strip() == (
        "error: cannot reach binance to backfill: name lookup failed — run with network or "
        "import the missing range with `bfx data import`"
    )


def test_repair_of_an_unknown_series_or_timeframe_is_refused(runner: CliRunner, home: Path) -> None:
    missing = runner.invoke(_root(), ["repair", "-e", "kraken", "-s", "BTC/USD", "-t", "1m"])
    assert missing.exit_code == 1 and "no 1m candles of kraken BTC/USD stored" in missing.stderr
    bad = runner.invoke(_root(), ["repair", "-e", "synthetic", "-s", "BTC/USDT", "-t", "7m"])
    assert bad.exit_code == 2 and "unknown timeframe '7m'" in bad.stderr


def test_both_commands_have_help_with_examples(runner: CliRunner) -> None:
    for command in ("gaps", "repair"):
        result = runner.invoke(_root(), [command, "--help"])
        assert result.exit_code == 0
        assert "Examples:" in result.stdout and f"bfx data {command}" in result.stdout


def test_a_repair_the_source_disagrees_with_escalates_exit_1_with_its_cause(
    runner: CliRunner, cli_env: dict[str, str]
) -> None:
    other_seed = [  # not the synthetic market: every price 10% higher
        r._replace(open=r.open * 1.1, high=r.high * 1.1, low=r.low * 1.1, close=r.close * 1.1)
        for r in ROWS[:60]
    ]
    with MarketStore(Path(cli_env["BFX_HOME"]) / "market.db") as store:
        store.upsert_candles(KEY, [r for i, r in enumerate(other_seed) if i != 30])
    args = ["repair", "-e", "synthetic", "-s", "BTC/USDT", "-t", "1m"]
    result = runner.invoke(_root(), [*args, "--json"])
    assert result.exit_code == 1, result.output
    outcome = json.loads(result.stdout)["outcome"]
    assert (outcome["escalated"], outcome["cause"]) == (True, "source_disagrees")
    assert "nothing was written" in outcome["reason"]
    text = runner.invoke(_root(), args)
    assert text.exit_code == 1
    assert "ESCALATED after 1 attempt(s): the history source disagrees" in text.stdout


def test_gaps_on_a_stock_calendar_reports_no_weekend_holes_and_names_a_bad_calendar(
    runner: CliRunner, cli_env: dict[str, str], tmp_path: Path
) -> None:
    day = 86_400_000
    monday = 1_704_067_200_000  # 2024-01-01 (New Year: a NYSE holiday)
    weekdays = [monday + i * day for i in range(1, 26) if (i % 7) < 5]  # Jan 2 .. Jan 26
    path = Path(cli_env["BFX_HOME"])
    spy = SeriesKey("stooq", "SPY", "1d")
    with MarketStore(path / "market.db") as store:
        store.upsert_candles(
            spy, [CandleRow(ms, 470.0, 475.0, 468.0, 472.0, 1e6, 1) for ms in weekdays]
        )
    every_day = runner.invoke(_root(), ["gaps", "-s", "SPY", "--json"])
    assert json.loads(every_day.stdout)[0]["score"] < 100  # weekends counted as holes on 24/7
    nyse = runner.invoke(_root(), ["gaps", "-s", "SPY", "--calendar", "nyse", "--json"])
    assert nyse.exit_code == 0, nyse.output
    report = json.loads(nyse.stdout)[0]
    assert report["score"] == 100 and report["defects"] == []
    settings_file = tmp_path / "bfx.toml"
    settings_file.write_text('[calendars]\n"stooq:*" = "nyse"\n')
    configured = runner.invoke(
        _root(), ["gaps", "-s", "SPY", "--json"], env={"BFX_CONFIG": str(settings_file)}
    )
    assert json.loads(configured.stdout)[0]["score"] == 100
    bad = runner.invoke(_root(), ["gaps", "--calendar", "moon"])
    assert bad.exit_code == 2 and "unknown calendar 'moon'" in bad.output
