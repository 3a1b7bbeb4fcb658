"""Read candle and trade files in the layouts people actually have, and write them to the store.

Recognised without flags: ccxt/freqtrade OHLCV arrays (`.json`, or a CSV with no header), Binance
kline dumps (12 columns, open time in ms or µs), Binance aggTrades and trades dumps, and any CSV,
Parquet or Feather with named columns (`timestamp,open,high,low,close,volume` or
`timestamp,price,amount,side`). Exports as people have them are read too: a preamble line before
the header (CryptoDataDownload's URL), an unnamed first column (a pandas index, holding the time
or a row number), a symbol column, two volume columns (`Volume BTC,Volume USDT`: the base one is
taken, and the report says so), newest-first rows, and the time forms of `market.file_times`.
What detection cannot guess is given with a `ColumnMap` (whole, or only the roles to override)
and a strftime `time_format`. A `.zip` holding one CSV (as Binance ships them) and `.gz` are read
as-is; binary, empty or damaged files are a one-line `UsageError` naming the file.

Every row is parsed and checked with polars expressions; a bad row becomes a `file:line: reason`.
A declared timeframe must agree with the spacing of the rows, or the rows are resampled to it
with the provider's own `CandleAggregator`. An import writes in one transaction, so a file is
never half imported; one with rejected rows writes nothing unless the caller allows rejects. For
JSON, Parquet and Feather the "line" is the record number. CSV fields are split on commas and
quotes stripped: dumps of market data never quote a comma, and this keeps line numbers exact.

This module runs past 400 lines because it holds every layout in one place, where they can be
compared; export (the inverse) lives here too so that a round trip is one module's promise. Time
parsing, the widest part, is `market.file_times`.
"""

from __future__ import annotations

import gzip
import io
import json
import re
import zipfile
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Literal, NamedTuple

import polars as pl
from pydantic import BaseModel, ConfigDict

from barfinex_cli.contracts.times import from_ms
from barfinex_cli.errors import BfxError, NotFound, UsageError
from barfinex_cli.market.candles import (
    TIMEFRAME_MS,
    TIMEFRAMES,
    CandleAggregator,
    bucket_start,
    grid_offset,
    timeframe_ms,
)
from barfinex_cli.market.file_times import check_format, read_times
from barfinex_cli.store.market import CandleRow, MarketStore, SeriesKey, TradeRow

Kind = Literal["candles", "trades"]


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


_QUOTES = _words("FDUSD USDT USDC BUSD TUSD DAI EUR USD TRY BRL GBP BTC ETH BNB")
_FIAT = _words("usd usdt usdc busd fdusd tusd dai eur gbp try brl quote to")
_ALIASES: dict[str, tuple[str, ...]] = {
    role: _words(names)
    for role, names in {
        "time": "timestamp time date datetime opentime ts t timems openms transacttime unix "
        "unixtimestamp",
        "open": "open o",
        "high": "high h",
        "low": "low l",
        "close": "close c",
        "volume": "volume vol v basevolume",
        "trades": "trades count numberoftrades tradecount numtrades n",
        "price": "price p",
        "amount": "amount qty quantity size q volume baseqty",
        "side": "side takerside",
        "buyer_maker": "isbuyermaker buyermaker maker m",
        "id": "id tradeid aggtradeid a",
        "symbol": "symbol pair ticker instrument",
    }.items()
}
_REQUIRED: dict[str, tuple[str, ...]] = {
    "candles": ("time", "open", "high", "low", "close", "volume"),
    "trades": ("time", "price", "amount"),
}
_ROLES: dict[str, tuple[str, ...]] = {
    "candles": (*_REQUIRED["candles"], "trades", "symbol"),
    "trades": (*_REQUIRED["trades"], "side", "buyer_maker", "id", "symbol"),
}
_CANDLE_ONLY = {"open", "high", "low", "close", "trades"}
_TRADE_ONLY = {"price", "amount", "side", "buyer_maker", "id"}
_UNNAMED = re.compile(r"^(unnamed\d*|index|)$")  # pandas' index column: "", "Unnamed: 0"
_VOLUME = re.compile(r"^vol(?:ume)?(?P<unit>[a-z0-9]{2,10})$")


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


