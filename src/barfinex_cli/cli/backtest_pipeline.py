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
    from barfinex_cli.kernel.backtest.engine import PipelineSpec
    from barfinex_cli.kernel.backtest.result import BacktestResult
    from barfinex_cli.kernel.backtest.walkforward import WalkForward


def from_options(
    ctx: typer.Context,
    strategy: Path,
    *,
    data: Path | None,
    exchange: str | None,
    window: tuple[int | None, int | None],
    policy: Path | None,
    history: int | None,
    days: float | None,
    folds: int | None,
    quiet: bool,
) -> BacktestResult | None:
    """Run `bfx backtest`'s default mode; None when `--folds` reported its folds itself.

    `--fees` and `--slippage` reach the paper broker only when given: its own defaults are
    what `bfx up` trades with, and the two must match for their orders to match.
    """
    from barfinex_cli.errors import UsageError
    from barfinex_cli.kernel.backtest.engine import PipelineSpec

    if exchange is not None:
        raise UsageError(
            "the full pipeline replays candle files (--data) or the synthetic market; for "
            "history in the market store use --detector-only, or export it with `bfx data`"
        )

    def given(name: str) -> float | None:
        source = ctx.get_parameter_source(name)
        value = ctx.params.get(name)
        if source is None or source.name == "DEFAULT" or value is None:
            return None
        return float(value)

    spec = PipelineSpec(
        strategies=(strategy,), replay=data, days=days, history=history, policy=policy,
        fees_bps=given("fees"), slippage_bps=given("slippage"),
        start_ms=window[0], end_ms=window[1],
    )  # fmt: skip
    if folds is None:
        return _run(ctx, spec, quiet)
    _report_folds(_walk(ctx, spec, folds, quiet), quiet)
    return None


def _hush_roles() -> None:
    """Keep the roles' per-signal warnings (a dropped close signal) off a backtest's stderr.

    A live role warns so an operator looks; in a backtest the same facts are in the result
    (`blocked`) and the audit log. The backtest's own warnings (`bfx.backtest`) still show.
    """
    import logging

    for role in ("provider", "detector", "advisor", "inspector", "recorder"):
        logging.getLogger(f"bfx.{role}").setLevel(logging.ERROR)


def _run(ctx: typer.Context, spec: PipelineSpec, quiet: bool) -> BacktestResult:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from barfinex_cli.cli.render import err
    from barfinex_cli.kernel.backtest.engine import backtest

    settings = state_of(ctx).settings()
    _hush_roles()
    if quiet:
        return backtest(settings, spec)
    columns = (BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=err(), transient=True) as bar:
        task = bar.add_task("replay", total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        return backtest(settings, spec, progress)


def _walk(ctx: typer.Context, spec: PipelineSpec, folds: int, quiet: bool) -> WalkForward:
    from barfinex_cli.cli.render import err
    from barfinex_cli.kernel.backtest.walkforward import walk_forward

    settings = state_of(ctx).settings()
    _hush_roles()

    def progress(number: int, total: int, doing: str) -> None:
        if not quiet:
            err().print(f"fold {number}/{total}: {doing}")

    return walk_forward(settings, spec, folds, progress)


def _report_folds(done: WalkForward, as_json: bool) -> None:
    from dataclasses import asdict

    from rich.table import Table

    from barfinex_cli.cli.render import out, print_json
    from barfinex_cli.contracts.times import iso_ms

    rows = [
        {"fold": f.number, "start": iso_ms(f.start_ms), "end": iso_ms(f.end_ms),
         "run_id": f.result.run_id, "model": str(f.model) if f.model else None,
         "trained_until": iso_ms(f.trained_until_ms) if f.trained_until_ms else None,
         "past_signals": f.samples, "untrained": f.untrained, "metrics": asdict(f.result.metrics)}
        for f in done.folds
    ]  # fmt: skip
    if as_json:
        print_json({"folds": rows, "combined": asdict(done.combined)})
        return
    table = Table(title="walk-forward", title_justify="left")
    for column in ("fold", "window", "model", "trades", "return %", "sharpe", "max dd %"):
        table.add_column(column)
    for f in done.folds:
        m = f.result.metrics
        model = "trained" if f.model else f"rule scorer ({f.untrained})"
        window = f"{iso_ms(f.start_ms)[:16]} → {iso_ms(f.end_ms)[11:16]}".replace("T", " ")
        table.add_row(str(f.number), window, model,
                      str(m.trades), f"{m.total_return_pct:.2f}", f"{m.sharpe:.2f}",
                      f"{m.max_drawdown_pct:.2f}")  # fmt: skip
    c = done.combined
    table.add_row("all", "", "", str(c.trades), f"{c.total_return_pct:.2f}", f"{c.sharpe:.2f}",
                  f"{c.max_drawdown_pct:.2f}")  # fmt: skip
    out().print(table)
