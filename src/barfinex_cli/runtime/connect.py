"""Open the bus the settings name: the in-process bus, the Redis URL given, or local Redis."""

from __future__ import annotations

from barfinex_cli.bus.base import Bus
from barfinex_cli.runtime.settings import DEFAULT_REDIS_URL, Settings


def redis_url(settings: Settings) -> str:
    """Return the Redis URL to use: the configured one, else the local default."""
    return settings.redis_url or DEFAULT_REDIS_URL


async def open_bus(settings: Settings) -> Bus:
    """Connect to the configured bus and check it answers; raise `RedisUnreachable` if not."""
    if settings.bus == "memory":
        from barfinex_cli.bus.memory import MemoryBus

        return MemoryBus(settings.namespace, maxlen=settings.bus_maxlen)
    from barfinex_cli.bus.redis_streams import RedisStreamsBus

    bus = RedisStreamsBus(redis_url(settings), settings.namespace, maxlen=settings.bus_maxlen)
    try:
        await bus.ping()
    except BaseException:
        await bus.close()
        raise
    return bus
