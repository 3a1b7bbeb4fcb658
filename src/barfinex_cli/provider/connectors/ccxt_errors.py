"""Turn ccxt's exception tree into bfx errors whose one line names the fix.

ccxt raises its own hierarchy (`ccxt.base.errors`); callers of a connector should only ever see
`BfxError`. The mapping, by what the user should do:

    ccxt                                        bfx
    NetworkError, RequestTimeout,
      ExchangeNotAvailable, OnMaintenance   ->  ServiceUnreachable  (offline? or not serving)
    DDoSProtection, RateLimitExceeded       ->  TransientError      (wait, then retry)
    AuthenticationError, PermissionDenied   ->  ConfigError         (names the key variables)
    BadSymbol                               ->  UsageError          (with close matches)
    OrderNotFound                           ->  NotFound
    InsufficientFunds, InvalidOrder         ->  OrderRefused        (the exchange said no, and why)
    NotSupported, BadRequest, ArgumentsReq. ->  UsageError
    OperationFailed (internal error, bad
      response, cancel pending)             ->  TransientError
    any other ccxt error                    ->  BfxError            (the exchange's own message)

An unknown exchange id is a `UsageError` with close matches from `ccxt.exchanges`.

`fault_kind` sorts the errors that mean the exchange is failing (rather than answering no) into
the kinds the connector's health counts: unavailable (5xx, maintenance, an unreadable answer),
timeout, unreachable, rate_limited.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterable

from barfinex_cli.contracts.market import FaultKind
from barfinex_cli.errors import (
    BfxError,
    ConfigError,
    NotFound,
    ServiceUnreachable,
    TransientError,
    UsageError,
)

_MAX_DETAIL = 160


class OrderRefused(BfxError):
    """The exchange refused an order (funds, size, price, duplicate): nothing was placed."""


def env_name(exchange_id: str, what: str) -> str:
    """Return the environment variable holding `what` (API_KEY, SECRET...) for an exchange."""
    return f"BFX_{re.sub(r'[^A-Za-z0-9]', '_', exchange_id).upper()}_{what}"


def close_matches(word: str, choices: Iterable[str], n: int = 5) -> list[str]:
    """Return up to `n` of `choices` that look like `word`, ignoring case and separators."""
    folded = {_fold(c): c for c in choices}
    hits = difflib.get_close_matches(_fold(word), list(folded), n=n, cutoff=0.6)
    return [folded[h] for h in hits]


def unknown_exchange(exchange_id: str, known: Iterable[str]) -> UsageError:
    """Return the error for an exchange id ccxt does not know."""
    near = close_matches(exchange_id, known)
    hint = f"; did you mean {', '.join(near)}?" if near else ""
    return UsageError(
        f"unknown exchange {exchange_id!r}{hint} — give a ccxt exchange id "
        "(binance, kraken, okx...)"
    )


def bad_symbol(exchange_id: str, symbol: str, markets: Iterable[str]) -> UsageError:
    """Return the error for a symbol the exchange does not list, with close matches."""
    near = close_matches(symbol, markets)
    hint = f"; close matches: {', '.join(near)}" if near else ""
    return UsageError(
        f"{exchange_id} has no market {symbol!r}{hint} — use the unified form BASE/QUOTE "
        "(e.g. BTC/USDT)"
    )


def offline(exchange_id: str, reason: str) -> ServiceUnreachable:
    """Return the error for an exchange that cannot be reached."""
    return ServiceUnreachable(
        f"cannot reach {exchange_id} (offline?): {reason} — check the network, or use --replay"
    )


def translate(
    exc: BaseException,
    exchange_id: str,
    *,
    symbol: str | None = None,
    markets: Iterable[str] = (),
) -> BfxError:
    """Return the `BfxError` for an exception raised by ccxt (or pass a `BfxError` through).

    Args:
        exc: What ccxt raised.
        exchange_id: The ccxt id, used in the message.
        symbol: The symbol the call was about, for `BadSymbol`.
        markets: The exchange's symbols, to suggest close matches for `BadSymbol`.

    Anything that is neither a ccxt error nor a `BfxError` is re-raised: it is a bug and keeps
    its traceback.
    """
    import ccxt

    if isinstance(exc, BfxError):
        return exc
    detail = _detail(exc, exchange_id)
    if isinstance(exc, ccxt.RequestTimeout):
        return offline(exchange_id, f"request timed out ({detail})")
    if isinstance(exc, ccxt.OnMaintenance):
        return ServiceUnreachable(f"{exchange_id} is under maintenance: {detail} — try later")
    if isinstance(exc, ccxt.DDoSProtection | ccxt.RateLimitExceeded):
        return TransientError(
            f"{exchange_id} is rate-limiting requests ({detail}) — wait a minute and retry"
        )
    if isinstance(exc, ccxt.NetworkError):
        reason = _network_reason(exc)
        if reason or not isinstance(exc, ccxt.ExchangeNotAvailable):
            return offline(exchange_id, reason or detail)
        # reached, but it answered "unavailable" (HTTP 5xx): not offline, just not serving
        return ServiceUnreachable(
            f"{exchange_id} is not available ({detail}) — try again later, or use --replay"
        )
    if isinstance(exc, ccxt.AuthenticationError):
        return ConfigError(
            f"{exchange_id} rejected the API credentials ({detail}) — set "
            f"{env_name(exchange_id, 'API_KEY')} and {env_name(exchange_id, 'SECRET')} in the "
            "environment to a key with the needed permissions"
        )
    if isinstance(exc, ccxt.BadSymbol):
        return bad_symbol(exchange_id, symbol or detail, markets)
    if isinstance(exc, ccxt.OrderNotFound):
        return NotFound(f"{exchange_id} has no such order ({detail})")
    if isinstance(exc, ccxt.InsufficientFunds):
        return OrderRefused(f"{exchange_id} refused the order: insufficient funds ({detail})")
    if isinstance(exc, ccxt.InvalidOrder):
        return OrderRefused(f"{exchange_id} refused the order: {detail}")
    if isinstance(exc, ccxt.NotSupported | ccxt.BadRequest | ccxt.ArgumentsRequired):
        return UsageError(f"{exchange_id}: {detail}")
    if isinstance(exc, ccxt.OperationFailed):
        return TransientError(f"{exchange_id} failed to answer ({detail}) — retry in a moment")
    if isinstance(exc, ccxt.BaseError):
        return BfxError(f"{exchange_id} answered with an error: {detail}")
    raise exc


def fault_kind(exc: BaseException) -> FaultKind | None:
    """Return the kind of exchange fault `exc` is, or None if the exchange answered (a refusal).

    Follows `translate`: a timeout before the network errors, a network reason (refused, name
    lookup) before "not available", which without one is an answer (HTTP 5xx).
    """
    import ccxt

    if isinstance(exc, ccxt.RequestTimeout):
        return "timeout"
    if isinstance(exc, ccxt.DDoSProtection | ccxt.RateLimitExceeded):
        return "rate_limited"
    if isinstance(exc, ccxt.OnMaintenance):
        return "unavailable"
    if isinstance(exc, ccxt.NetworkError):
        if isinstance(exc, ccxt.ExchangeNotAvailable) and not _network_reason(exc):
            return "unavailable"
        return "unreachable"
    if isinstance(exc, ccxt.BadResponse):
        return "unavailable"
    return None


def _fold(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


def _detail(exc: BaseException, exchange_id: str) -> str:
    """Return the exchange's own message: the JSON `msg` when there is one, trimmed."""
    text = re.sub(r"(https?://[^\s?]+)\?\S*", r"\1", str(exc).strip())  # drop signed queries
    if text.startswith(exchange_id):
        text = text[len(exchange_id) :].strip()
    start = text.find("{")
    if start >= 0:
        try:
            body = json.loads(text[start:])
        except ValueError:
            body = None
        if isinstance(body, dict):
            msg = body.get("msg") or body.get("message") or body.get("error")
            if msg:
                text = str(msg)
    text = text or type(exc).__name__
    return text if len(text) <= _MAX_DETAIL else text[: _MAX_DETAIL - 1] + "…"


def _network_reason(exc: BaseException) -> str:
    """Return why a connection failed, from the aiohttp/socket error ccxt chained.

    Only the explicit cause (`raise ... from`) is followed from `exc`: its implicit context is
    whatever was being handled when ccxt raised — a lookup sent while handling a timeout would
    otherwise be blamed on that timeout.
    """
    import socket

    cause = exc.__cause__
    seen = 0
    while cause is not None and seen < 5:
        if isinstance(cause, socket.gaierror):
            return f"name lookup failed ({cause.strerror})"
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused"
        if isinstance(cause, TimeoutError):
            return "connection timed out"
        os_error = getattr(cause, "os_error", None)
        if isinstance(os_error, BaseException):
            cause = os_error
        elif isinstance(cause, OSError) and cause.strerror:
            return str(cause.strerror)
        else:
            cause = cause.__cause__ or cause.__context__
        seen += 1
    return ""
