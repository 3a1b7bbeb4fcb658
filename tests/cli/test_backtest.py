"""`bfx backtest` in-process and as a real process: tables, charts, JSON, exports, mistakes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from barfinex_cli.cli.main import app
from barfinex_cli.detector.loader import load_strategy
from barfinex_cli.kernel.backtest.vector import run_vector
from barfinex_cli.market.history import load_file

SMA = str(Path(__file__).resolve().parents[2] / "strategies" / "sma_cross.py")
T0 = 1_704_067_200_000
N = 1_500


@pytest.fixture
def csv(tmp_path: Path) -> Path:
    rng = np.random.default_rng(5)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.003, N)))
    open_ = np.r_[close[0], close[:-1]]
    path = tmp_path / "BTCUSDT-1m.csv"
    pl.DataFrame({
        "timestamp": T0 + np.arange(N, dtype=np.int64) * 60_000,
        "open": open_, "high": np.maximum(open_, close) * 1.001,
        "low": np.minimum(open_, close) * 0.999, "close": close, "volume": np.ones(N),
    }).write_csv(path)  # fmt: skip
    return path


def test_json_is_the_detector_only_result_of_the_same_data(runner: CliRunner, csv: Path) -> None:
    args = ["backtest", SMA, "--data", str(csv), "--detector-only", "--fees", "5", "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    frame = load_file(csv, fallback_symbol="BTC/USDT").frame
    direct = run_vector(load_strategy(SMA), frame, exchange="file", fees_bps=5, slippage_bps=0)
    assert report["mode"] == "detector" and report["bars"] == N
    assert report["metrics"]["trades"] == direct.metrics.trades > 5
    assert report["metrics"]["sharpe"] == pytest.approx(direct.metrics.sharpe)
    assert report["final_equity"] == pytest.approx(float(direct.curve.equity[-1]))  # type: ignore[union-attr]
    assert "trades" not in report and "fills" not in report


def test_trades_flag_lists_every_round_trip_in_json(runner: CliRunner, csv: Path) -> None:
    args = ["backtest", SMA, "--data", str(csv), "--detector-only", "--json", "--trades"]
    result = runner.invoke(app, args)
    report = json.loads(result.stdout)
    assert len(report["trades"]) == report["metrics"]["trades"]
    assert len(report["fills"]) == 2 * len(report["trades"]) - (
        report["trades"][-1]["exit_reason"] == "open"
    )
    assert report["fills"][0]["reason"] == "entry" and report["fills"][0]["side"] == "buy"
    assert "not wired" not in result.stderr


def test_the_table_and_the_charts_go_to_stdout(runner: CliRunner, csv: Path) -> None:
    result = runner.invoke(app, ["backtest", SMA, "--data", str(csv), "--detector-only",
                                 "--trades"])  # fmt: skip
    assert result.exit_code == 0, result.stderr
    for word in ("total return", "Sharpe", "Sortino", "max drawdown", "profit factor", "exposure"):
        assert word in result.stdout
    assert "equity" in result.stdout and "drawdown %" in result.stdout
    assert any(ch in result.stdout for ch in "⠁⠂⠄⡀⣀⣿")  # braille dots of the charts
    assert "trades" in result.stdout and "close" in result.stdout
    assert f"{N:,} candles" in result.stderr
    quiet = runner.invoke(app, ["backtest", SMA, "--data", str(csv), "--detector-only",
                                "--no-plot"])  # fmt: skip
    assert "drawdown %" not in quiet.stdout


def test_export_writes_csv_and_parquet_of_trades_fills_and_equity(
    runner: CliRunner, csv: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    args = ["backtest", SMA, "--data", str(csv), "--detector-only", "--export", str(out), "--json"]
    report = json.loads(runner.invoke(app, args).stdout)
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(
        [f"{t}.{e}" for t in ("trades", "fills", "equity") for e in ("csv", "parquet")]
        + ["result.json"]
    )
    equity = pl.read_parquet(out / "equity.parquet")
    assert equity.height == N and equity["time_ms"][0] == T0
    assert equity["equity"][-1] == pytest.approx(report["final_equity"])
    trades = pl.read_csv(out / "trades.csv")
    assert trades.height == report["metrics"]["trades"]
    assert {"entry_time", "exit_time", "pnl", "exit_reason"} <= set(trades.columns)
    fills = pl.read_parquet(out / "fills.parquet")
    assert fills["fee"].sum() == pytest.approx(report["metrics"]["fees"])
    assert json.loads((out / "result.json").read_text())["run_id"] == report["run_id"]


def test_a_window_of_the_market_store(runner: CliRunner) -> None:
    synth = runner.invoke(app, ["data", "synth", "--days", "2", "--symbols", "BTC/USDT"])
    assert synth.exit_code == 0, synth.stderr
    args = ["backtest", SMA, "--detector-only", "--exchange", "synthetic", "--symbol", "BTC/USDT",
            "--from", "2024-01-01T06:00Z", "--to", "2024-01-01T18:00Z", "--json"]  # fmt: skip
    report = json.loads(runner.invoke(app, args).stdout)
    assert report["bars"] == 12 * 60
    assert report["start"].startswith("2024-01-01T06:00") and report["exchange"] == "synthetic"


@pytest.mark.parametrize(
    ("args", "code", "says"),
    [
        (["--fees", "-1"], 2, "--fees -1 bps is out of range"),
        (["--fees", "20000"], 2, "--fees 20000 bps is out of range"),
        (["--slippage", "10000"], 2, "--slippage"),
        (["--from", "2024-02-01", "--to", "2024-01-01"], 2, "is not before --to"),
        (["--from", "2030-01-01"], 2, "no candles in that window"),
        (["--from", "yesterday-ish"], 2, "cannot read 'yesterday-ish' as a time"),
    ],
)
def test_a_mistake_is_one_line_with_its_exit_code(
    runner: CliRunner, csv: Path, args: list[str], code: int, says: str
) -> None:
    result = runner.invoke(app, ["backtest", SMA, "--data", str(csv), "--detector-only", *args])
    assert result.exit_code == code
    assert says in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stdout == ""


def test_a_missing_file_and_an_unknown_symbol_are_one_line(
    runner: CliRunner, tmp_path: Path
) -> None:
    missing = runner.invoke(
        app, ["backtest", SMA, "--detector-only", "--data", str(tmp_path / "nope.csv")]
    )
    assert missing.exit_code == 1 and "nope.csv: no such file" in missing.stderr
    runner.invoke(app, ["data", "synth", "--days", "1", "--symbols", "BTC/USDT"])
    args = ["backtest", SMA, "--detector-only", "--exchange", "synthetic", "--symbol", "NOPE/USDT"]
    unknown = runner.invoke(app, args)
    assert unknown.exit_code == 1
    assert "no 1m candles of NOPE/USDT on synthetic" in unknown.stderr
    assert "synthetic BTC/USDT 1m" in unknown.stderr  # what the store holds
    for result in (missing, unknown):
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_a_broken_strategy_and_a_binary_data_file_as_a_real_process(
    cli_env: dict[str, str], tmp_path: Path, csv: Path
) -> None:
    broken = tmp_path / "broken.py"
    broken.write_text("from barfinex_cli.detector import indicators as ta\nstrategy = (\n")
    binary = tmp_path / "candles.parquet"
    binary.write_bytes(bytes(range(256)) * 8)
    cases = [
        ([str(broken), "--data", str(csv)], 1, "broken.py:"),
        ([SMA, "--data", str(binary), "--detector-only"], 2, "candles.parquet"),
    ]
    running = [  # both at once: each is a whole interpreter start-up
        subprocess.Popen([sys.executable, "-m", "barfinex_cli", "backtest", *args], env=cli_env,
                         cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for args, _, _ in cases
    ]  # fmt: skip
    for process, (args, code, says) in zip(running, cases, strict=True):
        _, stderr = process.communicate(timeout=60)
        assert process.returncode == code, (args, stderr)
        assert says in stderr and "Traceback" not in stderr
        assert len(stderr.strip().splitlines()) == 1, stderr


def test_detector_only_without_fees_charges_10_bps_and_the_help_names_both_defaults(
    runner: CliRunner, csv: Path
) -> None:
    args = ["backtest", SMA, "--data", str(csv), "--detector-only", "--json"]
    report = json.loads(runner.invoke(app, args).stdout)
    frame = load_file(csv, fallback_symbol="BTC/USDT").frame
    direct = run_vector(load_strategy(SMA), frame, exchange="file", fees_bps=10, slippage_bps=0)
    assert report["metrics"]["fees"] == pytest.approx(direct.metrics.fees) and direct.metrics.fees
    shown = " ".join(
        runner.invoke(app, ["backtest", "--help"], env={"COLUMNS": "200"}).stdout.split()
    )
    assert "[--detector-only: 10; full pipeline: the paper broker's 5 taker, 2 maker]" in shown
    assert "default: 10.0" not in shown and "default: 0.0" not in shown


def test_trades_with_export_does_not_suggest_export_for_the_trades_not_shown(
    runner: CliRunner, csv: Path, tmp_path: Path
) -> None:
    args = ["backtest", SMA, "--data", str(csv), "--detector-only", "--trades", "--no-plot"]
    plain = runner.invoke(app, args)
    assert "earlier trades not shown; --export DIR writes all" in plain.stderr  # > 20 trades
    exported = runner.invoke(app, [*args, "--export", str(tmp_path / "out")])
    assert exported.exit_code == 0, exported.stderr
    assert "earlier trades not shown; the export holds all" in exported.stderr
    assert "--export DIR" not in exported.stderr
