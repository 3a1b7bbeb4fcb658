"""`bfx data download`: page an exchange's closed candles into the market store, resumably.

Each page is written in its own transaction as it arrives, so an interrupted download keeps what
it fetched and the next run starts after the last stored candle. Offline, the command says so in
one line (exit 3) and how far it got; it never writes a candle the exchange did not send.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer

from barfinex_cli.cli.state import state_of
from barfinex_cli.contracts.times import from_ms, to_ms


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
    exchange: Annotated[str, typer.Argument(help="ccxt exchange id, e.g. binance, kraken, okx.")],
    symbol: Annotated[str, typer.Argument(help="Market, e.g. BTC/USDT (or the id BTCUSDT).")],
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

    from barfinex_cli.cli.render import out, print_json
    from barfinex_cli.cli.timeparse import parse_time
    from barfinex_cli.errors import UsageError

    settings = state_of(ctx).settings()
    since_ms = _ms(parse_time(since))
    until_ms = _ms(parse_time(until)) if until is not None else None
    if until_ms is not None and until_ms < since_ms:
        raise UsageError(f"--until ({until}) is before --since ({since}); swap them")
    summary = asyncio.run(
        _download(settings.home / "market.db", exchange, symbol, timeframe, since_ms, until_ms)
    )
    if as_json:
        print_json(asdict(summary))
        return
    out().print(_line(summary))


async def _download(
    path: Path, exchange: str, symbol: str, timeframe: str, since_ms: int, until_ms: int | None
) -> Summary:
    from barfinex_cli.errors import BfxError
    from barfinex_cli.market.candles import grid_offset
    from barfinex_cli.provider.connectors.ccxt_conn import (
        CcxtConnector,
        last_closed_open,
        overrides_from_env,
    )
    from barfinex_cli.store.market import MarketStore, SeriesKey

    options, urls = overrides_from_env(exchange)
    conn = CcxtConnector(exchange, options=options, urls_override=urls)
    summary: Summary | None = None
    try:
        unified = await conn.market_symbol(symbol)
        tf_ms = conn.timeframe_ms(timeframe)
        key = SeriesKey(conn.exchange, unified, timeframe)
        with MarketStore(path) as store:
            offset = grid_offset(timeframe)  # weeks open on Mondays, not on the epoch's Thursday
            start = since_ms + (offset - since_ms) % tf_ms
            held = next((s for s in store.series() if SeriesKey(*s[:3]) == key), None)
            resumed = held is not None and held.first_ms <= start <= held.last_ms
            if held is not None and resumed:
                start = held.last_ms + tf_ms
            end = last_closed_open(tf_ms, until_ms, offset)
            summary = Summary(
                exchange=conn.exchange,
                symbol=unified,
                timeframe=timeframe,
                store=str(path),
                since=_iso(since_ms),
                until=_iso(until_ms) if until_ms is not None else None,
                resumed_after=_iso(held.last_ms) if held is not None and resumed else None,
                expected=max(0, (end - start) // tf_ms + 1),
                rows=0,
                first=None,
                last=None,
                pages=0,
                rate_limit_waits=0,
                rate_limited_by_exchange=0,
            )
            with _progress(summary.expected) as advance:
                try:
                    async for page in conn.candle_pages(unified, timeframe, start, until_ms):
                        store.upsert_candles(key, page)
                        summary.rows += len(page)
                        summary.first = summary.first or _iso(page[0].open_ms)
                        summary.last = _iso(page[-1].open_ms)
                        advance(len(page))
                finally:
                    summary.pages = conn.pages
                    summary.rate_limit_waits = conn.rate_limit_waits
                    summary.rate_limited_by_exchange = conn.stats.rate_limited
    except BfxError as exc:
        if summary is not None and summary.rows:
            # one line tells the whole story: what failed, and how far the download got
            raise type(exc)(
                f"{exc}; stored {summary.rows} candles {summary.first} → {summary.last} before "
                "that — run the same command again to resume"
            ) from exc
        raise
    finally:
        await conn.stop()
    return summary


@contextlib.contextmanager
def _progress(total: int) -> Iterator[Callable[[int], None]]:
    """Show a progress bar on stderr (only on a terminal); yield `advance(n)`."""
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
    task = bar.add_task("candles", total=total)
    with bar:
        yield lambda n: bar.advance(task, n)


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


def _ms(value: datetime) -> int:
    return to_ms(value)


def _iso(ms: int) -> str:
    return from_ms(ms).strftime("%Y-%m-%dT%H:%MZ")
