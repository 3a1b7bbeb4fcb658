"""The inspector's state on disk (`inspector.db`), so a restart resumes managing what it opened.

The inspector must never place an order twice and never forget a position it opened: after a
crash it reads back which decisions it judged, which orders it sent (and which of those may have
reached the provider without an answer: `in_flight`), which positions are its own (runtime) and
which protective orders guard them, whether a stand-down holds, and the day's counters the
policies judge by. Every write is one transaction; journal mode is WAL.

Durability per table: a write of an order or a position commits with `synchronous=FULL` (an
order is saved `in_flight` before it is sent, so after an OS crash or a power cut it is still
known and never placed twice; a position opened here stays this inspector's to guard). A
decision's row and the counters commit with `synchronous=NORMAL`: safe against a crash of the
process (WAL), and made durable by the next FULL commit, which syncs the whole log (an ALLOW
decision's order is saved right after its row). A power cut can lose only the rows of decisions
that placed nothing and the latest counters. This halves the fsyncs on the decision → order path
(4.7 ms each on the development disk; see docs/architecture.md, "Durability of the stores").

Layout, money as exact decimal TEXT:

    meta       key PK · value             -- counters and the stand-down (see `Counters`)
    decisions  decision_id PK · symbol · strategy · instance · received_ms · verdict · policy ·
               reason · status (pending | judged)
    orders     client_order_id PK · decision_id · role (entry | stop_loss | take_profit | close)
               · symbol · side · type · amount · price · stop_price · reduce_only · status
               (in_flight | open | filled | cancelled | rejected) · filled · average_price · fees
               · partials · intended_price · placed_ms · updated_ms · adopted · fill_seen
               (amount the fills read so far cover: their fees are in `fees`) · audited (its
               `inspector.fill_audit` is out) · last_fill_ms · last_fill_wall_ms
    positions  symbol PK · decision_id · strategy · side · size · entry · stop · take_profit ·
               opened_ms · runtime (1: opened here, 0: legacy) · status (open | closed) ·
               stop_order · tp_order · best_price · generation · realised_at_open · closed_ms ·
               realised
    suppressed signal_id PK · strategy · stage · at_ms  -- signals the advisor stopped, once each
    suppression (strategy, key) PK · n  -- running counts: `decisions`, `policy:X`, `stage:Y`

Suppression (the KPIs' decisions and blocks per strategy) is kept in the store, so a restart
keeps it: a decision is counted as it is first judged, a stopped signal as its `suppressed` row
is inserted; a store made before the counts existed has them rebuilt from its rows once.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal, Self

import sqlite_utils

from barfinex_cli.contracts.times import to_ms
from barfinex_cli.errors import ConfigError
from barfinex_cli.store.private import private_file

OrderRole = Literal["entry", "stop_loss", "take_profit", "close"]
LocalStatus = Literal["in_flight", "open", "filled", "cancelled", "rejected"]
LIVE = ("in_flight", "open")
"""Order statuses that may still trade."""

STAND_DOWN_LATEST_MS = to_ms(datetime(9999, 12, 31, tzinfo=UTC))
"""The latest stand-down end a store holds: 'until resumed'. A day short of the calendar's end,
so the time converts to any zone; a later stored value (an older version stored what it was
given) is read as this instead of crashing every reader."""
STAND_DOWN_EARLIEST_MS = to_ms(datetime(1, 1, 2, tzinfo=UTC))

_DEC_ORDER = (
    "amount", "price", "stop_price", "filled", "average_price", "fees", "intended_price",
    "fill_seen",
)  # fmt: skip
_DEC_POS = (
    "size", "entry", "stop", "take_profit", "best_price", "realised_at_open", "realised"
)  # fmt: skip
_TABLES = ("meta", "decisions", "orders", "positions", "suppressed", "suppression")
_FSYNCED = frozenset({"orders", "positions"})
"""Tables whose every write is fsynced (`synchronous=FULL`); the others ride on the next one."""
_PLAIN: frozenset[type] = frozenset({str, int, float, bytes, type(None)})
"""Value types SQLite binds as they are (a bool goes through `sqlite_utils`, as before)."""


@dataclass(frozen=True, slots=True)
class OrderRecord:
    """One order the inspector sent (or adopted), as it last knew it."""

    client_order_id: str
    decision_id: str | None
    role: OrderRole
    symbol: str
    side: Literal["buy", "sell"]
    type: Literal["market", "limit", "stop_market", "stop_limit"]
    amount: Decimal
    price: Decimal | None = None
    stop_price: Decimal | None = None
    reduce_only: bool = False
    status: LocalStatus = "in_flight"
    filled: Decimal = Decimal(0)
    average_price: Decimal | None = None
    fees: Decimal = Decimal(0)
    partials: int = 0
    intended_price: Decimal | None = None
    placed_ms: int = 0
    updated_ms: int = 0
    adopted: bool = False
    fill_seen: Decimal = Decimal(0)
    """Amount covered by the provider's fill events read so far (each carries its fee)."""
    audited: bool = False
    """Whether its `inspector.fill_audit` was published."""
    last_fill_ms: int | None = None
    """When the inspector saw its filled amount last grow, on the kernel's clock."""
    last_fill_wall_ms: int | None = None
    """The same moment in wall-clock time (a replay's market clock says nothing of latency)."""

    @property
    def live(self) -> bool:
        """Whether the order may still trade (or its fate is unknown)."""
        return self.status in LIVE


