"""`bfx provider`: start the provider service, or ask a running one how it is."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from barfinex_cli.cli.state import state_of

if TYPE_CHECKING:  # imported where used: `bfx --help` must not pay for pydantic models
    from barfinex_cli.contracts.rest import ConnectorStatus

app = typer.Typer(
    help=(
        "Provider role: the one door to market data and orders, with the REST/WS gateway.\n\n"
        "Examples:\n\n"
        "  bfx provider start                      # synthetic replay at 60x, paper broker\n\n"
        "  bfx provider start --replay btc.parquet --speed max --exit-at-end\n\n"
        "  bfx provider start --exchange binance --symbols BTC/USDT --timeframes 1m,5m,1h\n\n"
        "  bfx provider status --json"
    ),
    no_args_is_help=True,
)


def _split(text: str | None) -> tuple[str, ...]:
    return tuple(p.strip() for p in (text or "").split(",") if p.strip())


@app.command("start")
def start(
    ctx: typer.Context,
    exchange: Annotated[
        str | None, typer.Option(help="Live exchange (any ccxt id); omit to replay.")
    ] = None,
    symbols: Annotated[
        str | None, typer.Option(help="Comma-separated, e.g. BTC/USDT,ETH/USDT.")
    ] = None,
    timeframes: Annotated[
        str | None, typer.Option(help="Candles to build and publish [default: 1m,5m,15m,1h].")
    ] = None,
    replay: Annotated[
        Path | None,
        typer.Option(
            help="Replay this CSV/Parquet file or folder (default: the synthetic market)."
        ),
    ] = None,
    speed: Annotated[
        str | None,
        typer.Option(help="Replay speed: a multiple of real time, or max [default: 60]."),
    ] = None,
    history: Annotated[
        int | None,
        typer.Option(help="Replay: base candles kept as history before the live part [720]."),
    ] = None,
    days: Annotated[
        float | None, typer.Option(help="Synthetic replay: days of market to make [default: 7].")
    ] = None,
    paper: Annotated[
        bool | None,
        typer.Option("--paper/--live-orders", help="Route orders to the paper broker [paper]."),
    ] = None,
    host: Annotated[str | None, typer.Option(help="Gateway address [127.0.0.1].")] = None,
    port: Annotated[
        int | None, typer.Option(help="Gateway port; 0 picks a free one [default: 8081].")
    ] = None,
    no_record: Annotated[
        bool, typer.Option("--no-record", help="Do not run the recorder.")
    ] = False,
    exit_at_end: Annotated[
        bool, typer.Option("--exit-at-end", help="Stop when the replay ends.")
    ] = False,
    mcp_orders: Annotated[
        bool, typer.Option("--mcp-orders", help="Offer the place_order MCP tool.")
    ] = False,
    wait_for_apps: Annotated[
        int | None,
        typer.Option(help="Replay: hold the live part until this many roles registered [0]."),
    ] = None,
    clock: Annotated[
        str | None,
        typer.Option(help="auto (market time for a replay), wall or market [default: auto]."),
    ] = None,
) -> None:
    """Start the provider: market data onto the bus, the paper broker, the gateway on :8081.

    With no --exchange it replays (the synthetic market unless --replay names files), which needs
    no network and no account. A replay runs on market time: its events are stamped with the
    candles' time. Defaults come from `[provider]` in bfx.toml; options override them. Stop it
    with Ctrl-C: in-flight events are finished and recorded.
    """
    import asyncio

    from barfinex_cli.cli.render import err
    from barfinex_cli.errors import UsageError
    from barfinex_cli.kernel.launch import serve
    from barfinex_cli.kernel.parts import Kernel
    from barfinex_cli.provider.service import Provider
    from barfinex_cli.runtime.logs import setup_logging

    settings = state_of(ctx).settings()
    setup_logging(settings.log_level, json_lines=settings.log_json or None)
    speed_value: float | None = None
    if speed is not None and speed.lower() not in ("max", "0"):
        try:
            speed_value = float(speed.removesuffix("x"))
        except ValueError:
            raise UsageError(
                f"--speed takes a multiple of real time (60, 600x) or max, not {speed!r}"
            ) from None
    base = settings.provider
    if speed is not None and speed_value is None:  # max: as fast as possible
        base = base.model_copy(update={"speed": None})
    config = base.with_overrides(
        exchange=exchange,
        symbols=_split(symbols) or None,
        timeframes=_split(timeframes) or None,
        replay=replay,
        speed=speed_value,
        history=history,
        days=days,
        paper=paper,
        host=host,
        port=port,
        record=False if no_record else None,
        exit_at_end=exit_at_end or None,
        mcp_orders=mcp_orders or None,
        wait_for_apps=wait_for_apps,
        clock=clock,
    )

    def token_created(token: str, path: Path) -> None:
        err().print(f"gateway token created in {path} (shown once): {token}")

    async def build(kernel: Kernel) -> Provider:
        return await kernel.provider(config, on_token_created=token_created)

    def announce(provider: Provider) -> None:
        source = config.exchange or (
            str(config.replay) if config.replay else "synthetic market (replay)"
        )
        err().print(
            f"provider up: {source}, gateway {provider.gateway_url}, "
            f"bus {settings.bus}:{settings.namespace}, {provider.clock.kind} clock, "
            f"data {settings.home}"
        )

    _, events = asyncio.run(serve(settings, build, announce))
    err().print(f"provider stopped after publishing {events} events")


@app.command("status")
def status(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
) -> None:
    """Ask the running provider (settings.provider_url) for its health, clock and connectors.

    Reads the token from BFX_TOKEN or DATA_DIR/token and never creates one.

    Example: bfx provider status --json
    """
    import asyncio

    from barfinex_cli.cli.render import out, print_json
    from barfinex_cli.contracts.rest import HealthResponse
    from barfinex_cli.errors import TokenRefused
    from barfinex_cli.runtime.client import GatewayClient, token_from

    settings = state_of(ctx).settings()
    token = token_from(settings)
    url = settings.provider_url.rstrip("/")

    async def ask() -> tuple[HealthResponse, list[ConnectorStatus]]:
        async with GatewayClient(url, token, timeout=5, retries=1) as client:
            health = await client.health()  # needs no token: says whether it runs at all
            if token is None:
                raise TokenRefused(url, missing=True)
            return health, await client.connectors()

    health, connectors = asyncio.run(ask())
    if as_json:
        print_json(
            {
                "health": health.model_dump(mode="json"),
                "connectors": [c.model_dump(mode="json") for c in connectors],
            }
        )
        return
    clock = "wall clock"
    if health.clock == "market":
        at = health.market_time.isoformat() if health.market_time else "not started"
        clock = f"market clock at {at}"
    out().print(f"provider {url}: {health.status} (up {health.uptime_s} s, {clock})")
    for c in connectors:
        for line in connector_lines(c):
            out().print(line, markup=False)


FAULT_LABELS = {
    "unavailable": "5xx/unavailable",
    "timeout": "timeout",
    "unreachable": "unreachable",
    "rate_limited": "rate limited",
    "ws_drop": "websocket drop",
    "lost_order_answer": "lost order answer",
    "gap": "gap",
}
"""How `bfx provider status` names each fault kind of `ConnectorHealth.last_errors`."""


def connector_lines(c: ConnectorStatus) -> list[str]:
    """Return the lines `bfx provider status` prints for a connector: state, counts, errors."""
    lines = [
        f"  {c.name:<10} {c.exchange:<10} {c.status} connected={c.connected} "
        f"last candle={c.last_candle_at} msgs/s={c.messages_per_s:.1f} "
        f"reconnects={c.reconnects} gaps={c.gaps}",
        f"    faults: 5xx={c.unavailable} timeouts={c.timeouts} unreachable={c.unreachable} "
        f"ws drops={c.ws_drops} rate-limit waits={c.rate_limit_waits} "
        f"failed calls in a row={c.consecutive_failures}",
        f"    lost order answers={c.lost_order_answers} (resolved {c.lost_orders_resolved}), "
        f"gaps repaired={c.gaps_repaired}",
    ]
    for kind, last in sorted(c.last_errors.items(), key=lambda item: item[1].at):
        at = last.at.isoformat(timespec="seconds")
        lines.append(f"    last {FAULT_LABELS.get(kind, kind)} at {at}: {last.error}")
    return lines
