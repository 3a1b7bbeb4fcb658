"""`bfx events lag`: each consumer group's backlog per stream, and what it lost to the stream cap.

Streams are capped at about `bus_maxlen` entries; a group further behind than that loses the
oldest entries it had not read (`bus/redis_trimmed.py`). The roles log it as it happens; this
shows it afterwards, for every group of a namespace, with the backlog that leads to it.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from barfinex_cli.cli.state import state_of


def lag(
    ctx: typer.Context,
    as_json: Annotated[
        bool, typer.Option("--json", help="JSON lines on stdout, for scripts.")
    ] = False,
) -> None:
    """Show each consumer group's backlog per stream and the entries it lost to the stream cap.

    Columns: the group's consumers, its pending entries (delivered, not acknowledged), its
    unread entries (not delivered yet) and `trimmed`: entries the stream's cap (`bus_maxlen`)
    removed before the group handled them — a number, `some` where Redis 6.2 cannot count them,
    `N+` for both. A group with a backlog near `bus_maxlen` is about to lose entries. Unread
    entries are counted exactly (on Redis 6.2 by reading their ids inside Redis: a moment per
    100,000).

    Examples:

      bfx events lag

      bfx events lag --json
    """
    import asyncio

    from barfinex_cli.cli.render import err, out, print_json_line
    from barfinex_cli.errors import UsageError

    settings = state_of(ctx).settings()
    if settings.bus == "memory":
        raise UsageError(
            "the in-process bus lives in its own process: run `bfx events lag` on Redis"
        )
    rows = asyncio.run(_lags(settings))
    if as_json:
        for r in rows:
            print_json_line(
                {
                    "group": r.group,
                    "type": r.type,
                    "consumers": r.consumers,
                    "pending": r.pending,
                    "unread": None if r.unread < 0 else r.unread,
                    "trimmed": r.lost.entries,
                    "trimmed_uncounted": r.lost.unknown,
                    "trimmed_pending": r.lost.pending,
                    "trimmed_at": r.lost.at,
                }
            )
        return
    if not rows:
        err().print(f"no consumer groups on namespace {settings.namespace}", markup=False)
        return
    from rich.table import Table
    from rich.text import Text

    table = Table(
        title=f"consumer groups on {settings.namespace} (bus_maxlen {settings.bus_maxlen:,})",
        title_justify="left",
    )
    for column in ("group", "type", "consumers", "pending", "unread", "trimmed"):
        table.add_column(column, justify="left" if column in ("group", "type") else "right")
    for r in rows:
        trimmed = r.lost.describe()
        table.add_row(
            Text(r.group),
            Text(r.type),
            str(r.consumers),
            str(r.pending),
            "gone" if r.unread < 0 else str(r.unread),  # the group is no longer on the stream
            Text(trimmed, style="" if trimmed == "0" else "bold red"),
        )
    out().print(table)


async def _lags(settings: Any) -> list[Any]:
    from barfinex_cli.bus import redis_trimmed
    from barfinex_cli.runtime.connect import open_bus

    bus: Any = await open_bus(settings)
    try:
        return await bus.outage.call(lambda: redis_trimmed.lags(bus))  # type: ignore[no-any-return]
    finally:
        await bus.close()
