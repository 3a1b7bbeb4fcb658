"""Market history in SQLite: candles and trades keyed by series, written with upserts.

Kept in its own file (`market.db`) beside the audit store, so that bulk downloads and the recorder
never wait on each other's write lock. Prices are stored as REAL: candles feed analysis in float;
exact money (orders, fills, balances) lives in events as Decimal.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, Self

from barfinex_cli.store.market_generations import GENERATIONS, statements
from barfinex_cli.store.private import private_file

if TYPE_CHECKING:
    import polars as pl

SCHEMA = """
CREATE TABLE IF NOT EXISTS candles (
    exchange TEXT NOT NULL, symbol TEXT NOT NULL, timeframe TEXT NOT NULL,
    open_ms INTEGER NOT NULL,
    open REAL NOT NULL, high REAL NOT NULL, low REAL NOT NULL, close REAL NOT NULL,
    volume REAL NOT NULL, trades INTEGER, buy_volume REAL, sell_volume REAL,
    PRIMARY KEY (exchange, symbol, timeframe, open_ms)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS trades (
    exchange TEXT NOT NULL, symbol TEXT NOT NULL, time_ms INTEGER NOT NULL,
    trade_id TEXT NOT NULL, price REAL NOT NULL, amount REAL NOT NULL, side TEXT NOT NULL,
    PRIMARY KEY (exchange, symbol, time_ms, trade_id)
) WITHOUT ROWID;
"""

CANDLE_COLUMNS = (
    "open_ms",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "trades",
    "buy_volume",
    "sell_volume",
)
ORDER_FLOW_COLUMNS = ("buy_volume", "sell_volume")
"""Taker buy and sell volume: known for candles built from trades that carry their side."""


class CandleRow(NamedTuple):
    """One candle of a series; `open_ms` is the open time in UTC milliseconds."""

    open_ms: int
    open: float
    high: float
    low: float
    close: float
    volume: float
    trades: int | None = None
    buy_volume: float | None = None
    sell_volume: float | None = None


class TradeRow(NamedTuple):
    """One trade of a symbol; `time_ms` in UTC milliseconds."""

    time_ms: int
    trade_id: str
    price: float
    amount: float
    side: str


class SeriesKey(NamedTuple):
    """Which series: exchange, symbol and timeframe."""

    exchange: str
    symbol: str
    timeframe: str


class SeriesInfo(NamedTuple):
    """What the store holds of one candle series."""

    exchange: str
    symbol: str
    timeframe: str
    rows: int
    first_ms: int
    last_ms: int


class SeriesState(NamedTuple):
    """What a candle series is at one moment, to tell whether a copy of it is still current.

    `store_id`, `generation` and `rewrites` come from the triggers (`GENERATIONS`): any write to
    the series moves `generation`. `first_ms` and `last_ms` are the series' first and last open
    times (None when it is empty), read from the primary key, so the state costs no scan.
    """

    store_id: str
    generation: int
    rewrites: int
    first_ms: int | None
    last_ms: int | None


class MarketStore:
    """Candles and trades in one SQLite file (WAL)."""

    def __init__(self, path: str | os.PathLike[str], *, read_only: bool = False) -> None:
        """Open (creating if needed) the store; `read_only` opens an existing file and writes
        nothing, even in a directory that may not be written (see `store.readonly`)."""
        self.path = Path(path)
        if read_only:
            from barfinex_cli.store.readonly import connect_read_only

            self.conn = connect_read_only(self.path)
            return
        private_file(self.path)
        self.conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.executescript(SCHEMA)
        self._add_order_flow_columns()
        self._add_generations()

    def _add_order_flow_columns(self) -> None:
        """Give a market.db made before order flow was kept its two columns (no data lost)."""
        held = {row[1] for row in self.conn.execute("PRAGMA table_info(candles)")}
        for column in ORDER_FLOW_COLUMNS:
            if column not in held:
                self.conn.execute(f"ALTER TABLE candles ADD COLUMN {column} REAL")

    def _add_generations(self) -> None:
        """Give the store its id, generation table and triggers (a no-op once they exist)."""
        if self.tracked():
            return
        with _transaction(self.conn):
            for statement in statements(GENERATIONS):
                self.conn.execute(statement)
            self.conn.execute(
                "INSERT OR IGNORE INTO store_meta VALUES ('id', lower(hex(randomblob(8))))"
            )

    def tracked(self) -> bool:
        """Whether the store keeps candle generations (a store made before them does not, until
        bfx next opens it for writing)."""
        names = {
            row[0]
            for row in self.conn.execute(
                "SELECT name FROM sqlite_master WHERE name IN ('store_meta', 'candles_deleted')"
            )
        }
        return names == {"store_meta", "candles_deleted"}

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def upsert_candles(self, key: SeriesKey, rows: Iterable[CandleRow]) -> int:
        """Insert or replace candles of one series in one transaction; return how many."""
        params = [(*key, *row) for row in rows]
        with _transaction(self.conn):
            self.conn.executemany(_UPSERT_CANDLE, params)
        return len(params)

    def candles(
        self,
        key: SeriesKey,
        *,
        since_ms: int | None = None,
        until_ms: int | None = None,
        limit: int | None = None,
        newest: bool = False,
    ) -> list[CandleRow]:
        """Return candles with `since_ms <= open_ms <= until_ms`, oldest first.

        With `newest`, the last `limit` candles of the range are returned (still oldest first).
        """
        sql = (
            f"SELECT {', '.join(CANDLE_COLUMNS)} FROM candles WHERE exchange=? AND symbol=? "
            "AND timeframe=?"
        )
        params: list[object] = list(key)
        if since_ms is not None:
            sql += " AND open_ms >= ?"
            params.append(since_ms)
        if until_ms is not None:
            sql += " AND open_ms <= ?"
            params.append(until_ms)
        sql += " ORDER BY open_ms DESC" if newest else " ORDER BY open_ms"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        rows = [CandleRow(*r) for r in self.conn.execute(sql, params)]
        return rows[::-1] if newest else rows

    def snapshot(self) -> _snapshot:
        """Return a context in which every read sees the store as of one moment (one read
        transaction: a writer committing meanwhile is not seen until it ends)."""
        return _snapshot(self.conn)

    def series_state(self, key: SeriesKey) -> SeriesState | None:
        """Return the series' state, or None if the store keeps no generations (`tracked`).

        Read inside `snapshot()` together with the candles it describes.
        """
        if not self.tracked():
            return None
        meta = self.conn.execute("SELECT value FROM store_meta WHERE name = 'id'").fetchone()
        kept = self.conn.execute(
            "SELECT generation, rewrites FROM candle_generations "
            "WHERE exchange=? AND symbol=? AND timeframe=?",
            key,
        ).fetchone()
        ends = [
            self.conn.execute(
                f"SELECT {end}(open_ms) FROM candles WHERE exchange=? AND symbol=? AND timeframe=?",
                key,
            ).fetchone()[0]
            for end in ("min", "max")  # one each: SQLite answers min() or max() from the index
        ]
        generation, rewrites = kept or (0, 0)
        return SeriesState(str(meta[0]), generation, rewrites, *ends)

    def candle_tuples(
        self, key: SeriesKey, *, after_ms: int | None = None
    ) -> list[tuple[Any, ...]]:
        """Return the series' candles (`open_ms > after_ms`) as plain tuples in `CANDLE_COLUMNS`
        order, oldest first: the bulk read, without a `CandleRow` per row."""
        sql = (
            f"SELECT {', '.join(CANDLE_COLUMNS)} FROM candles WHERE exchange=? AND symbol=? "
            "AND timeframe=?"
        )
        params: list[object] = list(key)
        if after_ms is not None:
            sql += " AND open_ms > ?"
            params.append(after_ms)
        return self.conn.execute(sql + " ORDER BY open_ms", params).fetchall()

    def candles_frame(self, key: SeriesKey, **kwargs: int | None) -> pl.DataFrame:
        """Return candles as a polars frame with a UTC `time` column (see `candles`)."""
        import polars as pl

        rows = self.candles(key, **kwargs)  # type: ignore[arg-type]
        frame = pl.DataFrame(
            rows,
            schema={
                "open_ms": pl.Int64,
                "open": pl.Float64,
                "high": pl.Float64,
                "low": pl.Float64,
                "close": pl.Float64,
                "volume": pl.Float64,
                "trades": pl.Int64,
                "buy_volume": pl.Float64,
                "sell_volume": pl.Float64,
            },
            orient="row",
        )
        return without_unknown_flow(frame).with_columns(
            pl.from_epoch("open_ms", time_unit="ms").dt.replace_time_zone("UTC").alias("time")
        )

    def delete_candles(self, key: SeriesKey, open_ms: Sequence[int]) -> int:
        """Delete the given candles of a series; return how many were deleted."""
        with _transaction(self.conn):
            cur = self.conn.executemany(
                "DELETE FROM candles WHERE exchange=? AND symbol=? AND timeframe=? AND open_ms=?",
                [(*key, ms) for ms in open_ms],
            )
        return max(cur.rowcount, 0)

    def series(self) -> list[SeriesInfo]:
        """Return every candle series held, with row count and first/last open time."""
        rows = self.conn.execute(
            "SELECT exchange, symbol, timeframe, count(*), min(open_ms), max(open_ms) "
            "FROM candles GROUP BY exchange, symbol, timeframe ORDER BY 1, 2, 3"
        )
        return [SeriesInfo(*r) for r in rows]

    def upsert_trades(self, exchange: str, symbol: str, rows: Iterable[TradeRow]) -> int:
        """Insert trades (a trade already held is kept as it is); return how many were given."""
        params = [(exchange, symbol, *row) for row in rows]
        with _transaction(self.conn):
            self.conn.executemany("INSERT OR IGNORE INTO trades VALUES (?,?,?,?,?,?,?)", params)
        return len(params)

    def trades(
        self,
        exchange: str,
        symbol: str,
        *,
        since_ms: int | None = None,
        until_ms: int | None = None,
        limit: int | None = None,
    ) -> list[TradeRow]:
        """Return trades of a symbol in time order."""
        sql = (
            "SELECT time_ms, trade_id, price, amount, side FROM trades "
            "WHERE exchange=? AND symbol=?"
        )
        params: list[object] = [exchange, symbol]
        if since_ms is not None:
            sql += " AND time_ms >= ?"
            params.append(since_ms)
        if until_ms is not None:
            sql += " AND time_ms <= ?"
            params.append(until_ms)
        sql += " ORDER BY time_ms, trade_id"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        return [TradeRow(*r) for r in self.conn.execute(sql, params)]


def without_unknown_flow(frame: pl.DataFrame) -> pl.DataFrame:
    """Drop order-flow columns that no candle of the frame knows.

    A series never built from sided trades has no order flow at all; without the columns, a
    rule that reads them is reported broken ("no buy_volume column") instead of silently never
    holding.
    """
    empty = [
        c for c in ORDER_FLOW_COLUMNS if c in frame.columns and frame[c].null_count() == len(frame)
    ]
    return frame.drop(empty) if empty and len(frame) else frame


_UPSERT_CANDLE = (
    f"INSERT OR REPLACE INTO candles (exchange, symbol, timeframe, {', '.join(CANDLE_COLUMNS)}) "
    f"VALUES ({', '.join('?' * (3 + len(CANDLE_COLUMNS)))})"
)


class _snapshot:
    """BEGIN ... COMMIT around reads on an autocommit connection: one consistent view."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> None:
        self.conn.execute("BEGIN")

    def __exit__(self, *exc_info: object) -> None:
        self.conn.execute("COMMIT")


class _transaction:
    """BEGIN ... COMMIT on an autocommit connection; ROLLBACK if the block raises."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> None:
        self.conn.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *rest: object) -> None:
        self.conn.execute("ROLLBACK" if exc_type is not None else "COMMIT")
