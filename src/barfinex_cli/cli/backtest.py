"""`bfx backtest`: replay history through a strategy and report what it would have earned.

Thin: load the strategy and the candles (the same loading as `bfx detector scan`), cut the
window, run the backtest in the kernel (`kernel/backtest/vector.py` for the detector-only pass),
and render: a metrics table, the equity and drawdown charts, `--json` for scripts, `--export`
for files. Polars, plotext and the kernel are imported when the command runs, never for `--help`.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from barfinex_cli.cli.detector import (
    DataOpt,
    ExchangeOpt,
    JsonOpt,
    StrategyArg,
    SymbolOpt,
    TimeframeOpt,
    candles,
)

if TYPE_CHECKING:
    import polars as pl

    from barfinex_cli.detector.strategy import Strategy
    from barfinex_cli.kernel.backtest.result import BacktestResult

TRADES_SHOWN = 20
DETECTOR_ONLY_FEES_BPS = 10.0
"""--detector-only's fee without --fees; the full pipeline uses the paper broker's own."""


def backtest(
    ctx: typer.Context,
    path: StrategyArg,
    data: DataOpt = None,
    exchange: ExchangeOpt = None,
    symbol: SymbolOpt = None,
    timeframe: TimeframeOpt = None,
    start: Annotated[
        str | None,
        typer.Option(
            "--from",
            help="First candle: ISO 8601 (2024-01-01) or an age (30d).",
            show_default=False,
        ),
    ] = None,
    end: Annotated[
        str | None,
        typer.Option(
            "--to", help="End of the window (exclusive): ISO 8601 or an age.", show_default=False
        ),
    ] = None,
    fees: Annotated[
        float | None,
        typer.Option(
            help="Fee per fill, basis points (10 = 0.1 %) [--detector-only: 10; full pipeline: "
            "the paper broker's 5 taker, 2 maker].",
            show_default=False,
        ),
    ] = None,
    slippage: Annotated[
        float | None,
        typer.Option(
            help="Price moved against each fill, basis points [--detector-only: 0; full "
            "pipeline: the paper broker's 1].",
            show_default=False,
        ),
    ] = None,
    initial: Annotated[float, typer.Option(help="Starting equity, quote currency.")] = 10_000.0,
    detector_only: Annotated[
        bool,
        typer.Option(
            "--detector-only",
            "--no-advisor",
            help="Signals straight to fills at the next open: no advisor, no inspector.",
        ),
    ] = False,
    policy: Annotated[
        Path | None, typer.Option(help="Full pipeline: inspector policy file [bundled].")
    ] = None,
    folds: Annotated[
        int | None,
        typer.Option(
            help="Full pipeline: walk-forward in N folds, the advisor trained on each "
            "fold's past only.",
            min=1,
            show_default=False,
        ),
    ] = None,
    days: Annotated[
        float | None, typer.Option(help="Full pipeline, no --data: days of synthetic market [7].")
    ] = None,
    history: Annotated[
        int | None,
        typer.Option(help="Full pipeline: base candles kept as the roles' history [720]."),
    ] = None,
    trades: Annotated[
        bool,
        typer.Option("--trades", help="List the round trips (and with --json, trades and fills)."),
    ] = False,
    export_dir: Annotated[
        Path | None,
        typer.Option(
            "--export",
            metavar="DIR",
            help="Write trades, fills and equity as CSV and Parquet, and result.json, into DIR.",
            show_default=False,
        ),
    ] = None,
    no_plot: Annotated[
        bool, typer.Option("--no-plot", help="Skip the equity and drawdown charts.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Backtest a strategy over history: metrics, equity and drawdown charts, exports.

    By default the full pipeline: the replay (--data files, else the synthetic market) goes
    through the same detector, advisor, inspector and paper broker as `bfx up`, in lock-step,
    with a run id `bfx trace` follows. --detector-only (--no-advisor) fills signals at the next
    candle's open with --fees and --slippage. See docs/backtest.md.

    Examples:

      bfx backtest strategies/sma_cross.py --detector-only --exchange synthetic --symbol BTC/USDT

      bfx backtest strategies/sma_cross.py --data btc.parquet --from 2024-01-01 --json

      bfx backtest strategies/trend_ema_adx.py --data btc.csv --fees 5 --export out/

      bfx backtest strategies/trend_ema_adx.py --days 2 --history 300 --folds 3
    """
    from barfinex_cli.detector.loader import load_strategy
    from barfinex_cli.kernel.backtest.vector import check_costs

    fees = DETECTOR_ONLY_FEES_BPS if fees is None and detector_only else fees
    slippage = 0.0 if slippage is None and detector_only else slippage
    check_costs(fees or 0.0, slippage or 0.0)  # the full pipeline passes on only given ones
    window = _window(start, end)
    strategy = load_strategy(path)
    if timeframe is not None and timeframe != strategy.timeframe:
        from dataclasses import replace

        strategy = replace(strategy, timeframe=timeframe)
    if not detector_only:  # the full pipeline: cli/backtest_pipeline.py
        from barfinex_cli.cli.backtest_pipeline import from_options

        piped = from_options(ctx, path, data=data, exchange=exchange, window=window,
                             policy=policy, history=history, days=days, folds=folds,
                             quiet=as_json)  # fmt: skip
        if piped is None:
            return  # walk-forward reported its folds
        result = piped
    else:
        with _progress(as_json) as step:
            step("loading candles")
            frame = _cut(candles(ctx, strategy, data, exchange, symbol, timeframe), *window)
            step(f"backtesting {frame.height:,} candles")
            result = _detector_only(strategy, frame, exchange or "file", fees or 0.0,
                                    slippage or 0.0, initial, objects=trades)  # fmt: skip
            step("reporting")
    for rule, reason in result.broken.items():
        _note(f"warning: rule {rule} is broken and never held: {reason}")
    written: list[Path] = []
    if export_dir is not None:
        from barfinex_cli.kernel.backtest.export import export

        written = export(result, export_dir)
    if as_json:
        _print_json(result, trades, written)
        return
    from barfinex_cli.cli.backtest_view import render

    render(result, trades=trades, plot=not no_plot, shown=TRADES_SHOWN, exported=bool(written))
    if written:
        _note(f"wrote {len(written)} files to {export_dir}: trades, fills, equity (.csv, .parquet)")


