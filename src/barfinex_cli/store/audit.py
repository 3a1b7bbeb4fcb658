"""The audit store: every event, stored once, findable by type, time, source and trace.

It exists so that any order can be followed back through the verdict, the decision and the signal
to the candle that started it (`bfx trace`), and so that models can be trained on what happened.

Layout: one table, `events`. The header fields are columns so that SQLite can index them; the
whole envelope is kept in `body` exactly as it was encoded (for events that came off Redis, the
very bytes that travelled), so a read returns what was sent, byte for byte. There is no `payload`
column: it would store the payload twice; in SQL, `json_extract(body, '$.payload')` reads it.

    id TEXT PRIMARY KEY · type · source · ts_us INTEGER (UTC microseconds since the epoch, for
    range queries) · ts TEXT (ISO 8601, for people reading the file with sqlite-utils or
    Datasette) · trace_id · parent_id (NULL for a root) · schema INTEGER · body TEXT (JSON) ·
    recorded_us INTEGER (wall time of the write: in a replay `ts` is market time, this is not)

Indexes: (type, ts_us), (ts_us), (trace_id), (source, ts_us), (parent_id). The SQL each query
runs is public (`query_sql`, `trace_sql`) so a test can hold it to its index with EXPLAIN.

Writes go through the raw sqlite3 connection with one `executemany` of INSERT OR IGNORE per batch
in one transaction: an event id is stored once however often the bus redelivers it. This is the
fast path the recorder needs: 1000-event batches of candles store at ~60,000 events/s including
encoding, where sqlite-utils' `insert_all` (dict rows, SQL built per chunk) measured ~45,000.

Journal mode is WAL with `synchronous=NORMAL`: readers (the CLI, the gateway) never block the
recorder and commits skip the fsync. A crash of the process loses nothing committed; a power cut
or OS crash may roll back the last commits, even ones the recorder already acknowledged. That is
the price of the throughput, accepted for an audit log of a single machine.

Reads are ordered by (ts, id) — a trace by id, which is creation order (ids are UUIDv7). A row
whose payload no longer validates against the current catalogue (the model changed since it was
written) is returned with a plain dict payload rather than failing the whole read: the record of
what happened must stay readable.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Sequence
from datetime import datetime
from functools import cache
from typing import Any, Self

import sqlite_utils
from pydantic import TypeAdapter, ValidationError

from barfinex_cli.contracts import codec
from barfinex_cli.contracts.envelope import AnyEnvelope, Envelope
from barfinex_cli.errors import ConfigError, NotFound, UsageError
from barfinex_cli.store.audit_sql import (
    ADDED_COLUMNS,
    COLUMNS,
    INDEXES,
    INSERT_SQL,
    PARENT_INDEX_SQL,
    Order,
    Row,
    prefix_bounds,
    query_sql,
    row_of,
    trace_sql,
    where_sql,
)
from barfinex_cli.store.private import private_file
from barfinex_cli.store.readonly import connect_read_only

MIN_PREFIX = 8
"""The fewest characters of an id that `get` and `trace` accept as its start or its end."""


class AuditStore:
    """The events table in one SQLite file; open it, append batches, query, close."""

    def __init__(self, path: str | os.PathLike[str], *, read_only: bool = False) -> None:
        """Open the store at `path`, creating the file, its directory and the schema if needed.

        With `read_only`, the file must exist and nothing is written to it (SQLite may still
        keep its `-shm` beside it where it can; see `store.readonly`): the CLI's queries work
        on a data directory they may not write.
        """
        self.path = str(path)
        if read_only:
            self.db = sqlite_utils.Database(connect_read_only(self.path))
            try:
                self._check_schema()
            except BaseException:
                self.db.close()
                raise
            return
        if self.path != ":memory:":
            private_file(self.path)
        self.db = sqlite_utils.Database(self.path)
        try:
            self.db.enable_wal()
            self.db.execute("PRAGMA synchronous=NORMAL")
            self._ensure_schema()
        except BaseException:
            self.db.close()
            raise

    def _ensure_schema(self) -> None:
        table = self.db.table("events")
        if table.exists():
            for column in ADDED_COLUMNS:
                if column not in table.columns_dict:
                    table.add_column(column, COLUMNS[column])
            missing = sorted(COLUMNS.keys() - table.columns_dict.keys())
            if missing:
                raise ConfigError(
                    f"{self.path} has an 'events' table that is not an audit log "
                    f"(no column {', '.join(missing)}); point the data directory elsewhere "
                    "or move that file away"
                )
        else:
            nullable = {"parent_id", *ADDED_COLUMNS}
            table.create(COLUMNS, pk="id", not_null=set(COLUMNS) - nullable)
        for columns in INDEXES:
            table.create_index(columns, if_not_exists=True)
        self.db.execute(PARENT_INDEX_SQL)

    def _check_schema(self) -> None:
        """Refuse a file whose `events` table is missing or not an audit log (read-only open)."""
        table = self.db.table("events")
        missing = sorted(COLUMNS.keys() - set(ADDED_COLUMNS) - table.columns_dict.keys())
        if not table.exists() or missing:
            raise ConfigError(
                f"{self.path} is not an audit log (no 'events' table with the audit columns); "
                "point the data directory elsewhere"
            )

    def close(self) -> None:
        """Close the connection; the store cannot be used afterwards."""
        self.db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- writing -----------------------------------------------------------------------------

    def append(self, events: Iterable[AnyEnvelope]) -> int:
        """Store `events` in one transaction; return how many were new (duplicates are skipped)."""
        now = _wall_us()
        return self._insert(row_of(event, codec.encode(event).decode(), now) for event in events)

    def append_raw(self, rows: Iterable[tuple[AnyEnvelope, bytes | str]]) -> int:
        """Store already-encoded events, each given with its JSON, without encoding them again.

        The JSON must be the encoding of its envelope (as read off the bus); it is stored as is.
        Returns how many events were new.
        """
        now = _wall_us()
        return self._insert(
            row_of(event, raw if isinstance(raw, str) else raw.decode(), now) for event, raw in rows
        )

    def _insert(self, rows: Iterable[Row]) -> int:
        conn = self.db.conn
        with conn:  # one transaction: the whole batch or nothing
            cursor = conn.executemany(INSERT_SQL, rows)
        return max(cursor.rowcount, 0)

    # -- reading -----------------------------------------------------------------------------

    query_sql = staticmethod(query_sql)
    trace_sql = staticmethod(trace_sql)

    def query(
        self,
        types: Sequence[str] | None = None,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        trace_id: str | None = None,
        source: str | None = None,
        limit: int | None = 100,
        order: Order = "asc",
    ) -> list[AnyEnvelope]:
        """Return events matching every filter given, in time order; see `query_sql`."""
        sql, params = query_sql(
            types,
            since=since,
            until=until,
            trace_id=trace_id,
            source=source,
            limit=limit,
            order=order,
        )
        return self._decode_all(sql, params)

    def count(
        self,
        types: Sequence[str] | None = None,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        trace_id: str | None = None,
        source: str | None = None,
    ) -> int:
        """Return how many events match the filters (the same ones as `query`)."""
        where, params = where_sql(types, since, until, trace_id, source)
        (total,) = self.db.conn.execute(f"SELECT count(*) FROM events{where}", params).fetchone()
        return int(total)

    def types(self) -> list[tuple[str, int]]:
        """Return each stored event type with its number of events, sorted by type."""
        rows = self.db.conn.execute("SELECT type, count(*) FROM events GROUP BY type ORDER BY type")
        return [(str(event_type), int(n)) for event_type, n in rows]

    def get(self, event_id: str) -> AnyEnvelope:
        """Return the event with this id, or whose id alone starts or ends with these 8+ characters.

        Raises:
            NotFound: no event has this id, prefix or suffix.
            UsageError: the prefix or suffix matches more than one event.
        """
        full_id = self._resolve(event_id)
        return self._decode_all("SELECT type, body FROM events WHERE id = ?", [full_id])[0]

    def trace(self, ref: str) -> list[AnyEnvelope]:
        """Return every event of the trace `ref` belongs to, ordered by id (creation order).

        `ref` is the id (or a unique start or end of it) of any event of the trace, or the
        trace id.
        Build the tree from each event's `parent_id`.

        Raises:
            NotFound: no event has this id and no trace this trace id.
        """
        conn = self.db.conn
        row = conn.execute("SELECT trace_id FROM events WHERE id = ?", (ref,)).fetchone()
        if row is not None:
            trace_id = str(row[0])
        elif conn.execute("SELECT 1 FROM events WHERE trace_id = ? LIMIT 1", (ref,)).fetchone():
            trace_id = ref
        else:
            full_id = self._resolve(ref)
            (trace_id,) = conn.execute(
                "SELECT trace_id FROM events WHERE id = ?", (full_id,)
            ).fetchone()
        sql, params = trace_sql(trace_id)
        return self._decode_all(sql, params)

    def children(self, event_id: str) -> list[AnyEnvelope]:
        """Return the events whose parent is `event_id` (a full id), ordered by id."""
        return self._decode_all(
            "SELECT type, body FROM events WHERE parent_id = ? ORDER BY id", [event_id]
        )

    def _resolve(self, ref: str) -> str:
        """Return the one id equal to `ref`, or starting or ending with it (8+ characters).

        UUIDv7 ids made in the same minute share their first hex digits, so a prefix is often
        ambiguous; the end of an id is random, so its last 8 to 12 characters almost never are.
        """
        ref = ref.strip()
        conn = self.db.conn
        if conn.execute("SELECT 1 FROM events WHERE id = ?", (ref,)).fetchone() is not None:
            return ref
        hint = (
            f"check the id, and that the data directory is the one that recorded it "
            f"(this store is {self.path})"
        )
        if len(ref) < MIN_PREFIX:
            raise NotFound(
                f"no event with id {ref!r}; {hint}. A part of an id (its start or its end) needs "
                f"at least {MIN_PREFIX} characters"
            )
        low, high = prefix_bounds(ref)
        by_prefix = conn.execute(
            "SELECT id FROM events WHERE id >= ? AND id < ? ORDER BY id LIMIT 3", (low, high)
        )
        # the end compared as text, not as a LIKE pattern: SQLite refuses patterns over 50,000
        # characters, and a pasted blob of that size is a user's mistake, not an error of ours
        by_suffix = conn.execute(
            "SELECT id FROM events WHERE lower(substr(id, ?)) = lower(?) LIMIT 3", (-len(ref), ref)
        )
        ids = sorted({str(found) for (found,) in [*by_prefix, *by_suffix]})
        shown = repr(ref) if len(ref) <= 80 else f"{ref[:40]!r}... ({len(ref)} characters)"
        if not ids:
            raise NotFound(f"no event whose id starts or ends with {shown}; {hint}")
        if len(ids) > 1:
            raise UsageError(
                f"{shown} matches more than one event ({ids[0]}, {ids[1]}, ...); give more "
                "characters, or the end of the id (its last 12 characters are random)"
            )
        return ids[0]

    def _decode_all(self, sql: str, params: Sequence[object]) -> list[AnyEnvelope]:
        return [_decode(str(t), str(body)) for t, body in self.db.conn.execute(sql, params)]


def _wall_us() -> int:
    return time.time_ns() // 1000


@cache
def _plain_adapter() -> TypeAdapter[AnyEnvelope]:
    return TypeAdapter(Envelope[dict[str, Any]])


def _decode(event_type: str, body: str) -> AnyEnvelope:
    try:
        return codec.decode(body, event_type)
    except codec.MalformedEvent:
        # Written under an older model of this type: keep it readable with a plain payload.
        try:
            return _plain_adapter().validate_json(body)
        except ValidationError as exc:
            raise codec.MalformedEvent(f"stored {event_type} event is corrupt: {exc}") from None