@dataclass(frozen=True, slots=True)
class PositionRecord:
    """A position on one symbol: runtime (opened by the inspector) or legacy (found, alert only)."""

    symbol: str
    side: Literal["long", "short"]
    size: Decimal
    entry: Decimal
    opened_ms: int
    runtime: bool = True
    decision_id: str | None = None
    strategy: str = "unknown"
    stop: Decimal | None = None
    take_profit: Decimal | None = None
    status: Literal["open", "closed"] = "open"
    stop_order: str | None = None
    tp_order: str | None = None
    best_price: Decimal | None = None
    generation: int = 1
    realised_at_open: Decimal = Decimal(0)
    closed_ms: int | None = None
    realised: Decimal = Decimal(0)
    """P&L (before fees) of what its own exits have closed so far: the trade's result when flat."""


@dataclass(frozen=True, slots=True)
class Counters:
    """The portfolio's running figures the policies judge by (a trading day in market time)."""

    day: str = ""
    day_start_equity: Decimal = Decimal(0)
    peak_equity: Decimal = Decimal(0)
    trades_today: int = 0
    losing_trades_today: int = 0
    loss_streak: int = 0
    last_loss_ms: int | None = None
    realised_today: Decimal = Decimal(0)
    wins: int = 0
    losses: int = 0
    stand_down_until_ms: int | None = None
    stand_down_reason: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


