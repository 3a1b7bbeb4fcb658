"""Read candle and trade files in the layouts people actually have, and write them to the store.

Recognised without flags: ccxt/freqtrade OHLCV arrays (`.json`, or a CSV with no header), Binance
kline dumps (12 columns, open time in ms or µs), Binance aggTrades and trades dumps, and any CSV,
Parquet or Feather with named columns (`timestamp,open,high,low,close,volume` or
`timestamp,price,amount,side`; times as epoch s/ms/µs/ns or ISO 8601). Anything else is read with
an explicit `ColumnMap`. A `.zip` holding one CSV (as Binance ships them) and `.gz` are read as-is.

Every row is parsed and checked with polars expressions; a bad row becomes a `file:line: reason`
and the good rows are written in one transaction, so a file is never half imported. For JSON,
Parquet and Feather the "line" is the record number. CSV fields are split on commas and quotes
stripped: dumps of market data never quote a comma, and this keeps line numbers exact.

This module runs to ~700 lines because it holds every layout in one place, where they can be
compared; export (the inverse) lives here too so that a round trip is one module's promise.
"""

from __future__ import annotations

import gzip
import io
import json
import re
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal, NamedTuple

import polars as pl
from pydantic import BaseModel, ConfigDict

from barfinex_cli.contracts.times import from_ms
from barfinex_cli.errors import NotFound, UsageError
from barfinex_cli.market.candles import TIMEFRAME_MS, TIMEFRAMES, grid_offset, timeframe_ms
from barfinex_cli.store.market import CandleRow, MarketStore, SeriesKey, TradeRow

Kind = Literal["candles", "trades"]


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


_QUOTES = _words("FDUSD USDT USDC BUSD TUSD DAI EUR USD TRY BRL GBP BTC ETH BNB")
_ISO_FORMATS = _words(
    "%Y-%m-%dT%H:%M:%S%.f%:z %Y-%m-%dT%H:%M:%S%.f %Y-%m-%dT%H:%M%:z %Y-%m-%dT%H:%M %Y-%m-%d"
)
_ALIASES: dict[str, tuple[str, ...]] = {
    role: _words(names)
    for role, names in {
        "time": "timestamp time date datetime opentime ts t timems openms transacttime unix",
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
    }.items()
}
_REQUIRED: dict[str, tuple[str, ...]] = {
    "candles": ("time", "open", "high", "low", "close", "volume"),
    "trades": ("time", "price", "amount"),
}
_ROLES: dict[str, tuple[str, ...]] = {
    "candles": (*_REQUIRED["candles"], "trades"),
    "trades": (*_REQUIRED["trades"], "side", "buyer_maker", "id"),
}


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


@dataclass(frozen=True, slots=True)
class ColumnMap:
    """Which column holds which field: a 0-based index or a header name per role."""

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
        kind: Kind = "candles" if "open" in roles else "trades"
        missing = [r for r in _REQUIRED[kind] if r not in roles]
        if missing or (kind == "trades" and not {"side", "buyer_maker"} & roles.keys()):
            need = missing or ["side (or buyer_maker)"]
            raise UsageError(f"--columns: {kind} need {', '.join(need)} as well")
        return cls(roles)

    @property
    def kind(self) -> Kind:
        """Return what the map describes: candles when it names `open`, trades otherwise."""
        return "candles" if "open" in self.roles else "trades"


class Rejected(NamedTuple):
    """A row left out of an import: its line (record number for non-CSV files) and why."""

    line: int
    reason: str


@dataclass(frozen=True, slots=True)
class ParsedFile:
    """What one file held, already validated: good rows and the rejected ones."""

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

    @property
    def errors(self) -> list[str]:
        """Return every rejected row as `file:line: reason`."""
        return [f"{self.path}:{r.line}: {r.reason}" for r in self.rejected]


