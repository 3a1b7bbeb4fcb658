"""`bfx advisor train|models`: train the advisor's model on a strategy's history, list saved models.

The scan lives here, not in `advisor.training`: the advisor may not import the detector (roles
never import each other), and the CLI may import anything. So `train` loads the strategy, finds its
signals over the candles with the detector's `VectorEngine` (or reads the signals the detector
recorded in the audit store, `--from-audit`), and hands candles and signals to `advisor.training`.
The model is saved as DATA_DIR/models/<strategy>-<UTC stamp>.model, and the
`advisor.model.trained` / `advisor.calibration.trained` events are recorded in DATA_DIR/audit.db.

Both functions are mounted on the `bfx advisor` group by `cli/advisor.py`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

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

if TYPE_CHECKING:
    import polars as pl

    from barfinex_cli.advisor.calibration import ReliabilityBin
    from barfinex_cli.advisor.models import ModelBundle
    from barfinex_cli.advisor.training import TrainingSignal, TrainResult
    from barfinex_cli.contracts.detector import SignalGenerated
    from barfinex_cli.detector.strategy import Strategy

MODELS_DIR = "models"
SUFFIX = ".model"


def train(
    ctx: typer.Context,
    path: StrategyArg,
    data: DataOpt = None,
    exchange: ExchangeOpt = None,
    symbol: SymbolOpt = None,
    timeframe: TimeframeOpt = None,
    horizon: Annotated[
        int, typer.Option("--horizon", min=1, help="Candles a trade has to reach its target.")
    ] = 20,
    stop_atr: Annotated[
        float, typer.Option("--stop-atr", min=0.01, help="Stop distance in ATRs (14 candles).")
    ] = 1.0,
    target_atr: Annotated[
        float, typer.Option("--target-atr", min=0.01, help="Target distance in ATRs.")
    ] = 1.5,
    method: Annotated[
        str, typer.Option("--method", help="Calibrator: platt or isotonic.")
    ] = "platt",
    model: Annotated[
        str, typer.Option("--model", help="Model: logistic or hgb (gradient boosting).")
    ] = "logistic",
    detector_weight: Annotated[
        float | None,
        typer.Option(
            "--detector-weight",
            min=0.0,
            max=1.0,
            help="The conviction's detector share the calibrators are fitted for "
            "(default: [advisor] detector_weight).",
            show_default=False,
        ),
    ] = None,
    from_audit: Annotated[
        bool,
        typer.Option(
            "--from-audit",
            help="Learn from the strategy's signals recorded in audit.db instead of a scan.",
        ),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Label a strategy's signals by their outcome, fit a model and per-regime calibrators.

    A signal wins if the price reaches entry +/- target-atr x ATR before the stop within
    --horizon candles. The oldest 60% of signals fit the model, the next 20% the calibrators,
    the newest 20% judge both. Saved as DATA_DIR/models/<strategy>-<time>.model.

    Examples: bfx advisor train strategies/trend_ema_adx.py --data btc.csv |
    bfx advisor train strat.py --exchange synthetic --symbol BTC/USDT --model hgb --json
    """
    from barfinex_cli.advisor.models import LabelConfig
    from barfinex_cli.advisor.training import TrainConfig
    from barfinex_cli.detector.loader import load_strategy
    from barfinex_cli.errors import UsageError

    methods, models_ = ("platt", "isotonic"), ("logistic", "hgb")
    if method not in methods:
        raise UsageError(f"--method {method!r}: choose platt or isotonic")
    if model not in models_:
        raise UsageError(f"--model {model!r}: choose logistic or hgb")
    strategy = load_strategy(path)
    from barfinex_cli.cli.detector import candles as load_candles

    frame = load_candles(ctx, strategy, data, exchange, symbol, timeframe)
    signals = audit_signals(ctx, strategy, frame) if from_audit else scan_signals(strategy, frame)
    if not signals:
        where = "recorded in audit.db" if from_audit else "on these candles"
        raise UsageError(
            f"{strategy.name} has no entry signals {where}: nothing to learn from — give a longer "
            "history or lower the strategy's threshold"
        )
    if detector_weight is None:
        detector_weight = state_of(ctx).settings().advisor.detector_weight
    config = TrainConfig(
        labels=LabelConfig(horizon=horizon, stop_atr=stop_atr, target_atr=target_atr),
        method=method,  # type: ignore[arg-type]  # checked above
        algorithm=model,  # type: ignore[arg-type]
        detector_weight=detector_weight,
    )
    result = run_training(ctx, strategy, frame, signals, config, timeframe, quiet=as_json)
    saved = save(ctx, result.bundle)
    recorded = record(ctx, result)
    if as_json:
        from barfinex_cli.cli.render import print_json

        print_json(
            {
                "path": str(saved),
                "model": result.bundle.model_dump(mode="json", exclude={"scorer", "calibrators"}),
                "calibrators": sorted(result.bundle.calibrators.by_regime),
                "left_out": result.left_out,
                "duration_s": round(result.duration_s, 3),
                "events": [
                    {"type": e.event_type, **e.model_dump(mode="json")} for e in result.events
                ],
                "recorded": recorded,
            }
        )
        return
    render_report(result, saved, recorded)


