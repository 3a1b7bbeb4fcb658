"""`bfx events purge`: drop one namespace's keys from Redis, on request.

Every key bfx writes to Redis lives under `bfx:{namespace}:` (the streams of each event type,
their consumer groups, the type index, leases, an optimizer's journal). `bfx up` leaves them
when it stops, on purpose: the audit store is the record, but a user may still `bfx events
tail --since` or trace what the bus held, and a restarted stack resumes from its groups. So
nothing deletes them on its own; this command does, for one namespace, only with `--yes`.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from barfinex_cli.cli.state import state_of

BATCH = 500
"""Keys per SCAN page and per UNLINK call."""


def purge(
    ctx: typer.Context,
    namespace: Annotated[
        str | None,
        typer.Option(help="The namespace to drop (default: the settings' namespace)."),
    ] = None,
    yes: Annotated[
        bool, typer.Option("--yes", help="Really delete (without it, only say how many).")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Delete every Redis key of a namespace (`bfx:NS:*`): its streams, groups and leases.

    `bfx up` keeps the bus's keys when it stops (the audit store keeps every event anyway);
    this drops them. Stop the roles of that namespace first: they lose what they had not read.
    Without --yes it deletes nothing, says how many keys it would delete and exits 2.

    Examples:

      bfx events purge --yes                      # the settings' namespace (default)

      bfx events purge --namespace backtest.bt-1 --yes --json
    """
    import asyncio
    import re

    from barfinex_cli.cli.render import out, print_json
    from barfinex_cli.errors import UsageError, mask_url
    from barfinex_cli.runtime.connect import redis_url

    settings = state_of(ctx).settings()
    ns = namespace or settings.namespace
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", ns):
        raise UsageError(f"--namespace {ns!r}: use letters, digits, '_', '.' or '-'")
    if settings.bus == "memory":
        raise UsageError("the in-process bus keeps nothing after its process: nothing to purge")
    url = redis_url(settings)
    found = asyncio.run(_purge(settings, ns, delete=yes))
    keys = f"{found:,} Redis key{'' if found == 1 else 's'} of namespace {ns} on {mask_url(url)}"
    if not yes:
        raise UsageError(f"would delete {keys} — add --yes to delete")
    if as_json:
        print_json({"namespace": ns, "redis": mask_url(url), "deleted": found})
        return
    out().print(f"deleted {keys}", markup=False)


async def _purge(settings: Any, namespace: str, *, delete: bool) -> int:
    """Return how many `bfx:{namespace}:*` keys there are, deleting them when `delete`."""
    from barfinex_cli.runtime.connect import open_bus

    bus: Any = await open_bus(settings.model_copy(update={"namespace": namespace}))
    try:
        client = bus.redis
        pattern = f"bfx:{namespace}:*"
        count = 0
        batch: list[bytes] = []
        async for key in client.scan_iter(match=pattern, count=BATCH):
            batch.append(key)
            if len(batch) >= BATCH:
                count += await _drop(client, batch, delete)
                batch = []
        if batch:
            count += await _drop(client, batch, delete)
        return count
    finally:
        await bus.close()


async def _drop(client: Any, keys: list[bytes], delete: bool) -> int:
    if not delete:
        return len(keys)
    return int(await client.unlink(*keys))
