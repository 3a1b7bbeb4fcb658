"""`bfx data`: import market files, list the series held, export them, make the synthetic market.

Everything lands in the market store, `market.db` in the data directory. Thin by design: parsing
and validation live in `market.files`, the generator in `market.synthetic`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, cast

import typer

from barfinex_cli.cli.state import state_of
from barfinex_cli.contracts.times import from_ms, to_ms

if TYPE_CHECKING:
    from barfinex_cli.store.market import MarketStore

app = typer.Typer(
    help=(
        "Market data in the local store (DATA_DIR/market.db): import, list, export, synth.\n\n"
        "No real market dataset is bundled (licences); `synth` makes a labelled synthetic one.\n\n"
        "Examples:\n\n"
        "  bfx data import BTCUSDT-1m-2024-01.zip\n\n"
        "  bfx data import prices.csv --symbol ETH/USDT --columns ts=0,open=1,high=2,low=3,"
        "close=4,volume=5\n\n"
        "  bfx data import BTCUSDT-1m-2024-01.csv --timeframe 5m --resample\n\n"
        "  bfx data list --json\n\n"
        "  bfx data export --exchange imported --symbol BTC/USDT --out btc.parquet\n\n"
        "  bfx data synth --days 7 --seed 7"
    ),
    no_args_is_help=True,
)

JsonOpt = Annotated[bool, typer.Option("--json", help="JSON on stdout, for scripts.")]
_BIG_FILE = 5_000_000  # bytes; above this, import reports its phases on stderr
_SHOWN_ERRORS = 20


def market_path(ctx: typer.Context) -> Path:
    """Return the market store file of this invocation's data directory."""
    return state_of(ctx).settings().home / "market.db"


def _open(ctx: typer.Context, *, write: bool, must_exist: bool = False) -> MarketStore:
    """Open the market store: checked for writing, or read-only (see `cli.home`)."""
    from barfinex_cli.cli.home import open_market

    return open_market(ctx, write=write, must_exist=must_exist)


def _iso(ms: int | None) -> str | None:

    if ms is None:
        return None
    return from_ms(ms).strftime("%Y-%m-%dT%H:%M:%SZ")