def scan_signals(strategy: Strategy, frame: pl.DataFrame) -> list[TrainingSignal]:
    """Return the strategy's entry signals over `frame` (the detector's vectorised scan)."""
    from barfinex_cli.advisor.training import TrainingSignal
    from barfinex_cli.cli.render import err
    from barfinex_cli.detector.engine import VectorEngine, to_payload

    engine = VectorEngine(strategy)
    records = engine.evaluate(frame)
    for rule, reason in engine.broken.items():
        err().print(f"warning: rule {rule} is broken and never held: {reason}", style="yellow")
    return [
        TrainingSignal(r.open_ms, r.direction, r.score, r.symbol,
                       strength(to_payload(r, "train", "history")))
        for r in records
        if r.action == "open"
    ]  # fmt: skip


def strength(signal: SignalGenerated) -> float:
    """Return the detector's strength of a signal exactly as the conviction stage computes it."""
    from barfinex_cli.advisor.stages.base import SignalView
    from barfinex_cli.advisor.stages.conviction import detector_strength

    return detector_strength(SignalView(id="", signal=signal))


def audit_signals(
    ctx: typer.Context, strategy: Strategy, frame: pl.DataFrame
) -> list[TrainingSignal]:
    """Return the strategy's entry signals recorded in audit.db on the symbols of `frame`."""
    from barfinex_cli.advisor.training import TrainingSignal
    from barfinex_cli.contracts.detector import SignalGenerated
    from barfinex_cli.contracts.times import to_ms
    from barfinex_cli.errors import NotFound
    from barfinex_cli.store.audit import AuditStore

    path = state_of(ctx).settings().audit_path
    if not path.is_file():
        raise NotFound(
            f"{path}: no audit store — record the detector's signals first (run the stack, or "
            "`bfx events record`), or train from a scan without --from-audit"
        )
    symbols = set(frame["symbol"].unique().to_list()) if "symbol" in frame.columns else set()
    out: list[TrainingSignal] = []
    with AuditStore(path, read_only=True) as store:
        for event in store.query(["detector.signal"], limit=None):
            p = event.payload
            if not isinstance(p, SignalGenerated) or p.strategy != strategy.name:
                continue
            if p.action != "open" or (symbols and p.symbol not in symbols):
                continue
            at = to_ms(p.candle_time)
            out.append(TrainingSignal(at, p.direction, p.score, p.symbol, strength(p)))
    unique = {(s.symbol, s.open_ms, s.direction): s for s in out}  # instances may repeat one
    return sorted(unique.values(), key=lambda s: (s.open_ms, s.symbol))


def run_training(
    ctx: typer.Context,
    strategy: Strategy,
    frame: pl.DataFrame,
    signals: list[TrainingSignal],
    config: Any,
    timeframe: str | None,
    *,
    quiet: bool,
) -> TrainResult:
    """Train with a progress bar on stderr (none with --json)."""
    from datetime import UTC, datetime

    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from barfinex_cli.advisor.training import STEPS
    from barfinex_cli.advisor.training import train as fit
    from barfinex_cli.cli.render import err

    kwargs: dict[str, Any] = {
        "strategy": strategy.name,
        "timeframe": timeframe or strategy.timeframe,
        "now": datetime.now(UTC),
        "config": config,
    }
    if quiet:
        return fit(frame, signals, **kwargs)
    columns = (TextColumn("{task.description:<10}"), BarColumn(), TimeElapsedColumn())
    with Progress(*columns, console=err(), transient=True) as bar:
        task = bar.add_task("features", total=len(STEPS))

        def progress(step: str, done: int, total: int) -> None:
            bar.update(task, description=step, completed=done, total=total)

        return fit(frame, signals, progress=progress, **kwargs)


