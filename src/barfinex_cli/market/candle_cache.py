"""A columnar copy of each candle series beside market.db, so a million candles load in ~0.1 s.

Reading 1M candles out of SQLite costs seconds (a Python tuple per row); the same candles as a
Parquet file read in tens of milliseconds. The copy is only ever a copy: SQLite stays the truth,
and a copy is served only when it provably holds what the store holds at that moment.

- Key: the series' `SeriesState` (store id, generation, rewrites; SQLite triggers move the
  generation on every candle written or deleted, whoever writes), read in the same read
  transaction as any candle, is in the file's name with the row count, last open time and a
  CRC-32 of the file's bytes, under `market.db.cache/` (the db's own name plus `.cache`):
  `<exchange>/<symbol>/<timeframe>/<store id>.<rewrites>.<generation>.<rows>.<last>.<crc>.parquet`.
- Served when the name matches the state, the bytes match the CRC, the frame read has the rows
  its name says and the first and last open times the store reports, strictly increasing, and
  the store's first and last candles equal the frame's.
  Anything else (a truncated, damaged or foreign file) is ignored and rebuilt: never served.
- Appended when only appends happened since (same store id and `rewrites`, a higher generation,
  and the store's candles at the copy's first and last open times equal its rows): the copy
  plus the store's candles after it, checked as above, become the new copy.
- Written to a temporary file and renamed, so a reader never sees half a file; best effort: a
  directory that cannot be written (an archived data dir) just means no copy, never an error.
- A store made before generations existed (`tracked()` false) is read from SQLite every time.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import tempfile
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple
from urllib.parse import quote

import polars as pl

from barfinex_cli.store.market import CANDLE_COLUMNS, MarketStore, SeriesKey, SeriesState

SCHEMA: dict[str, pl.DataType | type[pl.DataType]] = {
    "open_ms": pl.Int64,
    **dict.fromkeys(("open", "high", "low", "close", "volume"), pl.Float64),
    "trades": pl.Int64,
    **dict.fromkeys(("buy_volume", "sell_volume"), pl.Float64),
}
"""The polars types of `CANDLE_COLUMNS`, in order: every copy has all of them."""
assert tuple(SCHEMA) == CANDLE_COLUMNS

SUFFIX = ".parquet"
STALE_TMP_S = 3600
"""A temporary file older than this (seconds) was left by a writer that died."""


class _Copy(NamedTuple):
    """A cache file and the state its name says it holds."""

    path: Path
    store_id: str
    rewrites: int
    generation: int
    rows: int
    last_ms: int
    crc: int


@dataclass(frozen=True, slots=True)
class Loaded:
    """A series' candles, and how they were had (`hit`, `appended`, `built` or `uncached`)."""

    frame: pl.DataFrame
    how: str


def cache_dir(db: Path) -> Path:
    """Return where the copies of `db`'s series live."""
    return db.with_name(db.name + ".cache")


def load_series(store: MarketStore, key: SeriesKey) -> Loaded:
    """Return every candle of a series (all of `SCHEMA`'s columns), from a copy when current.

    `store` may be read-only; the copy is refreshed when the directory can be written.
    """
    where = _series_dir(cache_dir(store.path), key)
    with store.snapshot():
        state = store.series_state(key)
        if state is None:
            return Loaded(_frame(store.candle_tuples(key)), "uncached")
        if state.last_ms is None:
            return Loaded(_frame([]), "uncached")
        copies = _copies(where, state.store_id)
        for copy in copies:
            if _same(copy, state):
                frame = _read(copy, state)
                if frame is not None and _ends_agree(store, key, frame):
                    return Loaded(frame, "hit")
        frame, how = _extended(store, key, state, copies), "appended"
        if frame is None:
            frame, how = _frame(store.candle_tuples(key)), "built"
    _write(where, state, frame)
    return Loaded(frame, how)


def _extended(
    store: MarketStore, key: SeriesKey, state: SeriesState, copies: list[_Copy]
) -> pl.DataFrame | None:
    """Return an older copy plus the candles appended after it, if only appends happened."""
    for copy in sorted(copies, key=lambda c: -c.generation):
        if copy.rewrites != state.rewrites or copy.generation >= state.generation:
            continue
        if state.last_ms is None or copy.last_ms >= state.last_ms:
            continue
        old = _read(copy, None)
        if old is None:
            continue
        if not _ends_agree(store, key, old):
            continue
        tail = store.candle_tuples(key, after_ms=copy.last_ms)
        frame = pl.concat([old, _frame(tail)])
        if _fits(frame, state):
            return frame
    return None


