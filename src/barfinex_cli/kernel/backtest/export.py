"""Write a backtest's trades, fills and equity curve to a folder, as CSV and as Parquet.

Spreadsheets and notebooks read the CSV; Parquet keeps the types (int64 milliseconds, float64
money) and loads a million-row curve in milliseconds. Each table carries the epoch-ms columns of
the result types and a UTC `time` column (for the curve, `entry_time`/`exit_time` for trades) so
a reader needs no conversion. The result's own summary goes beside them as `result.json`.
Tables come from the columnar copies when a run has them (`fills_table`, `curve`), else from the
objects, so both backtest paths export the same way.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, astuple, fields
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from barfinex_cli.errors import UsageError
from barfinex_cli.kernel.backtest.result import BacktestResult, Fill, Metrics, Trade

_TEXT, _NUM, _MS = pl.String, pl.Float64, pl.Int64
SCHEMAS: dict[type, dict[str, Any]] = {
    Fill: {"order_id": _TEXT, "time_ms": _MS, "symbol": _TEXT, "side": _TEXT, "quantity": _NUM,
           "price": _NUM, "fee": _NUM, "reason": _TEXT, "trace_id": _TEXT},
    Trade: {"symbol": _TEXT, "side": _TEXT, "entry_ms": _MS, "exit_ms": _MS, "quantity": _NUM,
            "entry_price": _NUM, "exit_price": _NUM, "fees": _NUM, "pnl": _NUM,
            "return_pct": _NUM, "exit_reason": _TEXT, "trace_id": _TEXT},
}  # fmt: skip
"""The column types of each record type, in field order."""


def fills_frame(result: BacktestResult) -> pl.DataFrame:
    """Return the run's fills as a frame, a column per `Fill` field."""
    return _table(result.fills_table, result.fills, Fill)


def trades_frame(result: BacktestResult) -> pl.DataFrame:
    """Return the run's round trips as a frame, a column per `Trade` field."""
    return _table(result.trades_table, result.trades, Trade)


def equity_frame(result: BacktestResult) -> pl.DataFrame:
    """Return the equity curve as `time_ms`, `equity` (plus `drawdown_pct`)."""
    if result.curve is not None:
        times, values = result.curve.time_ms, result.curve.equity
    else:
        times = np.array([p.time_ms for p in result.equity], dtype=np.int64)
        values = np.array([p.equity for p in result.equity], dtype=np.float64)
    peak = np.maximum.accumulate(np.maximum(values, result.initial_equity)) if len(values) else 1
    return pl.DataFrame(
        {"time_ms": times, "equity": values, "drawdown_pct": (values / peak - 1.0) * 100.0},
        schema={"time_ms": pl.Int64, "equity": pl.Float64, "drawdown_pct": pl.Float64},
    )


def export(result: BacktestResult, folder: Path) -> list[Path]:
    """Write trades, fills and equity as .csv and .parquet, and result.json; return the paths.

    Raises:
        UsageError: `folder` is a file, or it cannot be created or written.
    """
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"--export {folder}: is a file; name a folder to write into")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        written = []
        tables = {
            "trades": _with_times(trades_frame(result), ("entry_ms", "exit_ms")),
            "fills": _with_times(fills_frame(result), ("time_ms",)),
            "equity": _with_times(equity_frame(result), ("time_ms",)),
        }
        for name, table in tables.items():
            csv, parquet = folder / f"{name}.csv", folder / f"{name}.parquet"
            table.write_csv(csv, datetime_format="%Y-%m-%dT%H:%M:%S%.3fZ")
            table.write_parquet(parquet)
            written += [csv, parquet]
        summary = folder / "result.json"
        summary.write_text(json.dumps(summary_json(result), indent=2) + "\n", encoding="utf-8")
        written.append(summary)
    except (OSError, pl.exceptions.PolarsError) as exc:
        raise UsageError(f"--export {folder}: cannot write there ({exc})") from None
    return written


def summary_json(result: BacktestResult) -> dict[str, Any]:
    """Return the run without its long lists, as JSON-ready data (non-finite ratios as null)."""
    from barfinex_cli.contracts.times import iso_ms

    data = {
        f.name: getattr(result, f.name)
        for f in fields(result)
        if f.name not in ("fills", "trades", "equity", "curve", "fills_table", "trades_table")
    }
    data["symbols"] = list(result.symbols)
    data["start"], data["end"] = iso_ms(result.start_ms), iso_ms(result.end_ms)
    data["final_equity"] = final_equity(result)
    data["metrics"] = metrics_json(result.metrics)
    return data


def metrics_json(metrics: Metrics) -> dict[str, float | int | None]:
    """Return metrics as JSON-ready data: `inf` and NaN become null (JSON has no infinity)."""
    return {k: (v if not isinstance(v, float) or math.isfinite(v) else None)
            for k, v in asdict(metrics).items()}  # fmt: skip


def final_equity(result: BacktestResult) -> float:
    """Return the equity at the last close."""
    if result.curve is not None and len(result.curve):
        return float(result.curve.equity[-1])
    if result.equity:
        return result.equity[-1].equity
    return result.initial_equity * (1 + result.metrics.total_return_pct / 100)


def _table(table: pl.DataFrame | None, rows: tuple[Any, ...], kind: type) -> pl.DataFrame:
    if table is not None:
        return table
    return pl.DataFrame([astuple(r) for r in rows], schema=SCHEMAS[kind], orient="row")


def _with_times(table: pl.DataFrame, columns: tuple[str, ...]) -> pl.DataFrame:
    stamps = [
        pl.col(c)
        .cast(pl.Datetime("ms"))
        .dt.replace_time_zone("UTC")
        .alias("time" if c == "time_ms" else c.replace("_ms", "_time"))
        for c in columns
    ]
    return table.with_columns(stamps)
