"""Bus figures in one run, as a table of rates and ratios against baselines run in this process.

- Redis Streams bus: typed events/s publish -> handled -> acked (batched) vs a raw redis-py
  XADD/XREADGROUP/XACK loop on the same server without envelopes or validation (target >= 0.5),
  and the same with the bus's previous MULTI/EXEC publish, for the before/after in one run.
- In-process bus: events/s publish -> handled (target >= 200,000/s).
- Envelope encode+decode, microseconds per event, for the candle and decision types.
- Recorder: events/s written to SQLite in batches (target >= 50,000/s).

Needs Redis on 127.0.0.1:6379 (or BFX_REDIS_URL). Usage: python benchmarks/bus.py [--events N]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from rich.console import Console
from rich.table import Table

from barfinex_cli.bus.base import Bus, consume
from barfinex_cli.bus.memory import MemoryBus
from barfinex_cli.bus.redis_streams import RedisStreamsBus
from barfinex_cli.contracts.advisor import DecisionMade
from barfinex_cli.contracts.codec import decode, encode
from barfinex_cli.contracts.envelope import Envelope, make_event
from barfinex_cli.contracts.market import CandleClosed
from barfinex_cli.store.audit import AuditStore
from barfinex_cli.store.recorder import Recorder

URL = os.environ.get("BFX_REDIS_URL", "redis://127.0.0.1:6379/0")
BATCH = 500
T0 = datetime(2024, 1, 1, tzinfo=UTC)


def candles(n: int) -> list[Envelope[Any]]:
    out = []
    for i in range(n):
        p = Decimal(100) + Decimal(i % 500) / 10
        out.append(
            make_event(
                CandleClosed(
                    exchange="bench",
                    symbol="BTC/USDT",
                    timeframe="1m",
                    open_time=T0 + timedelta(minutes=i),
                    open=p,
                    high=p + 1,
                    low=p - 1,
                    close=p,
                    volume=Decimal("12.5"),
                ),
                source="bench",
            )
        )
    return out


def decision() -> Envelope[Any]:
    payload = DecisionMade(
        signal_id=str(uuid.uuid4()),
        exchange="bench",
        symbol="BTC/USDT",
        side="buy",
        entry=Decimal("100.5"),
        stop=Decimal("98"),
        take_profit=Decimal("105"),
        size=Decimal("0.25"),
        conviction=0.72,
        reasoning="trend and volume agree; spread tight; R/R 1.8",
    )
    return make_event(payload, source="bench")


async def handled_rate(bus: Bus, events: list[Envelope[Any]]) -> float:
    """Events/s published in batches and handled, then acked, by one group consumer on `bus`."""
    consumer = await bus.consumer("g", "c", ["market.candle"], start="0")
    stop = asyncio.Event()
    handled = 0

    async def handler(_: Envelope[Any]) -> None:
        nonlocal handled
        handled += 1
        if handled == len(events):
            stop.set()

    start = time.perf_counter()
    reader = asyncio.create_task(consume(consumer, handler, stop, batch=BATCH, block_ms=50))
    for i in range(0, len(events), BATCH):
        await bus.publish_many(events[i : i + BATCH])
        await asyncio.sleep(0)  # let the reader in between batches, on either transport
    await reader
    return len(events) / (time.perf_counter() - start)


async def typed_redis(events: list[Envelope[Any]]) -> float:
    bus = RedisStreamsBus(URL, f"bench-{uuid.uuid4().hex[:8]}", maxlen=len(events) * 2)
    try:
        return await handled_rate(bus, events)
    finally:
        await bus.delete_namespace()
        await bus.close()


class MultiExecBus(RedisStreamsBus):
    """The bus as it published before: a batch as one MULTI/EXEC of SADD and an XADD per event."""

    async def _xadd(self, items: Any) -> list[str]:
        pipe = self.redis.pipeline(transaction=True)
        pipe.sadd(self.types_key, *sorted({t for t, _ in items}))
        for event_type, data in items:
            pipe.xadd(self.key(event_type), {b"e": data}, maxlen=self.maxlen, approximate=True)
        replies = await pipe.execute()
        return [r.decode() if isinstance(r, bytes) else r for r in replies[1:]]


async def typed_redis_multi_exec(events: list[Envelope[Any]]) -> float:
    bus = MultiExecBus(URL, f"bench-{uuid.uuid4().hex[:8]}", maxlen=len(events) * 2)
    try:
        return await handled_rate(bus, events)
    finally:
        await bus.delete_namespace()
        await bus.close()


async def raw_redis(events: list[Envelope[Any]]) -> float:
    client = aioredis.Redis.from_url(URL)
    key = f"bench-raw-{uuid.uuid4().hex[:8]}"
    blobs = [encode(e) for e in events]  # same bytes on the wire, no envelope work in the loop
    try:
        await client.xgroup_create(key, "g", id="0", mkstream=True)
        done = 0

        async def reader() -> None:
            nonlocal done
            while done < len(blobs):
                reply: Any = await client.xreadgroup("g", "c", {key: ">"}, count=BATCH, block=50)
                for _, entries in reply or []:
                    ids = [entry_id for entry_id, _fields in entries]
                    done += len(ids)
                    if ids:
                        await client.xack(key, "g", *ids)

        start = time.perf_counter()
        task = asyncio.create_task(reader())
        for i in range(0, len(blobs), BATCH):
            pipe = client.pipeline(transaction=False)
            for blob in blobs[i : i + BATCH]:
                pipe.xadd(key, {b"e": blob}, maxlen=len(blobs) * 2, approximate=True)
            await pipe.execute()
        await task
        return len(blobs) / (time.perf_counter() - start)
    finally:
        await client.delete(key)
        await client.aclose()


async def memory(events: list[Envelope[Any]]) -> float:
    return await handled_rate(MemoryBus("bench", maxlen=len(events) * 2), events)


def codec_us(event: Envelope[Any], rounds: int = 20_000) -> float:
    start = time.perf_counter()
    for _ in range(rounds):
        decode(encode(event), event.type)
    return (time.perf_counter() - start) / rounds * 1e6


async def recorder(events: list[Envelope[Any]], *, as_bytes: bool) -> float:
    """Recorder throughput; `as_bytes` delivers JSON that is decoded and validated on delivery
    (as off Redis), otherwise the in-process bus hands over objects that the recorder encodes."""
    bus = MemoryBus("bench", maxlen=len(events) * 2)
    with tempfile.TemporaryDirectory() as tmp:
        store = AuditStore(Path(tmp) / "audit.db")
        consumer = await bus.consumer("recorder", "r", ["*"], start="0")
        if as_bytes:
            for e in events:
                await bus.publish_raw(e.type, encode(e))
        else:
            await bus.publish_many(events)
        rec = Recorder(consumer, store, batch_size=1000, block_ms=10)
        start = time.perf_counter()
        while rec.written < len(events):
            await rec.record_batch()
        rate = len(events) / (time.perf_counter() - start)
        store.close()
    return rate


async def main(n: int) -> None:
    events = candles(n)
    raw = await raw_redis(events)
    typed = await typed_redis(events)
    before = await typed_redis_multi_exec(events)
    mem = await memory(candles(max(n, 200_000)))
    rec_objects = await recorder(events, as_bytes=False)
    rec_bytes = await recorder(events, as_bytes=True)
    table = Table(title=f"bus benchmark ({n:,} events, batches of {BATCH})", title_justify="left")
    for col in ("figure", "measured", "baseline", "ratio", "target"):
        table.add_column(col)
    table.add_row(
        "Redis bus: typed publish->handled->acked",
        f"{typed:,.0f} ev/s",
        f"raw XADD/XREADGROUP {raw:,.0f} ev/s",
        f"{typed / raw:.2f}",
        ">= 0.5",
    )
    table.add_row(
        "  the same, publishing with MULTI/EXEC (before)",
        f"{before:,.0f} ev/s",
        f"raw XADD/XREADGROUP {raw:,.0f} ev/s",
        f"{before / raw:.2f}",
        "-",
    )
    table.add_row(
        "in-process bus: publish->handled", f"{mem:,.0f} ev/s", "-", "-", ">= 200,000 ev/s"
    )
    table.add_row(
        "envelope encode+decode: market.candle", f"{codec_us(events[0]):.1f} us", "-", "-", "-"
    )
    table.add_row(
        "envelope encode+decode: advisor.decision", f"{codec_us(decision()):.1f} us", "-", "-", "-"
    )
    table.add_row(
        "recorder: events -> SQLite (batched, encodes)",
        f"{rec_objects:,.0f} ev/s",
        "-",
        "-",
        ">= 50,000 ev/s",
    )
    table.add_row(
        "recorder: bytes -> validated -> SQLite",
        f"{rec_bytes:,.0f} ev/s",
        "-",
        "-",
        ">= 50,000 ev/s",
    )
    Console(width=160).print(table)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=50_000)
    asyncio.run(main(parser.parse_args().events))
