"""What the multi-process e2e tests share: a namespace's cleanup and the advisor's outcomes."""

from __future__ import annotations

import asyncio

from conftest import REDIS_URL

__all__ = ["OUTCOMES", "delete_namespace"]

OUTCOMES = ["advisor.decision", "advisor.decision.rejected", "advisor.signal.dropped"]
"""What an advisor publishes once it has handled a signal (a held one says nothing final)."""


def delete_namespace(namespace: str) -> None:
    """Delete every key of `namespace` on the test Redis."""
    from barfinex_cli.bus.redis_streams import RedisStreamsBus

    async def delete() -> None:
        bus = RedisStreamsBus(REDIS_URL, namespace)
        try:
            await bus.delete_namespace()
        finally:
            await bus.close()

    asyncio.run(delete())
