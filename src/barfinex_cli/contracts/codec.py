"""Encode envelopes to JSON bytes and decode them back, validated against the catalogue.

One validator per type is built once and reused. Unknown types decode with a plain dict payload so
that they can be stored and skipped; malformed messages raise `MalformedEvent`.
"""

from __future__ import annotations

import json
from functools import cache
from typing import Any

from pydantic import TypeAdapter, ValidationError

from barfinex_cli.contracts.catalog import CATALOG
from barfinex_cli.contracts.envelope import Envelope

AnyEnvelope = Envelope[Any]


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


def decode(data: bytes | str, event_type: str | None = None) -> AnyEnvelope:
    """Validate JSON `data` as an envelope; with `event_type`, it must be of that type."""
    if event_type is None:
        try:
            head = json.loads(data)
        except ValueError as exc:
            raise MalformedEvent(f"not JSON: {exc}") from None
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
