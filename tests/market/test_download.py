"""Downloads page a history source into the store by its page limit and resume what it holds.

Two sources: the real ccxt connector against the Binance-shaped loopback server of
`provider.fake_exchange`, and a small in-memory source (a `PagedSource` that serves a fixed
series and records what it was asked), for the paging rules one by one.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from barfinex_cli.errors import ServiceUnreachable, UsageError
from barfinex_cli.market.candles import WEEK_OFFSET_MS
from barfinex_cli.market.download import Downloader, DownloadProgress, PagedSource
from barfinex_cli.market.synthetic import generate_candles
from barfinex_cli.provider.connectors.ccxt_conn import CcxtConnector
from barfinex_cli.store.market import CandleRow, MarketStore, SeriesKey
from provider.fake_exchange import FakeBinance, expected

MINUTE = 60_000
START = 1_704_067_200_000  # 2024-01-01T00:00Z
ROWS = generate_candles("BTC/USDT", START, 20)
KEY = SeriesKey("memory", "BTC/USDT", "1m")
LATER = (START + 60 * MINUTE) / 1000  # a clock an hour after the series began


class Memory:
    """A history source over a fixed list of candles, `page_limit` at a time, that can fail."""

    def __init__(self, rows: list[CandleRow], page_limit: int, fail_at: int | None = None) -> None:
        self.rows = rows
        self.page_limit = page_limit
        self.fail_at = fail_at
        self.asked: list[tuple[int, int | None, int | None]] = []

    async def fetch_candles(
        self,
        symbol: str,
        timeframe: str,
        since_ms: int,
        until_ms: int | None = None,
        limit: int | None = None,
    ) -> list[CandleRow]:
        self.asked.append((since_ms, until_ms, limit))
        if self.fail_at is not None and len(self.asked) > self.fail_at:
            raise ServiceUnreachable("cannot reach memory (offline?): connection refused")
        held = [r for r in self.rows if since_ms <= r.open_ms <= (until_ms or 2**62)]
        return held[:limit] if limit is not None else held


@pytest.fixture
def store(tmp_path: Path) -> Iterator[MarketStore]:
    with MarketStore(tmp_path / "market.db") as market:
        yield market


def _downloader(source: PagedSource, store: MarketStore, seen: list[int]) -> Downloader:
    def record(progress: DownloadProgress) -> None:
        seen.append(progress.rows)

    return Downloader(source, store, on_progress=record, clock=lambda: LATER)


async def test_pages_follow_the_source_limit_and_a_short_page_ends_the_download(
    store: MarketStore,
) -> None:
    source, seen = Memory(ROWS, page_limit=8), list[int]()
    done = await _downloader(source, store, seen).download(KEY, START)
    assert [(since - START) // MINUTE for since, _, _ in source.asked] == [0, 8, 16]
    assert {limit for _, _, limit in source.asked} == {8}
    assert (done.rows, done.pages, done.expected) == (20, 3, 60)  # the clock allows 60 closed
    assert (done.first_ms, done.last_ms) == (START, ROWS[-1].open_ms)
    assert seen == [0, 8, 16, 20]  # the plan, then once per page
    assert store.candles(KEY) == ROWS


async def test_a_rerun_resumes_after_the_last_stored_candle(store: MarketStore) -> None:
    store.upsert_candles(KEY, ROWS[:12])
    source = Memory(ROWS, page_limit=100)
    downloader = Downloader(source, store, clock=lambda: LATER)
    plan = downloader.plan(KEY, START, ROWS[-1].open_ms)
    assert (plan.resumed_after_ms, plan.start_ms, plan.expected) == (
        ROWS[11].open_ms, ROWS[12].open_ms, 8,
    )  # fmt: skip
    done = await downloader.run(plan)
    assert source.asked == [(ROWS[12].open_ms, ROWS[-1].open_ms, 100)]
    assert done.rows == 8 and store.candles(KEY) == ROWS


async def test_a_start_before_the_stored_series_fetches_the_whole_range_again(
    store: MarketStore,
) -> None:
    store.upsert_candles(KEY, ROWS[5:])
    downloader = Downloader(Memory(ROWS, page_limit=100), store, clock=lambda: LATER)
    done = await downloader.download(KEY, START)
    assert done.resumed_after_ms is None and done.rows == 20 and store.candles(KEY) == ROWS


async def test_nothing_new_asks_the_source_nothing(store: MarketStore) -> None:
    store.upsert_candles(KEY, ROWS)
    source = Memory(ROWS, page_limit=100)
    done = await Downloader(source, store, clock=lambda: LATER).download(
        KEY, START, ROWS[-1].open_ms
    )
    assert (done.expected, done.rows, done.pages, source.asked) == (0, 0, 0, [])


async def test_the_candle_still_forming_and_rows_outside_the_range_are_never_written(
    store: MarketStore,
) -> None:
    now = (ROWS[9].open_ms + 30_000) / 1000  # candle 9 is still forming
    source = Memory([ROWS[3], *ROWS], page_limit=100)  # a duplicate, and rows past the end
    done = await Downloader(source, store, clock=lambda: now).download(KEY, START + 1)
    assert source.asked == [(ROWS[1].open_ms, ROWS[8].open_ms, 100)]  # next open after `since`
    assert done.expected == 8 and store.candles(KEY) == ROWS[1:9]


async def test_a_failure_midway_keeps_the_pages_written_and_says_how_far(
    store: MarketStore,
) -> None:
    downloader = Downloader(Memory(ROWS, page_limit=5, fail_at=2), store, clock=lambda: LATER)
    plan = downloader.plan(KEY, START)
    with pytest.raises(ServiceUnreachable, match="connection refused"):
        await downloader.run(plan)
    assert (plan.rows, plan.last_ms) == (10, ROWS[9].open_ms)
    assert store.candles(KEY) == ROWS[:10]
    again = await Downloader(Memory(ROWS, page_limit=5), store, clock=lambda: LATER).download(
        KEY, START
    )
    assert again.resumed_after_ms == ROWS[9].open_ms and store.candles(KEY) == ROWS


def test_weeks_start_on_monday_and_an_unknown_timeframe_is_refused(store: MarketStore) -> None:
    downloader = Downloader(Memory([], page_limit=10), store, clock=time.time)
    week = downloader.plan(SeriesKey("memory", "BTC/USDT", "1w"), START)  # a Monday
    assert week.start_ms == START and (week.start_ms - WEEK_OFFSET_MS) % (7 * 1_440 * MINUTE) == 0
    with pytest.raises(UsageError, match="unknown timeframe '7m'"):
        downloader.plan(SeriesKey("memory", "BTC/USDT", "7m"), START)


@pytest.fixture
async def fake() -> AsyncIterator[FakeBinance]:
    server = FakeBinance()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def binance(fake: FakeBinance) -> AsyncIterator[CcxtConnector]:
    conn = CcxtConnector("binance", rate_limit_ms=1, **fake.connector_kwargs())
    yield conn
    await conn.stop()


async def test_the_ccxt_connector_pages_by_the_exchange_limit_and_resumes(
    fake: FakeBinance, binance: CcxtConnector, store: MarketStore
) -> None:
    key = SeriesKey("binance", "BTC/USDT", "1m")
    since = int(time.time() * 1000) // MINUTE * MINUTE - 1500 * MINUTE
    until = since + 1399 * MINUTE
    first = await Downloader(binance, store).download(key, since, until)
    assert (first.rows, first.pages, first.expected) == (1400, 2, 1400)
    assert [r[:6] for r in store.candles(key)] == [
        expected("BTCUSDT", since + i * MINUTE) for i in range(1400)
    ]
    klines = len(fake.seen("klines"))
    second = await Downloader(binance, store).download(key, since)
    assert int(fake.seen("klines")[klines].params["startTime"]) == until + MINUTE
    assert second.resumed_after_ms == until and second.rows >= 99
    opens = [r.open_ms for r in store.candles(key)]
    assert opens == [since + i * MINUTE for i in range(len(opens))]
