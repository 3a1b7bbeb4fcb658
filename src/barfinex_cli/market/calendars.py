"""Trading calendars: when a market is open, so the gap scan does not call a closure a hole.

A candle is expected when its interval overlaps a trading session. The calendars:

    24/7       crypto: always open (the default)
    24/5       FX: from Sunday 17:00 to Friday 17:00, New York time
    weekdays   Monday to Friday, all day (UTC), for equities and ETFs without a holiday list
    nyse       NYSE trading days (weekdays less the exchange's holidays, from the `holidays`
               package), 09:30-16:00 New York time

Which series uses which comes from `--calendar` on the integrity commands, or the `[calendars]`
setting: glob patterns over `exchange:symbol` mapped to a calendar name, first match wins
(`"oanda:*" = "24/5"`, `"*:SPY" = "nyse"`). Sessions are computed per day, so counting the
expected candles of a year costs a few hundred steps, not one per candle.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterator, Mapping
from datetime import UTC, date, datetime, time, timedelta
from functools import cache
from typing import Literal, get_args
from zoneinfo import ZoneInfo

from barfinex_cli.contracts.times import to_ms
from barfinex_cli.errors import UsageError

CalendarName = Literal["24/7", "24/5", "weekdays", "nyse"]
CALENDARS: tuple[str, ...] = get_args(CalendarName)
_NEW_YORK = ZoneInfo("America/New_York")
_DAY_MS = 86_400_000


def check(name: str) -> CalendarName:
    """Return `name` as a calendar name, or raise a `UsageError` listing the known ones."""
    if name not in CALENDARS:
        raise UsageError(f"unknown calendar {name!r} — use one of {', '.join(CALENDARS)}")
    return name  # type: ignore[return-value]


def calendar_for(
    exchange: str, symbol: str, mapping: Mapping[str, str] | None = None
) -> CalendarName:
    """Return the calendar of a series: the first `[calendars]` pattern it matches, else 24/7."""
    for pattern, name in (mapping or {}).items():
        if fnmatch.fnmatchcase(f"{exchange}:{symbol}", pattern):
            return check(name)
    return "24/7"


def _ny(day: date, clock: time) -> int:
    return to_ms(datetime.combine(day, clock, _NEW_YORK))


@cache
def _nyse_holidays(year: int) -> frozenset[date]:
    import holidays

    return frozenset(holidays.financial_holidays("NYSE", years=year).keys())


def sessions(name: CalendarName, day: date) -> list[tuple[int, int]]:
    """Return the trading sessions that start on `day` as [start, end) epoch-ms intervals."""
    weekday = day.weekday()  # Monday 0 .. Sunday 6
    if name == "24/7":
        start = to_ms(datetime.combine(day, time(), UTC))
        return [(start, start + _DAY_MS)]
    if name == "weekdays":
        start = to_ms(datetime.combine(day, time(), UTC))
        return [(start, start + _DAY_MS)] if weekday < 5 else []
    if name == "24/5":
        # The FX week: Sunday 17:00 New York to Friday 17:00; each session runs 17:00 to 17:00.
        if weekday in (4, 5):  # Friday's 17:00 session would run into Saturday: closed
            return []
        return [(_ny(day, time(17)), _ny(day + timedelta(days=1), time(17)))]
    if weekday >= 5 or day in _nyse_holidays(day.year):
        return []
    return [(_ny(day, time(9, 30)), _ny(day, time(16)))]


def expected_runs(
    name: CalendarName, lo: int, hi: int, step: int, offset: int = 0
) -> Iterator[tuple[int, int]]:
    """Yield runs (first, last open time) of the candles in [lo, hi] the calendar expects.

    A candle opening at `ms` is expected when [ms, ms + step) overlaps a session.
    """
    if hi < lo:
        return
    if name == "24/7":
        yield lo, hi
        return
    first_day = datetime.fromtimestamp((lo - _DAY_MS) / 1000, UTC).date()
    last_day = datetime.fromtimestamp((hi + step + _DAY_MS) / 1000, UTC).date()
    pending: tuple[int, int] | None = None
    day = first_day
    while day <= last_day:
        for a, b in sessions(name, day):
            first = a - (a - offset) % step  # the candle that contains the session's start
            last = (b - 1) - ((b - 1) - offset) % step
            first, last = max(first, lo), min(last, hi)
            if first > last:
                continue
            if pending is not None and first <= pending[1] + step:
                pending = (pending[0], max(pending[1], last))
            else:
                if pending is not None:
                    yield pending
                pending = (first, last)
        day += timedelta(days=1)
    if pending is not None:
        yield pending


def count_expected(name: CalendarName, lo: int, hi: int, step: int, offset: int = 0) -> int:
    """Return how many candles in [lo, hi] the calendar expects."""
    return sum((b - a) // step + 1 for a, b in expected_runs(name, lo, hi, step, offset))


def clip(
    ranges: list[tuple[int, int]], name: CalendarName, step: int, offset: int = 0
) -> list[tuple[int, int]]:
    """Return the parts of open-time `ranges` (first, last) that the calendar expects."""
    if name == "24/7":
        return ranges
    out: list[tuple[int, int]] = []
    for lo, hi in ranges:
        out.extend(expected_runs(name, lo, hi, step, offset))
    return out
