"""`bfx detector`: check a strategy file, scan history with it, prove it does not look ahead.

Offline commands only; the live service (`bfx detector run`) is mounted beside them. Candles come
from a file (`--data`, any layout `bfx data import` reads, or a CSV/Parquet with `open_ms` or
`timestamp` plus `buy_volume`/`sell_volume` for order-flow rules) or from the market store
(`--exchange`, DATA_DIR/market.db).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from barfinex_cli.cli.state import state_of

if TYPE_CHECKING:
    import polars as pl

    from barfinex_cli.detector.engine import SignalRecord
    from barfinex_cli.detector.strategy import Strategy

app = typer.Typer(
    help=(
        "Detector role: strategy files of weighted rules, and the signals they fire.\n\n"
        "Examples:\n\n"
        "  bfx detector check strategies/trend_ema_adx.py\n\n"
        "  bfx detector scan strategies/trend_ema_adx.py --data BTCUSDT-1m-2024-01.zip\n\n"
        "  bfx detector scan strategies/breakout_volume.py --exchange synthetic --json\n\n"
        "  bfx detector lookahead strategies/mean_reversion_rsi_bb.py --data btc.parquet"
    ),
    no_args_is_help=True,
)

StrategyArg = Annotated[
    Path, typer.Argument(metavar="STRATEGY", help="Strategy file (.py exporting `strategy`).")
]
DataOpt = Annotated[Path | None, typer.Option("--data", help="Candle file: CSV, Parquet, JSON.")]
ExchangeOpt = Annotated[
    str | None, typer.Option("--exchange", help="Read candles of this exchange from market.db.")
]
SymbolOpt = Annotated[
    str | None, typer.Option("--symbol", help="Symbol (default: the strategy's symbols).")
]
TimeframeOpt = Annotated[
    str | None, typer.Option("--timeframe", help="Timeframe (default: the strategy's).")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="JSON on stdout, for scripts.")]


@app.command("check")
def check(path: StrategyArg, as_json: JsonOpt = False) -> None:
    """Load a strategy file, validate it, and print its rules and warm-up.

    Refused: a period below 1, a negative weight, a threshold no side can reach, a file that
    calls sys.exit. Warned about (stderr): a side that can never reach the threshold.

    Example: bfx detector check strategies/trend_ema_adx.py
    """
    from barfinex_cli.cli.render import out, print_json
    from barfinex_cli.detector.loader import load_strategy

    strategy = load_strategy(path)
    info = describe(strategy)
    if as_json:
        print_json(info)
        return
    from barfinex_cli.cli.render import err

    for pair in info["unreachable"]:
        err().print(
            f"warning: {pair}, below the threshold {strategy.threshold:g}: it can never fire",
            style="bold yellow",
            markup=False,
        )
    from rich.table import Table

    table = Table(title=f"{strategy.name}: {len(strategy.rules)} rules", title_justify="left")
    for column in ("rule", "weight", "direction", "action", "candles"):
        table.add_column(
            column, justify="right" if column in ("weight", "candles") else "left", no_wrap=True
        )
    table.add_column("condition", overflow="fold")
    for r in info["rules"]:
        table.add_row(
            r["name"],
            f"{r['weight']:g}",
            r["direction"],
            r["action"],
            str(r["lookback"] + 1),
            r["condition"],
        )
    out().print(table)
    out().print(
        f"symbols {', '.join(strategy.symbols)} · timeframe {strategy.timeframe} · threshold "
        f"{strategy.threshold:g} · cooldown {strategy.cooldown} candles · warm-up "
        f"{info['warmup']} candles (the rules need {info['needed_warmup']})"
    )
    if not info["live"]:
        out().print("uses ta.raw: it can be scanned, but `bfx detector run` refuses it")


def describe(strategy: Strategy) -> dict[str, Any]:
    """Return what `check` reports about a strategy, as plain data."""
    vector_only = strategy.vector_only()
    return {
        "name": strategy.name,
        "symbols": list(strategy.symbols),
        "timeframe": strategy.timeframe,
        "threshold": strategy.threshold,
        "cooldown": strategy.cooldown,
        "warmup": strategy.effective_warmup,
        "needed_warmup": strategy.needed_warmup,
        "columns": sorted(strategy.columns()),
        "live": not vector_only,
        "unreachable": strategy.unreachable(),
        "rules": [
            {
                "name": r.name,
                "weight": r.weight,
                "direction": r.direction,
                "action": r.action,
                "condition": str(r.condition),
                "lookback": r.lookback,
                "reads": [str(n) for n in r.reported()],
            }
            for r in strategy.rules
        ],
    }


LimitOpt = Annotated[
    int | None,
    typer.Option(
        "--limit",
        min=0,
        help="List at most N signals (default: all with --json, the first 100 in the table; "
        "0: all).",
        show_default=False,
    ),
]
TABLE_ROWS = 100
"""Signals the table shows without --limit: a rich table of a million rows takes a minute."""


@app.command("scan")
def scan(
    ctx: typer.Context,
    path: StrategyArg,
    data: DataOpt = None,
    exchange: ExchangeOpt = None,
    symbol: SymbolOpt = None,
    timeframe: TimeframeOpt = None,
    limit: LimitOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Run a strategy over history in one vectorised pass; list the signals live would fire.

    The table shows the first 100 signals (--limit N, 0 for all); --json streams every signal.
    Examples: bfx detector scan strat.py --data btc.csv | bfx detector scan strat.py
    --exchange binance --symbol BTC/USDT --json
    """
    from barfinex_cli.cli.render import err, out
    from barfinex_cli.detector.engine import VectorEngine, open_time
    from barfinex_cli.detector.loader import load_strategy

    strategy = load_strategy(path)
    frame = candles(ctx, strategy, data, exchange, symbol, timeframe)
    engine = VectorEngine(strategy)
    records = engine.evaluate(frame)
    for rule, reason in engine.broken.items():
        err().print(f"warning: rule {rule} is broken and never held: {reason}", style="yellow")
    shown = records if not limit else records[:limit]
    if as_json:
        from barfinex_cli.cli.render import stream_json

        head = {
            "strategy": strategy.name,
            "candles": frame.height,
            "warmup": strategy.effective_warmup,
            "broken": engine.broken,
            "total_signals": len(records),
        }
        stream_json(head, "signals", (record_json(r) for r in shown))
        return
    if limit is None:
        shown = records[:TABLE_ROWS]
    from rich.table import Table

    title = f"{len(records)} signals"
    if len(shown) < len(records):
        title += f" (the first {len(shown):,} shown)"
    table = Table(title=title, title_justify="left")
    for column in ("time (UTC)", "symbol", "direction", "action", "score"):
        table.add_column(column, justify="right" if column == "score" else "left", no_wrap=True)
    table.add_column("rules", overflow="fold")
    for r in shown:
        when = open_time(r.open_ms).strftime("%Y-%m-%d %H:%M")
        table.add_row(when, r.symbol, r.direction, r.action, f"{r.score:g}", ", ".join(r.rules))
    out().print(table)
    if len(shown) < len(records):
        err().print(
            f"{len(records) - len(shown):,} more signals not shown: --limit N (0 for all) or "
            "--json for every one"
        )
    err().print(
        f"{strategy.name}: {frame.height:,} candles scanned, warm-up "
        f"{strategy.effective_warmup}, {len(records)} signals"
    )


