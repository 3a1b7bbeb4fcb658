"""`bfx data`: import, list, export and synth against a real market store in a temporary home."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from barfinex_cli.cli import data
from barfinex_cli.cli.main import BfxGroup
from barfinex_cli.contracts.times import from_ms
from barfinex_cli.market.synthetic import generate_candles
from barfinex_cli.store.market import MarketStore, SeriesKey
from cli.conftest import BfxRun

START = 1_704_067_200_000
CANDLES = generate_candles("BTC/USDT", START, 30)


def _root() -> typer.Typer:
    """The data group under a root with bfx's error exit point (until main.py mounts it)."""
    root = typer.Typer(cls=BfxGroup)

    @root.callback()
    def _root_callback() -> None:
        """Test root."""

    root.add_typer(data.app, name="data")
    return root


@pytest.fixture
def run(tmp_path: Path) -> CliRunner:
    return CliRunner(env={"BFX_HOME": str(tmp_path / "home"), "BFX_CONFIG": None})


def _klines(path: Path, extra: list[str] | None = None) -> Path:
    lines = [
        f"{c.open_ms},{c.open},{c.high},{c.low},{c.close},{c.volume},{c.open_ms + 59_999},"
        f"1,{c.trades},0,0,0"
        for c in CANDLES
    ]
    path.write_text("\n".join([*lines, *(extra or [])]) + "\n")
    return path


def test_import_list_export_round_trip(run: CliRunner, tmp_path: Path) -> None:
    source = _klines(tmp_path / "BTCUSDT-1m-2024-01.csv")
    result = run.invoke(_root(), ["data", "import", str(source)])
    assert result.exit_code == 0, result.output
    assert "imported 30 candles of imported BTC/USDT 1m (binance-klines, csv)" in result.stdout

    listed = run.invoke(_root(), ["data", "list", "--json"])
    assert json.loads(listed.stdout) == [
        {"exchange": "imported", "symbol": "BTC/USDT", "timeframe": "1m", "rows": 30,
         "first": "2024-01-01T00:00:00Z", "last": "2024-01-01T00:29:00Z", "label": ""}
    ]  # fmt: skip

    out = tmp_path / "out.csv"
    exported = run.invoke(
        _root(),
        ["data", "export", "--exchange", "imported", "--symbol", "BTC/USDT", "--out", str(out),
         "--since", "2024-01-01T00:10Z", "--until", "2024-01-01T00:19Z", "--json"],
    )  # fmt: skip
    assert exported.exit_code == 0, exported.output
    assert json.loads(exported.stdout)["rows"] == 10
    again = run.invoke(
        _root(),
        ["data", "import", str(out), "--exchange", "copy", "--symbol", "BTC/USDT", "--json"],
    )
    report = json.loads(again.stdout)
    assert (report["layout"], report["imported"], report["rejected"]) == ("candles-header", 10, 0)
    with MarketStore(tmp_path / "home" / "market.db") as store:
        assert store.candles(SeriesKey("copy", "BTC/USDT", "1m")) == CANDLES[10:20]


def test_bad_rows_are_listed_on_stderr_as_file_and_line(run: CliRunner, tmp_path: Path) -> None:
    source = _klines(tmp_path / "BTCUSDT-1m-2024-01.csv", ["1704069000000,1,2,3"])
    result = run.invoke(_root(), ["data", "import", str(source), "--allow-rejects"])
    assert result.exit_code == 0
    assert "30 rows read" not in result.stdout and "31 rows read, 1 rejected" in result.stdout
    assert f"{source}:31: expected 12 fields, found 4" in result.stderr
    as_json = run.invoke(_root(), ["data", "import", str(source), "--json", "--allow-rejects"])
    assert json.loads(as_json.stdout)["errors"] == [f"{source}:31: expected 12 fields, found 4"]