@dataclass(frozen=True, slots=True)
class ColumnMap:
    """Which column holds which field: a 0-based index or a header name per role.

    A map naming every field a kind needs describes the file alone; a partial one (say
    `volume=Volume USDT`) overrides only those roles of what detection found.
    """

    roles: dict[str, int | str]

    @classmethod
    def parse(cls, text: str) -> ColumnMap:
        """Read `ts=0,open=1,high=2,...` (indices or header names); raise `UsageError` if wrong."""
        roles: dict[str, int | str] = {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            key, sep, value = part.partition("=")
            role = next((r for r, names in _ALIASES.items() if _norm(key) in (r, *names)), None)
            if role is None or not sep or not value.strip():
                known = ", ".join(_ALIASES)
                raise UsageError(
                    f"--columns: cannot read {part!r}; write ROLE=INDEX or "
                    f"ROLE=NAME with ROLE one of {known}"
                )
            roles[role] = int(value) if value.strip().isdigit() else value.strip()
        if not roles:
            raise UsageError("--columns: name at least one column, e.g. ts=0 or volume=NAME")
        if roles.keys() & _CANDLE_ONLY and roles.keys() & _TRADE_ONLY:
            raise UsageError("--columns: a file holds candles or trades, not both")
        return cls(roles)

    @property
    def kind(self) -> Kind | None:
        """Return what the map describes, or None when its roles fit candles and trades alike."""
        if self.roles.keys() & _CANDLE_ONLY:
            return "candles"
        return "trades" if self.roles.keys() & _TRADE_ONLY else None

    @property
    def complete(self) -> bool:
        """Return whether the map names every field its kind needs (it then needs no header)."""
        kind = self.kind
        if kind is None or any(r not in self.roles for r in _REQUIRED[kind]):
            return False
        return kind == "candles" or bool({"side", "buyer_maker"} & self.roles.keys())


class Rejected(NamedTuple):
    """A row left out of an import: its line (record number for non-CSV files) and why."""

    line: int
    reason: str


@dataclass(frozen=True, slots=True)
class ParsedFile:
    """What one file held, already validated: good rows, the rejected ones, and what was noticed."""

    path: Path
    format: str
    layout: str
    kind: Kind
    symbol: str | None
    timeframe: str | None
    rows_read: int
    candles: list[CandleRow]
    trades: list[TradeRow]
    rejected: list[Rejected]
    notes: list[str] = field(default_factory=list)
    """How the file was read where it was not plain: preamble, volume column, order, resampling."""

    @property
    def errors(self) -> list[str]:
        """Return every rejected row as `file:line: reason`."""
        return [f"{self.path}:{r.line}: {r.reason}" for r in self.rejected]


class ImportReport(BaseModel):
    """The outcome of importing one file into the market store.

    `valid` rows passed every check; `imported` were written (0 when rejected rows were not
    allowed, since a file is imported whole or not at all).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    file: str
    format: str
    layout: str
    kind: Kind
    exchange: str
    symbol: str
    timeframe: str | None
    rows_read: int
    valid: int
    imported: int
    rejected: int
    errors: list[str]
    notes: list[str]
    first: datetime | None
    last: datetime | None


def symbol_from_name(path: str | Path) -> str | None:
    """Return the symbol a file name states (`BTCUSDT-1m-2024-01.csv`, `BTC_USDT-1m.json`)."""
    tokens = re.split(r"[-_. ]", Path(path).name.upper())
    for i, token in enumerate(tokens):
        nxt = tokens[i + 1] if i + 1 < len(tokens) else ""
        if token.isalpha() and nxt in _QUOTES:
            settle = tokens[i + 2] if i + 2 < len(tokens) else ""
            return f"{token}/{nxt}" + (f":{settle}" if settle in _QUOTES else "")
        for quote in _QUOTES:
            base = token[: -len(quote)]
            if token.endswith(quote) and len(base) >= 2 and token.isalnum():
                return f"{base}/{quote}"
    return None


def timeframe_from_name(path: str | Path) -> str | None:
    """Return the timeframe a file name states (`BTCUSDT-5m-...` gives `5m`)."""
    for token in re.split(r"[-_. ]", Path(path).name):
        if token in TIMEFRAMES:
            return token
    return None


def read_file(
    path: str | Path,
    *,
    kind: Kind | Literal["auto"] = "auto",
    columns: ColumnMap | None = None,
    symbol: str | None = None,
    timeframe: str | None = None,
    time_format: str | None = None,
    resample: bool = False,
) -> ParsedFile:
    """Read and validate one candle or trade file.

    Args:
        path: The file.
        kind: Candles, trades, or `auto` to tell from the file.
        columns: Which column is what, where detection cannot tell (or guesses wrong).
        symbol: The symbol; else the file's symbol column, else its name.
        timeframe: The candles' timeframe; else the file name's, else the rows' spacing.
        time_format: A strftime format for the time column, where detection cannot read it.
        resample: Build `timeframe` candles from rows of a lower timeframe.

    Raises:
        NotFound: No such file.
        UsageError: A binary, empty or damaged file, a layout it cannot tell, a timeframe that
            disagrees with the rows' spacing.
    """
    path = Path(path)
    if not path.is_file():
        raise NotFound(f"{path}: no such file")
    if timeframe is not None:
        timeframe_ms(timeframe)  # raises naming the valid ones
    if resample and timeframe is None:
        raise UsageError("--resample needs --timeframe: the timeframe to build")
    if time_format is not None:
        check_format(time_format)
    loaded = _load(path)
    notes = list(loaded.notes)
    layout, layout_kind, roles = _detect(path, loaded, kind, columns, symbol, notes)
    table = loaded.table
    if "symbol" in roles:
        table, symbol = _one_symbol(path, table, roles["symbol"], symbol, notes)
    symbol = symbol or symbol_from_name(path)
    times = read_times(table, roles["time"], time_format)
    if times.form not in ("epoch", "ISO 8601") and time_format is None:
        notes.append(f"times read as {times.form}")
    table = table.with_columns(times.ms)
    _order_note(table["time_ms"], notes)
    rows_read = table.height
    if layout_kind == "candles":
        source_tf, tf = _timeframes(path, table["time_ms"], timeframe, resample)
        frame, rejected = _parse_candles(table, roles, times.failure, source_tf)
        candles = [CandleRow(*row) for row in frame.iter_rows()]
        if source_tf != tf and candles:
            candles = _resample(candles, source_tf, tf, notes)
        trades: list[TradeRow] = []
    else:
        frame, rejected = _parse_trades(table, roles, times.failure)
        trades, candles, tf = list(map(TradeRow._make, frame.iter_rows())), [], None
    if not (candles or trades):
        if rejected:
            first = rejected[0]
            raise BfxError(
                f"{path}: nothing to import: {rows_read:,} rows read, none valid; first data "
                f"row (line {first.line}): {_row_text(loaded, first.line)!r}: {first.reason}"
            )
        if not frame.is_empty():  # every row was valid, but a resample closed no candle
            raise UsageError(f"{path}: too few rows to build one {tf} candle")
        raise UsageError(f"{path}: no data rows" + (" under the header" if loaded.header else ""))
    return ParsedFile(
        path,
        loaded.format,
        layout,
        layout_kind,
        symbol,
        tf,
        rows_read,
        candles,
        trades,
        rejected,
        notes,
    )


def import_file(
    store: MarketStore,
    path: str | Path,
    *,
    exchange: str = "imported",
    symbol: str | None = None,
    timeframe: str | None = None,
    kind: Kind | Literal["auto"] = "auto",
    columns: ColumnMap | None = None,
    time_format: str | None = None,
    resample: bool = False,
    allow_rejects: bool = False,
    progress: Callable[[str], None] | None = None,
) -> ImportReport:
    """Read `path` and write its good rows to `store` in one transaction; report the rest.

    With rejected rows and `allow_rejects` false nothing is written (`imported` is 0): the
    caller decides whether the good rows alone are worth keeping.
    """
    say = progress or (lambda _msg: None)
    say(f"reading {path}")
    parsed = read_file(
        path,
        kind=kind,
        columns=columns,
        symbol=symbol,
        timeframe=timeframe,
        time_format=time_format,
        resample=resample,
    )
    if parsed.symbol is None:
        raise UsageError(f"{path}: the file name does not say the symbol; give --symbol BTC/USDT")
    good = len(parsed.candles) or len(parsed.trades)
    write = allow_rejects or not parsed.rejected
    if write:
        say(f"writing {good:,} {parsed.kind} ({len(parsed.rejected):,} rejected)")
    if parsed.kind == "candles":
        assert parsed.timeframe is not None
        if write:
            key = SeriesKey(exchange, parsed.symbol, parsed.timeframe)
            store.upsert_candles(key, parsed.candles)
        first_ms, last_ms = parsed.candles[0].open_ms, parsed.candles[-1].open_ms
    else:
        if write:
            store.upsert_trades(exchange, parsed.symbol, parsed.trades)
        first_ms, last_ms = parsed.trades[0].time_ms, parsed.trades[-1].time_ms
    return ImportReport(
        file=str(path),
        format=parsed.format,
        layout=parsed.layout,
        kind=parsed.kind,
        exchange=exchange,
        symbol=parsed.symbol,
        timeframe=parsed.timeframe,
        rows_read=parsed.rows_read,
        valid=good,
        imported=good if write else 0,
        rejected=len(parsed.rejected),
        errors=parsed.errors,
        notes=parsed.notes,
        first=from_ms(first_ms),
        last=from_ms(last_ms),
    )


def export_candles(
    store: MarketStore,
    key: SeriesKey,
    out: Path,
    *,
    since_ms: int | None = None,
    until_ms: int | None = None,
) -> int:
    """Write a candle series to CSV or Parquet as `timestamp,open,...,trades`; return the rows."""
    rows = [r[:7] for r in store.candles(key, since_ms=since_ms, until_ms=until_ms)]
    names = _words("timestamp open high low close volume trades")
    types = [pl.Int64, *[pl.Float64] * 5, pl.Int64]
    return _write(
        pl.DataFrame(rows, orient="row", schema=dict(zip(names, types, strict=True))), out
    )


def export_trades(
    store: MarketStore,
    exchange: str,
    symbol: str,
    out: Path,
    *,
    since_ms: int | None = None,
    until_ms: int | None = None,
) -> int:
    """Write trades to CSV or Parquet as `timestamp,id,price,amount,side`; return the rows."""
    rows = store.trades(exchange, symbol, since_ms=since_ms, until_ms=until_ms)
    names = _words("timestamp id price amount side")
    types = [pl.Int64, pl.String, pl.Float64, pl.Float64, pl.String]
    return _write(
        pl.DataFrame(rows, orient="row", schema=dict(zip(names, types, strict=True))), out
    )


def _write(frame: pl.DataFrame, out: Path) -> int:
    if frame.is_empty():
        return 0
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".parquet":
        frame.write_parquet(out)
    else:
        frame.write_csv(out)
    return frame.height


# --- loading: every format becomes string columns c0..cN plus line and field count ------------

_READS = "bfx reads CSV, JSON, Parquet and Feather files, and .zip or .gz of them"


@dataclass(frozen=True, slots=True)
class _Loaded:
    table: pl.DataFrame
    header: list[str] | None
    format: str
    notes: list[str]
    text: dict[int, str]
    """The raw text of the first data rows of a CSV, by line (errors quote it)."""


def _load(path: Path) -> _Loaded:
    name = path.name.lower()
    try:
        size = path.stat().st_size
        data = b"" if name.endswith(_TABLE_SUFFIXES) else path.read_bytes()
    except OSError as exc:
        raise BfxError(f"{path}: cannot read the file ({exc.strerror or exc})") from None
    if size == 0:
        raise UsageError(f"{path}: the file is empty; {_READS}")
    if name.endswith(_TABLE_SUFFIXES):
        return _table_file(path, name)
    if name.endswith(".zip"):
        data, name = _unzip(path, data)
    elif name.endswith(".gz"):
        try:
            data, name = gzip.decompress(data), name[:-3]
        except (OSError, EOFError, zlib.error):
            raise UsageError(f"{path}: not a gzip file, or a damaged one; {_READS}") from None
    if not data.strip():
        raise UsageError(f"{path}: the file is empty; {_READS}")
    text = _decode(path, data)
    if name.endswith(".json"):
        return _json_table(path, text)
    return _csv_table(text)


_TABLE_SUFFIXES = (".parquet", ".feather", ".arrow", ".ipc")


def _table_file(path: Path, name: str) -> _Loaded:
    fmt = "parquet" if name.endswith(".parquet") else "feather"
    try:
        frame = pl.read_parquet(path) if fmt == "parquet" else pl.read_ipc(path)
    except (pl.exceptions.PolarsError, OSError, ValueError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UsageError(f"{path}: not a readable {fmt} file ({reason})") from None
    return _Loaded(_typed_table(frame), frame.columns, fmt, [], {})


def _unzip(path: Path, data: bytes) -> tuple[bytes, str]:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = [m for m in archive.namelist() if not m.endswith("/")]
            if len(members) != 1:
                raise UsageError(f"{path}: a zip must hold exactly one file, found {len(members)}")
            return archive.read(members[0]), members[0].lower()
    except (zipfile.BadZipFile, zlib.error, RuntimeError, NotImplementedError, EOFError) as exc:
        raise UsageError(f"{path}: not a readable zip archive ({exc}); {_READS}") from None


def _decode(path: Path, data: bytes) -> str:
    """Return the text of a file; refuse binary data (a NUL byte, or mostly control bytes)."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):  # UTF-16, as Excel saves "Unicode text"
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError:
            pass
    text = data.decode("utf-8", errors="replace")
    sample = text[:65_536]
    odd = sum(1 for ch in sample if ch == "\ufffd" or (ch < " " and ch not in "\t\r\n"))
    if "\x00" in sample or odd > len(sample) // 20:
        raise UsageError(f"{path}: not a text file (it holds binary data); {_READS}")
    return text


def _fields(line: str) -> list[str]:
    return [f.strip().strip('"') for f in line.lstrip("\ufeff").split(",")]


def _csv_table(text: str) -> _Loaded:
    raw = [(n, t.rstrip("\r")) for n, t in enumerate(text.split("\n"), 1) if t.strip()]
    notes: list[str] = []
    head = [_fields(t) for _, t in raw[:10]]
    at = next((i for i, fields in enumerate(head) if _is_header(fields)), None)
    if at is not None and any(len(f) == len(head[at]) for f in head[:at]):
        at = None  # a row shaped like the header came first: that is data, not a preamble
    if at is None:  # no header: lines of one word (not a number) or `#` lines are a preamble
        widths = Counter(len(f) for f in head)
        wide = max(widths, key=lambda w: (widths[w], w), default=1) > 1
        at = next(
            (
                i
                for i, f in enumerate(head)
                if not (f[0].startswith("#") or (wide and len(f) == 1 and not _is_number(f[0])))
            ),
            len(head),
        )
        header = None
    else:
        header = head[at]
    if at:
        n, first = raw[0]
        shown = first if len(first) <= 80 else first[:77] + "..."
        notes.append(
            f"skipped {at} line{'s' if at > 1 else ''} before the "
            f"{'header' if header else 'data'} (line {n}: {shown!r})"
        )
    rows = raw[at + (1 if header else 0) :]
    lines = pl.DataFrame(
        {"line": [n for n, _ in rows], "text": [t for _, t in rows]},
        schema={"line": pl.Int64, "text": pl.String},
    )
    counts = lines.head(1000).select(pl.col("text").str.count_matches(",", literal=True) + 1)
    # the usual field count of the first rows: one odd line at the top does not set the width
    width = len(header) if header else max(counts.to_series().mode().to_list(), default=0)
    names = [f"c{i}" for i in range(width)]
    table = lines.select(
        pl.col("line"),
        (pl.col("text").str.count_matches(",", literal=True) + 1).cast(pl.Int64).alias("nf"),
        pl.col("text")
        .str.split_exact(",", max(width - 1, 0))
        .struct.rename_fields(names)
        .alias("fields"),
    ).unnest("fields")
    table = table.select("line", "nf", *[pl.col(n).str.strip_chars(' "\r\t') for n in names])
    return _Loaded(table, header, "csv", notes, dict(rows[:50]))


def _json_table(path: Path, text: str) -> _Loaded:
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise UsageError(f"{path}: not valid JSON ({exc})") from None
    if isinstance(doc, dict) and isinstance(doc.get("data"), list):
        doc = doc["data"]  # pandas/freqtrade "split" orient
    if not isinstance(doc, list) or not doc:
        raise UsageError(f"{path}: expected a JSON array of rows such as [[ts,o,h,l,c,v], ...]")
    header = list(doc[0]) if isinstance(doc[0], dict) else None
    records = [[r.get(k) for k in header] if isinstance(r, dict) and header else r for r in doc]
    lengths = [len(r) for r in records[:1000] if isinstance(r, list)]
    width = len(header) if header else max(lengths, key=lengths.count, default=0)
    table = pl.DataFrame(
        {
            "line": list(range(1, len(records) + 1)),
            "nf": [len(r) if isinstance(r, list) else 0 for r in records],
            **{
                f"c{i}": [
                    _text(r[i]) if isinstance(r, list) and i < len(r) else None for r in records
                ]
                for i in range(width)
            },
        },
        schema={"line": pl.Int64, "nf": pl.Int64, **{f"c{i}": pl.String for i in range(width)}},
    )
    return _Loaded(table, header, "json", [], {})


def _text(value: object) -> str | None:
    return None if value is None else str(value)


def _typed_table(frame: pl.DataFrame) -> pl.DataFrame:
    cols = []
    for i, (name, dtype) in enumerate(frame.schema.items()):
        col = pl.col(name)
        if dtype == pl.Date:
            col = col.cast(pl.Datetime("ms")).dt.epoch("ms")
        elif isinstance(dtype, pl.Datetime):
            col = col.dt.epoch("ms")  # a naive datetime is taken as UTC
        cols.append(col.cast(pl.String).alias(f"c{i}"))
    return frame.select(
        pl.int_range(1, pl.len() + 1, dtype=pl.Int64).alias("line"),
        pl.lit(frame.width, pl.Int64).alias("nf"),
        *cols,
    )


def _row_text(loaded: _Loaded, line: int) -> str:
    """Return a data row as the file wrote it (CSV) or its fields joined by commas, clipped."""
    text = loaded.text.get(line)
    if text is None:
        row = loaded.table.filter(pl.col("line") == line).drop("line", "nf")
        text = ",".join("" if v is None else str(v) for v in (row.row(0) if row.height else ()))
    return text if len(text) <= 120 else text[:117] + "..."


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _is_header(fields: list[str]) -> bool:
    known = {a for names in _ALIASES.values() for a in names}
    return (
        not _is_number(fields[0])
        and not re.match(r"^\d{4}-\d\d-\d\d", fields[0])
        and any(_norm(f) in known or _VOLUME.match(_norm(f)) for f in fields)
    )


# --- detection: which layout, which kind, which column holds what ------------------------------


def _detect(
    path: Path,
    loaded: _Loaded,
    kind: Kind | Literal["auto"],
    columns: ColumnMap | None,
    symbol: str | None,
    notes: list[str],
) -> tuple[str, Kind, dict[str, str]]:
    table, header = loaded.table, loaded.header
    width = table.width - 2
    if columns is not None and columns.complete and columns.kind is not None:
        return "columns", columns.kind, _resolve(path, columns.roles, header, width)
    want = columns.kind if columns is not None and columns.kind is not None else kind
    try:
        layout, found_kind, found = _guess(path, loaded, want, symbol, notes)
    except UsageError:
        if columns is None:
            raise
        layout, found_kind, found = "columns", want if want != "auto" else "candles", {}
        if header is not None:  # keep what the header does name; --columns gives the rest
            names = [_norm(h) for h in header]
            found = _header_roles(names, header, found_kind, symbol, notes)
    roles = _resolve(path, found, header, width)
    if columns is not None:
        given = _resolve(path, columns.roles, header, width)
        roles = {r: c for r, c in roles.items() if c not in given.values()} | given
        layout = "columns" if layout == "columns" else f"{layout}+columns"
        missing = [r for r in _REQUIRED[found_kind] if r not in roles]
        if found_kind == "trades" and not {"side", "buyer_maker"} & roles.keys():
            missing.append("side (or buyer_maker)")
        if missing:
            raise UsageError(
                f"--columns: {found_kind} need {', '.join(missing)} as well; the file "
                f"does not name {'it' if len(missing) == 1 else 'them'} ({_first_row(loaded)})"
            )
    return layout, found_kind, roles


def _first_row(loaded: _Loaded) -> str:
    if loaded.table.is_empty():
        return "no data rows"
    line = int(loaded.table["line"][0])
    return f"first data row, line {line}: {_row_text(loaded, line)!r}"


def _guess(
    path: Path,
    loaded: _Loaded,
    kind: Kind | Literal["auto"],
    symbol: str | None,
    notes: list[str],
) -> tuple[str, Kind, dict[str, int | str]]:
    table, header = loaded.table, loaded.header
    width = table.width - 2
    if header is not None:
        names = [_norm(h) for h in header]
        if "symbol" in (symbol_at := _role_hits(names, "symbol")) and symbol is None:
            symbol = _column_symbol(table, f"c{symbol_at['symbol']}")
        found = _by_header(names, header, kind, symbol, notes)
        if found is None:
            raise UsageError(
                f"{path}: cannot tell candles or trades from the header "
                f"{','.join(header)} ({_first_row(loaded)}); give --columns "
                "ts=NAME,open=NAME,... or only the roles it missed, e.g. --columns volume=NAME"
            )
        layout_kind, roles = found
        layout = {"opentime": "binance-klines", "aggtradeid": "binance-aggtrades"}.get(
            names[0], f"{layout_kind}-header"
        )
        return layout, layout_kind, roles
    typical = table.filter(pl.col("nf") == width).head(1)
    sample = [str(v) for v in typical.row(0)[2:]] if typical.height else []
    is_bool = [s.lower() in ("true", "false") for s in sample]
    guess: tuple[str, Kind, dict[str, int | str]] | None = None
    if width == 6:
        guess = (f"ohlcv-{'json' if path.suffix == '.json' else 'csv'}", "candles", _at(_OHLCV))
    elif width == 12:
        guess = ("binance-klines", "candles", _at(_OHLCV + " - - trades"))
    elif width == 7 and is_bool[5]:  # id, price, qty, quote qty, time, buyer maker, best match
        guess = ("binance-trades", "trades", _at("id price amount - time buyer_maker"))
    elif width in (7, 8) and is_bool[6]:  # id, price, qty, first id, last id, time, maker[, best]
        guess = ("binance-aggtrades", "trades", _at("id price amount - - time buyer_maker"))
    if guess is None or kind not in ("auto", guess[1]):
        what = f"{width} columns with no header" + (f" as {guess[0]}" if guess else "")
        raise UsageError(
            f"{path}: cannot read {what} ({_first_row(loaded)}); give --columns "
            "ts=0,open=1,high=2,low=3,close=4,volume=5 (candles) or ts=0,price=1,amount=2,side=3 "
            "(trades)"
        )
    return guess


_OHLCV = "time open high low close volume"


def _at(spec: str) -> dict[str, int | str]:
    """Return the roles of a headerless layout: `"time open - price"` puts time in column 0."""
    return {role: i for i, role in enumerate(spec.split()) if role != "-"}


def _role_hits(names: list[str], *roles: str) -> dict[str, int]:
    hits: dict[str, int] = {}
    for role in roles:
        hit = next((i for i, n in enumerate(names) if n in _ALIASES[role]), None)
        if hit is not None and hit not in hits.values():
            hits[role] = hit
    return hits


def _by_header(
    names: list[str], header: list[str], kind: str, symbol: str | None, notes: list[str]
) -> tuple[Kind, dict[str, int | str]] | None:
    for candidate in ("candles", "trades"):
        if kind not in ("auto", candidate):
            continue
        said: list[str] = []
        roles = _header_roles(names, header, candidate, symbol, said)
        has_side = candidate == "candles" or {"side", "buyer_maker"} & roles.keys()
        if all(r in roles for r in _REQUIRED[candidate]) and has_side:
            notes.extend(said)
            return ("candles" if candidate == "candles" else "trades"), roles
    return None


def _header_roles(
    names: list[str], header: list[str], kind: str, symbol: str | None, said: list[str]
) -> dict[str, int | str]:
    """Return the roles a header names for `kind`, complete or not."""
    roles: dict[str, int | str] = dict(_role_hits(names, *_ROLES[kind]))
    if kind == "candles" and "volume" not in roles:
        picked = _pick_volume(names, header, symbol, said)
        if picked is not None:
            roles["volume"] = picked
    if "time" not in roles and _UNNAMED.match(names[0]) and 0 not in roles.values():
        roles["time"] = 0
        said.append(f"time from the unnamed first column {header[0]!r} (a pandas index)")
    return roles


def _pick_volume(
    names: list[str], header: list[str], symbol: str | None, said: list[str]
) -> int | None:
    """Pick the base-currency volume among columns like `Volume BTC,Volume USDT`."""
    units = {i: m["unit"] for i, n in enumerate(names) if (m := _VOLUME.match(n))}
    units = {i: u for i, u in units.items() if not u.startswith("at")}  # "volatility"
    if not units:
        return None
    base, _, rest = (symbol or "").lower().partition("/")
    quote = rest.partition(":")[0]

    def rank(unit: str) -> int:
        if unit in (base, "from", "base"):
            return 0
        if unit == quote or (unit in _FIAT and unit != base):
            return 2
        return 1

    best = min(units, key=lambda i: (rank(units[i]), i))
    others = [f"'{header[i]}'" for i in units if i != best]
    if others:
        best_rank = rank(units[best])
        alike = sum(rank(u) == best_rank for u in units.values())
        why = "the base currency" if best_rank == 0 or alike == 1 else "the first of them"
        said.append(
            f"volume from '{header[best]}' ({why}); {', '.join(others)} left out — "
            "give --columns volume=NAME to choose another"
        )
    return best


def _column_symbol(table: pl.DataFrame, col: str) -> str | None:
    values = table[col].drop_nulls().unique(maintain_order=True).head(2).to_list()
    return _as_symbol(values[0]) if len(values) == 1 else None


def _as_symbol(value: str) -> str | None:
    text = value.strip().upper()
    if re.fullmatch(r"[A-Z0-9]+/[A-Z0-9]+(:[A-Z0-9]+)?", text):
        return text
    return symbol_from_name(text)


def _one_symbol(
    path: Path, table: pl.DataFrame, col: str, given: str | None, notes: list[str]
) -> tuple[pl.DataFrame, str | None]:
    """Keep the rows of one symbol of a file's symbol column; return them and the symbol.

    The symbol is the one given, else the column's, else (returned as None) the file name's.
    """
    key = pl.col(col).str.to_uppercase().str.replace_all(r"[^A-Z0-9]", "")
    held = table.select(key.drop_nulls().unique(maintain_order=True)).to_series().to_list()
    named = symbol_from_name(path)
    if len(held) <= 1:
        said = _column_symbol(table, col)
        if given is not None and said is not None and _norm(said) != _norm(given):
            notes.append(f"the symbol column says {said}; stored as {given} (--symbol)")
        elif given is None and said is not None and named is not None and said != named:
            notes.append(f"the file name says {named}; the symbol column's {said} is used")
        return table, given or said
    wanted = given or named
    if wanted is None:
        shown = ", ".join(held[:5]) + (", ..." if len(held) > 5 else "")
        raise UsageError(
            f"{path}: the symbol column holds {len(held)} symbols ({shown}); give --symbol to "
            "import the rows of one"
        )
    kept = table.filter(key == _norm(wanted).upper())
    if kept.is_empty():
        raise UsageError(f"{path}: no row of {wanted} in the symbol column ({', '.join(held[:5])})")
    others = len(held) - 1
    notes.append(
        f"kept the {kept.height:,} rows of {wanted}; {table.height - kept.height:,} rows of "
        f"{others} other symbol{'s' if others > 1 else ''} left out"
    )
    return kept, wanted


def _resolve(
    path: Path, roles: dict[str, int | str], header: list[str] | None, width: int
) -> dict[str, str]:
    out = {}
    for role, where in roles.items():
        if isinstance(where, str):
            names = [h.strip() for h in header or []]
            if where not in names:
                raise UsageError(f"{path}: no column named {where!r}; columns: {', '.join(names)}")
            where = names.index(where)
        if where >= width:
            raise UsageError(
                f"{path}: column {where} of {role} is past the last column "
                f"({width - 1}); columns count from 0"
            )
        out[role] = f"c{where}"
    return out


# --- timeframe: the rows' spacing against what was declared ------------------------------------


def _spacing_ms(times: pl.Series) -> int | None:
    """Return the most common step between consecutive distinct times (the smallest on a tie)."""
    steps = times.drop_nulls().unique().sort().diff().drop_nulls()
    steps = steps.filter(steps > 0)
    return None if steps.is_empty() else int(steps.mode().min())  # type: ignore[arg-type]


def _duration(ms: int) -> str:
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1_000)):
        if ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


