"""`bfx paper`: the paper account's sessions; `bfx paper diff` compares one with a backtest.

Thin: it turns the options into a `PipelineSpec`, runs `kernel/backtest/paper_diff.diff_session`
and renders the pairs (a table, or `--json`). A SESSION is the data directory a `bfx up` run
recorded into (its BFX_HOME): its `audit.db` holds the session's fills and the window it played.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from barfinex_cli.cli.state import state_of

if TYPE_CHECKING:
    from barfinex_cli.kernel.backtest.paper_diff import DiffReport, Leg

app = typer.Typer(help="Paper trading sessions: compare one with a backtest of its window.")


@app.callback()
def _group() -> None:
    """Paper trading sessions: compare one with a backtest of its window."""


@app.command("diff")
def diff(
    ctx: typer.Context,
    session: Annotated[
        Path,
        typer.Argument(
            metavar="SESSION",
            help="The data directory a `bfx up` run recorded into (its BFX_HOME).",
        ),
    ],
    strategy: Annotated[
        list[Path] | None,
        typer.Option(
            "--strategy",
            help="A strategy file the session ran (repeat); default: strategies/*.py, as bfx up.",
        ),
    ] = None,
    policy: Annotated[
        Path | None, typer.Option(help="The session's inspector policy file (default: bundled).")
    ] = None,
    replay: Annotated[
        Path | None, typer.Option(help="The session's replay files (default: synthetic market).")
    ] = None,
    days: Annotated[
        float | None, typer.Option(help="Synthetic replay: the session's --days [7].")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON on stdout, for scripts.")] = False,
) -> None:
    """Compare a paper session's fills with a backtest of the same window, order by order.

    The backtest plays the session's window (its first to last candle) through the same
    detector, advisor, inspector and paper broker; orders are paired by symbol, signal candle,
    side and role (entry, stop, take-profit, exit), and each difference says why: fill price
    (and the entry the decision priced), timing, size, or a decision blocked on one side. Give
    the strategies, policy and replay the session ran.

    Examples:

      bfx paper diff ~/.bfx --days 1

      bfx paper diff /tmp/run1 --strategy strategies/trend_ema_adx.py --json
    """
    from barfinex_cli.cli.backtest_pipeline import _hush_roles
    from barfinex_cli.cli.up import _example_strategies
    from barfinex_cli.errors import UsageError
    from barfinex_cli.kernel.backtest.engine import PipelineSpec
    from barfinex_cli.kernel.backtest.paper_diff import diff_session

    strategies = tuple(strategy or _example_strategies())
    if not strategies:
        raise UsageError("no strategy files found — pass --strategy FILE (the session's)")
    spec = PipelineSpec(strategies=strategies, replay=replay, days=days, policy=policy)
    settings = state_of(ctx).settings()
    _hush_roles()
    if not (session / "audit.db").is_file():
        from barfinex_cli.errors import NotFound

        raise NotFound(f"no session at {session}: it holds no audit.db — name the data "
                       "directory of a `bfx up` run (BFX_HOME of that run)")  # fmt: skip
    if not as_json:
        from barfinex_cli.cli.render import err

        err().print(f"backtesting the window of {session} ...", markup=False)
    report = diff_session(settings, session, spec)
    if as_json:
        from barfinex_cli.cli.render import print_json

        print_json(_as_json(report))
        return
    _render(report)


def _leg(leg: Leg | None) -> dict[str, Any] | None:
    if leg is None:
        return None
    from barfinex_cli.contracts.times import iso_ms

    return {
        "time": iso_ms(leg.time_ms),
        "price": leg.price,
        "quantity": leg.quantity,
        "fees": leg.fees,
        "decision_entry": leg.decision_entry,
    }


def _as_json(report: DiffReport) -> dict[str, Any]:
    from barfinex_cli.contracts.times import iso_ms

    return {
        "session": str(report.session),
        "run_id": report.run_id,
        "window": {
            "start": iso_ms(report.window.start_ms),
            "end": iso_ms(report.window.end_ms),
            "symbols": list(report.window.symbols),
        },
        "same": report.same,
        "orders": [
            {
                "symbol": d.key.symbol,
                "signal_candle": iso_ms(d.key.signal_ms),
                "side": d.key.side,
                "role": d.key.role,
                "kind": d.kind,
                "session": _leg(d.session),
                "backtest": _leg(d.backtest),
                "why": d.why,
            }
            for d in report.differences
        ],
    }


def _render(report: DiffReport) -> None:
    """Print one paragraph per order: what it is, both sides, and why they differ."""
    from barfinex_cli.cli.render import out
    from barfinex_cli.contracts.times import iso_ms

    console = out()
    console.print(
        f"paper diff — session {report.session} vs backtest {report.run_id}, window "
        f"{iso_ms(report.window.start_ms)} to {iso_ms(report.window.end_ms)}",
        markup=False,
    )
    for d in report.differences:
        key = d.key
        console.print(
            f"\n{d.kind.upper():<13} {key.symbol} {key.side} {key.role} "
            f"(signal candle {iso_ms(key.signal_ms)})",
            markup=False,
        )
        console.print(f"  session   {_cell(d.session)}", markup=False)
        console.print(f"  backtest  {_cell(d.backtest)}", markup=False)
        console.print(f"  why       {d.why}", markup=False)
    console.print(f"\n{report.same} of {len(report.differences)} orders identical", markup=False)


def _cell(leg: Leg | None) -> str:
    if leg is None:
        return "-"
    from barfinex_cli.contracts.times import iso_ms

    return f"{iso_ms(leg.time_ms)} {leg.quantity:.8g} @ {leg.price:.10g} (fees {leg.fees:.4g})"
