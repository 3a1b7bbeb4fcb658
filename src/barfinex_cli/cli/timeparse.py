"""Parse the times users type: ISO 8601, or an age such as 15m, 2h, 3d before now.

`parse_stream_position` also takes a bus stream id, for `bfx events tail --since`.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from barfinex_cli.contracts.times import to_ms
from barfinex_cli.errors import UsageError

_AGE = re.compile(r"^(\d+)([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_time(text: str, *, now: datetime | None = None) -> datetime:
    """Return the UTC time `text` names; naive ISO times are taken as UTC."""
    match = _AGE.match(text.strip())
    if match:
        try:
            delta = timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
            return (now or datetime.now(UTC)) - delta
        except OverflowError:
            raise UsageError(f"{text!r} reaches before the calendar; give a shorter age") from None
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(
            f"cannot read {text!r} as a time; give ISO 8601 (2024-05-01T12:00Z) or an age "
            "(30s, 15m, 2h, 3d, 1w)"
        ) from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


_STREAM_ID = re.compile(r"^(\d+)(?:-(\d+))?$")
_MAX_SEQ = 2**64 - 1


def parse_stream_position(text: str, *, now: datetime | None = None) -> str:
    """Return the stream id to read after so that a tail starts where `text` says.

    `text` is a stream entry id (`1714564800000-0`, or bare milliseconds), an age (`15m`) or an
    ISO 8601 time. A time becomes the last possible id of the millisecond before it, so the
    events of that very millisecond are included (reads return entries after the id given).
    """
    match = _STREAM_ID.match(text.strip())
    if match:
        ms, seq = int(match.group(1)), int(match.group(2) or 0)
        if ms > _MAX_SEQ or seq > _MAX_SEQ:
            raise UsageError(f"--since {text!r}: a stream id's parts are at most {_MAX_SEQ}")
        return f"{ms}-{seq}"
    try:
        moment = parse_time(text, now=now)
    except UsageError:
        raise UsageError(
            f"--since {text!r}: give a stream id (1714564800000-0), an age (30s, 15m, 2h, 3d) "
            "or an ISO 8601 time (2024-05-01T12:00Z)"
        ) from None
    return f"{max(to_ms(moment) - 1, 0)}-{_MAX_SEQ}"


def parse_duration(text: str) -> float:
    """Return the seconds a duration such as 30s, 10m, 2h or 1d names."""
    match = _AGE.match(text.strip())
    if not match or int(match.group(1)) <= 0:
        raise UsageError(f"cannot read {text!r} as a duration; give e.g. 30s, 10m, 2h, 1d")
    try:
        return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))}).total_seconds()
    except OverflowError:
        raise UsageError(f"{text!r} is too long a duration; give e.g. 30s, 10m, 2h, 1d") from None
