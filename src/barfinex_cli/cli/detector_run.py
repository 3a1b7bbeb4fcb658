"""`bfx detector run`: one strategy instance as a long-running service on the bus."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from barfinex_cli.cli.options import ClockOpt, NoRegisterOpt, ProviderOpt, role_settings


def run(
    ctx: typer.Context,
    strategy: Annotated[
        Path, typer.Argument(metavar="STRATEGY", help="The strategy file (its code runs here).")
    ],
    instance: Annotated[
        str | None, typer.Option(help="Instance name (default: the strategy's name).")
    ] = None,
    provider: ProviderOpt = None,
    exchange: Annotated[
        str | None, typer.Option(help="Exchange of the candles (default: the one held).")
    ] = None,
    host: Annotated[str | None, typer.Option(help="Address of /health and /metrics.")] = None,
    port: Annotated[
        int | None,
        typer.Option(help="Port of /health and /metrics; the next free one is taken [8101]."),
    ] = None,
    metrics_interval: Annotated[
        float | None, typer.Option(help="Seconds between detector.metrics events [30].")
    ] = None,
    no_register: NoRegisterOpt = False,
    clock: ClockOpt = None,
) -> None:
    """Warm up from the provider's history, then publish detector.signal on every closed candle.

    Each instance is its own process and consumer group; run several (different files, symbols
    or instance names) side by side. Defaults come from `[detector]` in bfx.toml. Stop with
    Ctrl-C.

    Examples: bfx detector run strategies/trend_ema_adx.py --instance trend-1
    """
    import asyncio

    from barfinex_cli.cli.render import err
    from barfinex_cli.detector.service import Detector
    from barfinex_cli.errors import NotFound
    from barfinex_cli.kernel.launch import serve
    from barfinex_cli.kernel.parts import Kernel

    if not strategy.is_file():  # before Redis and the provider: the first thing to fix
        raise NotFound(f"{strategy}: no such strategy file")
    settings = role_settings(ctx)
    config = settings.detector.with_overrides(
        strategy=strategy,
        instance=instance,
        exchange=exchange,
        provider_url=provider,
        host=host,
        port=port,
        metrics_interval_s=metrics_interval,
        join_registry=False if no_register else None,
        clock=clock,
    )

    async def build(kernel: Kernel) -> Detector:
        return await kernel.detector(config)

    def announce(detector: Detector) -> None:
        warmed = ", ".join(f"{s} {n}" for s, n in detector.warmed.items())
        err().print(
            f"detector {detector.instance} up: {detector.strategy.name} on "
            f"{detector.exchange} {detector.strategy.timeframe}, warmed {warmed}, "
            f"{detector.clock.kind} clock, health {detector.health_url}"
        )

    last, signals = asyncio.run(serve(settings, build, announce))
    err().print(f"detector {last.instance} stopped after {signals} signals")
