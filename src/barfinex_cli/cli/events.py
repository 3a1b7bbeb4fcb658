"""`bfx events`: the catalogue, live tail, queries of the audit store, publishing and recording."""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING, Annotated, Any

import typer

from barfinex_cli.cli.events_lag import lag
from barfinex_cli.cli.events_purge import purge
from barfinex_cli.cli.state import state_of

if TYPE_CHECKING:
    from barfinex_cli.contracts.envelope import Envelope

app = typer.Typer(help="Inspect, tail, query, publish and record events.", no_args_is_help=True)

TypeOpt = Annotated[
    list[str] | None,
    typer.Option("--type", "-t", help="Event type or glob (repeatable), e.g. 'market.*'."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="JSON lines on stdout, for scripts.")]


MAX_TYPE_PATTERN = 200
"""Characters of a `--type` glob: far past any type name, short of SQLite's pattern limit."""


def check_types(patterns: list[str] | None) -> list[str]:
    """Return the patterns, rejecting a plain (non-glob) type that is not in the catalogue."""
    from barfinex_cli.contracts.catalog import is_known, known_types
    from barfinex_cli.errors import UnknownEventType, UsageError

    for p in patterns or []:
        if len(p) > MAX_TYPE_PATTERN:
            raise UsageError(
                f"--type: a pattern of {len(p)} characters; give an event type or a glob of at "
                f"most {MAX_TYPE_PATTERN} (e.g. 'market.*'; `bfx events schema` lists the types)"
            )
        if not any(ch in p for ch in "*?[") and not is_known(p):
            raise UnknownEventType(p, known_types())
    return list(patterns or ["*"])


def summary(event: Envelope[Any], width: int = 6) -> str:
    """Return `key=value` pairs of the first scalar payload fields."""
    payload = event.payload
    data = payload.model_dump() if hasattr(payload, "model_dump") else dict(payload)
    parts = [_order_text(data)] if isinstance(data.get("order"), dict) else []
    for key, value in data.items():
        if isinstance(value, dict | list | tuple) or value is None:
            continue
        parts.append(f"{key}={value}")
        if len(parts) >= width:
            break
    return " ".join(parts)


def _order_text(data: dict[str, Any]) -> str:
    """Return an order event's nested order (and fill) as `buy 0.05 BTC/USDT market @ 42000`."""

    def plain(value: Any) -> str:
        text = f"{value:f}" if isinstance(value, Decimal) else str(value)
        return text.rstrip("0").rstrip(".") if "." in text and "e" not in text.lower() else text

    order, fill = data["order"], data.get("fill")
    parts = [str(order.get(k)) for k in ("side",) if order.get(k)]
    parts += [plain(order["amount"])] if order.get("amount") is not None else []
    parts += [str(order[k]) for k in ("symbol", "type") if order.get(k)]
    price = (fill or {}).get("price") or order.get("average_price") or order.get("price")
    parts += [f"@ {plain(price)}"] if price is not None else []
    if isinstance(fill, dict) and fill.get("amount") is not None:
        parts.append(f"filled={plain(fill['amount'])}")
    if order.get("status"):
        parts.append(f"status={order['status']}")
    parts.append(f"id={order.get('client_order_id')}")
    return " ".join(parts)


def event_line(event: Envelope[Any]) -> str:
    """Return the one-line human rendering of an event."""
    ts = event.ts.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    return f"{ts}  {event.type:<28} {event.source:<16} {event.id}  {summary(event)}"


