"""A paper broker with a store holds its open and recent closed orders in memory, not every one.

Each order costs about 2 KB of memory; a provider under load placed thousands a minute, and kept
them all. With a store (paper.db) the oldest closed ones are dropped from memory and read back
from the store when asked for, so every answer stays the same. Real SQLite files.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from barfinex_cli.provider.paper import broker as broker_module
from barfinex_cli.provider.paper.broker import PaperBroker
from barfinex_cli.store import broker as store_module
from barfinex_cli.store.broker import OrderRow
from provider.paper.test_broker import close_at, order, paper, stored

KEEP = 3


async def _trade(broker: PaperBroker, n: int) -> None:
    await close_at(broker, 0, 100.0)
    await broker.place(order("resting", "buy", "limit", "1", price="50"))
    for i in range(n):
        await broker.place(order(f"m{i:02}", "buy" if i % 2 == 0 else "sell", "market", "0.1"))


def _held(broker: PaperBroker) -> int:
    return len(broker._engine.orders)  # what the broker holds in memory


class _Parsed:
    """Counts the order rows the store reads and parses (its one way from a row to an order)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.rows = 0
        parse = store_module._order_row

        def counting(*row: Any) -> OrderRow:
            self.rows += 1
            return parse(*row)

        monkeypatch.setattr(store_module, "_order_row", counting)

    def since(self, before: int) -> int:
        return self.rows - before


async def test_a_stored_broker_holds_a_bounded_number_of_closed_orders_and_answers_for_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(broker_module, "KEEP_CLOSED", KEEP)
    broker, rec, store = stored(tmp_path / "paper.db")
    await _trade(broker, 20)
    assert _held(broker) <= 1 + 2 * KEEP  # the open one and at most twice KEEP closed ones
    listed = await broker.orders()
    assert [o.client_order_id for o in listed] == ["resting", *(f"m{i:02}" for i in range(20))]
    assert {o.status for o in listed[1:]} == {"filled"}
    asked = await broker.orders(ids=["m19", "nope", "m00", "resting"])
    assert [(o.client_order_id, o.status) for o in asked] == [
        ("resting", "open"), ("m00", "filled"), ("m19", "filled"),
    ]  # fmt: skip
    assert [o.client_order_id for o in await broker.orders(open_only=True)] == ["resting"]
    assert len(broker.snapshot()["orders"]) == 21

    sent = len(rec.envelopes)
    first = listed[1]  # m00, long dropped from memory
    assert await broker.place(order("m00", "sell", "market", "5")) == first  # never a second
    assert await broker.cancel("m00") == first  # closed: returned as it stands
    assert broker.order_status("m00") == "filled"
    assert len(rec.envelopes) == sent  # nothing placed, nothing emitted
    store.close()


async def test_a_reopened_store_is_held_bounded_and_still_knows_every_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(broker_module, "KEEP_CLOSED", 1_000)
    broker, _, store = stored(tmp_path / "paper.db")
    await _trade(broker, 12)
    assert _held(broker) == 13  # under the bound: nothing dropped yet
    store.close()

    monkeypatch.setattr(broker_module, "KEEP_CLOSED", KEEP)
    again, _, store2 = stored(tmp_path / "paper.db")
    assert _held(again) == 1 + KEEP
    assert len(await again.orders()) == 13
    assert [o.client_order_id for o in await again.orders(ids=["m00"])] == ["m00"]
    assert await again.orders(limit=5) == (await again.orders())[-5:]  # dropped at the resume
    store2.close()


async def test_a_broker_without_a_store_keeps_every_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(broker_module, "KEEP_CLOSED", KEEP)
    broker, _ = paper()
    await _trade(broker, 20)
    assert _held(broker) == 21  # nowhere to read a dropped one back from
    assert len(await broker.orders()) == 21


async def test_a_window_of_a_stored_broker_s_orders_reads_only_the_window_s_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(broker_module, "KEEP_CLOSED", KEEP)
    parsed = _Parsed(monkeypatch)
    cash = {"USDT": Decimal(10_000)}
    broker, _, store = stored(tmp_path / "paper.db", accounts={"paper": cash, "other": cash})
    await _trade(broker, 20)  # "resting" stays open; m00..m19 fill
    for i in range(4):
        await broker.place(order(f"o{i}", "buy", "market", "0.1", account="other"))
    assert _held(broker) <= 1 + 2 * KEEP

    def ids(found: list[Any]) -> list[str]:
        return [o.client_order_id for o in found]

    before = parsed.rows
    everything = await broker.orders()
    assert parsed.since(before) == 25  # the full listing reads every stored order
    before = parsed.rows
    assert ids(await broker.orders(limit=2)) == ["o2", "o3"]
    assert parsed.since(before) == 0  # memory holds the newest: nothing read
    window = await broker.orders(limit=10)
    assert ids(window) == [*(f"m{i}" for i in range(14, 20)), "o0", "o1", "o2", "o3"]
    assert window == everything[-10:]
    assert parsed.since(before) == 10  # the window's rows, dropped ones among them, and no more
    before = parsed.rows
    assert ids(await broker.orders("paper", limit=3)) == ["m17", "m18", "m19"]
    assert parsed.since(before) <= 3
    before = parsed.rows
    assert ids(await broker.orders(open_only=True, limit=1)) == ["resting"]
    assert ids(await broker.orders(ids=["m00", "o3", "m05"], limit=2)) == ["m05", "o3"]
    assert parsed.since(before) == 2  # the two dropped ones asked for by id
    store.close()
