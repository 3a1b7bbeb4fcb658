"""The app registry: which roles are running, where they serve, and which went silent.

Roles register with the provider's gateway when they start and send a heartbeat every interval.
An app that misses `missed` heartbeats in a row is marked lost and a `registry.lost` event is
published; a heartbeat from a lost app makes it alive again. Names are unique: an app that restarts
and registers under its name again keeps its id. A name cannot move to another URL while the app
holding it is alive (`NameTaken`, 409): a second app under the same name would otherwise take the
first one's proxy traffic. Every registration makes a new random proxy secret, which the proxy
presents to the app (see `proxy`).

The registry itself is plain state and decisions that return the payloads to publish; `watch` is the
one loop that publishes, run by the gateway's lifespan.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from barfinex_cli.contracts.apps import AppLost, AppRegistered, HeartbeatSent, Role
from barfinex_cli.contracts.ids import uuid7
from barfinex_cli.contracts.rest import AppInfo, AppTool, Health, RegisterRequest
from barfinex_cli.contracts.types import Payload
from barfinex_cli.errors import BfxError, NotFound

log = logging.getLogger("bfx.provider.registry")

Publish = Callable[[Payload], Awaitable[None]]
Clock = Callable[[], datetime]


class NameTaken(BfxError):
    """An app name that an alive app holds at another URL (the gateway answers 409)."""


@dataclass(slots=True)
class _App:
    id: str
    name: str
    role: Role
    url: str | None
    version: str
    started_at: datetime
    last_seen: datetime
    health: Health = "ok"
    lost: bool = False
    proxy_secret: str = ""
    tools: tuple[AppTool, ...] = ()


class AppRegistry:
    """Registered apps with their heartbeats; decides when one is lost."""

    def __init__(
        self,
        *,
        heartbeat_interval_s: float = 5.0,
        missed: int = 3,
        clock: Clock | None = None,
    ) -> None:
        if heartbeat_interval_s <= 0 or missed < 1:
            raise ValueError("heartbeat_interval_s must be > 0 and missed >= 1")
        self.heartbeat_interval_s = heartbeat_interval_s
        self.missed = missed
        self._clock: Clock = clock or (lambda: datetime.now(UTC))
        self._apps: dict[str, _App] = {}  # by name

    @property
    def lost_after_s(self) -> float:
        """Return how long an app may stay silent before it is lost."""
        return self.heartbeat_interval_s * self.missed

    def register(self, request: RegisterRequest) -> tuple[AppInfo, AppRegistered]:
        """Register an app (again, if its name is known); return it and the event to publish.

        Raises:
            NameTaken: The name is held by an alive app at another URL.
        """
        now = self._clock()
        url = str(request.url).rstrip("/") if request.url is not None else None
        app = self._apps.get(request.name)
        if app is None:
            app = _App(uuid7(), request.name, request.role, url, request.version, now, now)
            app.tools = tuple(request.tools)
            self._apps[request.name] = app
        else:
            held = self._info(app, now)
            if app.url != url and held.status == "alive":
                raise NameTaken(
                    f"app name {app.name!r} is held by an alive app at {app.url or 'no URL'} "
                    f"(seen {held.silent_for_s:.1f} s ago): stop it, wait {self.lost_after_s:g} s "
                    "until it is lost, or register under another name"
                )
            app.role, app.url, app.version = request.role, url, request.version
            app.tools = tuple(request.tools)
            app.started_at = app.last_seen = now
            app.health, app.lost = "ok", False
        app.proxy_secret = secrets.token_urlsafe(32)
        event = AppRegistered(
            app_id=app.id, name=app.name, role=app.role, url=app.url, last_seen=now,
            version=app.version, started_at=app.started_at,
        )  # fmt: skip
        return self._info(app, now), event

    def heartbeat(self, app_id: str, status: Health = "ok") -> tuple[AppInfo, HeartbeatSent]:
        """Record a heartbeat; raise `NotFound` for an unknown id (the app should register)."""
        app = self._by_id(app_id)
        now = self._clock()
        app.last_seen, app.health, app.lost = now, status, False
        event = HeartbeatSent(
            app_id=app.id, name=app.name, role=app.role, url=app.url, last_seen=now,
            uptime_s=max(0.0, (now - app.started_at).total_seconds()), status=status,
        )  # fmt: skip
        return self._info(app, now), event

    def proxy_secret(self, name_or_id: str) -> str | None:
        """Return the secret the proxy presents to this app, or None for an unknown app."""
        app = self._apps.get(name_or_id) or next(
            (a for a in self._apps.values() if a.id == name_or_id), None
        )
        return None if app is None else app.proxy_secret

    def find(self, name_or_id: str) -> AppInfo | None:
        """Return the app with this name or id, or None."""
        app = self._apps.get(name_or_id)
        if app is None:
            app = next((a for a in self._apps.values() if a.id == name_or_id), None)
        return None if app is None else self._info(app, self._clock())

    def apps(self) -> list[AppInfo]:
        """Return every registered app, by name."""
        now = self._clock()
        return [self._info(self._apps[name], now) for name in sorted(self._apps)]

    def counts(self) -> dict[str, int]:
        """Return how many apps are alive and how many are lost."""
        lost = sum(1 for a in self._apps.values() if a.lost)
        return {"alive": len(self._apps) - lost, "lost": lost}

    def sweep(self) -> list[AppLost]:
        """Mark apps silent for too long as lost; return one event per newly lost app."""
        now = self._clock()
        events = []
        for app in self._apps.values():
            silent = (now - app.last_seen).total_seconds()
            if not app.lost and silent > self.lost_after_s:
                app.lost = True
                event = AppLost(
                    app_id=app.id, name=app.name, role=app.role, url=app.url,
                    last_seen=app.last_seen, silent_for_s=silent,
                )  # fmt: skip
                events.append(event)
        return events

    async def watch(self, publish: Publish, stop: asyncio.Event) -> None:
        """Sweep every half interval until `stop` is set, publishing `registry.lost` events.

        An event the bus refuses is kept and published again at the next sweep.
        """
        period = self.heartbeat_interval_s / 2
        unsent: list[AppLost] = []
        while not stop.is_set():
            unsent += self.sweep()
            while unsent:
                try:
                    await publish(unsent[0])
                except Exception as exc:  # the bus is away: keep the event, try next sweep
                    log.warning("cannot publish registry.lost", extra={"error": str(exc)})
                    break
                unsent.pop(0)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), period)

    def _by_id(self, app_id: str) -> _App:
        app = next((a for a in self._apps.values() if a.id == app_id), None)
        if app is None:
            raise NotFound(f"no app with id {app_id!r} — register it first (POST /api/v1/apps)")
        return app

    def _info(self, app: _App, now: datetime) -> AppInfo:
        # a sweep may not have run yet: report what the clock says, not what was last swept
        silent = max(0.0, (now - app.last_seen).total_seconds())
        lost = app.lost or silent > self.lost_after_s
        return AppInfo(
            id=app.id, name=app.name, role=app.role, url=app.url, version=app.version,
            started_at=app.started_at, last_seen=app.last_seen,
            status="lost" if lost else "alive", health=app.health, silent_for_s=silent,
            tools=list(app.tools),
        )  # fmt: skip
