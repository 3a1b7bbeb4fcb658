"""A paper broker with a store holds its open and recent closed orders in memory, not every one.

Each order costs about 2 KB of memory; a provider under load placed thousands a minute, and kept
them all. With a store (paper.db) the oldest closed ones are dropped from memory and read back
from the store when asked for, so every answer stays the same. Real SQLite files.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from barfinex_cli.provider.paper import broker as broker_module
from barfinex_cli.provider.paper.broker import PaperBroker
from provider.paper.test_broker import close_at, order, paper, stored

KEEP = 3


async def _trade(broker: PaperBroker, n: int) -> None:
    await close_at(broker, 0, 100.0)
    await broker.place(order("resting", "buy", "limit", "1", price="50"))
    for i in range(n):
        await broker.place(order(f"m{i:02}", "buy" if i % 2 == 0 else "sell", "market", "0.1"))


def _held(broker: PaperBroker) -> int:
    return len(broker._engine.orders)  # what the broker holds in memory


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
    store2.close()


async def test_a_broker_without_a_store_keeps_every_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(broker_module, "KEEP_CLOSED", KEEP)
    broker, _ = paper()
    await _trade(broker, 20)
    assert _held(broker) == 21  # nowhere to read a dropped one back from
    assert len(await broker.orders()) == 21
