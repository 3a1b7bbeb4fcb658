"""The audit store on real SQLite files: stored once, found by every filter, traced, indexed."""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from barfinex_cli.contracts import codec
from barfinex_cli.contracts.envelope import AnyEnvelope, Envelope, make_event
from barfinex_cli.contracts.ids import uuid7
from barfinex_cli.contracts.market import CandleClosed
from barfinex_cli.errors import ConfigError, NotFound, UsageError
from barfinex_cli.store.audit import AuditStore
from barfinex_cli.store.audit_sql import INSERT_SQL

T0 = datetime(2024, 1, 1, tzinfo=UTC)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[AuditStore]:
    with AuditStore(tmp_path / "audit.db") as opened:
        yield opened


def candle(minute: int, *, source: str = "provider", symbol: str = "BTC/USDT") -> AnyEnvelope:
    """A closed 1m candle event stamped `minute` minutes after T0."""
    return make_event(
        CandleClosed(
            exchange="binance",
            symbol=symbol,
            timeframe="1m",
            open_time=T0 + timedelta(minutes=minute - 1),
            open=Decimal("42000.1"),
            high=Decimal("42010.5"),
            low=Decimal("41990"),
            close=Decimal("42005.25"),
            volume=Decimal("12.345"),
            trades=100,
        ),
        source=source,
        ts=T0 + timedelta(minutes=minute),
    )


def child(
    parent: AnyEnvelope, event_type: str, source: str, *, event_id: str | None = None
) -> AnyEnvelope:
    """An event caused by `parent`, one second later, in its trace, with a plain payload."""
    return Envelope[dict[str, Any]](
        id=event_id or uuid7(),
        type=event_type,
        source=source,
        ts=parent.ts + timedelta(seconds=1),
        trace_id=parent.trace_id,
        parent_id=parent.id,
        payload={"caused_by": parent.type},
    )


def chain() -> list[AnyEnvelope]:
    """Candle → signal → decision → verdict → order, as the roles would emit them."""
    events = [candle(1)]
    for event_type, source in [
        ("detector.signal", "detector"),
        ("advisor.decision", "advisor"),
        ("inspector.verdict", "inspector"),
        ("order.submitted", "inspector"),
    ]:
        events.append(child(events[-1], event_type, source))
    return events


def fixed_id(ms: int, n: int, tail: int = 0) -> str:
    """A UUIDv7-shaped id with a chosen time, so that tests control which prefixes are shared."""
    return str(uuid.UUID(int=ms << 80 | 0x7 << 76 | n << 64 | 0x8 << 60 | tail))