def _timeframes(path: Path, times: pl.Series, given: str | None, resample: bool) -> tuple[str, str]:
    """Return the timeframe of the rows and the one to store; raise if they disagree."""
    spacing = _spacing_ms(times)
    spaced = next((tf for tf, ms in TIMEFRAME_MS.items() if ms == spacing), None)
    named = timeframe_from_name(path)
    declared, source = (given, "--timeframe") if given else (named, "the file name")
    if declared is None:
        if spacing is None:
            return "1m", "1m"  # one row: nothing to measure
        if spaced is None:
            raise UsageError(
                f"{path}: rows are {_duration(spacing)} apart, which is no timeframe bfx stores "
                f"({', '.join(TIMEFRAMES)}); give --timeframe and --resample to build one"
            )
        return spaced, spaced
    want = TIMEFRAME_MS[declared]
    if spacing is None or spacing == want:
        return declared, declared
    if resample and spaced is not None and spacing < want and want % spacing == 0:
        return spaced, declared
    apart = f"rows are {_duration(spacing)} apart" + (f" ({spaced} candles)" if spaced else "")
    if resample:
        raise UsageError(
            f"{path}: {apart}; --resample builds a higher timeframe from a lower one that divides "
            f"it, so it cannot build {declared}"
        )
    fix = f"give --timeframe {spaced}, or " if spaced else ""
    raise UsageError(
        f"{path}: {apart}, but {source} says {declared}; {fix}add --resample to build "
        f"{declared} candles from them"
    )


