"""`bfx optimize`: search a strategy's parameters with optuna, each trial a vectorised backtest.

Thin: parse and check the options, load the candles and the strategy factory once, hand them to
`kernel.optimize`, render its report (`optimize_view.py`). optuna is imported by the kernel when
the command runs, never when `bfx --help` does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from barfinex_cli.cli.detector import (
    DataOpt,
    ExchangeOpt,
    JsonOpt,
    StrategyArg,
    SymbolOpt,
    TimeframeOpt,
)
from barfinex_cli.cli.state import state_of


def optimize(
    ctx: typer.Context,
    path: StrategyArg,
    params: Annotated[
        list[str],
        typer.Option(
            "--param",
            "-p",
            metavar="NAME=RANGE",
            help="A parameter to search: name=low:high[:step] or name=a,b,c (repeatable).",
            show_default=False,
        ),
    ],
    data: DataOpt = None,
    exchange: ExchangeOpt = None,
    symbol: SymbolOpt = None,
    timeframe: TimeframeOpt = None,
    metric: Annotated[
        str,
        typer.Option(
            help="sharpe, sortino, return, cagr, profit_factor, or max_drawdown (minimised)."
        ),
    ] = "sharpe",
    sampler: Annotated[str, typer.Option(help="grid (every combination), random or tpe.")] = "tpe",
    trials: Annotated[
        int | None,
        typer.Option(
            help="Trials to add (default: the grid's points not yet run, else 50).",
            show_default=False,
        ),
    ] = None,
    jobs: Annotated[int, typer.Option(help="Worker processes sharing the study.")] = 1,
    study: Annotated[
        str | None,
        typer.Option(
            help="Study name; the same name resumes it (default: from strategy, metric, data).",
            show_default=False,
        ),
    ] = None,
    storage: Annotated[
        str | None,
        typer.Option(
            help="Where the study lives: redis://HOST:6379/0 (shared by machines) or a "
            "SQLAlchemy URL (default: sqlite in the data dir, DATA_DIR/optuna.db).",
            show_default=False,
        ),
    ] = None,
    walk_forward: Annotated[
        int, typer.Option(help="Anchored walk-forward folds before the final search (0: off).")
    ] = 0,
    holdout: Annotated[
        float, typer.Option(help="Share of the candles, at the end, no trial sees (tested last).")
    ] = 0.3,
    fees: Annotated[float, typer.Option(help="Fee per fill, basis points.")] = 10.0,
    slippage: Annotated[float, typer.Option(help="Slippage per fill, basis points.")] = 0.0,
    seed: Annotated[
        int | None, typer.Option(help="Sampler seed, for a repeatable search.", show_default=False)
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Search a strategy's parameters; rank the trials; test the best on unseen candles.

    The strategy file declares its parameters with `def build(fast: int = 10, ...)` and
    `strategy = build()` (see docs/optimize.md). Each trial rebuilds it and runs a
    detector-only backtest on the search window; the best trial is then run on the holdout.

    Examples:

      bfx optimize strategies/sma_cross.py --data btc.csv -p fast=5:30:5 -p slow=20:100:10

      bfx optimize strategies/sma_cross.py --exchange binance --symbol BTC/USDT
      -p fast=5:30 -p slow=20:100 --sampler tpe --trials 200 --jobs 2 --walk-forward 3 --json

      bfx optimize strategies/sma_cross.py --data btc.csv -p fast=5:30 --storage
      redis://10.0.0.5:6379/0 --study sma-btc   (run the same on each machine)
    """
    from barfinex_cli.cli.detector import candles
    from barfinex_cli.cli.optimize_view import ProgressBar, render, report_json
    from barfinex_cli.cli.render import print_json
    from barfinex_cli.detector.loader import load_strategy_factory
    from barfinex_cli.detector.params import parse_params
    from barfinex_cli.errors import StrategyError
    from barfinex_cli.kernel.optimize.plan import OptimizeRequest
    from barfinex_cli.kernel.optimize.run import run_optimize

    factory = load_strategy_factory(path)
    request = OptimizeRequest(
        strategy_path=Path(path).resolve(),
        spaces=parse_params(params, factory.params),
        metric=metric,
        sampler=sampler,  # type: ignore[arg-type]  # checked by OptimizeRequest
        trials=trials,
        jobs=jobs,
        study=study,
        storage=storage,
        walk_forward=walk_forward,
        holdout=holdout,
        fees_bps=fees,
        slippage_bps=slippage,
        exchange=exchange or "file",
        seed=seed,
    )
    settings = state_of(ctx).settings()
    frame = candles(ctx, factory.strategy, data, exchange, symbol, timeframe)
    with ProgressBar() as bar:
        report = run_optimize(
            request,
            factory,
            frame,
            home=settings.home,
            namespace=settings.namespace,
            reporter=bar,
        )
    if report.final.best is None:
        reason = report.final.refused or "no trial completed"
        raise StrategyError(
            f"study {report.study}: no trial completed ({report.final.pruned} pruned; first "
            f"reason: {reason}) — widen or fix the --param ranges"
        )
    if as_json:
        print_json(report_json(report))
        return
    render(report)
