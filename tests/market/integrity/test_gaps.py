"""Integrity scans: holes, structural faults in arrival order, the seam, freshness and the score."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from barfinex_cli.market.integrity.gaps import (
    ScanConfig,
    Severity,
    scan_rows,
    scan_series,
    scan_store,
)
from barfinex_cli.store.market import CandleRow, MarketStore, SeriesKey

T0 = 1_704_067_200_000  # 2024-01-01T00:00Z, a Monday
MIN = 60_000
KEY = SeriesKey("binance", "BTC/USDT", "1m")


def candle(i: int, price: float = 100.0, step: int = MIN) -> CandleRow:
    return CandleRow(T0 + i * step, price, price + 1, price - 1, price, 2.0, 5)


def series(indices: list[int]) -> list[CandleRow]:
    return [candle(i) for i in indices]


def kinds(report: object) -> list[str]:
    return [d.kind for d in report.defects]  # type: ignore[attr-defined]


def test_a_clean_series_scores_100_with_no_defects() -> None:
    report = scan_rows(KEY, series(list(range(30))), since_ms=T0, until_ms=T0 + 29 * MIN)
    assert report.defects == ()
    assert (report.score, report.severity, report.expected) == (100.0, Severity.OK, 30)


def test_holes_before_the_first_and_after_the_last_candle_of_a_range_are_found() -> None:
    report = scan_rows(KEY, series([3, 4, 5, 8, 9]), since_ms=T0, until_ms=T0 + 11 * MIN)
    assert report.missing_ranges == (
        (T0, T0 + 2 * MIN),
        (T0 + 6 * MIN, T0 + 7 * MIN),
        (T0 + 10 * MIN, T0 + 11 * MIN),
    )
    details = [d.detail for d in report.defects]
    assert details == [
        "3 candle(s) missing before the first row",
        "2 candle(s) missing between rows",
        "2 candle(s) missing after the last row",
    ]
    assert report.severity is Severity.WARN
    assert report.expected == 12


def test_an_empty_range_is_one_hole() -> None:
    report = scan_rows(KEY, [], since_ms=T0 + 1, until_ms=T0 + 4 * MIN)
    assert report.missing_ranges == ((T0 + MIN, T0 + 4 * MIN),)
    assert report.count("hole") == 4


def test_duplicates_and_out_of_order_rows_in_an_arrival_sequence_are_found() -> None:
    rows = [*series([0, 1, 2, 3]), candle(2), candle(3, price=101.0), *series([5, 4, 6])]
    report = scan_rows(KEY, rows)
    by_kind = {d.kind: d for d in report.defects}
    assert by_kind["duplicate"].count == 2
    assert by_kind["duplicate"].detail == "2 repeated row(s) in history, 1 with conflicting values"
    assert (by_kind["out_of_order"].start_ms, by_kind["out_of_order"].count) == (T0 + 4 * MIN, 1)
    assert by_kind["duplicate"].severity is by_kind["out_of_order"].severity is Severity.CRITICAL
    assert report.refetch == (T0 + 3 * MIN,)  # the conflicting one: which version is true?
    assert report.missing_ranges == ()


def test_misaligned_rows_are_dropped_and_impossible_candles_refetched() -> None:
    off_grid = CandleRow(T0 + 2 * MIN + 30_000, 1.0, 1.0, 1.0, 1.0, 1.0, 1)
    impossible = CandleRow(T0 + 3 * MIN, 10.0, 9.0, 8.0, 10.0, 1.0, 1)  # high below open
    report = scan_rows(KEY, [*series([0, 1]), off_grid, impossible, candle(4)])
    assert sorted(kinds(report)) == ["bad_ohlc", "hole", "misaligned"]
    assert report.drop == (T0 + 2 * MIN + 30_000, T0 + 3 * MIN)
    assert report.refetch == (T0 + 3 * MIN,)  # dropped, then fetched again
    assert report.missing_ranges == ((T0 + 2 * MIN, T0 + 2 * MIN),)


def test_a_hole_at_the_seam_between_history_and_the_stream_is_critical() -> None:
    report = scan_series(KEY, series(list(range(10))), series([13, 14]))
    (seam,) = [d for d in report.defects if d.kind == "seam"]
    assert (seam.start_ms, seam.end_ms, seam.count) == (T0 + 10 * MIN, T0 + 12 * MIN, 3)
    assert seam.severity is Severity.CRITICAL
    assert "hole" not in kinds(report)  # reported once, as the seam
    assert report.missing_ranges == ((T0 + 10 * MIN, T0 + 12 * MIN),)


def test_two_versions_of_the_last_stored_candle_are_a_seam_defect() -> None:
    live = [CandleRow(T0 + 9 * MIN, 100.0, 105.0, 99.0, 104.0, 9.0, 50), candle(10)]
    report = scan_series(KEY, series(list(range(10))), live)
    assert kinds(report) == ["seam"]
    assert report.refetch == (T0 + 9 * MIN,)


def test_an_identical_overlap_at_the_seam_is_no_defect() -> None:
    report = scan_series(KEY, series(list(range(10))), series([8, 9, 10, 11]))
    assert report.defects == ()


def test_a_price_jump_across_the_seam_beyond_the_tolerance_is_found() -> None:
    history = series(list(range(10)))
    assert scan_series(KEY, history, [candle(10, price=100.9)]).defects == ()
    report = scan_series(KEY, history, [candle(10, price=102.0)])
    (seam,) = report.defects
    assert seam.kind == "seam" and "2.00% from the last close 100.0" in seam.detail
    tolerant = scan_series(
        KEY, history, [candle(10, price=102.0)], config=ScanConfig(seam_tolerance_pct=5)
    )
    assert tolerant.defects == ()


def test_a_feed_one_candle_behind_is_lagging_and_three_behind_is_stale() -> None:
    rows = series(list(range(10)))  # last candle opens at 9 and closes at 10
    on_time = scan_rows(KEY, rows, now_ms=T0 + 10 * MIN + 20_000)
    assert on_time.defects == ()
    lagging = scan_rows(KEY, rows, now_ms=T0 + 11 * MIN + 20_000)
    assert kinds(lagging) == ["lagging"] and lagging.severity is Severity.WARN
    assert lagging.missing_ranges == ((T0 + 10 * MIN, T0 + 10 * MIN),)
    stale = scan_rows(KEY, rows, now_ms=T0 + 13 * MIN + 20_000)
    assert kinds(stale) == ["stale"] and stale.defects[0].count == 3
    assert stale.score == 60.0


def test_the_score_subtracts_capped_penalties_per_kind() -> None:
    rows = series([i for i in range(100) if i not in (10, 11, 50)])
    report = scan_rows(KEY, rows)
    assert report.penalties == {"hole": 2 * 1.0 + 5.0 * 3}
    assert report.score == 83.0
    many_dupes = series(list(range(20))) * 3
    dupes = scan_rows(KEY, many_dupes)
    assert dupes.penalties == {"duplicate": 30.0}  # 40 repeats, capped
    assert dupes.severity is Severity.CRITICAL
    wrecked = scan_rows(KEY, series([0, 99]) * 10 + series([50, 40, 30, 20, 10]))
    assert wrecked.penalties == {"hole": 60.0, "duplicate": 30.0, "out_of_order": 25.0}
    assert wrecked.score == 0.0


def test_weekly_series_are_scanned_on_the_monday_grid(tmp_path: Path) -> None:
    week = 7 * 1_440 * MIN
    key = SeriesKey("binance", "BTC/USDT", "1w")
    with MarketStore(tmp_path / "market.db") as store:
        store.upsert_candles(key, [candle(i, step=week) for i in (0, 1, 3)])
        report = scan_store(store, key, since_ms=T0 - 3 * 1_440 * MIN, until_ms=T0 + 4 * week)
    assert report.missing_ranges == ((T0 + 2 * week, T0 + 2 * week), (T0 + 4 * week, T0 + 4 * week))
    assert report.since_ms == T0  # since aligned up to the next Monday


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 300),
    st.sets(st.integers(0, 299)),
    st.sampled_from(["1m", "5m", "4h", "1d"]),
)
def test_missing_ranges_are_exactly_the_removed_candles(
    n: int, removed: set[int], timeframe: str
) -> None:
    step = {"1m": MIN, "5m": 5 * MIN, "4h": 240 * MIN, "1d": 1_440 * MIN}[timeframe]
    key = SeriesKey("x", "Y/Z", timeframe)
    rows = [candle(i, step=step) for i in range(n) if i not in removed]
    report = scan_rows(key, rows, since_ms=T0, until_ms=T0 + (n - 1) * step)
    found = {ms for a, b in report.missing_ranges for ms in range(a, b + 1, step)}
    assert found == {T0 + i * step for i in removed if i < n}
    assert report.expected == n
    assert (report.score == 100.0) == (not found)


@pytest.mark.parametrize("count", [1, 3])
def test_to_dict_reports_the_table_figures(count: int) -> None:
    report = scan_rows(KEY, [*series([0, 1 + count]), candle(0)])
    data = report.to_dict()
    assert (data["holes"], data["missing"], data["duplicates"]) == (1, count, 1)
    assert data["severity"] == "critical"


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.integers(0, 120), max_size=80),
    st.lists(st.integers(0, 120), max_size=5),
    st.lists(st.integers(0, 120), max_size=3),
    st.one_of(st.none(), st.integers(-5, 60)),
    st.one_of(st.none(), st.integers(40, 130)),
    st.lists(st.integers(0, 130), max_size=4),
)
def test_the_store_scan_in_sql_equals_the_scan_of_the_stored_rows(
    tmp_path_factory: pytest.TempPathFactory,
    opens: list[int],
    off_grid: list[int],
    broken: list[int],
    since: int | None,
    until: int | None,
    live: list[int],
) -> None:
    rows = [candle(i) for i in opens]
    rows += [candle(i)._replace(open_ms=T0 + i * MIN + 7) for i in off_grid]
    rows += [candle(i)._replace(high=1.0) for i in broken]
    with MarketStore(tmp_path_factory.mktemp("db") / "market.db") as store:
        store.upsert_candles(KEY, rows)
        lo = None if since is None else T0 + since * MIN
        hi = None if until is None else T0 + until * MIN
        stream = [candle(i) for i in live]
        held = store.candles(KEY, since_ms=lo, until_ms=hi)
        in_sql = scan_store(store, KEY, live=stream, since_ms=lo, until_ms=hi)
        assert in_sql == scan_series(KEY, held, stream, since_ms=lo, until_ms=hi)
