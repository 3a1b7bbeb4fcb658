"""Delete a test's Redis namespace from outside a bus fixture (the CLI tests' own namespaces)."""

from __future__ import annotations

from barfinex_cli.bus.redis_streams import RedisStreamsBus
from conftest import REDIS_URL


async def purge(namespace: str) -> None:
    """Delete every key of `namespace` on the shared Redis."""
    bus = RedisStreamsBus(REDIS_URL, namespace)
    await bus.delete_namespace()
    await bus.close()
