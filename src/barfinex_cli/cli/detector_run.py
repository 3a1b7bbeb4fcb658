"""`bfx detector run`: one strategy instance as a long-running service on the bus."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from barfinex_cli.cli.state import state_of


def run(
    ctx: typer.Context,
    strategy: Annotated[Path, typer.Argument(help="The strategy file (its code runs here).")],
    instance: Annotated[
        str | None, typer.Option(help="Instance name (default: the strategy's name).")
    ] = None,
    provider: Annotated[
        str | None, typer.Option("--provider", help="Provider URL (default: settings).")
    ] = None,
    exchange: Annotated[
        str | None, typer.Option(help="Exchange of the candles (default: the one held).")
    ] = None,
    host: Annotated[str, typer.Option(help="Address of /health and /metrics.")] = "127.0.0.1",
    port: Annotated[
        int, typer.Option(help="Port of /health and /metrics; the next free one is taken.")
    ] = 8101,
    metrics_interval: Annotated[
        float, typer.Option(help="Seconds between detector.metrics events.", min=0.1)
    ] = 30.0,
    no_register: Annotated[
        bool, typer.Option("--no-register", help="Do not join the provider's app registry.")
    ] = False,
) -> None:
    """Warm up from the provider's history, then publish detector.signal on every closed candle.

    Each instance is its own process and consumer group; run several (different files, symbols
    or instance names) side by side. Stop with Ctrl-C.

    Examples: bfx detector run strategies/trend_ema_adx.py --instance trend-1
    """
    import asyncio

    from pydantic import ValidationError

    from barfinex_cli.cli.render import err
    from barfinex_cli.detector.service import Detector, DetectorOptions
    from barfinex_cli.errors import UsageError
    from barfinex_cli.runtime.lifecycle import run_role
    from barfinex_cli.runtime.logs import setup_logging

    settings = state_of(ctx).settings()
    setup_logging(settings.log_level, json_lines=settings.log_json or None)
    if not strategy.is_file():
        raise UsageError(f"no strategy file at {strategy} — see `strategies/` for examples")
    try:
        options = DetectorOptions(
            strategy=strategy, instance=instance, exchange=exchange, provider_url=provider,
            host=host, port=port, metrics_interval_s=metrics_interval,
            join_registry=not no_register,
        )  # fmt: skip
    except ValidationError as exc:
        first = exc.errors()[0]
        raise UsageError(f"bad option {first['loc'][0]}: {first['msg']}") from None
    detector = Detector(settings, options)

    def announce() -> None:
        warmed = ", ".join(f"{s} {n}" for s, n in detector.warmed.items())
        err().print(
            f"detector {detector.instance} up: {detector.strategy.name} on "
            f"{detector.exchange} {detector.strategy.timeframe}, warmed {warmed}, "
            f"health {detector.health_url}"
        )

    signals = asyncio.run(run_role(detector.run, detector.ready, announce))
    err().print(f"detector {detector.instance} stopped after {signals} signals")
