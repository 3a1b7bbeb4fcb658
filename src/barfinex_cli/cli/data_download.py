"""`bfx data download`: page an exchange's closed candles into the market store, resumably.

Thin: the command parses its options, builds the ccxt connector and shows a progress bar; the
download itself (the range, resuming after the last stored candle, one transaction per page) is
`market.download`. Offline, the command says so in one line (exit 3) and how far it got; it never
writes a candle the exchange did not send.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from barfinex_cli.contracts.times import from_ms, to_ms

if TYPE_CHECKING:
    from barfinex_cli.market.download import DownloadProgress

OFFLINE_HINT = "or work offline: `bfx data synth`, or `bfx data import FILE`"
"""What a download offline suggests instead (it has no --replay; those fill the store)."""


@dataclass
class Summary:
    """What a download did; printed as a line or as JSON."""

    exchange: str
    symbol: str
    timeframe: str
    store: str
    since: str
    until: str | None
    resumed_after: str | None
    expected: int
    rows: int
    first: str | None
    last: str | None
    pages: int
    rate_limit_waits: int
    rate_limited_by_exchange: int


def download(
    ctx: typer.Context,
    exchange: Annotated[
        str, typer.Argument(metavar="EXCHANGE", help="ccxt exchange id, e.g. binance, kraken, okx.")
    ],
    symbol: Annotated[
        str, typer.Argument(metavar="SYMBOL", help="Market, e.g. BTC/USDT (or the id BTCUSDT).")
    ],
    timeframe: Annotated[
        str, typer.Option("--timeframe", "-t", help="Candle timeframe: 1m 5m 15m 1h 4h 1d ...")
    ] = "1m",
    since: Annotated[
        str,
        typer.Option("--since", "-s", help="Start: ISO time (2024-05-01) or an age (30d)."),
    ] = "30d",
    until: Annotated[
        str | None, typer.Option("--until", "-u", help="End: ISO time or age (default: now).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Download closed candles from an exchange into the market store; rerun to resume.

    Pages through the exchange's history at its rate limit, writing each page as it comes.
    Keys are not needed for public history. Needs the network: offline it says so (exit 3).

    Examples:

      bfx data download binance BTC/USDT --since 90d --timeframe 1h

      bfx data download kraken ETH/EUR --since 2024-01-01 --until 2024-02-01 --json
    """
    import asyncio

    from barfinex_cli.cli.home import writable_home
    from barfinex_cli.cli.render import out, print_json
    from barfinex_cli.cli.timeparse import parse_time
    from barfinex_cli.errors import UsageError

    since_ms = to_ms(parse_time(since))
    until_ms = to_ms(parse_time(until)) if until is not None else None
    if until_ms is not None and until_ms < since_ms:
        raise UsageError(f"--until ({until}) is before --since ({since}); swap them")
    home = writable_home(ctx)  # before the network: a download must have somewhere to go
    summary = asyncio.run(
        _download(home / "market.db", exchange, symbol, timeframe, since_ms, until_ms)
    )
    if as_json:
        print_json(asdict(summary))
        return
    out().print(_line(summary))


async def _download(
    path: Path, exchange: str, symbol: str, timeframe: str, since_ms: int, until_ms: int | None
) -> Summary:
    from barfinex_cli.errors import BfxError
    from barfinex_cli.market.download import Downloader
    from barfinex_cli.provider.connectors.ccxt_conn import CcxtConnector, overrides_from_env
    from barfinex_cli.store.market import MarketStore, SeriesKey

    options, urls = overrides_from_env(exchange)
    conn = CcxtConnector(exchange, options=options, urls_override=urls)
    progress: DownloadProgress | None = None
    try:
        unified = await conn.market_symbol(symbol)
        conn.timeframe_ms(timeframe)  # the exchange offers it, or a UsageError naming those it does
        with MarketStore(path) as store, _progress_bar() as show:
            downloader = Downloader(conn, store, on_progress=show)
            progress = downloader.plan(
                SeriesKey(conn.exchange, unified, timeframe), since_ms, until_ms
            )
            await downloader.run(progress)
            return _summary(progress, path, conn.rate_limit_waits, conn.stats.rate_limited)
    except BfxError as exc:
        if "or use --replay" in str(exc):  # the connector's hint names a provider option
            exc = type(exc)(str(exc).replace("or use --replay", OFFLINE_HINT))
        got = progress
        if got is not None and got.first_ms is not None and got.last_ms is not None:
            # one line tells the whole story: what failed, and how far the download got
            raise type(exc)(
                f"{exc}; stored {got.rows} candles {_iso(got.first_ms)} → {_iso(got.last_ms)} "
                "before that — run the same command again to resume"
            ) from exc
        raise exc from None
    finally:
        await conn.stop()


def _summary(p: DownloadProgress, path: Path, waits: int, refused: int) -> Summary:
    return Summary(
        exchange=p.key.exchange,
        symbol=p.key.symbol,
        timeframe=p.key.timeframe,
        store=str(path),
        since=_iso(p.since_ms),
        until=_iso(p.until_ms) if p.until_ms is not None else None,
        resumed_after=_iso(p.resumed_after_ms) if p.resumed_after_ms is not None else None,
        expected=p.expected,
        rows=p.rows,
        first=_iso(p.first_ms) if p.first_ms is not None else None,
        last=_iso(p.last_ms) if p.last_ms is not None else None,
        pages=p.pages,
        rate_limit_waits=waits,
        rate_limited_by_exchange=refused,
    )


@contextlib.contextmanager
def _progress_bar() -> Iterator[Callable[[DownloadProgress], None]]:
    """Show a progress bar on stderr (only on a terminal); yield what a download reports to."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from barfinex_cli.cli.render import err

    bar = Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err(),
        transient=True,
        disable=not err().is_terminal,
    )
    task = bar.add_task("candles", total=None)

    def show(progress: DownloadProgress) -> None:
        bar.update(task, total=progress.expected, completed=progress.rows)

    with bar:
        yield show


def _line(s: Summary) -> str:
    head = f"{s.exchange} {s.symbol} {s.timeframe}: "
    after = f" (resumed after {s.resumed_after})" if s.resumed_after else ""
    waits = (
        f"rate-limit waits {s.rate_limit_waits} ({s.rate_limited_by_exchange} asked by the "
        "exchange)"
    )
    if s.rows == 0:
        return f"{head}nothing new to download{after}; {s.pages} pages, {waits} → {s.store}"
    return (
        f"{head}wrote {s.rows} of {s.expected} expected candles {s.first} → {s.last}{after} "
        f"in {s.pages} pages, {waits} → {s.store}"
    )


def _iso(ms: int) -> str:
    return from_ms(ms).strftime("%Y-%m-%dT%H:%MZ")
