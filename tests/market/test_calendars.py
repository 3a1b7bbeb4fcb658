"""Trading calendars: closures are not holes; flat zero-volume runs are suspected outages."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from barfinex_cli.contracts.times import to_ms
from barfinex_cli.errors import UsageError
from barfinex_cli.market.calendars import calendar_for, count_expected, expected_runs, sessions
from barfinex_cli.market.integrity.gaps import ScanConfig, scan_rows
from barfinex_cli.market.integrity.healing import Action, decide
from barfinex_cli.store.market import CandleRow, SeriesKey

DAY = 86_400_000
HOUR = 3_600_000
MIN = 60_000


def _row(ms: int, price: float = 100.0, volume: float = 2.0) -> CandleRow:
    return CandleRow(ms, price, price + 1, price - 1, price, volume, 5)


def _nyse_days(year: int) -> list[int]:
    """The open times of a daily series as an exchange exports it: trading days only."""
    import holidays

    closed = holidays.financial_holidays("NYSE", years=year)
    day, out = date(year, 1, 1), []
    while day.year == year:
        if day.weekday() < 5 and day not in closed:
            out.append(to_ms(datetime(day.year, day.month, day.day, tzinfo=UTC)))
        day += timedelta(days=1)
    return out


def test_a_clean_daily_stock_series_is_clean_on_the_nyse_calendar_not_on_24_7() -> None:
    key = SeriesKey("stooq", "SPY", "1d")
    rows = [_row(ms) for ms in _nyse_days(2024)]
    assert len(rows) == 252
    on_nyse = scan_rows(key, rows, config=ScanConfig(calendar="nyse"))
    assert on_nyse.defects == () and on_nyse.score == 100 and on_nyse.expected == 252
    on_crypto_time = scan_rows(key, rows)
    assert {d.kind for d in on_crypto_time.defects} == {"hole"} and on_crypto_time.score < 60


def test_a_missing_trading_day_is_still_a_hole_on_the_nyse_calendar() -> None:
    key = SeriesKey("stooq", "SPY", "1d")
    opens = _nyse_days(2024)
    rows = [_row(ms) for ms in opens[:100] + opens[101:]]
    report = scan_rows(key, rows, config=ScanConfig(calendar="nyse"))
    assert [(d.kind, d.start_ms, d.count) for d in report.defects] == [("hole", opens[100], 1)]


def test_an_fx_weekend_is_no_hole_on_the_24_5_calendar() -> None:
    key = SeriesKey("oanda", "EUR/USD", "1h")
    start = to_ms(datetime(2024, 1, 1, tzinfo=UTC))  # a Monday
    opens = [ms for a, b in expected_runs("24/5", start, start + 14 * DAY, HOUR)
             for ms in range(a, b + 1, HOUR)]  # fmt: skip
    rows = [_row(ms) for ms in opens]
    report = scan_rows(key, rows, config=ScanConfig(calendar="24/5"))
    assert report.defects == () and report.score == 100
    weekend = to_ms(datetime(2024, 1, 6, 12, tzinfo=UTC))  # Saturday noon
    assert weekend not in opens
    assert scan_rows(key, rows).has("hole")


def test_sessions_follow_new_york_time_across_daylight_saving() -> None:
    winter, summer = sessions("24/5", date(2024, 1, 7)), sessions("24/5", date(2024, 7, 7))
    assert datetime.fromtimestamp(winter[0][0] / 1000, UTC).hour == 22  # 17:00 EST
    assert datetime.fromtimestamp(summer[0][0] / 1000, UTC).hour == 21  # 17:00 EDT
    assert sessions("24/5", date(2024, 1, 6)) == []  # Saturday
    open_, close = sessions("nyse", date(2024, 7, 8))[0]
    assert (close - open_) == int(6.5 * HOUR)
    assert sessions("nyse", date(2024, 12, 25)) == []  # Christmas


def test_counting_a_year_of_minutes_on_a_calendar_is_exact() -> None:
    lo = to_ms(datetime(2024, 1, 1, tzinfo=UTC))
    hi = to_ms(datetime(2024, 12, 31, 23, 59, tzinfo=UTC))
    assert count_expected("24/7", lo, hi, MIN) == 366 * 1440
    assert count_expected("weekdays", lo, hi, MIN) == 262 * 1440
    assert count_expected("nyse", lo, hi, DAY) == 252


def test_a_run_of_flat_zero_volume_candles_is_a_suspected_outage_not_clean() -> None:
    key = SeriesKey("binance", "BTC/USDT", "1m")
    t0 = to_ms(datetime(2024, 1, 1, tzinfo=UTC))
    rows = [_row(t0 + i * MIN) for i in range(100)]
    for i in range(40, 47):  # seven minutes of the exchange filling its own outage
        rows[i] = CandleRow(t0 + i * MIN, 100.0, 100.0, 100.0, 100.0, 0.0, 0)
    rows[80] = CandleRow(t0 + 80 * MIN, 100.0, 100.0, 100.0, 100.0, 0.0, 0)  # one quiet minute
    report = scan_rows(key, rows)
    outages = [d for d in report.defects if d.kind == "outage"]
    assert [(d.start_ms, d.count) for d in outages] == [(t0 + 40 * MIN, 7)]
    assert "7 flat zero-volume" in outages[0].detail
    assert report.score < 100
    action, reason = decide(report)
    assert action is Action.NONE and "outage" in reason  # nothing better to fetch


def test_the_calendars_setting_maps_series_by_glob_first_match_wins() -> None:
    mapping = {"oanda:*": "24/5", "*:SPY": "nyse", "*": "24/7"}
    assert calendar_for("oanda", "EUR/USD", mapping) == "24/5"
    assert calendar_for("stooq", "SPY", mapping) == "nyse"
    assert calendar_for("binance", "BTC/USDT", mapping) == "24/7"
    assert calendar_for("binance", "BTC/USDT") == "24/7"
    with pytest.raises(UsageError, match="unknown calendar 'moon'"):
        calendar_for("x", "y", {"*": "moon"})
