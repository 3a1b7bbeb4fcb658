"""Register a role with the provider's app registry and keep it alive with heartbeats.

The registry lives in the provider's memory, so a heartbeat answered 404 (the provider
restarted) registers again. A provider that does not answer is logged and retried; the role's
own work never waits on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import httpx

log = logging.getLogger("bfx.registration")


class Registration:
    """One role's membership in the provider's registry."""

    def __init__(
        self,
        provider_url: str,
        token: str,
        *,
        name: str,
        role: str,
        url: str | None = None,
        interval_s: float = 5.0,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.provider_url = provider_url.rstrip("/")
        self.name = name
        self.role = role
        self.url = url
        self.interval_s = interval_s
        self.app_id: str | None = None
        self.failures = 0
        self._client = client or httpx.AsyncClient(
            base_url=self.provider_url,
            headers={"Authorization": f"Bearer {token}"},
            timeout=5.0,
        )

    async def register(self) -> str | None:
        """Register; return the app id, or None if the provider did not answer."""
        body: dict[str, Any] = {"name": self.name, "role": self.role}
        if self.url:
            body["url"] = self.url
        try:
            response = await self._client.post("/api/v1/apps", json=body)
            response.raise_for_status()
        except httpx.HTTPError as exc:
            self.failures += 1
            log.warning("cannot register with the provider", extra={"error": str(exc)})
            return None
        self.app_id = str(response.json()["id"])
        return self.app_id

    async def heartbeat(self) -> bool:
        """Send one heartbeat, registering first (or again after a provider restart)."""
        if self.app_id is None and await self.register() is None:
            return False
        try:
            response = await self._client.post(f"/api/v1/apps/{self.app_id}/heartbeat", json={})
            if response.status_code == 404:
                self.app_id = None
                return await self.register() is not None
            response.raise_for_status()
            return True
        except httpx.HTTPError as exc:
            self.failures += 1
            log.warning("heartbeat failed", extra={"error": str(exc)})
            return False

    async def run(self, stop: asyncio.Event) -> None:
        """Heartbeat every `interval_s` until `stop` is set."""
        try:
            while not stop.is_set():
                await self.heartbeat()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.interval_s)
        finally:
            await self._client.aclose()
