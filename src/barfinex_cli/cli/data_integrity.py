"""`bfx data gaps` and `bfx data repair`: integrity of the market store, and its repair.

Two command functions the `data` group mounts. `gaps` scans every stored candle series (holes,
misaligned or impossible rows, freshness with `--live`) and scores it; `repair` plans the fix of
one series, prints the plan, and without `--dry-run` backfills from the exchange's history (or the
synthetic market), drops bad rows and verifies. Thin: the work is in `market.integrity` (`gaps`,
`healing`, and `backfill`, which starts the history source); this module parses and renders.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from barfinex_cli.cli.state import state_of
from barfinex_cli.contracts.times import from_ms, to_ms

if TYPE_CHECKING:
    from barfinex_cli.contracts.types import Payload
    from barfinex_cli.market.integrity.gaps import ScanConfig, ScanReport
    from barfinex_cli.market.integrity.healing import HealOutcome, RepairPlan
    from barfinex_cli.runtime.settings import Settings
    from barfinex_cli.store.market import MarketStore, SeriesKey

ExchangeOpt = Annotated[str | None, typer.Option("--exchange", "-e", help="Only this exchange.")]
SymbolOpt = Annotated[str | None, typer.Option("--symbol", "-s", help="Only this symbol.")]
TimeframeOpt = Annotated[str | None, typer.Option("--timeframe", "-t", help="Only this timeframe.")]
SinceOpt = Annotated[
    str | None,
    typer.Option(help="Range start: ISO time or an age (7d); holes before the first row count."),
]
UntilOpt = Annotated[
    str | None,
    typer.Option(help="Range end (open times): ISO time or an age; holes after the last count."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="JSON on stdout, for scripts.")]
CalendarOpt = Annotated[
    str | None,
    typer.Option(
        "--calendar",
        help="When the market trades: 24/7 (crypto), 24/5 (FX), weekdays, nyse; closures are "
        "not holes [default: the [calendars] setting, else 24/7].",
    ),
]


def _scan_config(
    calendar: str | None, exchange: str, symbol: str, ctx: typer.Context
) -> ScanConfig:
    """Return the scan config of a series: `--calendar`, else its `[calendars]` match."""
    from barfinex_cli.market.calendars import calendar_for, check
    from barfinex_cli.market.integrity.gaps import ScanConfig

    if calendar is not None:
        return ScanConfig(calendar=check(calendar))
    mapping = state_of(ctx).settings().calendars
    return ScanConfig(calendar=calendar_for(exchange, symbol, mapping))


def gaps(
    ctx: typer.Context,
    exchange: ExchangeOpt = None,
    symbol: SymbolOpt = None,
    timeframe: TimeframeOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    live: Annotated[
        bool, typer.Option("--live", help="Also judge freshness against the clock (live feeds).")
    ] = False,
    calendar: CalendarOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Scan stored candle series for holes, bad rows and staleness; score each 0-100.

    Severity is critical for structural faults (duplicates, disorder, misaligned or impossible
    candles, seam), warn for holes, lag and suspected outages (runs of flat zero-volume candles
    in a 24/7 series). A trading calendar keeps closures (FX weekends, stock holidays) from
    counting as holes. Exits 0 whatever it finds: it is a report.

    Examples:

      bfx data gaps

      bfx data gaps --exchange binance --symbol BTC/USDT --since 30d --until 1m

      bfx data gaps --timeframe 1m --live --json

      bfx data gaps --symbol SPY --timeframe 1d --calendar nyse
    """
    import time

    from barfinex_cli.cli.home import open_market
    from barfinex_cli.cli.render import print_json
    from barfinex_cli.errors import NotFound
    from barfinex_cli.market.integrity.gaps import scan_store
    from barfinex_cli.store.market import SeriesKey

    since_ms, until_ms = _ms(since), _ms(until)
    now_ms = int(time.time() * 1000) if live else None
    with open_market(ctx, write=False, must_exist=True) as store:
        held = [
            s
            for s in store.series()
            if (exchange is None or s.exchange == exchange)
            and (symbol is None or s.symbol == symbol)
            and (timeframe is None or s.timeframe == timeframe)
        ]
        if not held and (exchange or symbol or timeframe):
            raise NotFound("no stored series matches those filters — `bfx data list` shows them")
        reports = [
            scan_store(store, SeriesKey(s.exchange, s.symbol, s.timeframe), since_ms=since_ms,
                       until_ms=until_ms, now_ms=now_ms,
                       config=_scan_config(calendar, s.exchange, s.symbol, ctx))
            for s in held
        ]  # fmt: skip
    if as_json:
        print_json([r.to_dict() for r in reports])
        return
    _print_reports(reports)


