"""Trading windows: entries only at the times of day and on the weekdays the file allows.

Windows are local wall-clock times in a named IANA zone (`[windows] timezone`, else the file's
`timezone`), read through zoneinfo, so "08:00-16:30 Europe/London" means the same wall-clock hours
in winter (UTC+0) and summer (UTC+1). A window whose end is before its start runs past midnight,
and its weekday is the day it opens. With no windows listed every time is open. Outside them an
entry is blocked and the figures say when the next window opens; exits are never held back.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from barfinex_cli.inspector.policies.base import ALLOW, Context, Outcome, Policy
from barfinex_cli.inspector.policies.config import WEEKDAYS, Window, WindowLimits

_zones: dict[str, ZoneInfo] = {}


def zone_of(windows: WindowLimits, default: str) -> ZoneInfo:
    """Return the zone the windows are written in."""
    name = windows.timezone or default
    zone = _zones.get(name)
    if zone is None:
        zone = _zones[name] = ZoneInfo(name)
    return zone


def is_open(window: Window, local: datetime) -> bool:
    """Return whether the local wall-clock time `local` is inside `window`."""
    clock = local.time().replace(tzinfo=None)
    today = WEEKDAYS[local.weekday()]
    if window.start < window.end:
        return today in window.days and window.start <= clock < window.end
    yesterday = WEEKDAYS[(local.weekday() - 1) % 7]
    return (today in window.days and clock >= window.start) or (
        yesterday in window.days and clock < window.end
    )


def next_open(windows: tuple[Window, ...], local: datetime) -> datetime | None:
    """Return when the next window opens after `local` (in its zone), within a week."""
    zone = local.tzinfo
    best: datetime | None = None
    for offset in range(8):
        day = local.date() + timedelta(days=offset)
        weekday = WEEKDAYS[day.weekday()]
        for window in windows:
            if weekday not in window.days:
                continue
            opens = datetime.combine(day, window.start, tzinfo=zone)
            if opens > local and (best is None or opens < best):
                best = opens
        if best is not None:
            return best
    return best


def trading_window(ctx: Context) -> Outcome:
    """Block an entry outside every `[[windows.allow]]` window."""
    windows = ctx.limits.windows
    if not windows.allow:
        return ALLOW
    zone = zone_of(windows, ctx.rules.timezone)
    local = ctx.now.astimezone(zone)
    if any(is_open(w, local) for w in windows.allow):
        return ALLOW
    nxt = next_open(windows.allow, local)
    figures: dict[str, float | str] = {
        "local_time": local.isoformat(),
        "timezone": str(zone.key),
        "next_open": nxt.isoformat() if nxt else "never",
    }
    when = f"; next opens {nxt.isoformat()}" if nxt else ""
    return Outcome(
        "BLOCK", f"outside the trading windows ({local:%a %H:%M} {zone.key}){when}", figures
    )


POLICIES = (Policy("trading_window", trading_window),)
