"""Registry events: which apps are running, where to reach them, and which went silent.

Every role announces itself when it starts and sends a heartbeat while it runs; the registry emits
`registry.lost` for an app whose heartbeats stopped. The studio builds its map of apps from these.
"""

from __future__ import annotations

from typing import Literal

from pydantic import NonNegativeFloat

from barfinex_cli.contracts.types import Payload, UtcDatetime

Role = Literal["provider", "detector", "advisor", "inspector", "studio", "registry"]


class _AppEvent(Payload):
    """Fields every registry event carries: which app, in which role, and when it was last seen."""

    app_id: str
    name: str
    role: Role
    url: str | None = None
    """Where the app serves HTTP/WS, if it does."""
    last_seen: UtcDatetime


class AppRegistered(_AppEvent):
    """An app that started and announced itself."""

    event_type = "registry.registered"

    version: str
    started_at: UtcDatetime


class HeartbeatSent(_AppEvent):
    """A sign of life from a running app."""

    event_type = "registry.heartbeat"

    uptime_s: NonNegativeFloat
    status: Literal["ok", "degraded"] = "ok"


class AppLost(_AppEvent):
    """An app whose heartbeats stopped; `last_seen` is its last one."""

    event_type = "registry.lost"

    silent_for_s: NonNegativeFloat


EVENTS: tuple[type[Payload], ...] = (AppRegistered, HeartbeatSent, AppLost)