def _resample(rows: list[CandleRow], source: str, target: str, notes: list[str]) -> list[CandleRow]:
    """Build `target` candles from `source` ones with the aggregator the provider runs live.

    Fed the file's candles in order, it emits each bucket once the candle that completes it (or
    the first of a later bucket) arrives; the bucket still forming when the file ends has not
    closed and is left out, as live.
    """
    aggregator = CandleAggregator([source, target])
    out = [
        row for candle in rows for tf, row in aggregator.add_candle(source, candle) if tf == target
    ]
    per_bucket = Counter(bucket_start(target, c.open_ms) for c in rows)
    ratio = TIMEFRAME_MS[target] // TIMEFRAME_MS[source]
    short = sum(1 for c in out if per_bucket[c.open_ms] < ratio)
    note = f"resampled {len(rows):,} {source} candles into {len(out):,} {target} candles"
    if short:
        note += (
            f"; {short:,} of them from fewer than {ratio} {source} candles (gaps, or a bucket "
            "the file starts inside)"
        )
    if aggregator.forming(target) is not None:
        note += f"; the last {target} candle is left out: the file ends before it closes"
    notes.append(note)
    return out


def _order_note(times: pl.Series, notes: list[str]) -> None:
    steps = times.drop_nulls().diff().drop_nulls()
    down, up = int((steps < 0).sum()), int((steps > 0).sum())
    if down > up:
        notes.append("rows were newest first; stored oldest first")
    elif down:
        notes.append(f"{down:,} rows were out of time order; stored in time order")


