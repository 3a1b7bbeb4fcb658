"""What only the Redis transport can meet: stream entries written by something other than bfx."""

from __future__ import annotations

from barfinex_cli.bus.redis_streams import RedisStreamsBus
from bus.test_semantics import candle, drain


async def test_an_entry_without_its_data_field_is_dead_lettered_with_the_reason(
    redis_bus: RedisStreamsBus,
) -> None:
    consumer = await redis_bus.consumer("g", "c1", ["market.candle"], start="0")
    good = candle(1)
    await redis_bus.redis.xadd(redis_bus.key("market.candle"), {"payload": "{}", "x": "1"})
    await redis_bus.publish(good)
    got = await drain(consumer)
    assert [d.event.id for d in got] == [good.id]
    assert consumer.dead_lettered == 1
    (letter,) = await redis_bus.dead_letters()
    assert letter.error == "stream entry has no data field 'e' (its fields: payload, x)"
    assert letter.data == b'{"payload": "{}", "x": "1"}'
    pending = await redis_bus.redis.xpending(redis_bus.key("market.candle"), "g")
    assert pending["pending"] == 0  # acknowledged: it never comes back


async def test_a_tail_skips_an_event_over_the_size_limit(redis_bus: RedisStreamsBus) -> None:
    small = RedisStreamsBus(redis_bus.url, redis_bus.namespace, max_event_bytes=1024)
    try:
        ids = await redis_bus.publish_many([candle(1), candle(2)])
        big = candle(3).model_copy(update={"source": "s" * 2000})
        await redis_bus.publish(big)
        last = candle(4)
        await redis_bus.publish(last)
        seen = []
        async for delivery in small.tail(["market.candle"], since=ids[1], block_ms=100):
            seen.append(delivery.event.id)
            break
    finally:
        await small.close()
    assert seen == [last.id]