def test_import_mistakes_are_one_line_errors(run: CliRunner, tmp_path: Path) -> None:
    unnamed = _klines(tmp_path / "prices.csv")
    (tmp_path / "three.csv").write_text("".join(f"{c.open_ms},1,2\n" for c in CANDLES))
    cases = [
        (["data", "import", str(unnamed)], 2, "give --symbol"),
        (["data", "import", str(tmp_path / "missing.csv")], 1, "no such file"),
        (["data", "import", str(unnamed), "--symbol", "X/Y", "--kind", "bars"], 2, "--kind"),
        (["data", "import", str(unnamed), "--symbol", "X/Y", "--exchange", "synthetic"], 2,
         "kept for `bfx data synth`"),
        (["data", "import", str(tmp_path / "three.csv"), "--symbol", "X/Y", "--columns",
          "ts=0,open=1"], 2, "need high"),
        (["data", "export", "--exchange", "a", "--symbol", "B/C", "--out", "x.txt"], 2,
         ".csv or .parquet"),
    ]  # fmt: skip
    for args, code, message in cases:
        result = run.invoke(_root(), args)
        assert result.exit_code == code, (args, result.output)
        assert message in result.stderr and "Traceback" not in result.output
        assert len(result.stderr.strip().splitlines()) == 1


def test_export_of_a_series_not_held_names_the_list_command(run: CliRunner, tmp_path: Path) -> None:
    args = [
        "data",
        "export",
        "--exchange",
        "x",
        "--symbol",
        "B/C",
        "--out",
        str(tmp_path / "o.csv"),
    ]
    assert "bfx data import" in run.invoke(_root(), args).stderr  # no store yet
    run.invoke(_root(), ["data", "synth", "--days", "0.01"])
    result = run.invoke(_root(), args)
    assert result.exit_code == 1 and "bfx data list" in result.stderr


def test_synth_writes_a_labelled_reproducible_market(run: CliRunner, tmp_path: Path) -> None:
    result = run.invoke(
        _root(), ["data", "synth", "--symbols", "BTC/USDT,DOGE/USDT", "--days", "0.5", "--trades"]
    )
    assert result.exit_code == 0, result.output
    assert "synthetic BTC/USDT: 720 1m candles and" in result.stdout
    rows = json.loads(run.invoke(_root(), ["data", "list", "--json"]).stdout)
    assert {(r["symbol"], r["timeframe"], r["label"]) for r in rows} == {
        ("BTC/USDT", "1m", "synthetic"),
        ("DOGE/USDT", "1m", "synthetic"),
        ("BTC/USDT", "trades", "synthetic"),
        ("DOGE/USDT", "trades", "synthetic"),
    }
    with MarketStore(tmp_path / "home" / "market.db") as store:
        held = store.candles(SeriesKey("synthetic", "BTC/USDT", "1m"))
    assert held == generate_candles("BTC/USDT", START, 720, seed=7)
    table = run.invoke(_root(), ["data", "list"]).stdout.splitlines()
    assert table[0].split() == ["exchange", "symbol", "tf", "rows", "first", "last", "label"]
    assert all(line.endswith("synthetic") for line in table[1:])


def test_list_of_an_empty_home_says_how_to_add_data(run: CliRunner) -> None:
    result = run.invoke(_root(), ["data", "list"])
    assert result.exit_code == 0 and result.stdout == ""
    assert "bfx data synth" in result.stderr
    assert json.loads(run.invoke(_root(), ["data", "list", "--json"]).stdout) == []


def test_every_data_command_has_help_with_an_example() -> None:
    group = typer.main.get_command(data.app)
    assert isinstance(group, typer.core.TyperGroup)
    assert "Examples" in (group.help or "")
    for name, command in group.commands.items():
        assert "Example" in (command.help or ""), name


def _minutes(path: Path, rows: list[str] | None = None) -> Path:
    lines = ["timestamp,open,high,low,close,volume"]
    lines += [f"{c.open_ms},{c.open},{c.high},{c.low},{c.close},{c.volume}" for c in CANDLES]
    path.write_text("\n".join([*lines, *(rows or [])]) + "\n")
    return path


