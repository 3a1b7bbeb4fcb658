"""Epoch milliseconds and UTC datetimes convert exactly, both ways."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from barfinex_cli.contracts.times import EPOCH, from_ms, iso_ms, to_ms

MS = st.integers(min_value=-62_135_596_800_000 + 86_400_000, max_value=253_402_300_799_000)


@given(MS)
def test_every_millisecond_round_trips_exactly(ms: int) -> None:
    assert to_ms(from_ms(ms)) == ms


def test_a_date_far_from_1970_keeps_its_last_millisecond() -> None:
    moment = datetime(2262, 4, 11, 23, 47, 16, 855_000, tzinfo=UTC)
    assert to_ms(moment) == (moment - EPOCH) // timedelta(milliseconds=1)
    assert from_ms(to_ms(moment)) == moment


def test_naive_datetimes_are_taken_as_utc_and_iso_has_a_z() -> None:
    assert to_ms(datetime(1970, 1, 1, 0, 0, 1)) == 1000
    assert iso_ms(1_700_000_000_000) == "2023-11-14T22:13:20Z"