# --- parsing: typed columns plus one reason per bad row ---------------------------------------


def _reason(table: pl.DataFrame, checks: list[tuple[pl.Expr, pl.Expr]]) -> pl.Expr:
    """Return the message of the first failed check of each row (null when all pass)."""
    width = len([c for c in table.columns if re.fullmatch(r"c\d+", c)])
    fields = (
        pl.col("nf") != width,
        pl.format("expected {} fields, found {}", pl.lit(width), pl.col("nf")),
    )
    return pl.coalesce([pl.when(failed).then(message) for failed, message in [fields, *checks]])


def _time_check(roles: dict[str, str], failure: str) -> tuple[pl.Expr, pl.Expr]:
    before, _, after = failure.partition("{}")
    raw = pl.col(roles["time"]).fill_null("")
    return pl.col("time_ms").is_null(), pl.concat_str(pl.lit(before), raw, pl.lit(after))


def _number_checks(roles: dict[str, str], names: tuple[str, ...]) -> list[tuple[pl.Expr, pl.Expr]]:
    checks = []
    for name in names:
        raw = pl.col(roles[name]).fill_null("")
        checks.append((pl.col(name).is_null(), pl.format(f"{name} '{{}}' is not a number", raw)))
        checks.append((~pl.col(name).is_finite(), pl.lit(f"{name} is not finite")))
    return checks