def _detector_only(
    strategy: Strategy, frame: pl.DataFrame, exchange: str, fees: float, slippage: float,
    initial: float, *, objects: bool,
) -> BacktestResult:  # fmt: skip
    from barfinex_cli.kernel.backtest.vector import run_vector

    return run_vector(strategy, frame, exchange=exchange, fees_bps=fees, slippage_bps=slippage,
                      initial_equity=initial, objects=objects)  # fmt: skip


def _window(start: str | None, end: str | None) -> tuple[int | None, int | None]:
    from barfinex_cli.cli.timeparse import parse_time
    from barfinex_cli.contracts.times import to_ms
    from barfinex_cli.errors import UsageError

    first = to_ms(parse_time(start)) if start else None
    last = to_ms(parse_time(end)) if end else None
    if first is not None and last is not None and first >= last:
        raise UsageError(f"--from {start} is not before --to {end}; swap them")
    return first, last


def _cut(frame: pl.DataFrame, first: int | None, last: int | None) -> pl.DataFrame:
    import polars as pl

    from barfinex_cli.contracts.times import iso_ms
    from barfinex_cli.errors import UsageError

    if first is None and last is None:
        return frame
    kept = frame.filter(
        (pl.col("open_ms") >= (first if first is not None else -(2**62)))
        & (pl.col("open_ms") < (last if last is not None else 2**62))
    )
    if kept.height == 0 and frame.height:
        low, high = frame["open_ms"].min(), frame["open_ms"].max()
        assert isinstance(low, int) and isinstance(high, int)
        raise UsageError(
            f"no candles in that window; the data runs from {iso_ms(low)} to {iso_ms(high)}"
        )
    return kept


def _print_json(result: BacktestResult, trades: bool, written: list[Path]) -> None:
    from barfinex_cli.cli.render import print_json
    from barfinex_cli.kernel.backtest.export import fills_frame, summary_json, trades_frame

    data = summary_json(result)
    if written:
        data["exported"] = [str(p) for p in written]
    if trades:
        data["trades"] = trades_frame(result).to_dicts()
        data["fills"] = fills_frame(result).to_dicts()
    print_json(data)


def _note(text: str) -> None:
    from barfinex_cli.cli.render import err

    err().print(text, style="yellow" if text.startswith("warning") else None, markup=False)


@contextmanager
def _progress(quiet: bool, stages: int = 3) -> Iterator[Callable[[str], None]]:
    """Show a transient bar of the command's stages on stderr (a terminal only); yield `step`."""
    if quiet or not sys.stderr.isatty():
        yield lambda _text: None
        return
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from barfinex_cli.cli.render import err

    bar = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                   TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(),
                   console=err(), transient=True)  # fmt: skip
    task = bar.add_task("starting", total=stages)
    started = [False]

    def step(text: str) -> None:
        if started[0]:
            bar.advance(task)
        started[0] = True
        bar.update(task, description=text)

    with bar:
        yield step