class ImportReport(BaseModel):
    """The outcome of importing one file into the market store."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    file: str
    format: str
    layout: str
    kind: Kind
    exchange: str
    symbol: str
    timeframe: str | None
    rows_read: int
    imported: int
    rejected: int
    errors: list[str]
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
) -> ParsedFile:
    """Read and validate one candle or trade file; raise `UsageError` if its layout is unknown."""
    path = Path(path)
    if not path.is_file():
        raise NotFound(f"{path}: no such file")
    if timeframe is not None:
        timeframe_ms(timeframe)  # raises naming the valid ones
    table, header, fmt = _load(path)
    layout, layout_kind, roles = _detect(path, table, header, kind, columns)
    rows_read = table.height
    if layout_kind == "candles":
        frame, rejected, tf = _parse_candles(table, roles, timeframe or timeframe_from_name(path))
        candles = [CandleRow(*row) for row in frame.iter_rows()]
        trades: list[TradeRow] = []
    else:
        frame, rejected = _parse_trades(table, roles)
        trades, candles, tf = list(map(TradeRow._make, frame.iter_rows())), [], None
    return ParsedFile(
        path,
        fmt,
        layout,
        layout_kind,
        symbol or symbol_from_name(path),
        tf,
        rows_read,
        candles,
        trades,
        rejected,
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
    progress: Callable[[str], None] | None = None,
) -> ImportReport:
    """Read `path` and write its good rows to `store` in one transaction; report the rest."""
    say = progress or (lambda _msg: None)
    say(f"reading {path}")
    parsed = read_file(path, kind=kind, columns=columns, symbol=symbol, timeframe=timeframe)
    if parsed.symbol is None:
        raise UsageError(f"{path}: the file name does not say the symbol; give --symbol BTC/USDT")
    good = len(parsed.candles) or len(parsed.trades)
    if not good:
        first = parsed.errors[0] if parsed.errors else f"{path}: no rows"
        raise UsageError(f"nothing to import: {parsed.rows_read} rows read, none valid ({first})")
    say(f"writing {good:,} {parsed.kind} ({len(parsed.rejected):,} rejected)")
    if parsed.kind == "candles":
        assert parsed.timeframe is not None
        store.upsert_candles(SeriesKey(exchange, parsed.symbol, parsed.timeframe), parsed.candles)
        first_ms, last_ms = parsed.candles[0].open_ms, parsed.candles[-1].open_ms
    else:
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
        imported=good,
        rejected=len(parsed.rejected),
        errors=parsed.errors,
        first=_utc(first_ms),
        last=_utc(last_ms),
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


def _utc(ms: int) -> datetime:
    return from_ms(ms)


# --- loading: every format becomes string columns c0..cN plus line and field count ------------


def _load(path: Path) -> tuple[pl.DataFrame, list[str] | None, str]:
    name = path.name.lower()
    if name.endswith((".parquet", ".feather", ".arrow", ".ipc")):
        fmt = "parquet" if name.endswith(".parquet") else "feather"
        frame = pl.read_parquet(path) if fmt == "parquet" else pl.read_ipc(path)
        return _typed_table(frame), frame.columns, fmt
    data = path.read_bytes()
    if name.endswith(".zip"):
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = [m for m in archive.namelist() if not m.endswith("/")]
            if len(members) != 1:
                raise UsageError(f"{path}: a zip must hold exactly one file, found {len(members)}")
            data, name = archive.read(members[0]), members[0].lower()
    elif name.endswith(".gz"):
        data, name = gzip.decompress(data), name[:-3]
    if not data.strip():
        raise UsageError(f"{path}: the file is empty")
    if name.endswith(".json"):
        return _json_table(path, data)
    return _csv_table(data)


def _csv_table(data: bytes) -> tuple[pl.DataFrame, list[str] | None, str]:
    lines = pl.read_csv(
        data,
        has_header=False,
        separator="\x1f",
        quote_char=None,
        infer_schema=False,
        new_columns=["text"],
    ).with_row_index("line", 1)
    lines = lines.filter(pl.col("text").str.strip_chars().str.len_chars() > 0)
    first = [f.strip().strip('"') for f in lines["text"][0].lstrip("\ufeff").split(",")]
    header = first if _is_header(first) else None
    if header is not None:
        lines = lines.slice(1)
    counts = lines.head(1000).select(pl.col("text").str.count_matches(",") + 1)
    # the usual field count of the first rows: one odd line at the top does not set the width
    width = len(header) if header else max(counts.to_series().mode().to_list(), default=0)
    text = pl.col("text").str.strip_prefix("\ufeff")
    names = [f"c{i}" for i in range(width)]
    table = lines.select(
        pl.col("line").cast(pl.Int64),
        (text.str.count_matches(",", literal=True) + 1).cast(pl.Int64).alias("nf"),
        text.str.split_exact(",", max(width - 1, 0)).struct.rename_fields(names).alias("fields"),
    ).unnest("fields")
    table = table.select("line", "nf", *[pl.col(n).str.strip_chars(' "\r\t') for n in names])
    return table, header, "csv"


def _json_table(path: Path, data: bytes) -> tuple[pl.DataFrame, list[str] | None, str]:
    try:
        doc = json.loads(data)
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
    return table, header, "json"


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
        and any(_norm(f) in known for f in fields)
    )


# --- detection: which layout, which kind, which column holds what ------------------------------


def _detect(
    path: Path,
    table: pl.DataFrame,
    header: list[str] | None,
    kind: Kind | Literal["auto"],
    columns: ColumnMap | None,
) -> tuple[str, Kind, dict[str, str]]:
    width = table.width - 2
    if columns is not None:
        return "columns", columns.kind, _resolve(path, columns.roles, header, width)
    if header is not None:
        names = [_norm(h) for h in header]
        found = _by_header(names, kind)
        if found is None:
            raise UsageError(
                f"{path}: cannot tell candles or trades from the header "
                f"{','.join(header)}; give --columns ts=NAME,open=NAME,... "
            )
        layout_kind, roles = found
        layout = {"opentime": "binance-klines", "aggtradeid": "binance-aggtrades"}.get(
            names[0], f"{layout_kind}-header"
        )
        return layout, layout_kind, _resolve(path, roles, header, width)
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
            f"{path}: cannot read {what}; give --columns ts=0,open=1,high=2,low=3,"
            "close=4,volume=5 (candles) or ts=0,price=1,amount=2,side=3 (trades)"
        )
    return guess[0], guess[1], _resolve(path, guess[2], None, width)


_OHLCV = "time open high low close volume"


def _at(spec: str) -> dict[str, int | str]:
    """Return the roles of a headerless layout: `"time open - price"` puts time in column 0."""
    return {role: i for i, role in enumerate(spec.split()) if role != "-"}


def _by_header(names: list[str], kind: str) -> tuple[Kind, dict[str, int | str]] | None:
    for candidate in ("candles", "trades"):
        if kind not in ("auto", candidate):
            continue
        roles: dict[str, int | str] = {}
        for role in _ROLES[candidate]:
            hit = next((i for i, n in enumerate(names) if n in _ALIASES[role]), None)
            if hit is not None and hit not in roles.values():
                roles[role] = hit
        has_side = candidate == "candles" or {"side", "buyer_maker"} & roles.keys()
        if all(r in roles for r in _REQUIRED[candidate]) and has_side:
            return ("candles" if candidate == "candles" else "trades"), roles
    return None


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


# --- parsing: typed columns plus one reason per bad row ---------------------------------------


def _time_ms(table: pl.DataFrame, col: str) -> pl.Series:
    """Epoch s/ms/µs/ns (told apart by magnitude) or ISO 8601, as UTC milliseconds."""
    text = pl.col(col)
    whole = text.cast(pl.Int64, strict=False)
    by_int = (
        pl.when(whole.abs() >= 10**17)
        .then(whole // 1_000_000)
        .when(whole.abs() >= 10**14)
        .then(whole // 1_000)
        .when(whole.abs() >= 10**11)
        .then(whole)
        .otherwise(whole * 1_000)
    )
    frac = text.cast(pl.Float64, strict=False)
    by_float = (pl.when(frac.abs() < 1e11).then(frac * 1000).otherwise(frac)).floor()
    numeric = table.select(pl.coalesce(by_int, by_float.cast(pl.Int64, strict=False))).to_series()
    if numeric.null_count() == table[col].null_count():
        return numeric.alias("time_ms")  # all epoch numbers: skip the costly ISO parse
    iso_text = text.str.replace(" ", "T").str.replace(r"Z$", "+00:00")
    iso = pl.coalesce(
        [
            iso_text.str.to_datetime(f, strict=False, time_zone="UTC", time_unit="ms")
            for f in _ISO_FORMATS
        ]
    ).dt.epoch("ms")
    return numeric.fill_null(table.select(iso).to_series()).alias("time_ms")


def _reason(table: pl.DataFrame, checks: list[tuple[pl.Expr, pl.Expr]]) -> pl.Expr:
    """Return the message of the first failed check of each row (null when all pass)."""
    width = table.width - 2
    fields = (
        pl.col("nf") != width,
        pl.format("expected {} fields, found {}", pl.lit(width), pl.col("nf")),
    )
    return pl.coalesce([pl.when(failed).then(message) for failed, message in [fields, *checks]])


def _number_checks(roles: dict[str, str], names: tuple[str, ...]) -> list[tuple[pl.Expr, pl.Expr]]:
    checks = []
    for name in names:
        raw = pl.col(roles[name]).fill_null("")
        checks.append((pl.col(name).is_null(), pl.format(f"{name} '{{}}' is not a number", raw)))
        checks.append((~pl.col(name).is_finite(), pl.lit(f"{name} is not finite")))
    return checks


def _split(frame: pl.DataFrame) -> tuple[pl.DataFrame, list[Rejected]]:
    bad = frame.filter(pl.col("reason").is_not_null())
    return (
        frame.filter(pl.col("reason").is_null()),
        [Rejected(*r) for r in bad.select("line", "reason").rows()],
    )


def _parse_candles(
    table: pl.DataFrame, roles: dict[str, str], timeframe: str | None
) -> tuple[pl.DataFrame, list[Rejected], str]:
    prices = ("open", "high", "low", "close")
    frame = table.with_columns(
        _time_ms(table, roles["time"]),
        *[pl.col(roles[n]).cast(pl.Float64, strict=False).alias(n) for n in (*prices, "volume")],
        (
            pl.col(roles["trades"]).cast(pl.Float64, strict=False).cast(pl.Int64, strict=False)
            if "trades" in roles
            else pl.lit(None, pl.Int64)
        ).alias("trades"),
    )
    tf = timeframe or _infer_timeframe(frame["time_ms"])
    step = TIMEFRAME_MS[tf]
    offset = grid_offset(tf)
    raw_time = pl.col(roles["time"]).fill_null("")
    checks = [
        (
            pl.col("time_ms").is_null(),
            pl.format("timestamp '{}' is neither epoch s/ms/µs nor an ISO 8601 time", raw_time),
        ),
        *_number_checks(roles, (*prices, "volume")),
    ]
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
    return good, rejected, tf


def _parse_trades(
    table: pl.DataFrame, roles: dict[str, str]
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
        _time_ms(table, roles["time"]),
        *[pl.col(roles[n]).cast(pl.Float64, strict=False).alias(n) for n in ("price", "amount")],
        side.otherwise(pl.lit(None, pl.String)).alias("side"),
        (pl.col(roles["id"]) if "id" in roles else pl.lit(None, pl.String)).alias("id"),
    )
    raw_time = pl.col(roles["time"]).fill_null("")
    checks = [
        (
            pl.col("time_ms").is_null(),
            pl.format("timestamp '{}' is neither epoch s/ms/µs nor an ISO 8601 time", raw_time),
        ),
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
    else:  # no id in the file: number the trades of each millisecond in file order
        frame = frame.with_columns(
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


def _infer_timeframe(times: pl.Series) -> str:
    steps = times.drop_nulls().unique().sort().diff().drop_nulls()
    step = steps.filter(steps > 0).median() if steps.len() else None
    for tf, ms in TIMEFRAME_MS.items():
        if step == ms:
            return tf
    return "1m"
