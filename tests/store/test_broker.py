"""The paper broker store on real SQLite files: exact decimals, whole commits, clear refusals."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from barfinex_cli.contracts.orders import Fill, OrderState
from barfinex_cli.errors import ConfigError
from barfinex_cli.store.broker import (
    BrokerChange,
    BrokerState,
    BrokerStore,
    FillRow,
    OrderRow,
    PositionRow,
)

D = Decimal
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[BrokerStore]:
    with BrokerStore(tmp_path / "paper.db") as opened:
        yield opened


def order_row(cid: str, seq: int, status: str = "open", filled: str = "0") -> OrderRow:
    state = OrderState(
        client_order_id=cid,
        order_id=f"paper-{seq}",
        account="paper",
        exchange="paper",
        symbol="BTC/USDT",
        side="buy",
        type="limit",
        amount=D("1.5"),
        price=D("99.12345678"),
        filled=D(filled),
        status="open",
    )
    return OrderRow(state=state, status=status, seq=seq, notional=D(filled) * D("99.12345678"))  # type: ignore[arg-type]


def fill_row(cid: str, trade_id: str, minute: int) -> FillRow:
    fill = Fill(
        trade_id=trade_id,
        price=D("99.12345678"),
        amount=D("0.5"),
        fee=D("0.00991235"),
        fee_currency="USDT",
        liquidity="maker",
        time=T0 + timedelta(minutes=minute),
    )
    return FillRow(client_order_id=cid, account="paper", symbol="BTC/USDT", side="buy", fill=fill)


def test_a_new_file_holds_nothing_and_is_in_wal_mode(store: BrokerStore) -> None:
    assert store.load() is None
    assert store.db.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.fills() == []


def test_a_committed_change_loads_back_exactly(tmp_path: Path) -> None:
    path = tmp_path / "paper.db"
    with BrokerStore(path) as store:
        store.commit(
            BrokerChange(
                seq=2,
                cash={"paper": {"USDT": D("9999.90000001")}, "main": {"EUR": D("0.1")}},
                positions=[
                    PositionRow(
                        account="paper",
                        symbol="BTC/USDT",
                        size=D("-0.5"),
                        entry=D("99.1"),
                        realised=D("-0.00000001"),
                    ),
                    PositionRow(account="paper", symbol="ETH/USDT", size=D(0), entry=None),
                ],
                orders=[order_row("a", 1), order_row("b", 2)],
                fills=[fill_row("a", "paper-1-1", 0)],
                marks={"BTC/USDT": (D("99.5"), D("12.25")), "ETH/USDT": (D(3000), None)},
            )
        )
    with BrokerStore(path) as store:
        state = store.load()
        assert state is not None
        assert state.seq == 2
        assert state.cash == {"main": {"EUR": D("0.1")}, "paper": {"USDT": D("9999.90000001")}}
        assert [(p.symbol, p.size, p.entry, p.realised) for p in state.positions] == [
            ("BTC/USDT", D("-0.5"), D("99.1"), D("-0.00000001")),
            ("ETH/USDT", D(0), None, D(0)),
        ]
        assert state.orders == [order_row("a", 1), order_row("b", 2)]
        assert state.last_price == {"BTC/USDT": D("99.5"), "ETH/USDT": D(3000)}
        assert state.last_volume == {"BTC/USDT": D("12.25")}
        assert store.fills("a") == [fill_row("a", "paper-1-1", 0)]


def test_an_order_written_again_replaces_its_row_and_fills_list_in_the_order_made(
    store: BrokerStore,
) -> None:
    store.commit(BrokerChange(seq=1, orders=[order_row("a", 1)]))
    store.commit(
        BrokerChange(
            orders=[order_row("a", 1, status="filled", filled="1.5")],
            fills=[fill_row("a", "paper-1-1", 5)],
        )
    )
    store.commit(BrokerChange(fills=[fill_row("a", "paper-1-2", 1)]))  # a replay clock's time
    state = store.load()
    assert state is not None and state.orders == [order_row("a", 1, "filled", "1.5")]
    assert [f.fill.trade_id for f in store.fills()] == ["paper-1-1", "paper-1-2"]
    assert store.fills("other") == []


def test_the_latest_orders_come_oldest_first_read_newest_first_through_an_index(
    store: BrokerStore,
) -> None:
    def row(cid: str, seq: int, account: str) -> OrderRow:
        made = order_row(cid, seq)
        return made.model_copy(update={"state": made.state.model_copy(update={"account": account})})

    rows = [row(f"c{seq}", seq, "a" if seq % 3 else "b") for seq in range(1, 10)]
    store.commit(BrokerChange(seq=9, orders=rows[::-1]))  # written newest first
    assert [r.seq for r in store.orders()] == list(range(1, 10))
    assert [r.seq for r in store.orders(limit=3)] == [7, 8, 9]
    assert [r.seq for r in store.orders("b", limit=2)] == [6, 9]
    assert [r.seq for r in store.orders("a", limit=100)] == [1, 2, 4, 5, 7, 8]
    ran: list[str] = []
    store.db.conn.set_trace_callback(ran.append)
    store.orders("a", limit=2)
    store.orders(limit=2)
    store.db.conn.set_trace_callback(None)
    assert len(ran) == 2
    for sql in ran:  # neither sorts the whole table: the index gives the newest first
        plan = " ".join(str(r[-1]) for r in store.db.conn.execute(f"EXPLAIN QUERY PLAN {sql}"))
        assert "INDEX" in plan and "TEMP B-TREE" not in plan, (sql, plan)


def test_a_change_that_fails_half_way_writes_nothing(store: BrokerStore) -> None:
    store.commit(BrokerChange(seq=1, cash={"paper": {"USDT": D(100)}}))
    twice = [fill_row("a", "paper-1-1", 0), fill_row("a", "paper-1-1", 1)]
    with pytest.raises(sqlite3.IntegrityError):
        store.commit(
            BrokerChange(
                seq=2, cash={"paper": {"USDT": D(50)}}, orders=[order_row("a", 2)], fills=twice
            )
        )
    state = store.load()
    assert state is not None
    assert (state.seq, state.cash, state.orders) == (1, {"paper": {"USDT": D(100)}}, [])
    assert store.fills() == []


def test_replace_leaves_only_the_new_state(store: BrokerStore) -> None:
    store.commit(
        BrokerChange(
            seq=5,
            cash={"old": {"USDT": D(1)}},
            orders=[order_row("x", 5)],
            fills=[fill_row("x", "paper-5-1", 0)],
            marks={"ETH/USDT": (D(1), D(2))},
        )
    )
    fresh = BrokerState(
        seq=1,
        cash={"paper": {"USDT": D(10)}},
        orders=[order_row("a", 1)],
        last_price={"BTC/USDT": D(100)},
    )
    store.replace(fresh)
    assert store.load() == fresh
    assert store.fills() == []


def test_a_file_that_is_not_sqlite_is_a_config_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "paper.db"
    path.write_bytes(b"this is a text file, not a database" * 200)
    with pytest.raises(ConfigError, match=r"paper\.db is not a paper broker database"):
        BrokerStore(path)


def test_a_foreign_table_of_the_same_name_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "paper.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, what TEXT)")
    conn.close()
    with pytest.raises(ConfigError, match="'orders' table that is not the paper broker's"):
        BrokerStore(path)


def test_a_file_written_by_a_newer_layout_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "paper.db"
    BrokerStore(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema'")
    conn.close()
    with pytest.raises(ConfigError, match="written by a newer bfx"):
        BrokerStore(path)


def test_a_damaged_row_is_a_config_error_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "paper.db"
    with BrokerStore(path) as store:
        store.commit(
            BrokerChange(seq=1, cash={"paper": {"USDT": D(1)}}, orders=[order_row("a", 1)])
        )
        store.db.conn.execute("UPDATE cash SET amount = 'lots'")
        store.db.conn.commit()
        with pytest.raises(
            ConfigError, match=r"paper\.db holds a paper account that does not read"
        ):
            store.load()
