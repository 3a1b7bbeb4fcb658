"""Parse the times users type: ISO 8601, or an age such as 15m, 2h, 3d before now."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from barfinex_cli.errors import UsageError

_AGE = re.compile(r"^(\d+)([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_time(text: str, *, now: datetime | None = None) -> datetime:
    """Return the UTC time `text` names; naive ISO times are taken as UTC."""
    match = _AGE.match(text.strip())
    if match:
        delta = timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
        return (now or datetime.now(UTC)) - delta
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(
            f"cannot read {text!r} as a time; give ISO 8601 (2024-05-01T12:00Z) or an age "
            "(30s, 15m, 2h, 3d, 1w)"
        ) from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
