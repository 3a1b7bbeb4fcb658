"""Candle loading: a candle file or the market store into one polars frame, ready to evaluate.

`bfx detector scan|lookahead` (and a backtest) need history as one frame with a `symbol` column,
whichever way it came: a file any importer layout reads, a CSV/Parquet that carries order flow
(`buy_volume`, `sell_volume`), or DATA_DIR/market.db. The reading, the order-flow rule (columns no
candle knows are dropped, so a rule that reads them is reported broken rather than silently never
holding) and the "not found" messages live here, below the CLI, so every caller gets the same frame
and the same errors. Pure functions over `store.market` and `market.files`: no Typer, no rich.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from barfinex_cli.errors import NotFound, UsageError
from barfinex_cli.market.candle_cache import SCHEMA, load_series
from barfinex_cli.store.market import (
    ORDER_FLOW_COLUMNS,
    CandleRow,
    MarketStore,
    SeriesKey,
    without_unknown_flow,
)

CANDLE_SCHEMA = SCHEMA
"""The polars types of `CandleRow`'s fields, in order (one definition, the copies' own)."""

FLOW_FILE_SUFFIXES = (".csv", ".parquet")


@dataclass(frozen=True, slots=True)
class LoadedFile:
    """Candles read from a file, and what was left out of it.

    Attributes:
        frame: The candles with a `symbol` column (order-flow columns only where known).
        rows_read: Rows the file held.
        left_out: Each row left out, as `file:line: reason`; the caller decides how to warn.
    """

    frame: pl.DataFrame
    rows_read: int
    left_out: tuple[str, ...] = ()


def rows_frame(rows: Sequence[CandleRow]) -> pl.DataFrame:
    """Return candle rows as a frame; order-flow columns no row knows are dropped."""
    return without_unknown_flow(pl.DataFrame(rows, schema=CANDLE_SCHEMA, orient="row"))


def load_file(
    path: Path, *, symbol: str | None = None, timeframe: str | None = None, fallback_symbol: str
) -> LoadedFile:
    """Return the candles of a file, labelled with a symbol.

    Args:
        path: A candle file any importer layout reads, or a CSV/Parquet with `open_ms` (or
            `timestamp`) and `buy_volume`/`sell_volume` columns, read as it is.
        symbol: The symbol to label the rows with (default: the file's name, else
            `fallback_symbol`).
        timeframe: The candles' timeframe, if the file's name does not say.
        fallback_symbol: The symbol when neither `symbol` nor the file names one.

    Raises:
        NotFound: No such file.
        UsageError: The layout is unknown, or no row of the file is a valid candle.
    """
    if not path.is_file():
        raise NotFound(f"{path}: no such file")
    flow = read_flow_file(path)
    if flow is not None:
        label = symbol or fallback_symbol
        return LoadedFile(flow.with_columns(pl.lit(label).alias("symbol")), flow.height)
    from barfinex_cli.market.files import read_file  # the importers: ~0.4 s a store load skips

    parsed = read_file(path, kind="candles", symbol=symbol, timeframe=timeframe)
    if not parsed.candles:
        first = parsed.errors[0] if parsed.errors else f"{path}: no rows"
        raise UsageError(f"no candles to scan: {parsed.rows_read} rows read, none valid ({first})")
    label = symbol or parsed.symbol or fallback_symbol
    frame = rows_frame(parsed.candles).with_columns(pl.lit(label).alias("symbol"))
    return LoadedFile(frame, parsed.rows_read, tuple(parsed.errors))


def read_flow_file(path: Path) -> pl.DataFrame | None:
    """Return a CSV/Parquet that carries `buy_volume` and `sell_volume` as it is; else None.

    An `open_ms` column is derived from `timestamp` (a datetime or epoch milliseconds) when the
    file has no `open_ms` of its own.
    """
    if path.suffix not in FLOW_FILE_SUFFIXES:
        return None
    try:
        scan = pl.scan_parquet(path) if path.suffix == ".parquet" else pl.scan_csv(path)
        names = scan.collect_schema().names()
        if not set(ORDER_FLOW_COLUMNS) <= set(names):
            return None
        frame = scan.collect(engine="in-memory")
    except (pl.exceptions.PolarsError, OSError):
        return None  # empty, damaged or unreadable: the importer reads it and says why
    if "open_ms" not in names and "timestamp" in names:
        ts = frame["timestamp"]
        frame = frame.with_columns(
            (ts.dt.epoch("ms") if ts.dtype.is_temporal() else ts.cast(pl.Int64)).alias("open_ms")
        )
    return frame


def load_store(path: Path, exchange: str, symbols: Sequence[str], timeframe: str) -> pl.DataFrame:
    """Return the stored candles of `symbols` on `exchange`, one frame with a `symbol` column.

    Served from the columnar copy beside the store when it is current (`market.candle_cache`),
    else read from SQLite (and the copy refreshed where the directory may be written).

    Raises:
        UsageError: `symbols` is empty.
        NotFound: There is no market store at `path`, or it holds no candles of one of the
            symbols at that timeframe (the message lists what it does hold).
    """
    if not symbols:
        raise UsageError("no symbols to load candles of: name at least one")
    if not path.is_file():
        raise NotFound(f"no market data at {path}; import some with `bfx data import FILE`")
    frames = []
    with MarketStore(path, read_only=True) as store:
        for name in symbols:
            frame = load_series(store, SeriesKey(exchange, name, timeframe)).frame
            if frame.is_empty():
                held = ", ".join(f"{s.exchange} {s.symbol} {s.timeframe}" for s in store.series())
                raise NotFound(
                    f"no {timeframe} candles of {name} on {exchange} in {path}; "
                    f"the store holds: {held or 'nothing'}"
                )
            frames.append(without_unknown_flow(frame).with_columns(pl.lit(name).alias("symbol")))
    return pl.concat(frames)