def _split(frame: pl.DataFrame) -> tuple[pl.DataFrame, list[Rejected]]:
    bad = frame.filter(pl.col("reason").is_not_null()).sort("line")
    return (
        frame.filter(pl.col("reason").is_null()),
        [Rejected(*r) for r in bad.select("line", "reason").rows()],
    )


def _parse_candles(
    table: pl.DataFrame, roles: dict[str, str], failure: str, tf: str
) -> tuple[pl.DataFrame, list[Rejected]]:
    prices = ("open", "high", "low", "close")
    frame = table.with_columns(
        *[pl.col(roles[n]).cast(pl.Float64, strict=False).alias(n) for n in (*prices, "volume")],
        (
            pl.col(roles["trades"]).cast(pl.Float64, strict=False).cast(pl.Int64, strict=False)
            if "trades" in roles
            else pl.lit(None, pl.Int64)
        ).alias("trades"),
    )
    step = TIMEFRAME_MS[tf]
    offset = grid_offset(tf)
    raw_time = pl.col(roles["time"]).fill_null("")
    checks = [_time_check(roles, failure), *_number_checks(roles, (*prices, "volume"))]
    checks += [(pl.col(n) <= 0, pl.format(f"{n} {{}} is not positive", pl.col(n))) for n in prices]
    checks += [
        (pl.col("volume") < 0, pl.format("volume {} is negative", pl.col("volume"))),
        (
            pl.col("high") < pl.col("low"),
            pl.format("high {} is below low {}", pl.col("high"), pl.col("low")),
        ),
        (
            pl.col("high") < pl.max_horizontal("open", "close"),
            pl.format("high {} is below open or close", pl.col("high")),
        ),
        (
            pl.col("low") > pl.min_horizontal("open", "close"),
            pl.format("low {} is above open or close", pl.col("low")),
        ),
        (
            (pl.col("time_ms") - offset) % step != 0,
            pl.format(f"open time '{{}}' is not on a {tf} boundary", raw_time),
        ),
    ]
    frame = frame.with_columns(_reason(table, checks).alias("reason"))
    frame = _reject_duplicates(frame, ["time_ms"], "open time")
    good, rejected = _split(frame)
    good = good.select("time_ms", *prices, "volume", "trades").sort("time_ms")
    return good, rejected


