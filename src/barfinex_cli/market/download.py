"""Resumable download of closed candles from a history source into the market store.

`bfx data download` (and anything else that fills the store from an exchange) pages a source's
history into `market.db`. The rules live here, below the CLI, so they hold for every caller:

- the range is the closed candles whose open time is in `[since, until]` (until: the last candle
  that has closed by now), on the timeframe's grid;
- a series already held from before `since` through it resumes after its last stored candle;
- each page is written in its own transaction as it arrives, so an interrupted download keeps
  what it fetched, and a rerun starts after it;
- pages are as long as the source's own page limit; a short or empty page ends the download (the
  source holds nothing more in the range). Nothing is written that the source did not send.

The source is anything with the connector's `fetch_candles` and `page_limit` (`PagedSource`);
this module knows no connector.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from barfinex_cli.market.candles import HistorySource, bucket_start, grid_offset, timeframe_ms
from barfinex_cli.store.market import CandleRow, MarketStore, SeriesKey


class PagedSource(HistorySource, Protocol):
    """A history source that pages, like the ccxt connector."""

    @property
    def page_limit(self) -> int:
        """Candles per history request."""
        ...


@dataclass
class DownloadProgress:
    """Where a download stands: its range, and what it has written so far.

    Attributes:
        key: The series written to.
        since_ms: The start asked for (any time; the range starts at the next candle open).
        until_ms: The end asked for (None: now).
        start_ms: Open time of the first candle to fetch (after the last stored one on a resume).
        end_ms: Open time of the last candle to fetch: the last closed by now, at most `until_ms`.
        step_ms: The timeframe's length.
        resumed_after_ms: The last stored candle a resume starts after, or None.
        rows: Candles written so far.
        pages: History requests made so far.
        first_ms: Open time of the first candle written, or None.
        last_ms: Open time of the last candle written, or None.
    """

    key: SeriesKey
    since_ms: int
    until_ms: int | None
    start_ms: int
    end_ms: int
    step_ms: int
    resumed_after_ms: int | None = None
    rows: int = 0
    pages: int = 0
    first_ms: int | None = None
    last_ms: int | None = None

    @property
    def expected(self) -> int:
        """Return how many candles the range spans (0 when there is nothing new)."""
        return max(0, (self.end_ms - self.start_ms) // self.step_ms + 1)


OnProgress = Callable[[DownloadProgress], None]
"""Called once the range is planned and again after every page written."""


def _ignore(progress: DownloadProgress) -> None:
    """Report nowhere (the default progress callback)."""


@dataclass
class Downloader:
    """Pages closed candles of one series from `source` into `store`, resuming what it holds.

    Args:
        source: Where history comes from (`fetch_candles` and `page_limit`).
        store: The market store written to, one transaction per page.
        on_progress: Told the plan, then the progress after each page (a progress bar).
        clock: Wall clock in seconds: which candles have closed.
    """

    source: PagedSource
    store: MarketStore
    on_progress: OnProgress = _ignore
    clock: Callable[[], float] = time.time

    def plan(self, key: SeriesKey, since_ms: int, until_ms: int | None = None) -> DownloadProgress:
        """Return the range a download of `key` would fetch, resuming after what the store holds.

        Raises:
            UsageError: The timeframe is unknown.
        """
        step = timeframe_ms(key.timeframe)
        start = since_ms + (grid_offset(key.timeframe) - since_ms) % step  # next open >= since
        last_closed = bucket_start(key.timeframe, int(self.clock() * 1000)) - step
        end = last_closed if until_ms is None else min(last_closed, until_ms)
        held = next((s for s in self.store.series() if SeriesKey(*s[:3]) == key), None)
        resumed = held is not None and held.first_ms <= start <= held.last_ms
        progress = DownloadProgress(key, since_ms, until_ms, start, end, step)
        if held is not None and resumed:
            progress.start_ms = held.last_ms + step
            progress.resumed_after_ms = held.last_ms
        return progress

    async def run(self, progress: DownloadProgress) -> DownloadProgress:
        """Fetch and write the planned range page by page; return `progress`, updated.

        `progress` is updated as each page lands, so after a failure (the source's `BfxError`
        passes through) it still tells how far the download got.
        """
        key, step, limit = progress.key, progress.step_ms, self.source.page_limit
        self.on_progress(progress)
        cursor = progress.start_ms
        while cursor <= progress.end_ms:
            got = await self.source.fetch_candles(
                key.symbol, key.timeframe, cursor, progress.end_ms, limit
            )
            progress.pages += 1
            page = _in_range(got, cursor, progress.end_ms)
            if not page:
                break  # the source holds nothing more in the range
            self.store.upsert_candles(key, page)
            progress.rows += len(page)
            progress.first_ms = page[0].open_ms if progress.first_ms is None else progress.first_ms
            progress.last_ms = page[-1].open_ms
            self.on_progress(progress)
            if len(got) < limit:
                break  # a short page: the source had no more than that
            cursor = page[-1].open_ms + step
        return progress

    async def download(
        self, key: SeriesKey, since_ms: int, until_ms: int | None = None
    ) -> DownloadProgress:
        """Plan and run a download of `key` (see `plan` and `run`)."""
        return await self.run(self.plan(key, since_ms, until_ms))


def _in_range(rows: list[CandleRow], first: int, last: int) -> list[CandleRow]:
    """Return the rows with `first <= open_ms <= last`, by open time, one per open time."""
    kept = {r.open_ms: r for r in rows if first <= r.open_ms <= last}
    return [kept[ms] for ms in sorted(kept)]
