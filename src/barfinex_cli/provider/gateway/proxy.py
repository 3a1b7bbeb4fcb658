"""The proxy to registered apps, `/proxy/{app}/{path}`, and the rules that keep it from an SSRF.

A proxy that forwards a token-holder's requests to any URL is a way into whatever the gateway's
machine can reach. So:

- an app may register a URL only on a host of `[gateway] allowed_app_hosts` (by default the
  loopback names `127.0.0.1`, `localhost`, `::1`), never with credentials in it, never on the
  gateway's own port through any loopback alias, never under `/proxy`; `check_app_url` says why not;
- the caller's `Authorization` header (and a `?token=` carrying the gateway token) is never
  forwarded: the proxy presents itself to the app with `X-Bfx-Proxy: <the app's secret>`, a random
  secret made at each registration and returned to the app in the `X-Bfx-Proxy-Secret` header;
- the forwarded path is decoded segment by segment and refused (400) if any segment is `.` or `..`
  or hides a slash, at any depth of percent-encoding (`..%2f`, `%252e%252e`), so it stays under the
  app's registered path;
- a request that already came through a proxy (it carries `X-Bfx-Proxy`) is refused (403), and so
  is a target that turns out to be the gateway itself, so one request cannot loop and multiply.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
from collections.abc import Collection
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlencode

import httpx
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.background import BackgroundTask

from barfinex_cli.errors import NotFound
from barfinex_cli.provider.gateway import auth
from barfinex_cli.provider.gateway.context import GatewayState, gateway_state

router = APIRouter(tags=["proxy"])

PROXY_HEADER = "x-bfx-proxy"
"""Sent to the app with its secret; a request that carries it came through a proxy."""
SECRET_HEADER = "X-Bfx-Proxy-Secret"
"""Returned by `POST /api/v1/apps`: the secret the proxy will present to this app."""

_HOP_BY_HOP = {
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
    "transfer-encoding", "upgrade", "host", "content-length",
}  # fmt: skip
_NOT_FORWARDED = _HOP_BY_HOP | {"authorization", PROXY_HEADER, SECRET_HEADER.lower()}
_SAFE = "!$&'()*+,;=:@~-._"  # RFC 3986 pchar minus "%": what a re-encoded segment keeps as is
_DECODE_DEPTH = 4

Address = tuple[str, int]


class PathRefused(ValueError):
    """A proxied path that would leave the app's registered prefix."""


def check_app_url(url: str, allowed_hosts: Collection[str], gateway: Address | None) -> str | None:
    """Return why an app may not register `url`, or None if it may (see `check_target`)."""
    target = httpx.URL(url)
    if target.userinfo:
        return "an app URL may not carry credentials"
    host = target.host.lower()
    if host not in {h.lower() for h in allowed_hosts}:
        allowed = ", ".join(allowed_hosts)
        return (
            f"host {host!r} is not an allowed app host ({allowed}); "
            "add it to [gateway] allowed_app_hosts if the app really serves there"
        )
    path = target.path.rstrip("/")
    if path == "/proxy" or path.startswith("/proxy/"):
        return "an app URL may not point into a gateway's /proxy/"
    return check_target(target, gateway)


def check_target(target: httpx.URL, gateway: Address | None) -> str | None:
    """Return why `target` is the gateway itself (its port on a loopback alias or its address)."""
    if gateway is None:
        return None
    port = _port(target)
    if port != gateway[1]:
        return None
    for address in _addresses(target.host):
        if address.is_loopback or address.is_unspecified or str(address) == gateway[0]:
            return f"{target.host}:{port} is this gateway itself: the proxy does not call itself"
    return None


def _port(url: httpx.URL) -> int:
    return url.port or (443 if url.scheme == "https" else 80)


def _addresses(host: str) -> set[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """Return the addresses `host` names (resolving a name; none if it does not resolve)."""
    try:
        found = {ipaddress.ip_address(host)}
    except ValueError:
        try:
            infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
        except (OSError, UnicodeError):
            return set()
        found = set()
        for info in infos:
            with contextlib.suppress(ValueError):
                found.add(ipaddress.ip_address(str(info[4][0]).partition("%")[0]))
    unmapped = {a.ipv4_mapped for a in found if isinstance(a, ipaddress.IPv6Address)}
    return found | {a for a in unmapped if a is not None}


def confined_path(raw_tail: str) -> str:
    """Return `raw_tail` (the encoded path after the app's name) re-encoded segment by segment.

    Raises:
        PathRefused: A segment is `.` or `..`, or hides a slash or a control character, once
            decoded as often as it takes.
    """
    out = []
    for segment in raw_tail.split("/"):
        once = unquote(segment, errors="strict") if "%" in segment else segment
        deep = once
        for _ in range(_DECODE_DEPTH):
            decoded = unquote(deep)
            if decoded == deep:
                break
            deep = decoded
        else:
            raise PathRefused(f"path segment {segment!r} is encoded too many times")
        if deep in (".", "..") or "/" in deep or "\\" in deep:
            raise PathRefused(
                f"path segment {segment!r} would leave the app's path: "
                "'.', '..' and encoded slashes are not proxied"
            )
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in deep):
            raise PathRefused(f"path segment {segment!r} holds a control character")
        out.append(quote(once, safe=_SAFE))
    return "/".join(out)