def test_rejected_rows_fail_the_import_and_write_nothing_unless_allowed(
    run: CliRunner, tmp_path: Path
) -> None:
    source = _minutes(tmp_path / "BTCUSDT-1m.csv", ["1704069000000,1,0.5,2,1,1"])
    refused = run.invoke(_root(), ["data", "import", str(source)])
    assert refused.exit_code == 1 and "Traceback" not in refused.output
    assert f"{source}:32: high 0.5 is below low 2.0" in refused.stderr
    assert refused.stderr.strip().splitlines()[-1] == (
        "error: 1 of 31 rows rejected, nothing imported; fix them, or give --allow-rejects to "
        "import the 30 valid candles"
    )
    as_json = run.invoke(_root(), ["data", "import", str(source), "--json"])
    report = json.loads(as_json.stdout)
    assert as_json.exit_code == 1
    assert (report["valid"], report["imported"], report["rejected"]) == (30, 0, 1)
    assert json.loads(run.invoke(_root(), ["data", "list", "--json"]).stdout) == []

    allowed = run.invoke(_root(), ["data", "import", str(source), "--allow-rejects", "--json"])
    assert allowed.exit_code == 0
    assert (json.loads(allowed.stdout)["imported"], json.loads(allowed.stdout)["rejected"]) == (
        30,
        1,
    )
    with MarketStore(tmp_path / "home" / "market.db") as store:
        assert store.candles(SeriesKey("imported", "BTC/USDT", "1m")) == [
            c._replace(trades=None) for c in CANDLES
        ]


def test_a_timeframe_the_rows_contradict_is_refused_or_resampled(
    run: CliRunner, tmp_path: Path
) -> None:
    source = _minutes(tmp_path / "BTCUSDT-1m.csv")
    wrong = run.invoke(_root(), ["data", "import", str(source), "--timeframe", "5m"])
    assert wrong.exit_code == 2 and len(wrong.stderr.strip().splitlines()) == 1
    assert "rows are 1m apart (1m candles), but --timeframe says 5m" in wrong.stderr
    assert "--resample" in wrong.stderr
    assert json.loads(run.invoke(_root(), ["data", "list", "--json"]).stdout) == []

    built = run.invoke(_root(), ["data", "import", str(source), "--timeframe", "5m", "--resample"])
    assert built.exit_code == 0, built.output
    assert "imported 6 candles of imported BTC/USDT 5m" in built.stdout
    assert "note: resampled 30 1m candles into 6 5m candles" in built.stderr
    listed = json.loads(run.invoke(_root(), ["data", "list", "--json"]).stdout)
    assert [(r["timeframe"], r["rows"]) for r in listed] == [("5m", 6)]
    alone = run.invoke(_root(), ["data", "import", str(source), "--resample"])
    assert alone.exit_code == 2 and "--resample needs --timeframe" in alone.stderr


def test_an_export_with_a_preamble_and_odd_dates_imports_and_says_how(
    run: CliRunner, tmp_path: Path
) -> None:
    source = tmp_path / "Bitstamp_BTCUSD_minute.csv"
    rows = [
        f"{from_ms(c.open_ms):%d.%m.%Y %H:%M},BTC/USD,{c.open},{c.high},{c.low},{c.close},"
        f"{c.volume},{c.volume * c.close}"
        for c in reversed(CANDLES)
    ]
    source.write_text(
        "https://www.CryptoDataDownload.com\n"
        "date,symbol,open,high,low,close,Volume BTC,Volume USD\n" + "\n".join(rows) + "\n"
    )
    result = run.invoke(_root(), ["data", "import", str(source)])
    assert result.exit_code == 0, result.output
    assert "imported 30 candles of imported BTC/USD 1m (candles-header, csv)" in result.stdout
    assert result.stderr.splitlines() == [
        "note: skipped 1 line before the header (line 1: 'https://www.CryptoDataDownload.com')",
        "note: volume from 'Volume BTC' (the base currency); 'Volume USD' left out — give "
        "--columns volume=NAME to choose another",
        "note: times read as %d.%m.%Y %H:%M",
        "note: rows were newest first; stored oldest first",
    ]
    quote = run.invoke(
        _root(),
        ["data", "import", str(source), "--exchange", "q", "--columns", "volume=Volume USD",
         "--json"],
    )  # fmt: skip
    assert quote.exit_code == 0, quote.output
    assert json.loads(quote.stdout)["layout"] == "candles-header+columns"
    with MarketStore(tmp_path / "home" / "market.db") as store:
        held = store.candles(SeriesKey("q", "BTC/USD", "1m"))
    assert [c.volume for c in held] == [c.volume * c.close for c in CANDLES]


