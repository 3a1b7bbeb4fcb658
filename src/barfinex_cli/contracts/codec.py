"""Encode envelopes to JSON bytes and decode them back, validated against the catalogue.

One validator per type is built once and reused. Unknown types decode with a plain dict payload so
that they can be stored and skipped; malformed messages raise `MalformedEvent`, and so does a
message larger than the size limit the caller gives (the bus passes `max_event_bytes`), checked
before any parsing so an oversized message costs nothing but its length.
"""

from __future__ import annotations

import json
from functools import cache
from typing import Any

from pydantic import TypeAdapter, ValidationError

from barfinex_cli.contracts.catalog import CATALOG
from barfinex_cli.contracts.envelope import Envelope

AnyEnvelope = Envelope[Any]

DEFAULT_MAX_EVENT_BYTES = 256 * 1024
"""The default size limit of one encoded event (the `max_event_bytes` setting)."""


class MalformedEvent(ValueError):
    """Bytes that are not a valid envelope of the expected type; `reason` says why."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


@cache
def _adapter(event_type: str) -> TypeAdapter[AnyEnvelope]:
    model = CATALOG.get(event_type)
    if model is None:
        return TypeAdapter(Envelope[dict[str, Any]])
    return TypeAdapter(Envelope[model])  # type: ignore[valid-type]


def encode(event: AnyEnvelope) -> bytes:
    """Serialise an envelope to compact JSON bytes."""
    return event.model_dump_json(by_alias=True).encode()


def decode(
    data: bytes | str, event_type: str | None = None, *, max_bytes: int | None = None
) -> AnyEnvelope:
    """Validate JSON `data` as an envelope; with `event_type`, it must be of that type.

    With `max_bytes`, data longer than that (in bytes; a str is measured as UTF-8) is refused.
    """
    if max_bytes is not None:
        size = len(data) if isinstance(data, bytes) else len(data.encode())
        if size > max_bytes:
            raise MalformedEvent(
                f"event of {size} bytes is over the limit of {max_bytes} bytes (max_event_bytes)"
            )
    if event_type is None:
        try:
            head = json.loads(data)
        except ValueError as exc:
            raise MalformedEvent(f"not JSON: {exc}") from None
        except RecursionError:  # json nests by recursion; pydantic's parser below has a limit
            raise MalformedEvent("not JSON: nested too deeply") from None
        if not isinstance(head, dict) or not isinstance(head.get("type"), str):
            raise MalformedEvent("not an envelope: no string field 'type'")
        event_type = head["type"]
    try:
        event = _adapter(event_type).validate_json(data)
    except ValidationError as exc:
        raise MalformedEvent(_summarise(exc)) from None
    if event.type != event_type:
        raise MalformedEvent(f"type {event.type!r} on the stream of {event_type!r}")
    return event


def _summarise(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:3]:
        loc = ".".join(str(p) for p in err["loc"]) or "(root)"
        parts.append(f"{loc}: {err['msg']}")
    more = exc.error_count() - len(parts)
    return "; ".join(parts) + (f" (+{more} more)" if more > 0 else "")
