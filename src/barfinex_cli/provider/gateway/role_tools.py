"""The tools registered roles offer assistants, listed and forwarded by the gateway's `/mcp`.

A role declares its tools when it registers (`RegisterRequest.tools`: a name, a method and a route
of its own API). The gateway imports no role: it lists what the registry holds and forwards a call
to the route on the app's registered URL, the way the proxy does — the caller's token stays at
the gateway, the app gets the per-registration `X-Bfx-Proxy` secret, `{name}` path segments are
filled from the arguments (percent-encoded, never a slash), the rest go as query parameters (GET)
or a JSON body (POST). So an assistant connected to the one gateway URL reaches every role.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

import httpx

from barfinex_cli.contracts.rest import AppInfo, AppTool
from barfinex_cli.errors import NotFound, ServiceUnreachable, UsageError
from barfinex_cli.provider.gateway.context import GatewayState
from barfinex_cli.provider.gateway.proxy import PROXY_HEADER

_SEGMENT = re.compile(r"\{([a-z_][a-z0-9_]*)\}")
TIMEOUT_S = 30.0


def offered(state: GatewayState) -> list[tuple[AppInfo, AppTool]]:
    """Return every tool of every alive app, in registry order."""
    return [(app, tool) for app in state.ctx.registry.apps() if app.status == "alive"
            for tool in app.tools]  # fmt: skip


def listing(state: GatewayState) -> list[dict[str, Any]]:
    """Return what `role_tools` answers: each tool with its app, role and parameters."""
    return [
        {"name": tool.name, "app": app.name, "role": app.role, "description": tool.description,
         "method": tool.method, "path_parameters": _SEGMENT.findall(tool.path)}
        for app, tool in offered(state)
    ]  # fmt: skip


def _find(state: GatewayState, name: str) -> tuple[AppInfo, AppTool]:
    found = [(a, t) for a, t in offered(state) if t.name == name]
    if not found:
        names = ", ".join(sorted({t.name for _, t in offered(state)})) or "none"
        raise NotFound(f"no registered role offers a tool {name!r}; offered: {names}")
    return found[0]


def _route(tool: AppTool, arguments: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Fill the path's `{name}` segments from `arguments`; return the path and what is left."""
    rest = dict(arguments)

    def fill(match: re.Match[str]) -> str:
        key = match.group(1)
        if key not in rest:
            raise UsageError(f"{tool.name}: argument {key!r} is required")
        return quote(str(rest.pop(key)), safe="")

    return _SEGMENT.sub(fill, tool.path), rest


async def call(state: GatewayState, name: str, arguments: dict[str, Any]) -> Any:
    """Call a role's tool through its registered URL; return its JSON answer."""
    app, tool = _find(state, name)
    if app.url is None:
        raise NotFound(f"app {app.name!r} registered no URL: it serves no HTTP")
    path, rest = _route(tool, arguments)
    base = httpx.URL(app.url)
    target = base.copy_with(raw_path=base.raw_path.rstrip(b"/") + path.encode("ascii"))
    if target.host != base.host:
        raise UsageError(f"{tool.name}: the arguments would leave the app's URL")
    headers = {PROXY_HEADER: state.ctx.registry.proxy_secret(app.id) or ""}
    request: dict[str, Any] = {"params": rest} if tool.method == "GET" else {"json": rest}
    try:
        async with httpx.AsyncClient(timeout=TIMEOUT_S) as client:
            response = await client.request(tool.method, target, headers=headers, **request)
    except httpx.HTTPError as exc:
        raise ServiceUnreachable(f"app {app.name!r} at {app.url} did not answer: {exc}") from None
    try:
        body = response.json()
    except ValueError:
        body = {"text": response.text[:2000]}
    if response.status_code == 404:
        raise NotFound(str(body.get("detail", body)) if isinstance(body, dict) else str(body))
    if response.is_error:
        detail = body.get("detail", body) if isinstance(body, dict) else body
        raise UsageError(f"{app.name} answered {response.status_code}: {detail}")
    return body