@app.command("import")
def import_(
    ctx: typer.Context,
    file: Annotated[
        Path, typer.Argument(metavar="FILE", help="CSV, JSON, Parquet or Feather (.zip/.gz too).")
    ],
    exchange: Annotated[str, typer.Option(help="Exchange name to store under.")] = "imported",
    symbol: Annotated[
        str | None,
        typer.Option(help="Symbol, e.g. BTC/USDT (default: the file's symbol column, or name)."),
    ] = None,
    timeframe: Annotated[
        str | None,
        typer.Option(help="Candle timeframe (default: file name, else the rows' spacing)."),
    ] = None,
    resample: Annotated[
        bool,
        typer.Option("--resample", help="Build --timeframe candles from rows of a lower one."),
    ] = False,
    kind: Annotated[str, typer.Option(help="candles, trades or auto.")] = "auto",
    columns: Annotated[
        str | None,
        typer.Option(
            help="Which column is what: ts=0,open=1,... or ts=Date,open=Open,...; or only "
            "the roles detection got wrong, e.g. volume='Volume USDT'."
        ),
    ] = None,
    time_format: Annotated[
        str | None,
        typer.Option(help="strftime format of the time column, e.g. '%d.%m.%Y %H:%M'."),
    ] = None,
    allow_rejects: Annotated[
        bool,
        typer.Option(
            "--allow-rejects", help="Import the valid rows even when some are rejected (exit 0)."
        ),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Import candles or trades from a file; bad rows are listed as FILE:LINE: REASON.

    A file is imported whole or not at all: when rows are rejected nothing is written and the
    exit code is 1, unless --allow-rejects keeps the valid rows. How the file was read where
    it was not plain (a preamble, the volume column picked, newest-first rows) is said as notes.

    Examples: bfx data import BTCUSDT-1m-2024-01.csv | bfx data import Binance_BTCUSDT_1h.csv |
    bfx data import prices.csv --symbol BTC/USDT --time-format '%d.%m.%Y %H:%M' |
    bfx data import BTCUSDT-1m.csv --timeframe 5m --resample
    """
    from barfinex_cli.cli.render import err, print_json
    from barfinex_cli.errors import BfxError, NotFound, UsageError
    from barfinex_cli.market.files import ColumnMap, import_file

    if kind not in ("auto", "candles", "trades"):
        raise UsageError(f"--kind {kind!r}: use candles, trades or auto")
    if exchange == "synthetic":
        raise UsageError("the exchange name 'synthetic' is kept for `bfx data synth`; pick another")
    column_map = ColumnMap.parse(columns) if columns else None
    if not file.is_file():
        raise NotFound(f"{file}: no such file")
    big = file.stat().st_size > _BIG_FILE
    with _open(ctx, write=True) as store:
        report = import_file(
            store,
            file,
            exchange=exchange,
            symbol=symbol,
            timeframe=timeframe,
            kind=cast('Literal["auto", "candles", "trades"]', kind),  # checked above
            columns=column_map,
            time_format=time_format,
            resample=resample,
            allow_rejects=allow_rejects,
            progress=(lambda msg: err().print(msg, style="dim")) if big else None,
        )
    if as_json:
        print_json(report.model_dump(mode="json"))
    else:
        for note in report.notes:
            err().print(f"note: {note}", markup=False, highlight=False)
        for line in report.errors[:_SHOWN_ERRORS]:
            err().print(line, markup=False, highlight=False)
        if report.rejected > _SHOWN_ERRORS:
            err().print(f"... and {report.rejected - _SHOWN_ERRORS:,} more (--json lists them all)")
    if report.imported == 0:
        raise BfxError(
            f"{report.rejected:,} of {report.rows_read:,} rows rejected, nothing imported; fix "
            f"them, or give --allow-rejects to import the {report.valid:,} valid "
            f"{report.kind}"
        )
    if not as_json:
        tf = f" {report.timeframe}" if report.timeframe else ""
        typer.echo(
            f"imported {report.imported:,} {report.kind} of {report.exchange} {report.symbol}{tf}"
            f" ({report.layout}, {report.format}), {report.first:%Y-%m-%d %H:%M} .. "
            f"{report.last:%Y-%m-%d %H:%M} UTC; {report.rows_read:,} rows read, "
            f"{report.rejected:,} rejected"
        )


@app.command("list")
def list_(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """List the series held: candles per timeframe, and trade tapes (timeframe 'trades').

    Example: bfx data list --json
    """
    from barfinex_cli.cli.render import err, print_json
    from barfinex_cli.market.synthetic import SYNTHETIC_EXCHANGE

    path = market_path(ctx)
    rows: list[dict[str, Any]] = []
    if path.exists():
        with _open(ctx, write=False) as store:
            for s in [*store.series(), *_trade_series(store)]:
                label = "synthetic" if s.exchange == SYNTHETIC_EXCHANGE else ""
                rows.append(
                    {
                        "exchange": s.exchange,
                        "symbol": s.symbol,
                        "timeframe": s.timeframe,
                        "rows": s.rows,
                        "first": _iso(s.first_ms),
                        "last": _iso(s.last_ms),
                        "label": label,
                    }
                )
    if as_json:
        print_json(rows)
        return
    if not rows:
        err().print(f"no series in {path} — try `bfx data import FILE` or `bfx data synth`")
        return
    # plain aligned columns: never truncated, whatever the terminal width, and easy to grep
    header = ("exchange", "symbol", "tf", "rows", "first", "last", "label")
    lines = [header]
    for r in rows:
        first, last = (str(r[k]).replace("T", " ")[:16] for k in ("first", "last"))
        lines.append(
            (r["exchange"], r["symbol"], r["timeframe"], f"{r['rows']:,}", first, last, r["label"])
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    for line in lines:
        cells = [
            c.rjust(w) if i == 3 else c.ljust(w)
            for i, (c, w) in enumerate(zip(line, widths, strict=True))
        ]
        typer.echo("  ".join(cells).rstrip())


def _trade_series(store: MarketStore) -> list[Any]:
    """Return one `SeriesInfo` per trade tape (timeframe 'trades')."""
    from barfinex_cli.store.market import SeriesInfo

    # MarketStore has no trade-series query yet; this reads its documented `trades` table.
    cursor = store.conn.execute(
        "SELECT exchange, symbol, 'trades', count(*), min(time_ms), max(time_ms) FROM trades "
        "GROUP BY exchange, symbol ORDER BY 1, 2"
    )
    return [SeriesInfo(*row) for row in cursor]


@app.command("export")
def export(
    ctx: typer.Context,
    exchange: Annotated[str, typer.Option(help="Exchange of the series (see `bfx data list`).")],
    symbol: Annotated[str, typer.Option(help="Symbol of the series, e.g. BTC/USDT.")],
    out_file: Annotated[Path, typer.Option("--out", "-o", help="FILE.csv or FILE.parquet.")],
    timeframe: Annotated[str, typer.Option(help="Candle timeframe, or 'trades'.")] = "1m",
    since: Annotated[str | None, typer.Option(help="From this time: ISO 8601 or 3d.")] = None,
    until: Annotated[str | None, typer.Option(help="Up to this time: ISO 8601 or 1h.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Export a series to CSV or Parquet, in a layout `bfx data import` reads back.

    Example: bfx data export --exchange synthetic --symbol BTC/USDT --out btc.csv --since 2d
    """
    from barfinex_cli.cli.render import print_json
    from barfinex_cli.cli.timeparse import parse_time
    from barfinex_cli.errors import NotFound, UsageError
    from barfinex_cli.market.files import export_candles, export_trades
    from barfinex_cli.store.market import SeriesKey

    if out_file.suffix not in (".csv", ".parquet"):
        raise UsageError(f"--out {out_file}: the file must end in .csv or .parquet")
    since_ms = to_ms(parse_time(since)) if since else None
    until_ms = to_ms(parse_time(until)) if until else None
    with _open(ctx, write=False, must_exist=True) as store:
        if timeframe == "trades":
            rows = export_trades(
                store, exchange, symbol, out_file, since_ms=since_ms, until_ms=until_ms
            )
        else:
            key = SeriesKey(exchange, symbol, timeframe)
            rows = export_candles(store, key, out_file, since_ms=since_ms, until_ms=until_ms)
    if rows == 0:
        raise NotFound(
            f"no {timeframe} rows of {exchange} {symbol} in that range — see `bfx data list`"
        )
    if as_json:
        print_json(
            {
                "file": str(out_file),
                "rows": rows,
                "exchange": exchange,
                "symbol": symbol,
                "timeframe": timeframe,
            }
        )
    else:
        typer.echo(f"wrote {rows:,} rows of {exchange} {symbol} {timeframe} to {out_file}")


@app.command("synth")
def synth(
    ctx: typer.Context,
    symbols: Annotated[
        list[str] | None,
        typer.Option("--symbols", "-s", help="Symbols, comma-separated or repeated."),
    ] = None,
    days: Annotated[float, typer.Option(help="Days of 1m candles.", min=0.001)] = 7.0,
    seed: Annotated[int, typer.Option(help="Seed: the same seed gives the same market.")] = 7,
    start: Annotated[str, typer.Option(help="First open time (UTC, ISO 8601).")] = "2024-01-01",
    trades: Annotated[bool, typer.Option(help="Store the trade tape too (many rows).")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Write the synthetic market into the store, under the exchange name 'synthetic'.

    It is generated, not recorded: regimes, clustered volatility, an intraday volume U-shape.

    Example: bfx data synth --symbols BTC/USDT,ETH/USDT --days 30 --seed 11
    """
    from barfinex_cli.cli.render import print_json
    from barfinex_cli.cli.timeparse import parse_time
    from barfinex_cli.market import synthetic
    from barfinex_cli.store.market import SeriesKey

    names = [s.strip() for arg in symbols or [] for s in arg.split(",") if s.strip()]
    names = names or list(synthetic.DEFAULT_SYMBOLS)
    start_ms = to_ms(parse_time(start))
    start_ms -= start_ms % synthetic.MINUTE_MS
    dataset = synthetic.default_dataset(names, start_ms=start_ms, days=days, seed=seed)
    written = []
    with _open(ctx, write=True) as store:
        for name, candles in dataset.items():
            key = SeriesKey(synthetic.SYNTHETIC_EXCHANGE, name, "1m")
            store.upsert_candles(key, candles)
            tape = synthetic.generate_trades(candles, name, seed) if trades else []
            if tape:
                store.upsert_trades(synthetic.SYNTHETIC_EXCHANGE, name, tape)
            written.append({"symbol": name, "candles": len(candles), "trades": len(tape)})
    if as_json:
        print_json(
            {
                "exchange": synthetic.SYNTHETIC_EXCHANGE,
                "seed": seed,
                "start": _iso(start_ms),
                "days": days,
                "series": written,
            }
        )
        return
    for w in written:
        extra = f" and {w['trades']:,} trades" if trades else ""
        typer.echo(f"synthetic {w['symbol']}: {w['candles']:,} 1m candles{extra} (seed {seed})")
