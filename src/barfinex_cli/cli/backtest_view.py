"""How `bfx backtest` looks in a terminal: the run's header, a metrics table, charts, trades.

Data goes to stdout (the table, the charts, the trades); a one-line summary of what ran goes to
stderr. Long lists are never printed whole: `--trades` shows the last few round trips and says
how many more `--export` writes.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from barfinex_cli.cli.render import err, out

if TYPE_CHECKING:
    from barfinex_cli.kernel.backtest.result import BacktestResult, Metrics


def render(
    result: BacktestResult, *, trades: bool, plot: bool, shown: int, exported: bool = False
) -> None:
    """Print a backtest: metrics, the equity and drawdown charts, and (asked) the trades.

    `exported`: every trade was written by --export, so the hint to use it is not shown.
    """
    from rich.table import Table

    from barfinex_cli.contracts.times import iso_ms
    from barfinex_cli.kernel.backtest.export import final_equity

    m = result.metrics
    title = (
        f"{result.strategy} · {', '.join(result.symbols)} {result.timeframe} on "
        f"{result.exchange} · {iso_ms(result.start_ms)[:16]} → {iso_ms(result.end_ms)[:16]}"
    )
    table = Table(title=title, title_justify="left", show_header=False)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in rows(m, result.initial_equity, final_equity(result)):
        table.add_row(name, value)
    out().print(table)
    if plot and result.curve is not None and len(result.curve) > 1:
        from rich.text import Text

        from barfinex_cli.kernel.backtest.plot import charts

        width = max(min(out().width, 120), 40)
        out().print(Text.from_ansi(charts(result.curve, result.initial_equity, width=width)))
    if trades:
        _trades(result, shown, exported)
    mode = "detector-only" if result.mode == "detector" else "full pipeline"
    err().print(
        f"{mode} run {result.run_id}: {result.bars:,} candles, {result.signals:,} signals, "
        f"{len(result.fills_table) if result.fills_table is not None else len(result.fills):,} "
        "fills",
        markup=False,
        highlight=False,
    )


def rows(m: Metrics, initial: float, final: float) -> list[tuple[str, str]]:
    """Return the metrics table's rows as (name, formatted value)."""
    return [
        ("equity", f"{initial:,.2f} → {final:,.2f}"),
        ("total return", f"{m.total_return_pct:+.2f} %"),
        ("CAGR", f"{m.cagr_pct:+.2f} %"),
        ("Sharpe", _ratio(m.sharpe)),
        ("Sortino", _ratio(m.sortino)),
        ("max drawdown", f"{m.max_drawdown_pct:.2f} %"),
        ("trades", f"{m.trades:,}"),
        ("win rate", f"{m.win_rate_pct:.1f} %"),
        ("profit factor", _ratio(m.profit_factor)),
        ("exposure", f"{m.exposure_pct:.1f} %"),
        ("fees", f"{m.fees:,.2f}"),
    ]


def _ratio(value: float) -> str:
    return "∞" if math.isinf(value) and value > 0 else f"{value:.2f}"


def _trades(result: BacktestResult, shown: int, exported: bool) -> None:
    from rich import box
    from rich.table import Table

    from barfinex_cli.kernel.backtest.export import trades_frame

    frame = trades_frame(result)
    last = frame.tail(shown)
    table = Table(
        title=f"last {last.height} of {frame.height:,} trades",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        padding=(0, 1),
        pad_edge=False,
        collapse_padding=True,
    )
    for column in ("entry UTC", "exit UTC", "side", "qty", "entry", "exit", "P&L", "%", "why"):
        left = column in ("entry UTC", "exit UTC", "side", "why")
        table.add_column(column, justify="left" if left else "right", no_wrap=True)
    for t in last.iter_rows(named=True):
        table.add_row(
            _short(t["entry_ms"]), _short(t["exit_ms"]), t["side"],
            f"{t['quantity']:.4g}", f"{t['entry_price']:.6g}", f"{t['exit_price']:.6g}",
            f"{t['pnl']:+,.2f}", f"{t['return_pct']:+.2f}", t["exit_reason"],
        )  # fmt: skip
    out().print(table)
    if frame.height > last.height:
        hint = "the export holds all" if exported else "--export DIR writes all"
        err().print(f"{frame.height - last.height:,} earlier trades not shown; {hint}")


def _short(ms: int) -> str:
    from barfinex_cli.contracts.times import from_ms

    return from_ms(ms).strftime("%m-%d %H:%M")