def models_dir(ctx: typer.Context) -> Path:
    """Return DATA_DIR/models."""
    return state_of(ctx).settings().home / MODELS_DIR


def save(ctx: typer.Context, bundle: ModelBundle) -> Path:
    """Save `bundle` under DATA_DIR/models, never over another model."""
    from barfinex_cli.advisor.models import save_model

    folder = models_dir(ctx)
    path, n = folder / f"{bundle.name}{SUFFIX}", 1
    while path.exists():
        n += 1
        path = folder / f"{bundle.name}-{n}{SUFFIX}"
    try:
        save_model(bundle, path)
    except OSError as exc:
        from barfinex_cli.errors import ConfigError

        raise ConfigError(
            f"cannot write {path} ({exc.strerror or exc}) — pass --data-dir or set BFX_HOME to a "
            "writable folder"
        ) from None
    return path


def record(ctx: typer.Context, result: TrainResult) -> bool:
    """Record the training events in audit.db; return False (with a warning) if it cannot."""
    import sqlite3

    from barfinex_cli.cli.render import err
    from barfinex_cli.contracts.envelope import make_event
    from barfinex_cli.errors import BfxError
    from barfinex_cli.store.audit import AuditStore

    events = [make_event(e, source="advisor/train") for e in result.events]
    path = state_of(ctx).settings().audit_path
    try:
        with AuditStore(path) as store:
            store.append(events)
    except (OSError, sqlite3.Error, BfxError) as exc:
        err().print(f"warning: training events not recorded in {path}: {exc}", style="yellow")
        return False
    return True


def render_report(result: TrainResult, saved: Path, recorded: bool) -> None:
    """Print the held-out scores, the reliability tables and the per-regime calibrators."""
    from rich.table import Table

    from barfinex_cli.cli.render import err, out
    from barfinex_cli.contracts.times import iso_ms

    b, m = result.bundle, result.bundle.metrics
    summary = Table(
        title=f"{b.name}: held-out test, {m.test_samples} signals", title_justify="left"
    )
    for column in ("", "before calibration", "after calibration"):
        summary.add_column(column, justify="left" if not column else "right")
    summary.add_row("Brier score", f"{m.brier_before:.4f}", f"{m.brier_after:.4f}")
    summary.add_row("log loss", f"{m.log_loss_before:.4f}", f"{m.log_loss_after:.4f}")
    summary.add_row("calibration error (ECE)", f"{m.ece_before:.4f}", f"{m.ece_after:.4f}")
    summary.add_row("AUC", f"{m.auc:.3f}", f"{m.auc:.3f}")
    out().print(summary)
    out().print(reliability_table(m.reliability_before, m.reliability_after))
    regimes = Table(title="calibrators per regime", title_justify="left")
    for column in ("regime", "calibrator", "fit on", "tested on", "Brier before", "after"):
        regimes.add_column(
            column, justify="left" if column in ("regime", "calibrator") else "right"
        )
    for name, r in m.regimes.items():
        regimes.add_row(
            name, r.method or "fallback", str(r.calibration_samples), str(r.test_samples),
            _num(r.brier_before), _num(r.brier_after),
        )  # fmt: skip
    out().print(regimes)
    w = b.window
    left = ", ".join(f"{k} {v}" for k, v in result.left_out.items() if v) or "none"
    out().print(
        f"{b.scorer.name} + {b.method} · {m.train_samples} train / {m.calibration_samples} "
        f"calibration / {m.test_samples} test signals · win rate {m.win_rate:.1%} · horizon "
        f"{b.labels.horizon}, stop {b.labels.stop_atr:g} ATR, target {b.labels.target_atr:g} ATR"
    )
    out().print(
        f"calibrated: the conviction {b.detector_weight:g} x detector strength + "
        f"{1 - b.detector_weight:g} x model probability (`[advisor] detector_weight` must match) "
        f"· model alone: Brier {m.ml_brier:.4f}, log loss {m.ml_log_loss:.4f}"
    )
    out().print(
        f"data {iso_ms(w.start_ms)} .. {iso_ms(w.end_ms)} ({w.candles:,} candles) · left out: "
        f"{left} · {result.duration_s:.1f}s"
    )
    out().print(f"saved {saved}")
    if recorded:
        err().print("advisor.model.trained and advisor.calibration.trained recorded in audit.db")