def record_json(record: SignalRecord) -> dict[str, Any]:
    """Return a signal record as plain data (times in ISO 8601 UTC).

    The attribution is built from the record's tuples, the same fields as `RuleAttribution`'s
    dump without a model per rule (a scan can list a million signals).
    """
    from barfinex_cli.detector.engine import open_time

    values = iter(record.values)
    attribution = [
        {
            "rule": name,
            "held": held,
            "weight": weight,
            "direction": side,
            "values": {label: next(values) for label in labels},
        }
        for (name, weight, side, labels), held in zip(record.layout.rules, record.held, strict=True)
    ]
    return {
        "time": open_time(record.open_ms).isoformat(),
        "open_ms": record.open_ms,
        "index": record.candle_index,
        "symbol": record.symbol,
        "direction": record.direction,
        "action": record.action,
        "score": record.score,
        "threshold": record.threshold,
        "rules": list(record.rules),
        "held": record.held_rules,
        "attribution": attribution,
    }


@app.command("lookahead")
def lookahead(
    ctx: typer.Context,
    path: StrategyArg,
    data: DataOpt = None,
    exchange: ExchangeOpt = None,
    symbol: SymbolOpt = None,
    timeframe: TimeframeOpt = None,
    samples: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Candles to check, spread over the history (default: the check's own).",
            show_default=False,
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Prove no rule looks ahead: values at t must not change when candles after t are cut.

    Exits 1 and names the rule and candle if one does, 0 if clean.
    Example: bfx detector lookahead strat.py --data btc.parquet
    """
    from dataclasses import asdict

    from barfinex_cli.cli.render import out, print_json
    from barfinex_cli.detector.engine import open_time
    from barfinex_cli.detector.loader import load_strategy
    from barfinex_cli.detector.lookahead import check_lookahead

    strategy = load_strategy(path)
    frame = candles(ctx, strategy, data, exchange, symbol, timeframe)
    # the sample size defaults in one place: check_lookahead's signature
    report = (
        check_lookahead(strategy, frame)
        if samples is None
        else check_lookahead(strategy, frame, samples)
    )
    if not report.checked:
        from barfinex_cli.errors import UsageError

        raise UsageError(f"{report.candles} candles: a look-ahead check needs at least 2")
    if as_json:
        print_json(
            {
                "clean": report.clean,
                "candles": report.candles,
                "checked": list(report.checked),
                "biased": [asdict(b) for b in report.biased],
            }
        )
    elif report.clean:
        out().print(
            f"no look-ahead: {len(report.checked)} of {report.candles:,} candles checked; "
            "every rule and indicator at t is unchanged with the candles after t cut"
        )
    else:
        for b in report.biased:
            when = open_time(b.open_ms).strftime("%Y-%m-%d %H:%M")
            out().print(
                f"rule {b.rule} looks ahead: {b.node} at candle {b.index} ({b.symbol} "
                f"{when} UTC) is {b.full} with the full history, {b.cut} without the "
                "candles after it"
            )
    if not report.clean:
        raise typer.Exit(1)


def candles(
    ctx: typer.Context,
    strategy: Strategy,
    data: Path | None,
    exchange: str | None,
    symbol: str | None,
    timeframe: str | None,
) -> pl.DataFrame:
    """Return the candles the options name, with a `symbol` column (`market.history` loads)."""
    from barfinex_cli.errors import UsageError
    from barfinex_cli.market import history

    if (data is None) == (exchange is None):
        raise UsageError("give the candles with --data FILE or --exchange NAME (not both)")
    if exchange is not None:
        from barfinex_cli.cli.home import sqlite_errors

        path = state_of(ctx).settings().home / "market.db"
        symbols = [symbol] if symbol else list(strategy.symbols)
        with sqlite_errors(path):  # read-only: works on a data directory it may not write
            return history.load_store(path, exchange, symbols, timeframe or strategy.timeframe)
    assert data is not None
    loaded = history.load_file(
        data, symbol=symbol, timeframe=timeframe, fallback_symbol=strategy.symbols[0]
    )
    if loaded.left_out:
        from barfinex_cli.cli.render import err

        err().print(
            f"warning: {len(loaded.left_out)} rows left out ({loaded.left_out[0]})", style="yellow"
        )
    return loaded.frame
