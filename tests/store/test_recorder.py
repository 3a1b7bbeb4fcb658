"""The recorder: commits a batch before acknowledging it, stores redeliveries once, stops cleanly.

The source here is a list-backed test double of the two consumer methods the recorder uses; the
recorder on a real bus is covered end to end elsewhere.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from barfinex_cli.contracts import codec
from barfinex_cli.contracts.envelope import AnyEnvelope, make_event
from barfinex_cli.contracts.market import CandleClosed
from barfinex_cli.store.audit import AuditStore
from barfinex_cli.store.recorder import Recorder

T0 = datetime(2024, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Delivered:
    event: AnyEnvelope
    raw: bytes | None = None


class ListSource:
    """Hands out queued deliveries in batches and records what is acknowledged."""

    def __init__(
        self,
        deliveries: Sequence[Delivered],
        *,
        on_fetch: Callable[[], None] | None = None,
        on_ack: Callable[[Sequence[Delivered]], None] | None = None,
    ) -> None:
        self.queue = list(deliveries)
        self.acked: list[list[Delivered]] = []
        self.on_fetch = on_fetch
        self.on_ack = on_ack

    async def fetch(self, count: int, block_ms: int) -> list[Delivered]:
        if self.on_fetch is not None:
            self.on_fetch()
        batch, self.queue = self.queue[:count], self.queue[count:]
        if not batch:
            await asyncio.sleep(block_ms / 1000)
        return batch

    async def ack(self, deliveries: Sequence[Delivered]) -> None:
        if self.on_ack is not None:
            self.on_ack(deliveries)
        self.acked.append(list(deliveries))


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "audit.db"


@pytest.fixture
def store(path: Path) -> Iterator[AuditStore]:
    with AuditStore(path) as opened:
        yield opened


def candles(count: int) -> list[AnyEnvelope]:
    return [
        make_event(
            CandleClosed(
                exchange="binance",
                symbol="ETH/USDT",
                timeframe="1m",
                open_time=T0 + timedelta(minutes=n),
                open=Decimal("2200"),
                high=Decimal("2210"),
                low=Decimal("2190"),
                close=Decimal("2205"),
                volume=Decimal("3.5"),
            ),
            source="provider",
            ts=T0 + timedelta(minutes=n + 1),
        )
        for n in range(count)
    ]


async def test_every_batch_is_committed_before_it_is_acknowledged(
    store: AuditStore, path: Path
) -> None:
    events = candles(25)
    stop = asyncio.Event()
    seen_by_another_connection: list[int] = []

    def on_ack(batch: Sequence[Delivered]) -> None:
        with AuditStore(path) as reader:
            seen_by_another_connection.append(len([reader.get(d.event.id) for d in batch]))
        if not source.queue:
            stop.set()

    source = ListSource([Delivered(e) for e in events], on_ack=on_ack)
    recorder = Recorder(source, store, batch_size=10, block_ms=10)
    await asyncio.wait_for(recorder.run(stop), timeout=5)

    assert [len(batch) for batch in source.acked] == [10, 10, 5]
    assert seen_by_another_connection == [10, 10, 5]
    assert store.query(limit=None) == events
    assert recorder.written == 25


async def test_redelivered_events_are_stored_once_and_counted_as_duplicates(
    store: AuditStore,
) -> None:
    events = candles(4)
    again = [Delivered(e) for e in events[:3]]
    source = ListSource([Delivered(e) for e in events] + again)
    recorder = Recorder(source, store, batch_size=4)

    assert await recorder.record_batch() == 4
    assert await recorder.record_batch() == 3

    assert store.count() == 4
    assert (recorder.written, recorder.duplicates) == (4, 3)
    assert [len(batch) for batch in source.acked] == [4, 3]


async def test_bytes_from_the_bus_are_stored_verbatim_and_objects_are_encoded(
    store: AuditStore,
) -> None:
    with_bytes, without = candles(2)
    travelled = codec.encode(with_bytes).replace(b'"schema":1', b'"schema": 1')
    source = ListSource([Delivered(with_bytes, travelled), Delivered(without)])

    await Recorder(source, store).record_batch()

    bodies = dict(store.db.execute("SELECT id, body FROM events").fetchall())
    assert bodies[with_bytes.id] == travelled.decode()
    assert bodies[without.id] == codec.encode(without).decode()
    assert store.query() == [with_bytes, without]


async def test_stop_during_a_fetch_still_writes_and_acknowledges_that_batch(
    store: AuditStore,
) -> None:
    events = candles(6)
    stop = asyncio.Event()
    source = ListSource([Delivered(e) for e in events], on_fetch=stop.set)
    recorder = Recorder(source, store, batch_size=4)

    await asyncio.wait_for(recorder.run(stop), timeout=5)

    assert [[d.event for d in batch] for batch in source.acked] == [events[:4]]
    assert store.query() == events[:4]
    assert len(source.queue) == 2  # left for the next start, still pending on the bus


async def test_idle_recorder_stops_within_its_fetch_timeout(store: AuditStore) -> None:
    stop = asyncio.Event()
    recorder = Recorder(ListSource([]), store, block_ms=20)
    running = asyncio.create_task(recorder.run(stop))
    await asyncio.sleep(0.05)
    assert not running.done()

    stop.set()
    await asyncio.wait_for(running, timeout=1)
    assert recorder.written == 0


async def test_batch_whose_write_fails_is_not_acknowledged_and_leaves_no_rows(
    store: AuditStore,
) -> None:
    good, bad = candles(2)
    source = ListSource([Delivered(good), Delivered(bad, b"\xff not utf-8")])
    recorder = Recorder(source, store)

    with pytest.raises(UnicodeDecodeError):
        await recorder.record_batch()

    assert source.acked == []
    assert store.count() == 0
    assert recorder.written == 0


def test_recorder_refuses_an_empty_batch_size(store: AuditStore) -> None:
    with pytest.raises(ValueError, match="batch_size"):
        Recorder(ListSource([]), store, batch_size=0)
