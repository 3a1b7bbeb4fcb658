"""What `bfx up` shows: the live status panel and the summary, from the audit store or the bus.

A host that runs the recorder reads the flow from its audit store. A host that joined a stack
running elsewhere (`bfx up --roles detector,advisor`) has no audit store of its own, so it counts
the events on the shared Redis streams of the namespace instead (the whole stack's flow, as far
as the streams' length cap keeps it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from barfinex_cli.kernel.supervisor import Supervisor
    from barfinex_cli.runtime.settings import Settings

FLOW = (
    ("candles", "market.candle"), ("signals", "detector.signal"),
    ("decisions", "advisor.decision"), ("verdicts", "inspector.verdict"),
    ("orders", "order.submitted"), ("fills", "order.filled"),
)  # fmt: skip


def audit_counts(settings: Settings) -> dict[str, int]:
    """Return events per type in the data dir's audit store ({} while there is none)."""
    from barfinex_cli.store.audit import AuditStore

    if not settings.audit_path.is_file():
        return {}
    try:
        with AuditStore(settings.audit_path, read_only=True) as audit:
            return dict(audit.types())
    except Exception:  # the recorder is creating the file: nothing to show yet
        return {}


def bus_counts(redis_url: str, namespace: str) -> dict[str, int]:
    """Return entries per type on the namespace's Redis streams ({} if Redis does not answer)."""
    import redis

    prefix = f"bfx:{namespace}:"
    try:
        client = redis.Redis.from_url(redis_url, socket_timeout=2, socket_connect_timeout=2)
        try:
            types = sorted(t.decode() for t in client.smembers(prefix + "_types"))  # type: ignore[union-attr]
            pipe = client.pipeline(transaction=False)
            for event_type in types:
                pipe.xlen(prefix + event_type)
            return {t: int(n) for t, n in zip(types, pipe.execute(), strict=True) if n}
        finally:
            client.close()
    except redis.RedisError:
        return {}


class Counts:
    """Where one `bfx up` reads its flow: the local audit store, else the shared streams."""

    def __init__(self, settings: Settings, redis_url: str | None, *, recorded: bool) -> None:
        self.settings = settings
        self.redis_url = redis_url
        self.recorded = recorded
        self.source = "audit store" if recorded or redis_url is None else "bus streams"

    def __call__(self) -> dict[str, int]:
        if self.recorded or self.redis_url is None:
            return audit_counts(self.settings)
        return bus_counts(self.redis_url, self.settings.namespace)


async def panel(
    supervisor: Supervisor, counts: Counts, title: str, stop: Any, *, quiet: bool
) -> None:
    """Redraw the status panel each second (a terminal), or log a line every 10 s (a pipe)."""
    import asyncio
    import sys

    from rich.live import Live

    from barfinex_cli.cli.render import err

    if quiet:
        await stop.wait()
        return
    if not sys.stderr.isatty():
        while not stop.is_set():
            flow = counts()
            err().print(" ".join(f"{label} {flow.get(key, 0)}" for label, key in FLOW[:5]))
            await asyncio.sleep(10)
        return
    with Live(_table(supervisor, counts, title), console=err(), refresh_per_second=2) as live:
        while not stop.is_set():
            await asyncio.sleep(1)
            live.update(_table(supervisor, counts, title))


def _table(supervisor: Supervisor, counts: Counts, title: str) -> Any:
    from rich.table import Table

    flow_counts = counts()
    table = Table(title=title, title_justify="left")
    for column in ("role", "pid", "state", "restarts"):
        table.add_column(column)
    for role in supervisor.roles:
        table.add_row(role.name, str(role.pid or "-"), role.state, str(role.restarts))
    flow = Table(show_header=False, box=None, title=f"from the {counts.source}")
    for label, key in FLOW:
        flow.add_row(label, str(flow_counts.get(key, 0)))
    outer = Table.grid()
    outer.add_row(table, flow)
    return outer


def summary_of(
    settings: Settings, supervisor: Supervisor | None, counts: Counts, redis: str
) -> dict[str, Any]:
    """Return what the run did: flow, verdicts, blocks, orders (verdicts from the audit store)."""
    from collections import Counter

    from barfinex_cli.contracts.inspector import VerdictIssued
    from barfinex_cli.store.audit import AuditStore

    flow = counts()
    verdicts: Counter[str] = Counter()
    blocked_by_policy: Counter[str] = Counter()
    if counts.source == "audit store" and flow.get("inspector.verdict"):
        with AuditStore(settings.audit_path, read_only=True) as audit:
            for event in audit.query(["inspector.verdict"], limit=None):
                payload = event.payload
                if not isinstance(payload, VerdictIssued):
                    continue  # a row written under an older model: counted in events only
                verdicts[payload.verdict] += 1
                if payload.verdict != "ALLOW":
                    blocked_by_policy[payload.policy] += 1
    blocked_by_stage = {
        t.split(".")[1]: n
        for t, n in flow.items()
        if t.startswith("advisor.") and t.endswith(".blocked")
    }
    return {
        "redis": redis,
        "data_dir": str(settings.home),
        "counted_from": counts.source,
        "roles": [
            {"name": r.name, "state": r.state, "restarts": r.restarts, "exit_codes": r.exit_codes}
            for r in (supervisor.roles if supervisor is not None else [])
        ],
        "candles": flow.get("market.candle", 0),
        "signals": flow.get("detector.signal", 0),
        "decisions": flow.get("advisor.decision", 0),
        "verdicts": dict(verdicts),
        "orders": flow.get("order.submitted", 0),
        "fills": flow.get("order.filled", 0) + flow.get("order.partially_filled", 0),
        "blocked_by_stage": blocked_by_stage,
        "blocked_by_policy": dict(blocked_by_policy),
        "events": sum(flow.values()),
    }


def print_summary(result: dict[str, Any], as_json: bool) -> None:
    """Print the summary: a table, or JSON on stdout for scripts."""
    from rich.table import Table

    from barfinex_cli.cli.render import out, print_json

    if as_json:
        print_json(result)
        return
    table = Table(title="bfx up — summary", title_justify="left", show_header=False)
    for key in ("candles", "signals", "decisions", "orders", "fills", "events", "wall_s"):
        table.add_row(key, str(result.get(key)))
    for key in ("verdicts", "blocked_by_stage", "blocked_by_policy"):
        value = result.get(key) or {}
        table.add_row(key, ", ".join(f"{k} {v}" for k, v in value.items()) or "-")
    table.add_row("counted from", str(result.get("counted_from")))
    table.add_row("roles", ", ".join(f"{r['name']} ({r['state']}, {r['restarts']} restarts)"
                                     for r in result["roles"]))  # fmt: skip
    out().print(table)
