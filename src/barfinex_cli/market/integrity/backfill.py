"""Starting the history source a repair backfills from, and saying why when it cannot start.

`bfx data repair` builds a connector for the series' exchange and starts it only when the plan
needs a backfill. A connector that cannot start (no network, no connector installed) is a
`SourceUnreachable` carrying the exchange and the reason as fields, with the fix for a backfill,
so the CLI renders it as it is and never takes a message apart. The provider's healer uses its
running connector and does not come through here.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Protocol

from barfinex_cli.errors import BfxError, ServiceUnreachable
from barfinex_cli.market.candles import HistorySource


class StartableSource(HistorySource, Protocol):
    """A history source with a lifecycle, like a connector: started before use, then stopped."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


BACKFILL_HINT = "run with network or import the missing range with `bfx data import`"


class SourceUnreachable(ServiceUnreachable):
    """The history source a backfill needs cannot be started, or none is installed (exit 3).

    Attributes:
        exchange: The exchange whose history was wanted.
        reason: Why, in the source's words, without the source's own fix.
        hint: What to do instead.
    """

    def __init__(self, exchange: str, reason: str, hint: str = BACKFILL_HINT) -> None:
        self.exchange = exchange
        self.reason = reason
        self.hint = hint
        super().__init__(f"cannot reach {exchange} to backfill: {reason} — {hint}")


@asynccontextmanager
async def backfill_source(
    source: StartableSource | None, exchange: str
) -> AsyncIterator[HistorySource]:
    """Start `source` for a backfill of `exchange`, yield it, and stop it after.

    Raises:
        SourceUnreachable: `source` is None (no connector for the exchange), or its start
            failed with a `BfxError`.
    """
    if source is None:
        raise SourceUnreachable(exchange, "no connector for it is installed")
    try:
        try:
            await source.start()
        except BfxError as exc:
            raise SourceUnreachable(exchange, unreachable_reason(exc, exchange)) from None
        yield source
    finally:
        await source.stop()


def unreachable_reason(exc: BfxError, exchange: str) -> str:
    """Return why a source's start failed, in its words, without its fix or its preamble.

    A connector's error is one line, `cannot reach EXCHANGE (offline?): REASON — FIX`, and has no
    fields; this is the one place that reads it (the connector's fix does not apply to a
    backfill, which has its own).
    """
    detail = str(exc).split(" — ")[0]
    if detail.startswith(f"cannot reach {exchange}") and ": " in detail:
        detail = detail.split(": ", 1)[1]
    return detail
