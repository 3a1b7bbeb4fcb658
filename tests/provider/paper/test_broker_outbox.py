"""The paper broker's events are a transactional outbox in paper.db: none is lost to a crash.

A broker whose events were handed on but never reported published (the provider died between the
commit and the publish) is reopened on the same file: it hands the same events on again, with the
same ids and in the same order, and only those the bus had not taken. Real SQLite files; the
"bus" is the emit callback and the `published` report, as the provider's runtime makes them.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from barfinex_cli.contracts.orders import OrderFilled
from barfinex_cli.errors import TransientError
from barfinex_cli.store.broker import BrokerStore
from provider.paper.test_broker import candle, close_at, order, stored


async def test_an_entry_filled_and_committed_but_never_published_goes_out_after_a_reopen(
    tmp_path: Path,
) -> None:
    path = tmp_path / "paper.db"
    broker, rec, store = stored(path)
    await close_at(broker, 0, 100.0)
    await broker.place(order("in", "buy", "market", "1"))
    handed = list(rec.envelopes)  # handed to emit; the bus never took them (the process died)
    assert [e.type for e in handed] == [
        "order.submitted", "order.accepted", "order.filled", "position.changed", "account.balance",
    ]  # fmt: skip
    assert [r.id for r in store.unpublished()] == [e.id for e in handed]
    store.close()

    again, rec2, store2 = stored(path)
    assert rec2.envelopes == []  # nothing leaves before flush
    await again.flush()
    assert [(e.id, e.type, e.ts, e.payload) for e in rec2.envelopes] == [
        (e.id, e.type, e.ts, e.payload) for e in handed
    ]
    again.published(rec2.envelopes)
    assert store2.unpublished() == []
    store2.close()

    third, rec3, store3 = stored(path)
    await third.flush()
    assert rec3.envelopes == []  # published once: never again
    store3.close()


async def test_only_the_events_the_bus_did_not_take_are_handed_on_again(tmp_path: Path) -> None:
    path = tmp_path / "paper.db"
    broker, rec, store = stored(path)
    await close_at(broker, 0, 100.0)
    await broker.place(order("in", "buy", "market", "1"))
    broker.published(rec.envelopes[:2])  # the bus took submitted and accepted, then the crash
    rest = [e.id for e in rec.envelopes[2:]]
    store.close()

    again, rec2, store2 = stored(path)
    await again.flush()
    assert [e.id for e in rec2.envelopes] == rest
    store2.close()


async def test_a_stop_filled_on_a_candle_goes_through_the_same_outbox(tmp_path: Path) -> None:
    path = tmp_path / "paper.db"
    broker, rec, store = stored(path)
    await close_at(broker, 0, 100.0)
    await broker.place(order("in", "buy", "market", "1"))
    await broker.place(order("sl", "sell", "stop_market", "1", stop="95", reduce_only=True))
    broker.published(rec.envelopes)  # everything so far reached the bus
    assert store.unpublished() == []
    seen = len(rec.envelopes)
    await candle(broker, 1, 99.0, 99.5, 90.0, 91.0)  # falls through the stop
    stop_events = rec.envelopes[seen:]
    assert any(
        isinstance(e.payload, OrderFilled) and e.payload.order.client_order_id == "sl"
        for e in stop_events
    )
    assert [r.id for r in store.unpublished()] == [e.id for e in stop_events]
    store.close()

    again, rec2, store2 = stored(path)
    await again.flush()
    assert [e.id for e in rec2.envelopes] == [e.id for e in stop_events]
    assert again.order_status("sl") == "filled"
    store2.close()


async def test_a_repeated_client_order_id_answers_the_order_and_emits_nothing_more(
    tmp_path: Path,
) -> None:
    path = tmp_path / "paper.db"
    broker, _, store = stored(path)
    await close_at(broker, 0, 100.0)
    first = await broker.place(order("in", "buy", "market", "1"))
    store.close()

    again, rec2, store2 = stored(path)
    await again.flush()
    republished = [e.id for e in rec2.envelopes]
    assert len(republished) == 5
    retried = await again.place(order("in", "buy", "market", "1"))  # the inspector's retry
    assert retried == first
    assert [e.id for e in rec2.envelopes] == republished  # nothing twice
    again.published(rec2.envelopes)
    assert store2.unpublished() == []
    store2.close()


async def test_a_change_the_store_refused_leaves_neither_its_state_nor_its_events(
    tmp_path: Path,
) -> None:
    path = tmp_path / "paper.db"
    broker, rec, store = stored(path)
    await close_at(broker, 0, 100.0)
    store.db.conn.execute("PRAGMA busy_timeout = 0")
    other = BrokerStore(path)
    other.db.conn.execute("BEGIN IMMEDIATE")  # another writer holds the file: the commit fails
    try:
        with pytest.raises(TransientError):
            await broker.place(order("in", "buy", "market", "1"))
    finally:
        other.db.conn.execute("ROLLBACK")
        other.close()
    assert rec.envelopes == []
    store.close()

    again, rec2, store2 = stored(path)
    await again.flush()
    assert rec2.envelopes == [] and store2.unpublished() == []
    assert await again.orders() == []
    store2.close()
