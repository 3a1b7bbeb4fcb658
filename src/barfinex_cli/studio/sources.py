"""The studio's REST side: one snapshot of the provider, and the roles reached through its proxy.

The provider's own routes go through the typed `GatewayClient`. The advisor and the inspector are
asked through the gateway's `/proxy/{app}/...` (one URL, one token, whatever host they run on):
`Roles` finds the live app of each role in the registry and asks it; a role that is not running,
or does not answer, becomes a `RoleView` with the reason in words, so a screen can say it plainly.
The only writes the studio makes are here: the inspector's stand-down and resume.

Headless: no Textual.
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import quote

import httpx

from barfinex_cli.contracts.rest import AppInfo
from barfinex_cli.errors import BfxError, TokenRefused
from barfinex_cli.runtime.client import GatewayClient
from barfinex_cli.studio.state import MAX_ORDERS, RoleView, Snapshot

START_HINT = {
    "advisor": "start one with `bfx advisor run`",
    "inspector": "start one with `bfx inspector run`",
    "detector": "start one with `bfx detector run STRATEGY`",
}


class Roles:
    """Calls to registered roles through the gateway's proxy, with the gateway token."""

    def __init__(
        self, base_url: str, token: str | None, *, timeout: float = 5.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:  # fmt: skip
        self.base_url = base_url.rstrip("/")
        self.token = token
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.AsyncClient(
            base_url=self.base_url, headers=headers, timeout=timeout, transport=transport
        )

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def call(
        self, app: str, path: str, *, method: str = "GET", body: dict[str, Any] | None = None,
        params: dict[str, str] | None = None,
    ) -> dict[str, Any]:  # fmt: skip
        """Send one request to `app`'s own API through the proxy; return its JSON object.

        Raises:
            TokenRefused: The gateway refused the token.
            BfxError: The app did not answer, or answered with an error (its detail in words).
        """
        url = f"/proxy/{quote(app, safe='')}{path}"
        for attempt in (1, 2):  # once more: a keep-alive connection closed under us is no outage
            try:
                response = await self._http.request(method, url, json=body, params=params)
                break
            except httpx.TransportError as exc:
                if attempt == 2:
                    raise BfxError(f"{app}: not reachable through the provider ({exc!s})") from None
        if response.status_code in (401, 403) and "x-bfx-proxy" not in response.headers:
            raise TokenRefused(self.base_url, missing=self.token is None)
        try:
            data = response.json()
        except ValueError:
            data = {"detail": response.text[:200]}
        if not response.is_success:
            detail = data.get("detail") if isinstance(data, dict) else None
            why = detail or response.text[:200]
            raise BfxError(f"{app} answered {response.status_code}: {why}")
        return data if isinstance(data, dict) else {"items": data}

    async def view(self, apps: list[AppInfo], role: str, path: str) -> RoleView:
        """Ask the first live app of `role` for `path`; say why not if none runs or answers."""
        alive = [a for a in apps if a.role == role and a.status == "alive"]
        if not alive:
            lost = [a.name for a in apps if a.role == role]
            why = f"lost ({', '.join(lost)})" if lost else "not running"
            return RoleView(None, problem=f"no {role} is {why} — {START_HINT.get(role, '')}")
        app = alive[0]
        if not app.url:
            return RoleView(app.name, problem=f"{app.name} serves no API (started without one)")
        try:
            return RoleView(app.name, await self.call(app.name, path))
        except TokenRefused:
            raise
        except BfxError as exc:
            return RoleView(app.name, problem=str(exc))

    async def stand_down(self, app: str, until: str | None = None) -> dict[str, Any]:
        """Ask the inspector to allow no new entries (until a time, or until resumed)."""
        body = {"until": until, "reason": "operator: bfx studio"}
        return await self.call(app, "/api/v1/stand-down", method="POST", body=body)

    async def resume(self, app: str) -> dict[str, Any]:
        """Ask the inspector to clear a stand-down."""
        return await self.call(app, "/api/v1/resume", method="POST", body={})

    async def decision(self, app: str, decision_id: str) -> dict[str, Any]:
        """Return one advisor run explained: its stages and every event."""
        return await self.call(app, f"/api/v1/decisions/{quote(decision_id, safe='')}")


async def load_snapshot(
    client: GatewayClient, roles: Roles, *, decisions: int = 200, orders: int = MAX_ORDERS
) -> Snapshot:
    """Read everything the screens draw from REST, at once.

    Orders are the open ones and the latest `orders`, oldest first: what the studio holds, not
    every order of the run (a list that grows with it, and costs the provider to read).

    Raises:
        ServiceUnreachable: The provider does not answer.
        TokenRefused: The provider refused the token.
    """
    health = await client.health()
    apps, connectors, series, positions, (open_orders, latest), accounts = await asyncio.gather(
        client.list_apps(),
        client.connectors(),
        client.series(),
        client.positions(),
        asyncio.gather(client.orders(open_only=True), client.orders(limit=orders)),
        client.accounts(),
    )
    # an open order outside the latest window is older than all of them: it goes first
    windowed = {o.client_order_id for o in latest}
    held = [o for o in open_orders if o.client_order_id not in windowed] + latest
    advisor, inspector = await asyncio.gather(
        roles.view(apps, "advisor", f"/api/v1/decisions?limit={decisions}"),
        roles.view(apps, "inspector", "/api/v1/status"),
    )
    return Snapshot(
        health=health,
        apps=apps,
        connectors=connectors,
        series=series,
        positions=positions,
        orders=held,
        paper=any(a.exchange == "paper" for a in accounts),
        advisor=advisor,
        inspector=inspector,
    )