def repair(
    ctx: typer.Context,
    exchange: Annotated[str, typer.Option("--exchange", "-e", help="Exchange of the series.")],
    symbol: Annotated[str, typer.Option("--symbol", "-s", help="Symbol, e.g. BTC/USDT.")],
    timeframe: Annotated[str, typer.Option("--timeframe", "-t", help="Timeframe, e.g. 1m.")],
    since: SinceOpt = None,
    until: UntilOpt = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the plan and change nothing.")
    ] = False,
    calendar: CalendarOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Repair one series: drop bad rows, backfill holes from history, verify the result.

    Prints the plan first. History comes from the exchange (ccxt, needs the network) or, for
    the exchange 'synthetic', from the synthetic market. Exits 1 if the repair escalates.

    Examples:

      bfx data repair -e binance -s BTC/USDT -t 1m --since 7d --dry-run

      bfx data repair -e synthetic -s BTC/USDT -t 1m

      bfx data repair -e binance -s ETH/USDT -t 1h --since 2024-01-01 --until 2024-02-01 --json
    """
    import asyncio

    from barfinex_cli.cli.home import open_market
    from barfinex_cli.cli.render import print_json
    from barfinex_cli.errors import NotFound
    from barfinex_cli.market.candles import timeframe_ms
    from barfinex_cli.market.integrity.gaps import scan_store
    from barfinex_cli.market.integrity.healing import Action, plan
    from barfinex_cli.store.market import SeriesKey

    timeframe_ms(timeframe)
    key = SeriesKey(exchange, symbol, timeframe)
    since_ms, until_ms = _ms(since), _ms(until)
    settings = state_of(ctx).settings()
    with open_market(ctx, write=not dry_run, must_exist=True) as store:
        if not store.candles(key, limit=1) and (since_ms is None or until_ms is None):
            raise NotFound(
                f"no {timeframe} candles of {exchange} {symbol} stored; give --since and --until "
                "to fetch a whole range, or see `bfx data list`"
            )
        config = _scan_config(calendar, exchange, symbol, ctx)
        report = scan_store(store, key, since_ms=since_ms, until_ms=until_ms, config=config)
        todo = plan(report)
        if dry_run or todo.action in (Action.NONE, Action.ESCALATE):
            if as_json:
                print_json({"dry_run": dry_run, "plan": todo.to_dict(), "report": report.to_dict()})
            else:
                _print_plan(todo, dry_run)
            if todo.action is Action.ESCALATE and not dry_run:
                raise typer.Exit(1)
            return
        events: list[Payload] = []
        outcome = asyncio.run(_heal(store, key, since_ms, until_ms, settings, todo, events, config))
    if as_json:
        print_json(
            {"dry_run": False, "plan": todo.to_dict(), "outcome": outcome.to_dict(),
             "events": [{"type": e.event_type, **e.model_dump(mode="json")} for e in events]}
        )  # fmt: skip
    else:
        _print_plan(todo, dry_run=False)
        _print_outcome(outcome, events)
    if outcome.escalated:
        raise typer.Exit(1)


async def _heal(
    store: MarketStore,
    key: SeriesKey,
    since_ms: int | None,
    until_ms: int | None,
    settings: Settings,
    todo: RepairPlan,
    events: list[Payload],
    config: ScanConfig,
) -> HealOutcome:
    from barfinex_cli.market.integrity.backfill import backfill_source
    from barfinex_cli.market.integrity.healing import Healer, HealingPolicy
    from barfinex_cli.provider.connectors.sources import history_source_for

    async def collect(payload: Payload) -> None:
        events.append(payload)

    # History is not waiting for a late candle: re-check at once.
    policy = HealingPolicy(verify_delay_s=0.0)
    if not todo.backfill:
        healer = Healer(store, None, collect, policy=policy, scan_config=config)
        return await healer.heal(key, since_ms=since_ms, until_ms=until_ms)
    connector = history_source_for(key.exchange, settings)
    async with backfill_source(connector, key.exchange) as source:  # SourceUnreachable: exit 3
        healer = Healer(store, source, collect, policy=policy, scan_config=config)
        return await healer.heal(key, since_ms=since_ms, until_ms=until_ms)


def _ms(text: str | None) -> int | None:
    from barfinex_cli.cli.timeparse import parse_time

    return None if text is None else to_ms(parse_time(text))


def _iso(ms: int | None) -> str:

    if ms is None:
        return "-"
    shape = "%Y-%m-%d %H:%M" if ms % 60_000 == 0 else "%Y-%m-%d %H:%M:%S"  # misaligned rows
    return from_ms(ms).strftime(shape)


def _print_reports(reports: list[ScanReport]) -> None:
    from barfinex_cli.cli.render import err

    if not reports:
        err().print("no candle series stored — try `bfx data import FILE` or `bfx data synth`")
        return
    header = ("series", "rows", "holes", "missing", "duplicates", "score", "severity")
    lines: list[tuple[str, ...]] = [header]
    for r in reports:
        d = r.to_dict()
        series = f"{r.key.exchange} {r.key.symbol} {r.key.timeframe}"
        counts = (r.rows, d["holes"], d["missing"], d["duplicates"])
        lines.append(
            (series, *(f"{n:,}" for n in counts), f"{r.score:g}", r.severity.value.upper())
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    for line in lines:
        cells = [
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(line, widths, strict=True))
        ]
        typer.echo("  ".join(cells).rstrip())
    for r in reports:
        for defect in r.defects:
            typer.echo(
                f"  {r.key.exchange} {r.key.symbol} {r.key.timeframe}: {defect.kind} "
                f"{_iso(defect.start_ms)}..{_iso(defect.end_ms)}Z  {defect.detail}"
            )


def _print_plan(todo: RepairPlan, dry_run: bool) -> None:
    key = todo.key
    typer.echo(f"{key.exchange} {key.symbol} {key.timeframe}: {todo.action.value} — {todo.reason}")
    if todo.drop:
        shown = ", ".join(_iso(ms) + "Z" for ms in todo.drop[:5])
        more = f" and {len(todo.drop) - 5} more" if len(todo.drop) > 5 else ""
        typer.echo(f"  drop {len(todo.drop)} row(s): {shown}{more}")
    if todo.backfill:
        typer.echo(f"  backfill {todo.candles_to_fetch} candle(s) in {len(todo.backfill)} range(s)")
        for start, end in todo.backfill[:10]:
            typer.echo(f"    {_iso(start)}Z .. {_iso(end)}Z")
        if len(todo.backfill) > 10:
            typer.echo(f"    ... and {len(todo.backfill) - 10} more range(s) (--json lists all)")
    if dry_run:
        typer.echo("dry run: nothing changed")


def _print_outcome(outcome: HealOutcome, events: list[Payload]) -> None:
    for event in events:
        typer.echo(f"  {event.event_type}")
    verdict = "resolved" if outcome.resolved else "ESCALATED"
    typer.echo(f"{verdict} after {outcome.attempts} attempt(s): {outcome.reason}")
