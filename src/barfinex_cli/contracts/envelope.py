"""The envelope every message on the bus and every row in the audit store carries.

`trace_id` is the id of the root event of a chain and is copied down it, so one query returns the
candle, signal, decision, verdict and order of a trade. `parent_id` links each event to the one that
caused it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import cache
from typing import Any, Generic, TypeVar

from pydantic import ConfigDict, Field

from barfinex_cli.contracts.ids import uuid7
from barfinex_cli.contracts.types import Model, Payload, UtcDatetime

SCHEMA_VERSION = 1

P = TypeVar("P")


class Envelope(Model, Generic[P]):
    """One event: header fields plus a typed payload."""

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        allow_inf_nan=False,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
    )

    id: str
    type: str
    source: str
    ts: UtcDatetime
    trace_id: str
    parent_id: str | None = None
    schema_version: int = Field(default=SCHEMA_VERSION, alias="schema")
    payload: P


AnyEnvelope = Envelope[Any]


def make_event(
    payload: Payload,
    *,
    source: str,
    parent: Envelope[Any] | None = None,
    ts: datetime | None = None,
    event_id: str | None = None,
) -> Envelope[Any]:
    """Wrap `payload` in a new envelope; a child of `parent` inherits its trace.

    The payload is already a validated model and the header is made here, so the envelope is
    constructed without validating again; only a caller's `ts` is checked (aware, then UTC).
    `event_id` replaces the new UUIDv7 with one the caller derived (`ids.derived_uuid7`), for
    an outcome that must keep its id when it is published again after a crash.
    """
    event_id = event_id or uuid7()
    if ts is None:
        ts = datetime.now(UTC)
    elif ts.tzinfo is None:
        raise ValueError("ts must be timezone-aware")
    elif ts.utcoffset():
        ts = ts.astimezone(UTC)
    return _envelope_class(type(payload)).model_construct(
        id=event_id,
        type=payload.event_type,
        source=source,
        ts=ts,
        trace_id=parent.trace_id if parent is not None else event_id,
        parent_id=parent.id if parent is not None else None,
        schema_version=SCHEMA_VERSION,
        payload=payload,
    )


@cache
def _envelope_class(payload_type: type[Payload]) -> type[Envelope[Any]]:
    return Envelope[payload_type]  # type: ignore[valid-type]
