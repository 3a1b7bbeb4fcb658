"""Exports of a backtest: the same rows in CSV and Parquet, from the tables or from the objects."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import polars as pl
import pytest

from barfinex_cli.detector.loader import load_strategy
from barfinex_cli.errors import UsageError
from barfinex_cli.kernel.backtest.export import export, summary_json, trades_frame
from barfinex_cli.kernel.backtest.result import BacktestResult
from barfinex_cli.kernel.backtest.vector import run_vector
from barfinex_cli.market.history import rows_frame
from barfinex_cli.market.synthetic import generate_candles

SMA = Path(__file__).resolve().parents[3] / "strategies" / "sma_cross.py"


@pytest.fixture(scope="module")
def result() -> BacktestResult:
    frame = rows_frame(generate_candles("BTC/USDT", minutes=2_000))
    return run_vector(load_strategy(SMA), frame, exchange="synthetic", fees_bps=5,
                      slippage_bps=1, points=True)  # fmt: skip


def test_csv_and_parquet_hold_the_same_rows_as_the_result(
    result: BacktestResult, tmp_path: Path
) -> None:
    written = export(result, tmp_path / "run")
    assert len(written) == 7
    for name, rows in (("trades", len(result.trades)), ("fills", len(result.fills)),
                       ("equity", result.bars)):  # fmt: skip
        csv = pl.read_csv(tmp_path / "run" / f"{name}.csv")
        parquet = pl.read_parquet(tmp_path / "run" / f"{name}.parquet")
        assert csv.height == parquet.height == rows
        assert csv.columns == parquet.columns
    trades = pl.read_parquet(tmp_path / "run" / "trades.parquet")
    assert trades["pnl"].to_list() == [t.pnl for t in result.trades]
    assert trades.schema["entry_time"] == pl.Datetime("ms", "UTC")
    first = pl.read_csv(tmp_path / "run" / "fills.csv").row(0, named=True)
    assert first["time"].endswith("Z") and first["order_id"] == result.fills[0].order_id


def test_a_result_without_tables_exports_from_its_objects(result: BacktestResult) -> None:
    bare = replace(result, fills_table=None, trades_table=None, curve=None)
    assert trades_frame(bare).equals(trades_frame(result))


def test_the_summary_has_no_long_lists_and_no_infinity(result: BacktestResult) -> None:
    winners = replace(result, metrics=replace(result.metrics, profit_factor=math.inf))
    data = summary_json(winners)
    assert data["metrics"]["profit_factor"] is None
    assert not {"fills", "trades", "equity", "curve"} & set(data)
    json.dumps(data, allow_nan=False)


def test_exporting_onto_a_file_is_one_line(result: BacktestResult, tmp_path: Path) -> None:
    target = tmp_path / "taken"
    target.write_text("x")
    with pytest.raises(UsageError, match="is a file; name a folder"):
        export(result, target)