class InspectorStore:
    """The inspector's SQLite file; an open store is a context manager (or call `close()`)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            private_file(path)
            self.db = sqlite_utils.Database(sqlite3.connect(path, isolation_level=None))
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            self._full = True
            self._create()
            self._columns = {t: set(self.db.table(t).columns_dict) for t in _TABLES}
            self._upserts: dict[tuple[str, tuple[str, ...]], str] = {}
            self.repairs: list[str] = []
            """Values the store could not use as stored and replaced (for the owner to alert)."""
        except (OSError, sqlite3.Error) as exc:
            raise ConfigError(f"{path}: cannot open the inspector store ({exc})") from None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection."""
        self.db.conn.close()

    def _create(self) -> None:
        db = self.db
        if "meta" not in db.table_names():
            db.table("meta").create({"key": str, "value": str}, pk="key")
        if "decisions" not in db.table_names():
            db.table("decisions").create(
                {"decision_id": str, "symbol": str, "strategy": str, "instance": str,
                 "received_ms": int, "verdict": str, "policy": str, "reason": str,
                 "status": str},
                pk="decision_id",
            )  # fmt: skip
        decisions = db.table("decisions")
        if "signal_id" not in decisions.columns_dict:  # stores made before it was kept
            decisions.add_column("signal_id", str)
            decisions.create_index(["signal_id"], if_not_exists=True)
        if "orders" not in db.table_names():
            columns: dict[str, Any] = {f.name: str for f in fields(OrderRecord)}
            columns.update(
                reduce_only=int, partials=int, placed_ms=int, updated_ms=int, adopted=int,
                audited=int, last_fill_ms=int, last_fill_wall_ms=int,
            )  # fmt: skip
            db.table("orders").create(columns, pk="client_order_id")
        orders = db.table("orders")
        for name, kind in (("fill_seen", str), ("audited", int), ("last_fill_ms", int),
                           ("last_fill_wall_ms", int)):  # fmt: skip
            if name not in orders.columns_dict:  # stores made before the fill audit kept them
                orders.add_column(name, kind)
        if "positions" not in db.table_names():
            pcols: dict[str, Any] = {f.name: str for f in fields(PositionRecord)}
            pcols.update(opened_ms=int, runtime=int, generation=int, closed_ms=int)
            db.table("positions").create(pcols, pk="symbol")
        positions = db.table("positions")
        if "realised" not in positions.columns_dict:  # stores made before it was kept
            positions.add_column("realised", str)
        if "suppressed" not in db.table_names():
            db.table("suppressed").create(
                {"signal_id": str, "strategy": str, "stage": str, "at_ms": int}, pk="signal_id"
            )
        if "suppression" not in db.table_names():
            db.table("suppression").create(
                {"strategy": str, "key": str, "n": int}, pk=("strategy", "key")
            )
            # a store made before the counts were kept: count what its rows say, once
            db.execute(
                "insert into suppression (strategy, key, n)"
                " select strategy, 'decisions', count(*) from decisions where status = 'judged'"
                " group by 1"
                " union all select strategy, 'policy:' || policy, count(*) from decisions"
                " where status = 'judged' and verdict != 'ALLOW' group by 1, 2"
                " union all select strategy, 'stage:' || stage, count(*) from suppressed"
                " group by 1, 2"
            )

    def _upsert(self, table: str, row: dict[str, Any], pk: str, *, alter: bool = False) -> None:
        """Insert `row` or update the given columns of the row with its key, in one statement.

        What `sqlite_utils`' `upsert` writes, without its per-call schema introspection (it was
        most of the inspector's store time in a backtest, where every candle writes a row). A
        row with a column the table lacks, or a value SQLite cannot bind as is, goes through
        `sqlite_utils` as before (with `alter`, it adds the column).
        """
        full = table in _FSYNCED
        if full != self._full:  # WAL: may change between transactions (see the docstring)
            self.db.conn.execute(f"PRAGMA synchronous={'FULL' if full else 'NORMAL'}")
            self._full = full
        known = self._columns[table]
        if not known.issuperset(row) or not all(type(v) in _PLAIN for v in row.values()):
            self.db.table(table).upsert(row, pk=pk, alter=alter)
            self._columns[table] = set(self.db.table(table).columns_dict)
            return
        key = (table, tuple(row))
        sql = self._upserts.get(key)
        if sql is None:
            names = ", ".join(f"[{c}]" for c in row)
            marks = ", ".join("?" for _ in row)
            sets = ", ".join(f"[{c}] = excluded.[{c}]" for c in row if c != pk)
            action = f"UPDATE SET {sets}" if sets else "NOTHING"
            sql = self._upserts[key] = (
                f"INSERT INTO [{table}] ({names}) VALUES ({marks}) ON CONFLICT([{pk}]) DO {action}"
            )
        self.db.conn.execute(sql, tuple(row.values()))

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        """Return the rows of a one-table `select` as dicts (`sqlite_utils`' `query`, lighter).

        `sqlite_utils` parses each statement's first keyword and de-duplicates the column names
        on every call; the inspector reads a row on every candle, so that was measurable.
        """
        cursor = self.db.conn.execute(sql, params)
        keys = [d[0] for d in cursor.description]
        return [dict(zip(keys, row, strict=True)) for row in cursor.fetchall()]

    # -- decisions -------------------------------------------------------------------------

    def decision_status(self, decision_id: str) -> str | None:
        """Return `pending` or `judged` for a decision seen before, else None."""
        rows = list(self._query(
            "select status from decisions where decision_id = ?", [decision_id]
        ))  # fmt: skip
        return str(rows[0]["status"]) if rows else None

    def decision_of_signal(self, signal_id: str, other_than: str) -> str | None:
        """Return the id of a judged decision of `signal_id` other than `other_than`, if any."""
        rows = list(self._query(
            "select decision_id from decisions where signal_id = ? and decision_id != ?"
            " and status = 'judged' limit 1",
            [signal_id, other_than],
        ))  # fmt: skip
        return str(rows[0]["decision_id"]) if rows else None

    def record_decision(self, decision_id: str, **values: Any) -> None:
        """Insert or update a decision's row (`status`, `verdict`, `policy`, `reason`, ...)."""
        self._upsert("decisions", {"decision_id": decision_id, **values}, "decision_id", alter=True)

    def decision(self, decision_id: str | None) -> dict[str, Any]:
        """Return one decision's row, or an empty dict if it was never seen."""
        if decision_id is None:
            return {}
        sql = "select * from decisions where decision_id = ?"
        rows = list(self._query(sql, [decision_id]))
        return dict(rows[0]) if rows else {}

    def decisions(self, status: str | None = None) -> list[dict[str, Any]]:
        """Return decision rows, oldest first (optionally only those of one status)."""
        where = "where status = ?" if status else ""
        sql = f"select * from decisions {where} order by received_ms"
        return list(self._query(sql, [status] if status else []))

    def verdict_counts(self) -> dict[str, int]:
        """Return how many decisions got each verdict."""
        sql = "select verdict, count(*) n from decisions where verdict is not null group by 1"
        return {str(r["verdict"]): int(r["n"]) for r in self._query(sql)}

    # -- suppression -----------------------------------------------------------------------

    def record_suppressed(self, signal_id: str, *, strategy: str, stage: str, at_ms: int) -> bool:
        """Keep that the advisor stopped `signal_id` at `stage`; False if it was kept already.

        One row per signal: a stage's `advisor.<stage>.blocked` and the run's
        `advisor.decision.rejected` that follows it (or the same event delivered again) count once.
        """
        cursor = self.db.conn.execute(
            "insert or ignore into suppressed (signal_id, strategy, stage, at_ms)"
            " values (?, ?, ?, ?)",
            (signal_id, strategy, stage, at_ms),
        )
        if cursor.rowcount <= 0:
            return False
        self._count(strategy, f"stage:{stage}")
        return True

    def count_decision(self, strategy: str, blocked_by: str | None) -> None:
        """Count a decision judged for the first time, and the policy that refused it if any."""
        self._count(strategy, "decisions")
        if blocked_by is not None:
            self._count(strategy, f"policy:{blocked_by}")

    def _count(self, strategy: str, key: str) -> None:
        self.db.conn.execute(
            "insert into suppression (strategy, key, n) values (?, ?, 1)"
            " on conflict(strategy, key) do update set n = n + 1",
            (strategy, key),
        )

    def suppression(self) -> tuple[dict[str, int], dict[str, dict[str, int]]]:
        """Return judged decisions per strategy, and what stopped them or their signals.

        The second map is per strategy, keyed `stage:<advisor stage>` or `policy:<name>`
        (decisions whose verdict was not ALLOW). Read from running counts (`suppression`), so
        the KPIs cost the same however many decisions the store holds.
        """
        decisions: dict[str, int] = {}
        blocked: dict[str, dict[str, int]] = {}
        for r in self._query("select strategy, key, n from suppression"):
            strategy, key, n = str(r["strategy"]), str(r["key"]), int(r["n"])
            if key == "decisions":
                decisions[strategy] = n
            else:
                blocked.setdefault(strategy, {})[key] = n
        return decisions, blocked

    # -- orders ----------------------------------------------------------------------------

    def save_order(self, order: OrderRecord) -> None:
        """Write an order (before it is sent, and on every change)."""
        self._upsert("orders", _order_row(order), "client_order_id")

    def order(self, client_order_id: str) -> OrderRecord | None:
        """Return one order, or None if the inspector never sent or adopted it."""
        rows = list(self._query(
            "select * from orders where client_order_id = ?", [client_order_id]
        ))  # fmt: skip
        return _order_of(rows[0]) if rows else None

    def orders(self, *, live_only: bool = False, role: str | None = None) -> list[OrderRecord]:
        """Return orders, oldest first."""
        clauses, args = [], []
        if live_only:
            clauses.append("status in ('in_flight', 'open')")
        if role is not None:
            clauses.append("role = ?")
            args.append(role)
        where = f"where {' and '.join(clauses)}" if clauses else ""
        sql = f"select * from orders {where} order by placed_ms, rowid"
        return [_order_of(r) for r in self._query(sql, args)]

    # -- positions -------------------------------------------------------------------------

    def save_position(self, position: PositionRecord) -> None:
        """Write a position's row."""
        self._upsert("positions", _position_row(position), "symbol")

    def position(self, symbol: str) -> PositionRecord | None:
        """Return the position on `symbol` (open or the last closed one), or None."""
        rows = list(self._query("select * from positions where symbol = ?", [symbol]))
        return _position_of(rows[0]) if rows else None

    def positions(self, *, open_only: bool = True) -> list[PositionRecord]:
        """Return positions (open ones by default), by symbol."""
        where = "where status = 'open'" if open_only else ""
        sql = f"select * from positions {where} order by symbol"
        return [_position_of(r) for r in self._query(sql)]

    # -- counters --------------------------------------------------------------------------

    def counters(self) -> Counters:
        """Return the portfolio counters (defaults on a new store)."""
        rows = list(self._query("select value from meta where key = 'counters'"))
        if not rows:
            return Counters()
        data = json.loads(str(rows[0]["value"]))
        for name in ("day_start_equity", "peak_equity", "realised_today"):
            data[name] = Decimal(data[name])
        counters = Counters(**data)
        until = counters.stand_down_until_ms
        if until is not None and not STAND_DOWN_EARLIEST_MS <= until <= STAND_DOWN_LATEST_MS:
            counters = self._repair_stand_down(counters, until)
        return counters

    def _repair_stand_down(self, counters: Counters, until: int) -> Counters:
        """Replace a stand-down end no datetime can hold; note it in `repairs` for an alert.

        Past the calendar's end it becomes 'until resumed' (fail closed: still standing down);
        before its start it had ended long ago, so none is in force.
        """
        if until > STAND_DOWN_LATEST_MS:
            fixed = replace(counters, stand_down_until_ms=STAND_DOWN_LATEST_MS)
            now = "read as a stand-down until `bfx inspector resume`"
        else:
            fixed = replace(counters, stand_down_until_ms=None, stand_down_reason="")
            now = "read as no stand-down in force"
        self.save_counters(fixed)
        self.repairs.append(
            f"{self.path}: the stored stand-down end ({until} ms) is outside the times a clock "
            f"can hold; {now}"
        )
        return fixed

    def save_counters(self, counters: Counters) -> None:
        """Write the portfolio counters."""
        data = asdict(counters)
        value = json.dumps(data, default=str)
        self._upsert("meta", {"key": "counters", "value": value}, "key")

    def update_counters(self, **changes: Any) -> Counters:
        """Change some counters and write them; return the new ones."""
        counters = replace(self.counters(), **changes)
        self.save_counters(counters)
        return counters


