"""Walk-forward: train the advisor on each fold's past only, then backtest that fold.

A backtest of an advisor whose model was trained on the whole history scores the model on data
it has seen. `walk_forward` splits the played window into N folds of equal length; for fold k it
trains a model the way `bfx advisor train` does (`advisor.training.train` on the strategy's
vectorised signals) on the candles before the fold's first candle only, then runs the full
pipeline over the fold with that model (everything before the fold is the roles' history). A fold
whose past holds too few labelled signals to train runs with the advisor's rule scorer and says
why. The combined curve chains the folds' returns (each fold starts from a fresh account).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from barfinex_cli.kernel.backtest.engine import PipelineSpec, new_run_id, run_pipeline
from barfinex_cli.kernel.backtest.result import BacktestResult, EquityPoint, Metrics

if TYPE_CHECKING:
    import polars as pl

    from barfinex_cli.advisor.training import TrainingSignal
    from barfinex_cli.detector.strategy import Strategy
    from barfinex_cli.runtime.settings import Settings
    from barfinex_cli.store.market import CandleRow

FoldProgress = Callable[[int, int, str], None]
"""Called with (fold number from 1, folds, what it is doing)."""


@dataclass(frozen=True)
class Fold:
    """One fold: its window, the model trained on its past (or why none), and its backtest."""

    number: int
    start_ms: int
    """Open time of the fold's first candle; the model saw nothing from here on."""
    end_ms: int
    """Close time of the fold's last candle."""
    model: Path | None
    trained_until_ms: int | None
    """Close of the last candle the model was trained on (None: no model)."""
    samples: int
    """Signals in the fold's past (what training had to learn from)."""
    untrained: str | None
    """Why the fold runs with the rule scorer, or None when it has a model."""
    result: BacktestResult


@dataclass(frozen=True)
class WalkForward:
    """Every fold, and the metrics of the folds chained into one curve."""

    folds: tuple[Fold, ...]
    combined: Metrics


def walk_forward(
    settings: Settings, spec: PipelineSpec, folds: int, progress: FoldProgress | None = None
) -> WalkForward:
    """Split the played window into `folds`, train on each fold's past, backtest each fold."""
    from barfinex_cli.detector.loader import load_strategy
    from barfinex_cli.errors import UsageError
    from barfinex_cli.kernel.backtest.lockstep import LockstepReplay

    if folds < 1:
        raise UsageError(f"--folds {folds}: give 1 or more folds")
    if not spec.strategies or not spec.strategies[0].is_file():
        raise UsageError("walk-forward needs a strategy file — see `strategies/`")
    strategy = load_strategy(spec.strategies[0])
    source = LockstepReplay(
        source=spec.replay, symbols=spec.symbols or None, skip=spec.history or 0,
        days=spec.days or 7.0, start_ms=spec.start_ms,
    )  # fmt: skip
    series = source.load()
    step = source.tf_ms
    moments = sorted(source.live_moments())
    if spec.end_ms is not None:
        moments = [m for m in moments if m <= spec.end_ms]
    if len(moments) < folds:
        raise UsageError(f"--folds {folds}: the window has only {len(moments)} candles to split")
    base = spec.run_id or new_run_id()
    models = settings.home / "backtests" / f"{base}-models"
    out: list[Fold] = []
    for k in range(folds):
        chunk = moments[k * len(moments) // folds : (k + 1) * len(moments) // folds]
        start, end = chunk[0] - step, chunk[-1]
        if progress is not None:
            progress(k + 1, folds, "training")
        model, until, samples, why = _train(strategy, series, start, step, models / f"f{k + 1}")
        if progress is not None:
            progress(k + 1, folds, "backtesting")
        fold_spec = replace(
            spec, start_ms=start, end_ms=end, model=model or spec.model,
            run_id=f"{base}-f{k + 1}", history=None,
        )  # fmt: skip
        result = asyncio.run(run_pipeline(settings, fold_spec))
        out.append(Fold(k + 1, start, end, model, until, samples, why, result))
    return WalkForward(tuple(out), _combined(out))


def _train(
    strategy: Strategy,
    series: dict[str, list[CandleRow]],
    before_ms: int,
    step_ms: int,
    folder: Path,
) -> tuple[Path | None, int | None, int, str | None]:
    """Train on candles opening before `before_ms`; return (model, its last close, samples, why)."""
    from barfinex_cli.advisor.models import save_model
    from barfinex_cli.advisor.training import train
    from barfinex_cli.errors import UsageError

    frame = _past_frame(strategy, series, before_ms, step_ms)
    signals = _signals(strategy, frame)
    if frame.height == 0:
        return None, None, 0, "no candles before the fold"
    try:
        trained = train(
            frame, signals, strategy=strategy.name, timeframe=strategy.timeframe,
            now=datetime.now(UTC),
        )  # fmt: skip
    except UsageError as exc:
        return None, None, len(signals), str(exc)
    path = folder / f"{strategy.name}.json"
    save_model(trained.bundle, path)
    window = trained.bundle.window
    return path, window.end_ms, len(signals), None


def _past_frame(
    strategy: Strategy, series: dict[str, list[CandleRow]], before_ms: int, step_ms: int
) -> pl.DataFrame:
    """Return the strategy's symbols' candles that closed by `before_ms`, at its timeframe."""
    import polars as pl

    from barfinex_cli.market.candles import resample, timeframe_ms

    parts = []
    span = timeframe_ms(strategy.timeframe)
    for symbol in strategy.symbols:
        rows = [r._asdict() for r in series.get(symbol, []) if r.open_ms < before_ms]
        if not rows:
            continue
        frame = pl.DataFrame(rows, infer_schema_length=None)
        if span != step_ms:
            frame = resample(frame, strategy.timeframe)
            frame = frame.filter(pl.col("open_ms") + span <= before_ms)  # closed buckets only
        parts.append(frame.with_columns(pl.lit(symbol).alias("symbol")))
    return pl.concat(parts, how="diagonal_relaxed") if parts else pl.DataFrame()


def _signals(strategy: Strategy, frame: pl.DataFrame) -> list[TrainingSignal]:
    """Return the strategy's entry signals on `frame` (the detector's vectorised scan)."""
    from barfinex_cli.advisor.stages.base import SignalView
    from barfinex_cli.advisor.stages.conviction import detector_strength
    from barfinex_cli.advisor.training import TrainingSignal
    from barfinex_cli.detector.engine import VectorEngine, to_payload

    if frame.height == 0:
        return []
    records = VectorEngine(strategy).evaluate(frame)
    return [
        TrainingSignal(r.open_ms, r.direction, r.score, r.symbol, detector_strength(
            SignalView(id="", signal=to_payload(r, "walk-forward", "history"))))
        for r in records
        if r.action == "open"
    ]  # fmt: skip


def _combined(folds: Sequence[Fold]) -> Metrics:
    """Return the metrics of the folds' curves chained: each fold's returns on the last's end."""
    from barfinex_cli.kernel.backtest.metrics import compute_metrics

    first = folds[0].result
    initial = first.initial_equity
    level = initial
    chained: list[EquityPoint] = []
    for fold in folds:
        result = fold.result
        scale = level / result.initial_equity
        chained.extend(EquityPoint(p.time_ms, p.equity * scale) for p in result.equity)
        if result.equity:
            level = result.equity[-1].equity * scale
    trades = [t for fold in folds for t in fold.result.trades]
    fees = sum(fold.result.metrics.fees for fold in folds)
    return compute_metrics(chained, trades, fees, first.timeframe, initial_equity=initial)