def _ends_agree(store: MarketStore, key: SeriesKey, frame: pl.DataFrame) -> bool:
    """Whether the store holds the frame's first and last rows as they are (two index reads).

    The counters cannot tell an older backup of market.db copied back over it (same id) once its
    counters climb back to a copy's; its candles at the copy's ends almost surely differ.
    """
    for row in (frame.row(0), frame.row(-1)):
        held = store.candles(key, since_ms=row[0], until_ms=row[0])
        if not held or tuple(held[0]) != row:
            return False
    return True


def _read(copy: _Copy, state: SeriesState | None) -> pl.DataFrame | None:
    """Return the copy's frame if its bytes and contents are what its name (and `state`) say."""
    try:
        with copy.path.open("rb") as file:  # one open file: the bytes checked are those read
            with mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as view:
                if zlib.crc32(view) != copy.crc:
                    return None
            frame = pl.read_parquet(file)
    except (OSError, ValueError, pl.exceptions.PolarsError):  # ValueError: an empty file
        return None
    if frame.schema != pl.Schema(SCHEMA) or frame.height != copy.rows:
        return None
    if frame.height and frame["open_ms"][-1] != copy.last_ms:
        return None
    return frame if state is None or _fits(frame, state) else None


def _fits(frame: pl.DataFrame, state: SeriesState) -> bool:
    """Whether `frame` has the first and last open times the store reports, strictly increasing."""
    if frame.height == 0:
        return False
    times = frame["open_ms"]
    if times[0] != state.first_ms or times[-1] != state.last_ms:
        return False
    return frame.height == 1 or bool((times.diff().drop_nulls() > 0).all())


def _write(where: Path, state: SeriesState, frame: pl.DataFrame) -> None:
    """Store `frame` as the copy for `state` (atomically), and drop older copies; best effort."""
    head = f"{state.store_id}.{state.rewrites}.{state.generation}.{frame.height}.{state.last_ms}"
    try:
        where.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=where, prefix=".", suffix=".tmp")
    except OSError:
        return  # a data directory that may not be written: no copy, no error
    try:
        with os.fdopen(fd, "w+b") as out:
            frame.write_parquet(out, compression="lz4", statistics=False)
            out.flush()
            with mmap.mmap(out.fileno(), 0, access=mmap.ACCESS_READ) as view:
                crc = zlib.crc32(view)
        target = where / f"{head}.{crc:08x}{SUFFIX}"
        os.replace(tmp, target)
    except (OSError, ValueError, pl.exceptions.PolarsError):
        Path(tmp).unlink(missing_ok=True)
        return
    for stale in where.glob(f"*{SUFFIX}"):
        if stale != target:
            stale.unlink(missing_ok=True)  # a reader that opened it keeps reading it
    for left in where.glob(".*.tmp"):  # a writer killed between write and rename
        with contextlib.suppress(OSError):
            if time.time() - left.stat().st_mtime > STALE_TMP_S:
                left.unlink()


def _copies(where: Path, store_id: str) -> list[_Copy]:
    """Return the copies in `where` whose names parse and belong to this store."""
    found = []
    try:
        names = [p for p in where.iterdir() if p.name.endswith(SUFFIX)]
    except OSError:
        return []
    for path in names:
        parts = path.name[: -len(SUFFIX)].split(".")
        if len(parts) != 6 or parts[0] != store_id:
            continue
        try:
            rewrites, generation, rows, last_ms = (int(p) for p in parts[1:5])
            crc = int(parts[5], 16)
        except ValueError:
            continue
        found.append(_Copy(path, parts[0], rewrites, generation, rows, last_ms, crc))
    return found


def _same(copy: _Copy, state: SeriesState) -> bool:
    return (copy.rewrites, copy.generation, copy.last_ms) == (
        state.rewrites,
        state.generation,
        state.last_ms,
    )


def _series_dir(root: Path, key: SeriesKey) -> Path:
    """Return the directory of a series' copies; names are quoted (`BTC/USDT` -> `BTC%2FUSDT`)."""
    return root.joinpath(*(quote(part, safe="").replace(".", "%2E") for part in key))


def _frame(rows: list[tuple[object, ...]]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=SCHEMA, orient="row")
