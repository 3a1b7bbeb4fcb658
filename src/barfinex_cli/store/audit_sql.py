"""The SQL of the audit store, built by pure functions so tests can EXPLAIN exactly what runs.

Kept apart from `audit` so that the schema, the row layout and every filter the store translates
to SQL can be read (and checked against the indexes) in one place, with no connection involved.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Literal

from barfinex_cli.contracts.envelope import AnyEnvelope
from barfinex_cli.errors import UsageError

Order = Literal["asc", "desc"]

Row = tuple[str, str, str, int, str, str, str | None, int, str, int]
"""One `events` row, in column order: id … body, recorded_us."""

COLUMNS: dict[str, type] = {
    "id": str,
    "type": str,
    "source": str,
    "ts_us": int,
    "ts": str,
    "trace_id": str,
    "parent_id": str,
    "schema": int,
    "body": str,
    "recorded_us": int,
}
"""`ts` is the event's own time (market time in a replay); `recorded_us` is the wall time at which
the store wrote it, so a replay's rows say both without mixing them."""

ADDED_COLUMNS = ("recorded_us",)
"""Columns added after the first release: an older file gets them (NULL in old rows) on open."""

INDEXES: tuple[tuple[str, ...], ...] = (
    ("type", "ts_us"),
    ("ts_us",),
    ("trace_id",),
    ("source", "ts_us"),
)
"""Each index, by columns; named `idx_events_<columns>` (sqlite-utils' naming)."""

PARENT_INDEX_SQL = (
    "CREATE INDEX IF NOT EXISTS idx_events_parent_id ON events (parent_id) "
    "WHERE parent_id IS NOT NULL"
)
"""Children by parent. Partial: most events (candles, trades, books) are roots with no parent,
and leaving them out of this index keeps the recorder's inserts about a tenth faster."""

INSERT_SQL = (
    f"INSERT OR IGNORE INTO events ({', '.join(COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in COLUMNS)})"
)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_GLOB_CHARS = frozenset("*?[")


def to_us(moment: datetime) -> int:
    """Return UTC microseconds since the epoch, exactly (no float rounding)."""
    return (moment - _EPOCH) // _MICROSECOND


def row_of(event: AnyEnvelope, body: str, recorded_us: int = 0) -> Row:
    """Return the `events` row of `event` (encoded JSON `body`), written at `recorded_us`."""
    ts = event.ts
    return (
        event.id,
        event.type,
        event.source,
        to_us(ts),
        ts.isoformat(),
        event.trace_id,
        event.parent_id,
        event.schema_version,
        body,
        recorded_us,
    )


def where_sql(
    types: Sequence[str] | None,
    since: datetime | None,
    until: datetime | None,
    trace_id: str | None,
    source: str | None,
) -> tuple[str, list[object]]:
    """Return the WHERE clause (with a leading space, or empty) and its parameters.

    `types` are exact names or glob patterns (`market.*`, SQL GLOB: case-sensitive, `*`, `?`,
    `[...]`); None or empty means every type. `since` is inclusive, `until` exclusive; both must
    be timezone-aware. `trace_id` and `source` match exactly.
    """
    clauses: list[str] = []
    params: list[object] = []
    if types:
        exact = [t for t in types if _GLOB_CHARS.isdisjoint(t)]
        patterns = [t for t in types if not _GLOB_CHARS.isdisjoint(t)]
        alternatives: list[str] = []
        if len(exact) == 1:
            alternatives.append("type = ?")
        elif exact:
            alternatives.append(f"type IN ({', '.join('?' for _ in exact)})")
        alternatives.extend("type GLOB ?" for _ in patterns)
        params.extend(exact)
        params.extend(patterns)
        either = " OR ".join(alternatives)
        clauses.append(either if len(alternatives) == 1 else f"({either})")
    if since is not None:
        clauses.append("ts_us >= ?")
        params.append(to_us(_aware(since, "since")))
    if until is not None:
        clauses.append("ts_us < ?")
        params.append(to_us(_aware(until, "until")))
    if trace_id is not None:
        clauses.append("trace_id = ?")
        params.append(trace_id)
    if source is not None:
        clauses.append("source = ?")
        params.append(source)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), params


def query_sql(
    types: Sequence[str] | None = None,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    trace_id: str | None = None,
    source: str | None = None,
    limit: int | None = 100,
    order: Order = "asc",
) -> tuple[str, list[object]]:
    """Return the SQL and parameters `AuditStore.query` runs: rows of (type, body).

    Rows are ordered by (ts, id), oldest first for "asc", newest first for "desc"; `limit` None
    means no limit.

    Raises:
        UsageError: a naive datetime, a limit below 1 or an unknown order.
    """
    if order not in ("asc", "desc"):
        raise UsageError(f"order must be 'asc' or 'desc', not {order!r}")
    where, params = where_sql(types, since, until, trace_id, source)
    direction = order.upper()
    sql = f"SELECT type, body FROM events{where} ORDER BY ts_us {direction}, id {direction}"
    if limit is not None:
        if limit < 1:
            raise UsageError(f"limit must be 1 or more, not {limit}")
        sql += " LIMIT ?"
        params.append(limit)
    return sql, params


def trace_sql(trace_id: str) -> tuple[str, list[object]]:
    """Return the SQL and parameters `AuditStore.trace` runs: a trace's rows ordered by id."""
    return "SELECT type, body FROM events WHERE trace_id = ? ORDER BY id", [trace_id]


def prefix_bounds(prefix: str) -> tuple[str, str]:
    """Return [low, high) such that `low <= id < high` holds exactly for ids starting with it.

    A range on the primary key uses its index, where LIKE (case-insensitive) would not.
    """
    return prefix, prefix[:-1] + chr(ord(prefix[-1]) + 1)


def _aware(moment: datetime, name: str) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise UsageError(f"{name} must be timezone-aware (e.g. 2024-01-01T00:00:00+00:00)")
    return moment