@app.command("schema")
def schema(
    event_type: Annotated[
        str | None, typer.Argument(metavar="TYPE", help="Type to show; omit for the list.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Print the event catalogue, or the JSON Schema of one type's payload.

    Examples: bfx events schema | bfx events schema detector.signal
    """
    from barfinex_cli.cli.render import out, print_json
    from barfinex_cli.contracts.catalog import CATALOG, payload_model

    if event_type is not None:
        print_json(payload_model(event_type).model_json_schema())
        return
    rows = [
        {"type": t, "model": m.__name__, "doc": (m.__doc__ or "").strip().splitlines()[0]}
        for t, m in sorted(CATALOG.items())
    ]
    if as_json:
        print_json(rows)
        return
    from rich.table import Table

    table = Table(title=f"{len(rows)} event types", title_justify="left")
    for column in ("type", "model", "description"):
        table.add_column(column)
    for r in rows:
        table.add_row(r["type"], r["model"], r["doc"])
    out().print(table)


@app.command("tail")
def tail(
    ctx: typer.Context,
    types: TypeOpt = None,
    since: Annotated[
        str | None,
        typer.Option(
            help="Start here: a stream id (1714564800000-0), an age (15m) or an ISO time "
            "(default: now)."
        ),
    ] = None,
    count: Annotated[
        int | None, typer.Option(help="Stop after this many events (1 or more).", min=1)
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Follow events live from the bus (no consumer group: it takes nothing from the roles).

    A dropped connection or a restarted Redis does not end the tail: it says so once on
    stderr, reconnects with backoff and reads on after the last event it printed.

    Examples: bfx events tail -t 'market.*' | bfx events tail --since 15m --count 10 |
    bfx events tail -t detector.signal --json | jq .
    """
    import asyncio

    from barfinex_cli.cli.render import err, print_json_line
    from barfinex_cli.cli.timeparse import parse_stream_position
    from barfinex_cli.contracts.codec import encode
    from barfinex_cli.errors import mask_url
    from barfinex_cli.runtime.connect import open_bus

    patterns = check_types(types)
    position = parse_stream_position(since) if since is not None else None
    settings = state_of(ctx).settings()

    def outage(exc: Exception, failures: int) -> None:
        if failures == 1:  # once per outage, not per retry
            reason = " ".join(str(exc).split())[:160]
            err().print(f"bus read failed ({reason}); reconnecting", style="yellow")

    async def follow() -> None:
        from barfinex_cli.bus.tail import tail_forever

        bus = await open_bus(settings)  # Redis must answer at the start: exit 3 if not
        seen = 0
        try:
            if not as_json:
                where = mask_url(bus.url)
                err().print(f"tailing {', '.join(patterns)} on {where} (Ctrl-C to stop)")
            async for delivery in tail_forever(
                bus, patterns, since=position, block_ms=500, on_error=outage
            ):
                if as_json:
                    import json

                    print_json_line(json.loads(delivery.raw or encode(delivery.event)))
                else:
                    typer.echo(event_line(delivery.event))
                seen += 1
                if count is not None and seen >= count:
                    return
        finally:
            await bus.close()

    try:
        asyncio.run(follow())
    except KeyboardInterrupt:
        raise typer.Exit(0) from None


def open_store(ctx: typer.Context) -> Any:
    """Open the audit store read-only: queries work on a data directory they may not write."""
    from barfinex_cli.cli.home import open_audit

    return open_audit(ctx)


@app.command("query")
def query(
    ctx: typer.Context,
    types: TypeOpt = None,
    since: Annotated[
        str | None, typer.Option(help="From this time: ISO 8601 or 15m/2h/3d.")
    ] = None,
    until: Annotated[str | None, typer.Option(help="Up to this time: ISO 8601 or an age.")] = None,
    trace_id: Annotated[str | None, typer.Option("--trace", help="Only this trace id.")] = None,
    source: Annotated[str | None, typer.Option(help="Only events from this source.")] = None,
    limit: Annotated[int, typer.Option(help="At most this many events.", min=1)] = 100,
    oldest: Annotated[
        bool, typer.Option("--oldest", help="Take the oldest matching events, not the newest.")
    ] = False,
    newest: Annotated[bool, typer.Option("--newest", help="Print newest first.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Query the audit store (SQLite) by type, time range, trace and source.

    Takes the newest --limit matching events (--oldest: the oldest) and prints them oldest
    first (--newest: newest first). When more events match, stderr says how many and how to
    see them. Works on a data directory it may not write.

    Examples: bfx events query -t detector.signal --since 1h | bfx events query --trace ID --json
    """
    from barfinex_cli.cli.render import err, print_json_line
    from barfinex_cli.cli.timeparse import parse_time

    patterns = check_types(types)
    filters: dict[str, Any] = {
        "since": parse_time(since) if since else None,
        "until": parse_time(until) if until else None,
        "trace_id": trace_id,
        "source": source,
    }
    wanted = None if patterns == ["*"] else patterns
    with open_store(ctx) as store:
        events = store.query(wanted, limit=limit, order="asc" if oldest else "desc", **filters)
        more = store.count(wanted, **filters) - len(events) if len(events) == limit else 0
    if oldest == newest:  # the page is in the wrong order for printing
        events.reverse()
    for event in events:
        if as_json:
            print_json_line(event.model_dump(mode="json", by_alias=True))
        else:
            typer.echo(event_line(event))
    if more > 0:
        which = "newer" if oldest else "older"
        flag = "" if oldest else ", or --oldest for the first ones"
        err().print(
            f"{more:,} more {which} events match: raise --limit or narrow with --since/--until"
            f"{flag}",
            style="yellow",
            markup=False,
        )


@app.command("publish")
def publish(
    ctx: typer.Context,
    event_type: Annotated[
        str, typer.Argument(metavar="TYPE", help="Event type, e.g. market.candle.")
    ],
    payload: Annotated[
        str, typer.Argument(metavar="PAYLOAD", help="The payload as JSON ('-' reads stdin).")
    ],
    source: Annotated[str, typer.Option(help="Source recorded on the envelope.")] = "cli",
) -> None:
    """Validate a payload and publish it as a new event; prints the event id.

    Example: bfx events publish inspector.alert '{"severity": "warning", "message": "test"}'
    """
    import asyncio
    import sys

    from pydantic import ValidationError

    from barfinex_cli.contracts.catalog import payload_model
    from barfinex_cli.contracts.envelope import make_event
    from barfinex_cli.errors import UsageError
    from barfinex_cli.runtime.connect import open_bus

    model = payload_model(event_type)
    text = sys.stdin.read() if payload == "-" else payload
    try:
        body = model.model_validate_json(text)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(payload)"
        raise UsageError(
            f"payload is not a valid {event_type}: {where}: {first['msg']} — see "
            f"`bfx events schema {event_type}`"
        ) from None
    event = make_event(body, source=source)
    settings = state_of(ctx).settings()

    async def send() -> None:
        bus = await open_bus(settings)
        try:
            await bus.publish(event)
        finally:
            await bus.close()

    asyncio.run(send())
    typer.echo(event.id)


@app.command("record")
def record(
    ctx: typer.Context,
    group: Annotated[str, typer.Option(help="Consumer group of the recorder.")] = "recorder",
) -> None:
    """Record every event on the bus into the audit store until Ctrl-C (resumes where it left off).

    Example: bfx --data-dir ./run events record
    """
    import asyncio

    from barfinex_cli.cli.render import err
    from barfinex_cli.kernel.launch import serve
    from barfinex_cli.kernel.parts import Kernel
    from barfinex_cli.runtime.recording import Recording

    settings = state_of(ctx).settings()

    async def build(kernel: Kernel) -> Recording:
        return await kernel.recording(group)

    _, written = asyncio.run(serve(settings, build))
    err().print(f"recorded {written} events into {settings.audit_path}")


@app.command("dead-letters")
def dead_letters(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option(help="At most this many.", min=1)] = 20,
    as_json: JsonOpt = False,
) -> None:
    """List messages that failed to decode: the reason, the size and a preview (newest last).

    The preview is the first 200 characters of the message, control characters escaped; whole
    payloads are never printed (a dead letter may be an oversized event).

    Example: bfx events dead-letters --json
    """
    import asyncio

    from barfinex_cli.cli.render import print_json_line
    from barfinex_cli.runtime.connect import open_bus

    settings = state_of(ctx).settings()

    async def fetch() -> list[Any]:
        bus = await open_bus(settings)
        try:
            return await bus.dead_letters(limit)
        finally:
            await bus.close()

    for letter in asyncio.run(fetch()):
        preview, clipped = dead_letter_preview(letter.data, letter.size)
        if as_json:
            print_json_line(
                {
                    "id": letter.entry_id,
                    "type": letter.type,
                    "origin_id": letter.origin_id,
                    "error": letter.error,
                    "size": letter.size,
                    "preview": preview,
                    "clipped": clipped,
                }
            )
        else:
            more = "…" if clipped else ""
            typer.echo(
                f"{letter.entry_id}  {letter.type}  {letter.error}  "
                f"[{letter.size} bytes] {preview}{more}"
            )


PREVIEW_CHARS = 200
"""How much of a dead letter `bfx events dead-letters` shows."""


def dead_letter_preview(data: bytes, size: int, width: int = PREVIEW_CHARS) -> tuple[str, bool]:
    """Return the first `width` characters of a message on one line, and whether it was cut."""
    text = data[: width * 4].decode(errors="replace")
    shown = text[:width]
    line = "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in shown)
    return line, len(shown) < len(text) or len(data) < size or len(data) > width * 4


app.command("purge")(purge)  # cli/events_purge.py: drop a namespace's Redis keys
app.command("lag")(lag)  # cli/events_lag.py: each group's backlog and what the cap trimmed