def _dec(value: Any) -> Decimal | None:
    return None if value is None or value == "" else Decimal(str(value))


def _order_row(order: OrderRecord) -> dict[str, Any]:
    row = {f.name: getattr(order, f.name) for f in fields(OrderRecord)}
    for name in _DEC_ORDER:
        row[name] = None if row[name] is None else str(row[name])
    row["reduce_only"] = int(order.reduce_only)
    row["adopted"] = int(order.adopted)
    row["audited"] = int(order.audited)
    return row


def _order_of(row: dict[str, Any]) -> OrderRecord:
    data = dict(row)
    for name in _DEC_ORDER:
        data[name] = _dec(data[name])
    data["filled"] = data["filled"] or Decimal(0)
    data["fees"] = data["fees"] or Decimal(0)
    data["reduce_only"] = bool(data["reduce_only"])
    data["adopted"] = bool(data["adopted"])
    data["fill_seen"] = data["fill_seen"] or Decimal(0)
    data["audited"] = bool(data["audited"])
    return OrderRecord(**data)


def _position_row(position: PositionRecord) -> dict[str, Any]:
    row = {f.name: getattr(position, f.name) for f in fields(PositionRecord)}
    for name in _DEC_POS:
        row[name] = None if row[name] is None else str(row[name])
    row["runtime"] = int(position.runtime)
    return row


def _position_of(row: dict[str, Any]) -> PositionRecord:
    data = dict(row)
    for name in _DEC_POS:
        data[name] = _dec(data[name])
    data["realised_at_open"] = data["realised_at_open"] or Decimal(0)
    data["realised"] = data["realised"] or Decimal(0)
    data["runtime"] = bool(data["runtime"])
    return PositionRecord(**data)