def _parse_trades(
    table: pl.DataFrame, roles: dict[str, str], failure: str
) -> tuple[pl.DataFrame, list[Rejected]]:
    if "side" in roles:
        text = pl.col(roles["side"]).str.to_lowercase()
        side = (
            pl.when(text.is_in(["buy", "b", "bid"]))
            .then(pl.lit("buy"))
            .when(text.is_in(["sell", "s", "ask"]))
            .then(pl.lit("sell"))
        )
        side_raw = pl.col(roles["side"])
    else:
        text = pl.col(roles["buyer_maker"]).str.to_lowercase()
        # the buyer was the maker, so the aggressor sold
        side = (
            pl.when(text.is_in(["true", "1", "t"]))
            .then(pl.lit("sell"))
            .when(text.is_in(["false", "0", "f"]))
            .then(pl.lit("buy"))
        )
        side_raw = pl.col(roles["buyer_maker"])
    frame = table.with_columns(
        *[pl.col(roles[n]).cast(pl.Float64, strict=False).alias(n) for n in ("price", "amount")],
        side.otherwise(pl.lit(None, pl.String)).alias("side"),
        (pl.col(roles["id"]) if "id" in roles else pl.lit(None, pl.String)).alias("id"),
    )
    checks = [
        _time_check(roles, failure),
        *_number_checks(roles, ("price", "amount")),
        (pl.col("price") <= 0, pl.format("price {} is not positive", pl.col("price"))),
        (pl.col("amount") <= 0, pl.format("amount {} is not positive", pl.col("amount"))),
        (
            pl.col("side").is_null(),
            pl.format("side '{}' is not buy or sell", side_raw.fill_null("")),
        ),
    ]
    if "id" in roles:
        checks.append((pl.col("id").fill_null("") == "", pl.lit("empty trade id")))
    frame = frame.with_columns(_reason(table, checks).alias("reason"))
    if "id" in roles:
        frame = _reject_duplicates(frame, ["time_ms", "id"], "trade")
    else:  # no id in the file: number the trades of each millisecond in time, then file order
        frame = frame.sort("time_ms", "line", nulls_last=True).with_columns(
            pl.format("{}-{}", pl.col("time_ms"), pl.int_range(pl.len()).over("time_ms")).alias(
                "id"
            )
        )
    good, rejected = _split(frame)
    return good.select("time_ms", "id", "price", "amount", "side").sort("time_ms", "id"), rejected


def _reject_duplicates(frame: pl.DataFrame, keys: list[str], what: str) -> pl.DataFrame:
    first = (
        pl.when(pl.col("reason").is_null())
        .then(pl.col("line"))
        .min()
        .over(pl.when(pl.col("reason").is_null()).then(pl.struct(keys)))
    )
    dup = pl.col("reason").is_null() & (pl.col("line") != first)
    return frame.with_columns(
        pl.when(dup)
        .then(pl.format(f"duplicate {what} (first on line {{}})", first))
        .otherwise("reason")
        .alias("reason")
    )