def test_new_file_gets_wal_schema_and_indexes_and_reopening_keeps_events(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "audit.db"
    with AuditStore(path) as store:
        assert store.append([candle(1), candle(2)]) == 2
        assert store.db.journal_mode == "wal"
        assert store.db.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    with AuditStore(path) as reopened:
        assert reopened.count() == 2
        assert {index.name for index in reopened.db.table("events").indexes} >= {
            "idx_events_type_ts_us",
            "idx_events_ts_us",
            "idx_events_trace_id",
            "idx_events_source_ts_us",
            "idx_events_parent_id",
        }


def test_each_event_is_stored_once_and_append_counts_only_new_ones(store: AuditStore) -> None:
    first, second, third = candle(1), candle(2), candle(3)
    assert store.append([first, second]) == 2
    assert store.append([second, third, third, first]) == 1
    assert store.append([]) == 0
    assert store.count() == 3


def test_stored_event_reads_back_equal_and_body_is_the_encoded_envelope(
    store: AuditStore,
) -> None:
    event = candle(1)
    store.append([event])
    assert store.get(event.id) == event
    (body,) = store.db.execute("SELECT body FROM events").fetchone()
    assert body == codec.encode(event).decode()
    ts_us, ts = store.db.execute("SELECT ts_us, ts FROM events").fetchone()
    assert ts_us == int(event.ts.timestamp()) * 1_000_000
    assert datetime.fromisoformat(ts) == event.ts


def test_event_of_a_type_outside_the_catalogue_is_stored_and_read_back(store: AuditStore) -> None:
    event = child(candle(1), "vendor.custom", "plugin")
    store.append([event])
    assert store.get(event.id) == event
    assert store.get(event.id).payload == {"caused_by": "market.candle"}


def test_append_raw_stores_the_given_json_verbatim(store: AuditStore) -> None:
    event = candle(1)
    reordered = json.dumps(dict(reversed(json.loads(codec.encode(event)).items())))
    assert store.append_raw([(event, reordered.encode())]) == 1
    assert store.db.execute("SELECT body FROM events").fetchone()[0] == reordered
    assert store.get(event.id) == event


def test_batch_that_fails_midway_stores_nothing(store: AuditStore) -> None:
    good, bad = candle(1), candle(2)
    with pytest.raises(UnicodeDecodeError):
        store.append_raw([(good, codec.encode(good)), (bad, b"\xff not utf-8")])
    assert store.count() == 0


def test_query_filters_by_exact_type_and_by_glob_pattern(store: AuditStore) -> None:
    events = chain()
    store.append(events)
    assert [e.type for e in store.query(["market.*"])] == ["market.candle"]
    assert {e.type for e in store.query(["detector.signal", "order.*"])} == {
        "detector.signal",
        "order.submitted",
    }
    assert {e.type for e in store.query(["advisor.decision", "inspector.verdict"])} == {
        "advisor.decision",
        "inspector.verdict",
    }
    assert store.query(["market"]) == []  # an exact name is not a prefix
    assert len(store.query(None)) == len(store.query([])) == 5


def test_query_time_range_includes_since_and_excludes_until(store: AuditStore) -> None:
    store.append([candle(minute) for minute in range(1, 11)])
    found = store.query(since=T0 + timedelta(minutes=3), until=T0 + timedelta(minutes=6))
    assert [e.ts for e in found] == [T0 + timedelta(minutes=m) for m in (3, 4, 5)]


def test_query_accepts_any_timezone_and_rejects_naive_datetimes(store: AuditStore) -> None:
    store.append([candle(minute) for minute in range(1, 4)])
    since = (T0 + timedelta(minutes=2)).astimezone(timezone(timedelta(hours=2)))
    assert [e.ts for e in store.query(since=since)] == [T0 + timedelta(minutes=m) for m in (2, 3)]
    with pytest.raises(UsageError, match="timezone-aware"):
        store.query(since=datetime(2024, 1, 1))


def test_query_filters_by_trace_and_by_source(store: AuditStore) -> None:
    ours, other = chain(), chain()
    store.append(ours + other)
    assert store.query(trace_id=ours[0].trace_id) == ours
    assert [e.id for e in store.query(source="inspector")] == [
        e.id for e in sorted(ours + other, key=lambda e: (e.ts, e.id)) if e.source == "inspector"
    ]
    assert store.query(source="inspector", trace_id=other[0].id) == other[3:]


def test_query_limit_and_descending_order_return_the_newest_first(store: AuditStore) -> None:
    events = [candle(minute) for minute in range(1, 11)]
    store.append(reversed(events))
    assert store.query(limit=3) == events[:3]
    assert store.query(limit=3, order="desc") == events[::-1][:3]
    assert store.query(limit=None) == events
    with pytest.raises(UsageError, match="limit"):
        store.query(limit=0)


def test_events_with_the_same_time_are_ordered_by_id(store: AuditStore) -> None:
    root = candle(1)
    siblings = [child(root, "detector.signal", f"detector-{n}") for n in range(3)]
    store.append([root, *reversed(siblings)])
    assert store.query(["detector.*"]) == siblings
    assert store.query(["detector.*"], order="desc") == siblings[::-1]


def test_count_uses_the_query_filters_and_types_counts_per_type(store: AuditStore) -> None:
    store.append(chain() + chain() + [candle(5, source="replay")])
    assert store.count() == 11
    assert store.count(["market.*"]) == 3
    assert store.count(["market.*"], source="replay") == 1
    assert store.count(since=T0 + timedelta(minutes=2)) == 1
    assert store.types() == [
        ("advisor.decision", 2),
        ("detector.signal", 2),
        ("inspector.verdict", 2),
        ("market.candle", 3),
        ("order.submitted", 2),
    ]


def test_get_accepts_a_unique_id_prefix_of_eight_or_more_characters(store: AuditStore) -> None:
    root = candle(1)
    near = [
        child(root, "detector.signal", "d", event_id=fixed_id(0x0190AAAA0000, n)) for n in (1, 2)
    ]
    far = child(root, "detector.signal", "d", event_id=fixed_id(0x0190BBBB0000, 3))
    store.append([root, *near, far])
    assert store.get(far.id[:8]) == far
    assert store.get(near[1].id[:18]) == near[1]
    with pytest.raises(UsageError, match="more than one event"):
        store.get(near[0].id[:8])


def test_get_and_trace_accept_a_unique_end_of_an_id_where_its_start_is_shared(
    store: AuditStore,
) -> None:
    root = candle(1)
    same_minute = [
        child(root, "detector.signal", "d", event_id=fixed_id(0x0190AAAA0000, 1, tail))
        for tail in (0x1A2B3C4D5E6F, 0x6F5E4D3C2B1A)
    ]
    store.append([root, *same_minute])
    first, second = same_minute
    assert first.id[:8] == second.id[:8]  # the start is shared: UUIDv7 of one minute
    assert store.get(second.id[-12:]) == second
    assert store.get(second.id[-8:].upper()) == second  # as typed, case aside
    assert {e.id for e in store.trace(first.id[-10:])} == {root.id, first.id, second.id}
    with pytest.raises(UsageError, match="the end of the id"):
        store.get(first.id[:8])
    with pytest.raises(NotFound, match="starts or ends with"):
        store.get("ffffffff")


def test_a_suffix_with_like_wildcards_matches_only_literally(store: AuditStore) -> None:
    store.append([candle(1)])
    with pytest.raises(NotFound):
        store.get("%%%%%%%%")
    with pytest.raises(NotFound):
        store.get("________")


def test_read_only_open_writes_nothing_and_reads_what_is_there(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    events = chain()
    with AuditStore(path) as store:
        store.append(events)
    before = path.read_bytes()
    with AuditStore(path, read_only=True) as reader:
        assert reader.trace(events[-1].id[-12:]) == events
        assert reader.count() == len(events)
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            reader.append([candle(9)])
    assert path.read_bytes() == before
    with pytest.raises(sqlite3.OperationalError):
        AuditStore(tmp_path / "missing.db", read_only=True)
    assert not (tmp_path / "missing.db").exists()


def test_read_only_open_refuses_a_file_that_is_not_an_audit_log(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE t (x)")
    conn.close()
    with pytest.raises(ConfigError, match="not an audit log"):
        AuditStore(path, read_only=True)


def test_get_of_an_unknown_id_raises_not_found_naming_the_fix(store: AuditStore) -> None:
    store.append([candle(1)])
    with pytest.raises(NotFound, match="check the id") as missing:
        store.get(fixed_id(1, 1))
    assert store.path in str(missing.value)
    with pytest.raises(NotFound, match="at least 8 characters"):
        store.get("0190")


def test_trace_returns_the_whole_chain_from_any_member_or_the_trace_id(
    store: AuditStore,
) -> None:
    ours, other = chain(), chain()
    store.append(other + ours[::-1])
    candle_event, order = ours[0], ours[-1]
    assert store.trace(order.id) == ours
    assert store.trace(ours[2].id) == ours
    assert store.trace(candle_event.trace_id) == ours
    assert store.trace(order.id[:-2]) == ours
    assert store.children(candle_event.id) == [ours[1]]
    assert store.children(order.id) == []


def test_trace_of_a_chain_whose_root_was_not_recorded_is_found_by_trace_id(
    store: AuditStore,
) -> None:
    root, *rest = chain()
    store.append(rest)
    assert store.trace(root.id) == rest


def test_trace_of_an_unknown_id_raises_not_found(store: AuditStore) -> None:
    store.append(chain())
    with pytest.raises(NotFound):
        store.trace(fixed_id(1, 1))


def test_an_id_longer_than_sqlite_s_like_patterns_is_not_found_in_a_short_line(
    store: AuditStore,
) -> None:
    # found by an audit: `bfx trace` of a 100,000-character id was a traceback (sqlite3's "LIKE
    # or GLOB pattern too complex"), and a 30,000-character one was echoed whole in the error
    store.append(chain())
    for ref in ("x" * 100_000, "0" * 30_000):
        with pytest.raises(NotFound, match="no event whose id starts or ends with") as raised:
            store.trace(ref)
        assert len(str(raised.value)) < 300


def test_row_written_under_an_older_model_reads_back_with_a_plain_payload(
    store: AuditStore,
) -> None:
    event = candle(1)
    old = json.loads(codec.encode(event))
    del old["payload"]["timeframe"]  # as if the field had been added since
    store.append_raw([(event, json.dumps(old))])
    (read,) = store.query()
    assert read.id == event.id
    assert read.payload == old["payload"]


def test_file_with_a_foreign_events_table_is_refused_with_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE events (id INTEGER PRIMARY KEY, name TEXT)")
    conn.close()
    with pytest.raises(ConfigError, match="not an audit log"):
        AuditStore(path)


# -- the plan on a big store -----------------------------------------------------------------

MILLION = 1_000_000
BASE_US = 1_700_000_000_000_000
TYPES = [f"market.t{n}" for n in range(5)] + [f"order.t{n}" for n in range(5)]
SOURCES = ["provider", "detector", "advisor", "inspector"]


def million_rows() -> Iterator[tuple[object, ...]]:
    """One event per millisecond, ten types and four sources interleaved, traces of five."""
    trace_id, parent_id = "", None
    for n in range(MILLION):
        event_id = f"{n:012x}"
        if n % 5 == 0:
            trace_id, parent_id = event_id, None
        ts_us = BASE_US + n * 1000
        yield (event_id, TYPES[n % 10], SOURCES[n % 4], ts_us, "", trace_id, parent_id, 1, "{}", 0)
        parent_id = event_id


def plan(store: AuditStore, sql: str, params: list[object]) -> list[str]:
    return [str(row[3]) for row in store.db.execute(f"EXPLAIN QUERY PLAN {sql}", params)]


def assert_searched_by_index(details: list[str], index: str | None = None) -> None:
    assert any("USING INDEX" in d or "USING COVERING INDEX" in d for d in details), details
    assert not any(d.startswith("SCAN") for d in details), details
    if index is not None:
        assert any(f"INDEX {index} " in d for d in details), details


@pytest.mark.slow
def test_million_row_query_uses_index(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    with AuditStore(path) as store, store.db.conn:
        store.db.conn.executemany(INSERT_SQL, million_rows())
    since = datetime.fromtimestamp(BASE_US / 1e6 + 100, UTC)
    until = since + timedelta(seconds=1)
    trace_id = f"{500:012x}"

    # Fresh store, then again after ANALYZE; each on a new connection, because SQLite never
    # re-plans a cached EXPLAIN statement when the statistics change.
    for statistics in ("no statistics", "analyzed"):
        with AuditStore(path) as store:
            details = plan(store, *store.query_sql(["market.t3"], since=since, until=until))
            assert_searched_by_index(details, "idx_events_type_ts_us")
            assert "USE TEMP B-TREE FOR ORDER BY" not in details, (statistics, details)
            assert_searched_by_index(plan(store, *store.query_sql(["market.*"], since=since)))
            assert_searched_by_index(
                plan(store, *store.query_sql(["market.t3", "order.t1"], since=since, until=until))
            )
            assert_searched_by_index(
                plan(store, *store.query_sql(source="advisor", since=since, until=until)),
                "idx_events_source_ts_us",
            )
            assert_searched_by_index(plan(store, *store.trace_sql(trace_id)), "idx_events_trace_id")

            assert store.count(["market.t3"], since=since, until=until) == 100
            assert store.count(trace_id=trace_id) == 5
            store.db.execute("ANALYZE")


def test_children_lookup_uses_the_partial_parent_index(store: AuditStore) -> None:
    plan = store.db.execute(
        "EXPLAIN QUERY PLAN SELECT type, body FROM events WHERE parent_id = ? ORDER BY id", ["x"]
    ).fetchall()
    assert any("idx_events_parent_id" in str(row) for row in plan)


def test_a_row_keeps_the_wall_time_it_was_recorded_beside_the_event_time(tmp_path: Path) -> None:
    from barfinex_cli.contracts.envelope import make_event
    from barfinex_cli.contracts.market import ConnectorHealth

    then = datetime(2024, 1, 1, tzinfo=UTC)
    health = ConnectorHealth(
        connector="replay", exchange="synthetic", connected=True, lag_ms=0, messages_per_s=0,
        reconnects=0, gaps=0, rate_limit_waits=0,
    )  # fmt: skip
    with AuditStore(tmp_path / "audit.db") as store:
        store.append([make_event(health, source="provider/replay", ts=then)])
        ts_us, recorded_us = store.db.execute("SELECT ts_us, recorded_us FROM events").fetchone()
    assert ts_us == int(then.timestamp()) * 1_000_000
    assert recorded_us > int(datetime(2025, 1, 1, tzinfo=UTC).timestamp()) * 1_000_000


def test_an_audit_file_from_before_recorded_us_gains_the_column_on_open(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "audit.db"
    with AuditStore(path):
        pass
    conn = sqlite3.connect(path)
    conn.execute("ALTER TABLE events DROP COLUMN recorded_us")
    conn.commit()
    conn.close()
    with AuditStore(path) as store:
        assert "recorded_us" in store.db.table("events").columns_dict


def test_each_write_records_its_own_wall_time(tmp_path: Path) -> None:
    import time as _time

    from barfinex_cli.contracts.envelope import make_event
    from barfinex_cli.contracts.market import ConnectorHealth

    health = ConnectorHealth(
        connector="replay", exchange="synthetic", connected=True, lag_ms=0, messages_per_s=0,
        reconnects=0, gaps=0, rate_limit_waits=0,
    )  # fmt: skip
    with AuditStore(tmp_path / "audit.db") as store:
        store.append([make_event(health, source="p")])
        start = _time.time_ns() // 1000
        while _time.time_ns() // 1000 < start + 2_000:  # let the wall clock move 2 ms
            pass
        store.append([make_event(health, source="p")])
        first, second = (
            r[0] for r in store.db.execute("SELECT recorded_us FROM events ORDER BY id")
        )
    assert second > first
