"""The inspector's store: what a restart reads back is what was written, exactly."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from barfinex_cli.errors import ConfigError
from barfinex_cli.store.inspector import InspectorStore, OrderRecord, PositionRecord


def test_orders_positions_and_counters_survive_a_reopen_with_exact_decimals(
    tmp_path: Path,
) -> None:
    path = tmp_path / "inspector.db"
    order = OrderRecord(
        client_order_id="i-d1-e", decision_id="d1", role="entry", symbol="BTC/USDT",
        side="buy", type="limit", amount=Decimal("0.10000001"), price=Decimal("100.01"),
        intended_price=Decimal("100.01"), placed_ms=5,
    )  # fmt: skip
    position = PositionRecord(
        symbol="BTC/USDT", side="long", size=Decimal("0.1"), entry=Decimal("100.0100001"),
        opened_ms=7, decision_id="d1", strategy="momentum", stop=Decimal("98"),
        take_profit=None, stop_order="i-d1-sl1",
    )  # fmt: skip
    with InspectorStore(path) as store:
        store.save_order(order)
        store.save_position(position)
        store.update_counters(
            loss_streak=2, realised_today=Decimal("-12.5"), peak_equity=Decimal(1)
        )
        store.record_decision("d1", symbol="BTC/USDT", status="judged", verdict="ALLOW",
                              received_ms=3)  # fmt: skip
    with InspectorStore(path) as store:
        assert store.order("i-d1-e") == order
        assert store.position("BTC/USDT") == position
        assert store.orders(live_only=True) == [order]
        counters = store.counters()
        assert (counters.loss_streak, counters.realised_today) == (2, Decimal("-12.5"))
        assert store.decision_status("d1") == "judged"
        assert store.verdict_counts() == {"ALLOW": 1}


def test_settled_orders_are_not_live_and_closed_positions_not_open(tmp_path: Path) -> None:
    with InspectorStore(tmp_path / "inspector.db") as store:
        base = OrderRecord(
            client_order_id="a", decision_id=None, role="close", symbol="X/USDT", side="sell",
            type="market", amount=Decimal(1), status="filled",
        )  # fmt: skip
        store.save_order(base)
        closed = PositionRecord(
            symbol="X/USDT", side="short", size=Decimal(0), entry=Decimal(1), opened_ms=0,
            status="closed",
        )  # fmt: skip
        store.save_position(closed)
        assert store.orders(live_only=True) == [] and store.positions() == []
        assert len(store.positions(open_only=False)) == 1


def test_an_unusable_path_is_a_config_error_naming_it(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match="inspector store"):
        InspectorStore(blocker / "inspector.db")


def test_a_decision_update_keeps_columns_not_given_and_adds_new_ones(tmp_path: Path) -> None:
    with InspectorStore(tmp_path / "inspector.db") as store:
        store.record_decision("d1", symbol="BTC/USDT", received_ms=1, status="pending")
        store.record_decision("d1", status="judged", verdict="ALLOW", stop="98.5")
        row = store.decision("d1")
        store.record_decision("d1", reason="again")
        again = store.decision("d1")
    assert row["symbol"] == "BTC/USDT" and row["received_ms"] == 1
    assert row["status"] == "judged" and row["stop"] == "98.5"
    assert again == {**row, "reason": "again"}


def test_orders_and_positions_are_fsynced_and_decisions_ride_on_the_next_fsync(
    tmp_path: Path,
) -> None:
    def synchronous(store: InspectorStore) -> int:
        return int(store.db.conn.execute("PRAGMA synchronous").fetchone()[0])

    order = OrderRecord(
        client_order_id="i-d1-e", decision_id="d1", role="entry", symbol="BTC/USDT",
        side="buy", type="market", amount=Decimal("0.1"),
    )  # fmt: skip
    with InspectorStore(tmp_path / "inspector.db") as store:
        store.record_decision("d1", symbol="BTC/USDT", status="judged")
        assert synchronous(store) == 1  # NORMAL
        store.save_order(order)
        assert synchronous(store) == 2  # FULL
        store.update_counters(trades_today=1)
        assert synchronous(store) == 1
    with InspectorStore(tmp_path / "inspector.db") as store:
        assert store.decision("d1")["status"] == "judged"
        assert store.order("i-d1-e") == order
        assert store.counters().trades_today == 1


def test_suppression_counts_each_stopped_signal_once_and_survive_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "inspector.db"
    with InspectorStore(path) as store:
        assert store.record_suppressed("s1", strategy="momentum", stage="quality", at_ms=1)
        # the run's advisor.decision.rejected after the quality block: the same signal
        assert not store.record_suppressed("s1", strategy="momentum", stage="quality", at_ms=2)
        store.record_suppressed("s2", strategy="breakout", stage="intake", at_ms=3)
        store.count_decision("momentum", None)
        store.count_decision("momentum", "cooldown")
    with InspectorStore(path) as store:
        assert store.suppression() == (
            {"momentum": 2},
            {"momentum": {"stage:quality": 1, "policy:cooldown": 1},
             "breakout": {"stage:intake": 1}},
        )  # fmt: skip


def test_a_store_made_before_the_suppression_counts_has_them_rebuilt_from_its_rows(
    tmp_path: Path,
) -> None:
    path = tmp_path / "inspector.db"
    with InspectorStore(path) as store:
        for i, verdict in enumerate(("ALLOW", "BLOCK", "BLOCK")):
            store.record_decision(f"d{i}", strategy="momentum", verdict=verdict,
                                  policy="spread", status="judged")  # fmt: skip
        store.record_decision("d9", strategy="momentum", status="pending")
        store.record_suppressed("s1", strategy="momentum", stage="conviction", at_ms=1)
        store.db.execute("drop table suppression")  # as an older version left it
    with InspectorStore(path) as store:
        assert store.suppression() == (
            {"momentum": 3},
            {"momentum": {"policy:spread": 2, "stage:conviction": 1}},
        )