def test_a_date_form_detection_cannot_settle_is_read_with_time_format(
    run: CliRunner, tmp_path: Path
) -> None:
    source = tmp_path / "ETHUSDT-1m.csv"
    rows = [f"{from_ms(c.open_ms):%m/%d/%Y %H:%M},{c.open},{c.high},{c.low},{c.close},{c.volume}"
            for c in generate_candles("ETH/USDT", START + 86_400_000, 10)]  # fmt: skip
    source.write_text("Date,Open,High,Low,Close,Volume\n" + "\n".join(rows) + "\n")
    asked = run.invoke(_root(), ["data", "import", str(source)])
    assert asked.exit_code == 2 and "give --time-format '%d/%m/%Y %H:%M' or" in asked.stderr
    told = run.invoke(_root(), ["data", "import", str(source), "--time-format", "%m/%d/%Y %H:%M"])
    assert told.exit_code == 0, told.output
    assert "2024-01-02 00:00 .. 2024-01-02 00:09 UTC" in told.stdout


def _broken_files(tmp_path: Path) -> list[Path]:
    noise = bytes(range(256)) * 8
    made = {"BTCUSDT-1m.csv": noise, "empty-BTCUSDT-1m.csv": b"", "BTCUSDT-1m.zip": noise}
    made |= {"BTCUSDT-1m.parquet": noise}
    for name, body in made.items():
        (tmp_path / name).write_bytes(body)
    return [tmp_path / name for name in made]


def test_binary_or_empty_files_are_one_line_for_data_import(run: CliRunner, tmp_path: Path) -> None:
    for path in _broken_files(tmp_path):
        result = run.invoke(_root(), ["data", "import", str(path)])
        assert result.exit_code == 2, (path.name, result.output)
        assert "Traceback" not in result.output and isinstance(result.exception, SystemExit)
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert str(path) in result.stderr


def test_binary_or_empty_files_are_one_line_for_a_provider_replay(
    bfx: BfxRun, tmp_path: Path
) -> None:
    for path in _broken_files(tmp_path):
        result = bfx("provider", "start", "--replay", str(path), "--speed", "max",
                     "--exit-at-end", "--port", "0")  # fmt: skip
        assert result.returncode == 2, (path.name, result.stderr)
        assert "Traceback" not in result.stderr
        assert result.stderr.strip().splitlines()[-1].startswith(f"error: {path}: ")


STRATEGY = str(Path(__file__).resolve().parents[2] / "strategies" / "trend_ema_adx.py")


@pytest.mark.parametrize(
    "name",
    [
        "BTCUSDT-1m.csv",
        "BTCUSDT-1m.zip",
        "empty-BTCUSDT-1m.csv",
        "BTCUSDT-1m.parquet",
    ],
)
def test_binary_or_empty_files_are_one_line_for_a_detector_scan(
    bfx: BfxRun, tmp_path: Path, name: str
) -> None:
    _broken_files(tmp_path)
    path = tmp_path / name
    result = bfx("detector", "scan", STRATEGY, "--data", str(path))
    assert "Traceback" not in result.stderr
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stderr.startswith(f"error: {path}: ")
