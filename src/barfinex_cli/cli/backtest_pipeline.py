"""The full-pipeline mode of `bfx backtest`: the live roles on a lock-step replay.

Kept apart from `cli/backtest.py` (the command and its detector-only pass) so that module stays
thin: this one turns the command's options into a `PipelineSpec`, shows a progress bar on stderr
(none with --json) and hands back the `BacktestResult` the command renders like any other.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from barfinex_cli.cli.state import state_of

if TYPE_CHECKING:
    from barfinex_cli.kernel.backtest.result import BacktestResult


def run_pipeline_backtest(
    ctx: typer.Context,
    strategy: Path,
    *,
    data: Path | None,
    policy: Path | None,
    history: int | None,
    days: float | None,
    symbols: tuple[str, ...] = (),
    fees_bps: float | None = None,
    slippage_bps: float | None = None,
    quiet: bool = False,
) -> BacktestResult:
    """Run the pipeline backtest of `strategy` over `data` (a replay file or folder)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from barfinex_cli.cli.render import err
    from barfinex_cli.kernel.backtest.engine import PipelineSpec, backtest

    settings = state_of(ctx).settings()
    spec = PipelineSpec(
        strategies=(strategy,), replay=data, symbols=symbols, days=days, history=history,
        policy=policy, fees_bps=fees_bps, slippage_bps=slippage_bps,
    )  # fmt: skip
    if quiet:
        return backtest(settings, spec)
    columns = (BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=err(), transient=True) as bar:
        task = bar.add_task("replay", total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        return backtest(settings, spec, progress)