def _raw_tail(request: Request, path: str) -> str:
    """Return the path after `/proxy/{app}/` as the client sent it (still percent-encoded)."""
    raw = request.scope.get("raw_path")
    if not raw:  # a server that gives no raw path: the decoded one, encoded again
        return quote(path, safe="/" + _SAFE)
    parts = raw.decode("latin-1").split("/", 3)  # "", "proxy", app, tail
    if len(parts) < 3 or unquote(parts[2]) != request.path_params.get("app"):
        raise PathRefused("the app name may not hold an encoded slash")
    return parts[3] if len(parts) > 3 else ""


def _query(request: Request, token: str) -> bytes:
    """Return the query string to forward: as sent, less any `token=` holding the gateway token."""
    raw: bytes = request.scope.get("query_string", b"")
    if auth.QUERY_PARAM.encode() not in raw:
        return raw
    pairs = parse_qsl(raw.decode("latin-1"), keep_blank_values=True)
    kept = [(k, v) for k, v in pairs if k != auth.QUERY_PARAM or auth.check(v, token) != "ok"]
    return raw if len(kept) == len(pairs) else urlencode(kept).encode()


def _refused(status: int, detail: str) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status)


async def proxy(request: Request, app: str, path: str) -> Response:
    state: GatewayState = gateway_state(request)
    registry = state.ctx.registry
    if PROXY_HEADER in request.headers:
        return _refused(403, "this request already came through a proxy: proxy loops are refused")
    info = registry.find(app)
    if info is None:
        names = ", ".join(a.name for a in registry.apps()) or "none"
        raise NotFound(f"no app named {app!r}; registered: {names}")
    if info.status == "lost":
        return _refused(503, f"app {info.name!r} is lost (silent for {info.silent_for_s:.1f} s)")
    if info.url is None:
        raise NotFound(f"app {info.name!r} registered no URL: it serves no HTTP")
    try:
        tail = confined_path(_raw_tail(request, path))
    except (PathRefused, UnicodeDecodeError) as exc:
        return _refused(400, str(exc) if isinstance(exc, PathRefused) else "path is not UTF-8")
    base = httpx.URL(info.url)
    prefix = base.raw_path.split(b"?")[0].rstrip(b"/")
    query = _query(request, state.ctx.token)
    target = base.copy_with(
        raw_path=prefix + b"/" + tail.encode("ascii") + (b"?" + query if query else b"")
    )
    if not target.raw_path.startswith(prefix + b"/") or target.host != base.host:
        return _refused(400, "the path would leave the app's registered URL")
    gateway = gateway_address(request)
    if gateway is not None and _port(target) == gateway[1]:  # only then is a lookup worth it
        itself = await asyncio.to_thread(check_target, target, gateway)
        if itself is not None:
            return _refused(403, itself)
    assert state.http is not None, "the lifespan opens the HTTP client"
    headers = {k: v for k, v in request.headers.items() if k.lower() not in _NOT_FORWARDED}
    headers[PROXY_HEADER] = registry.proxy_secret(info.id) or ""
    headers["x-forwarded-host"] = request.headers.get("host", "")
    headers["x-forwarded-prefix"] = f"/proxy/{app}"
    if request.client is not None:
        headers["x-forwarded-for"] = request.client.host
    body = await request.body()
    upstream = state.http.build_request(
        request.method, target, headers=headers, content=body or None
    )
    try:
        response = await state.http.send(upstream, stream=True)
    except httpx.HTTPError as exc:
        detail = f"app {info.name!r} at {info.url} did not answer: {type(exc).__name__} {exc}"
        return _refused(502, detail.strip())
    passed = _HOP_BY_HOP - {"content-length"}  # the raw body keeps its length
    out_headers = {k: v for k, v in response.headers.items() if k.lower() not in passed}
    return StreamingResponse(
        response.aiter_raw(),
        status_code=response.status_code,
        headers=out_headers,
        background=BackgroundTask(response.aclose),
    )


def _address(server: Any) -> Address | None:
    """Return the gateway's own address from an ASGI scope's `server`, if it has one."""
    if isinstance(server, list | tuple) and len(server) == 2 and isinstance(server[1], int):
        return str(server[0]), server[1]
    return None


def gateway_address(request: Request) -> Address | None:
    """Return the address `request` reached the gateway on (None in-process, with no socket)."""
    return _address(request.scope.get("server"))


for _method in ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"):
    router.add_api_route(
        "/proxy/{app}/{path:path}",
        proxy,
        methods=[_method],
        operation_id=f"proxy_{_method.lower()}",
        summary="Forward a request to a registered app",
    )