def reliability_table(before: tuple[ReliabilityBin, ...], after: tuple[ReliabilityBin, ...]) -> Any:
    """Return the two reliability tables side by side, one row per probability bin."""
    from rich.table import Table

    table = Table(title="reliability (test split)", title_justify="left")
    for column in ("bin", "predicted", "observed", "n", "predicted ", "observed ", "n "):
        table.add_column(column, justify="left" if column == "bin" else "right")
    rows: dict[float, list[str]] = {}
    for i, side in enumerate((before, after)):
        for b in side:
            cells = rows.setdefault(b.low, [f"{b.low:.1f}-{b.high:.1f}"] + ["", "", ""] * 2)
            cells[1 + 3 * i : 4 + 3 * i] = [f"{b.mean_predicted:.3f}", f"{b.observed:.3f}",
                                            str(b.count)]  # fmt: skip
    for low in sorted(rows):
        table.add_row(*rows[low])
    table.caption = "left: the model's raw probabilities · right: after calibration"
    return table


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def models(
    ctx: typer.Context,
    as_json: JsonOpt = False,
) -> None:
    """List the saved advisor models, and whether this installation can load each.

    Example: bfx advisor models --json
    """
    from barfinex_cli.cli.render import out, print_json

    rows = [describe(path) for path in sorted(models_dir(ctx).glob(f"*{SUFFIX}"))]
    if as_json:
        print_json({"models": rows})
        return
    if not rows:
        out().print(
            f"no models in {models_dir(ctx)} — train one with `bfx advisor train STRATEGY.py`"
        )
        return
    from rich.table import Table

    table = Table(title=f"{len(rows)} models in {models_dir(ctx)}", title_justify="left")
    for column in ("name", "model", "data", "Brier", "loads here"):
        table.add_column(column, overflow="fold")
    for r in rows:
        window = r.get("window") or {}
        span = (
            f"{window['start'][:16]} .. {window['end'][:16]} {','.join(window['symbols'])} "
            f"{window['signals']} signals"
            if window
            else "-"
        )
        metrics = r.get("metrics") or {}
        brier = f"{metrics['brier_before']:.4f} -> {metrics['brier_after']:.4f}" if metrics else "-"
        sklearn = (r.get("versions") or {}).get("sklearn", "?")
        table.add_row(
            r["name"], r.get("model") or "-", span, brier,
            f"yes (sklearn {sklearn})" if r["loadable"] else f"no: {r['problem']}",
        )  # fmt: skip
    out().print(table)


def describe(path: Path) -> dict[str, Any]:
    """Return what `models` shows of one model file, loadable or not."""
    from barfinex_cli.advisor.models import incompatibility, load_model, read_header
    from barfinex_cli.contracts.times import iso_ms
    from barfinex_cli.errors import BfxError

    info: dict[str, Any] = {"name": path.stem, "path": str(path), "loadable": False}
    try:
        header = read_header(path)
    except BfxError as exc:
        info["problem"] = _reason(str(exc), path)
        return info
    window, metrics, scorer, versions = (
        part if isinstance(part := header.get(key), dict) else None
        for key in ("window", "metrics", "scorer", "versions")
    )
    info.update(
        created=header.get("created"),
        strategy=header.get("strategy"),
        model=f"{(scorer or {}).get('algorithm', '?')} + {header.get('method', '?')}",
        versions=versions,
    )
    try:
        info["window"] = window and {
            "start": iso_ms(int(window["start_ms"])), "end": iso_ms(int(window["end_ms"])),
            "symbols": list(window.get("symbols", [])), "timeframe": window.get("timeframe"),
            "candles": window.get("candles"), "signals": window.get("signals"),
        }  # fmt: skip
        keys = ("auc", "brier_before", "brier_after", "log_loss_before", "log_loss_after",
                "ece_before", "ece_after", "test_samples")  # fmt: skip
        info["metrics"] = metrics and {k: metrics.get(k) for k in keys}
    except (KeyError, TypeError, ValueError, OverflowError):
        info["window"], info["metrics"] = None, None
    problem = incompatibility(header)
    if problem is None:
        try:
            load_model(path)
        except BfxError as exc:
            problem = _reason(str(exc), path)
    info["loadable"] = problem is None
    info["problem"] = problem
    return info


def _reason(message: str, path: Path) -> str:
    """Return an error message without the file name and the fix (the listing shows both)."""
    text = message.removeprefix(f"{path}: ")
    return text.split(" — ")[0]
