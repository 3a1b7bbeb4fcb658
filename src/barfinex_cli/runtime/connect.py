"""Open the bus the settings name: the in-process bus, the Redis URL given, or local Redis."""

from __future__ import annotations

from barfinex_cli.bus.base import Bus
from barfinex_cli.runtime.settings import DEFAULT_REDIS_URL, Settings


def redis_url(settings: Settings) -> str:
    """Return the Redis URL to use: the configured one, else the local default."""
    return settings.redis_url or DEFAULT_REDIS_URL


async def open_bus(settings: Settings) -> Bus:
    """Connect to the configured bus and check it answers; raise `RedisUnreachable` if not.

    Redis must answer now (a start-up check); once running, the bus waits out an outage of up
    to `redis_outage_s` inside each call.
    """
    if settings.bus == "memory":
        from barfinex_cli.bus.memory import MemoryBus

        return MemoryBus(
            settings.namespace,
            maxlen=settings.bus_maxlen,
            max_event_bytes=settings.max_event_bytes,
        )
    from barfinex_cli.bus.redis_streams import RedisStreamsBus

    bus = RedisStreamsBus(
        redis_url(settings),
        settings.namespace,
        maxlen=settings.bus_maxlen,
        outage_s=settings.redis_outage_s,
        max_event_bytes=settings.max_event_bytes,
    )
    try:
        await bus.ping()
    except BaseException:
        await bus.close()
        raise
    return bus
