"""`bfx detector check|scan|lookahead` through Typer's runner, on files and on the market store."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import typer
from typer.testing import CliRunner

from barfinex_cli.cli import detector
from barfinex_cli.cli.main import BfxGroup
from barfinex_cli.store.market import CandleRow, MarketStore, SeriesKey

STRATEGIES = Path(__file__).resolve().parents[2] / "strategies"
TREND = str(STRATEGIES / "trend_ema_adx.py")
T0 = 1_704_067_200_000


def root() -> typer.Typer:
    """The detector group under a root that turns BfxError into one line, as `bfx` does."""
    app = typer.Typer(cls=BfxGroup)

    @app.callback()
    def main() -> None:
        """Root."""

    app.add_typer(detector.app, name="detector")
    return app


def candles(n: int = 1_500, seed: int = 3) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.004, n)))
    open_ = np.r_[close[0], close[:-1]]
    volume = rng.gamma(1.5, 4.0, n)
    return pl.DataFrame({
        "timestamp": T0 + np.arange(n, dtype=np.int64) * 60_000,
        "open": open_,
        "high": np.maximum(open_, close) * (1 + rng.random(n) * 0.003),
        "low": np.minimum(open_, close) * (1 - rng.random(n) * 0.003),
        "close": close,
        "volume": volume,
        "buy_volume": volume * rng.random(n),
    })  # fmt: skip


@pytest.fixture
def csv(tmp_path: Path) -> Path:
    path = tmp_path / "BTCUSDT-1m.csv"
    candles().drop("buy_volume").write_csv(path)
    return path


def write_strategy(tmp_path: Path, rules: str, name: str = "s.py") -> Path:
    path = tmp_path / name
    path.write_text(
        "import polars as pl\n"
        "from barfinex_cli.detector import indicators as ta\n"
        "from barfinex_cli.detector.strategy import Rule, Strategy\n"
        f'strategy = Strategy("s", ["BTC/USDT"], "1m", [{rules}], threshold=1.0, cooldown=3)\n'
    )
    return path


def test_check_prints_the_rules_and_the_warm_up(runner: CliRunner) -> None:
    result = runner.invoke(root(), ["detector", "check", TREND])
    assert result.exit_code == 0, result.output
    for text in (
        "ema_cross_up",
        "adx_trending",
        "rsi_overbought_exit",
        "close",
        "either",
        "warm-up 28 candles",
    ):
        assert text in result.output
    data = json.loads(runner.invoke(root(), ["detector", "check", TREND, "--json"]).output)
    assert data["warmup"] == 28 and data["live"] is True
    assert data["rules"][2] == {
        "name": "adx_trending",
        "weight": 1.0,
        "direction": "either",
        "action": "open",
        "condition": "adx(14) > 25",
        "lookback": 27,
        "reads": ["adx(14)"],
    }


def test_check_reports_a_broken_file_in_one_line(runner: CliRunner, tmp_path: Path) -> None:
    path = tmp_path / "bad.py"
    path.write_text("from barfinex_cli.detector import indicators as ta\nx = ta.rsii(14)\n")
    result = runner.invoke(root(), ["detector", "check", str(path)])
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        f"error: {path}:2: unknown indicator ta.rsii; did you mean ta.rsi?"
    )
    assert "Traceback" not in result.output


def test_scan_lists_the_signals_of_a_file(runner: CliRunner, csv: Path) -> None:
    result = runner.invoke(root(), ["detector", "scan", TREND, "--data", str(csv), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert (data["strategy"], data["candles"], data["warmup"]) == ("trend_ema_adx", 1500, 28)
    signals = data["signals"]
    assert len(signals) > 5 and data["broken"] == {}
    first = signals[0]
    assert first["symbol"] == "BTC/USDT" and first["time"].startswith("2024-01-01T")
    assert first["score"] >= 3.0 and set(first["rules"]) <= set(first["held"])
    assert [a["rule"] for a in first["attribution"]] == [
        "ema_cross_up",
        "ema_cross_down",
        "adx_trending",
        "rsi_overbought_exit",
        "rsi_oversold_exit",
    ]
    table = runner.invoke(root(), ["detector", "scan", TREND, "--data", str(csv)])
    assert table.exit_code == 0
    assert f"{len(signals)} signals" in table.stdout
    assert "1,500 candles scanned" in table.stderr


def test_scan_reads_the_market_store_like_the_file(
    runner: CliRunner, csv: Path, cli_env: dict[str, str]
) -> None:
    frame = candles().drop("buy_volume")
    rows = [CandleRow(*r) for r in frame.rows()]
    with MarketStore(Path(cli_env["BFX_HOME"]) / "market.db") as store:
        store.upsert_candles(SeriesKey("binance", "BTC/USDT", "1m"), rows)
    from_store = runner.invoke(
        root(), ["detector", "scan", TREND, "--exchange", "binance", "--json"]
    )
    from_file = runner.invoke(root(), ["detector", "scan", TREND, "--data", str(csv), "--json"])
    assert from_store.exit_code == 0, from_store.output
    assert json.loads(from_store.stdout) == json.loads(from_file.stdout)
    missing = runner.invoke(root(), ["detector", "scan", TREND, "--exchange", "kraken"])
    assert missing.exit_code == 1
    assert "no 1m candles of BTC/USDT on kraken" in missing.stderr
    assert "binance BTC/USDT 1m" in missing.stderr


def test_scan_uses_order_flow_columns_and_warns_of_a_broken_rule(
    runner: CliRunner, tmp_path: Path
) -> None:
    strategy = write_strategy(tmp_path, 'Rule("buyers", ta.flow_imbalance() > 0.5, 1.0, "long")')
    flow = tmp_path / "flow.parquet"
    frame = candles()
    frame.with_columns(
        (pl.col("volume") - pl.col("buy_volume")).alias("sell_volume")
    ).write_parquet(flow)
    result = runner.invoke(
        root(), ["detector", "scan", str(strategy), "--data", str(flow), "--json"]
    )
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.stdout)["signals"]) > 10
    plain = tmp_path / "plain.csv"
    frame.drop("buy_volume").write_csv(plain)
    broken = runner.invoke(root(), ["detector", "scan", str(strategy), "--data", str(plain)])
    assert broken.exit_code == 0
    assert "warning: rule buyers is broken and never held" in broken.stderr
    assert "no buy_volume column" in broken.stderr


def test_scan_needs_exactly_one_source_of_candles(runner: CliRunner, csv: Path) -> None:
    both = runner.invoke(
        root(), ["detector", "scan", TREND, "--data", str(csv), "--exchange", "binance"]
    )
    assert both.exit_code == 2
    assert "give the candles with --data FILE or --exchange NAME" in both.stderr
    nothing = runner.invoke(root(), ["detector", "scan", TREND, "--exchange", "binance"])
    assert nothing.exit_code == 1 and "no market data at" in nothing.stderr


def test_lookahead_passes_the_example_and_fails_a_peeking_rule(
    runner: CliRunner, csv: Path, tmp_path: Path
) -> None:
    clean = runner.invoke(root(), ["detector", "lookahead", TREND, "--data", str(csv)])
    assert clean.exit_code == 0, clean.output
    assert "no look-ahead: 20 of 1,500 candles checked" in clean.stdout
    peeking = write_strategy(
        tmp_path,
        'Rule("tomorrow", ta.close < ta.raw(pl.col("close").shift(-1), "next"), 1.0, "long")',
    )
    biased = runner.invoke(root(), ["detector", "lookahead", str(peeking), "--data", str(csv)])
    assert biased.exit_code == 1
    assert "rule tomorrow looks ahead: next at candle 0 (BTC/USDT 2024-01-01 00:00 UTC)" in (
        biased.stdout
    )
    data = json.loads(
        runner.invoke(
            root(),
            ["detector", "lookahead", str(peeking), "--data", str(csv), "--json", "--samples", "5"],
        ).stdout
    )
    assert data["clean"] is False and data["checked"] == [0, 374, 749, 1124, 1498]
    assert data["biased"][0]["rule"] == "tomorrow"


def test_scan_warns_of_rows_left_out_of_the_file_and_scans_the_rest(
    runner: CliRunner, tmp_path: Path
) -> None:
    path = tmp_path / "BTCUSDT-1m.csv"
    candles(200).drop("buy_volume").write_csv(path)
    with path.open("a") as f:
        f.write(f"{T0 + 200 * 60_000},10,9,11,10,1\n")  # high below low
    result = runner.invoke(root(), ["detector", "scan", TREND, "--data", str(path), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["candles"] == 200
    assert result.stderr.strip() == (
        f"warning: 1 rows left out ({path}:202: high 9.0 is below low 11.0)"
    )


def test_scan_json_is_one_streamed_document_with_every_signal_and_the_model_attribution(
    runner: CliRunner, csv: Path
) -> None:
    from barfinex_cli.detector.engine import VectorEngine
    from barfinex_cli.detector.loader import load_strategy
    from barfinex_cli.market.history import load_file

    result = runner.invoke(root(), ["detector", "scan", TREND, "--data", str(csv), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert list(data) == ["strategy", "candles", "warmup", "broken", "total_signals", "signals"]
    assert data["total_signals"] == len(data["signals"]) > 5
    assert result.stdout.count("\n") == len(data["signals"]) + 9  # one signal per line
    frame = load_file(csv, fallback_symbol="BTC/USDT").frame
    records = VectorEngine(load_strategy(Path(TREND))).evaluate(frame)
    assert [s["attribution"] for s in data["signals"]] == [
        [a.model_dump() for a in r.attribution] for r in records
    ]
    limited = runner.invoke(
        root(), ["detector", "scan", TREND, "--data", str(csv), "--json", "--limit", "2"]
    )
    assert json.loads(limited.stdout)["signals"] == data["signals"][:2]
    assert json.loads(limited.stdout)["total_signals"] == data["total_signals"]


def test_scan_json_with_no_signal_is_an_empty_list(runner: CliRunner, tmp_path: Path) -> None:
    never = write_strategy(tmp_path, 'Rule("never", ta.close < 0, 1.0, "long")')
    csv = tmp_path / "BTCUSDT-1m.csv"
    candles(50).drop("buy_volume").write_csv(csv)
    result = runner.invoke(root(), ["detector", "scan", str(never), "--data", str(csv), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["signals"] == []


def test_the_scan_table_shows_the_first_signals_and_says_how_many_it_left_out(
    runner: CliRunner, tmp_path: Path
) -> None:
    always = write_strategy(tmp_path, 'Rule("always", ta.close > 0, 1.0, "long")')
    csv = tmp_path / "BTCUSDT-1m.csv"
    candles().drop("buy_volume").write_csv(csv)  # 1,500 candles, a signal every 4th (cooldown 3)
    table = runner.invoke(root(), ["detector", "scan", str(always), "--data", str(csv)])
    assert table.exit_code == 0, table.output
    assert "375 signals (the first 100 shown)" in table.stdout
    assert table.stdout.count("always") == 100
    assert "275 more signals not shown: --limit N (0 for all) or --json" in table.stderr
    three = runner.invoke(
        root(), ["detector", "scan", str(always), "--data", str(csv), "--limit", "3"]
    )
    assert "375 signals (the first 3 shown)" in three.stdout and three.stdout.count("always") == 3
    every = runner.invoke(
        root(), ["detector", "scan", str(always), "--data", str(csv), "--limit", "0"]
    )
    assert every.stdout.count("always") == 375 and "not shown" not in every.stderr
