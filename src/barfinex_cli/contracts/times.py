"""Epoch milliseconds and UTC datetimes, converted exactly in one place.

Stores, exchanges and the wire speak epoch milliseconds; payloads speak aware UTC datetimes.
`datetime.timestamp() * 1000` goes through a float and can be off by one millisecond for dates
far from 1970, so both directions here use integer `timedelta` arithmetic.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS = timedelta(milliseconds=1)


def to_ms(moment: datetime) -> int:
    """Return an aware datetime as epoch milliseconds (a naive one is taken as UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - EPOCH) // _ONE_MS


def from_ms(ms: int) -> datetime:
    """Return epoch milliseconds as an aware UTC datetime."""
    return EPOCH + timedelta(milliseconds=int(ms))


def iso_ms(ms: int) -> str:
    """Return epoch milliseconds as ISO 8601 with a `Z` suffix."""
    return from_ms(ms).isoformat().replace("+00:00", "Z")
