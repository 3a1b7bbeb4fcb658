"""One trial, and the processes that run them: build the strategy, backtest it, score it.

An `Evaluator` holds what every trial of a process shares, loaded once: the strategy file's
factory and the candle frame. A trial asks optuna for a value of each `Space`, rebuilds the
strategy with them, runs the vectorised detector-only backtest on the search window and returns
the chosen metric; the run's metrics stay on the trial as a user attribute, for the ranked table.
A parameter set the strategy's `build` refuses (say fast >= slow) is pruned with its reason and
the search goes on. Trials run while a claim grants them: a countdown in one process, a counter
shared by the processes of `--jobs N` (`pool.py`).
"""

from __future__ import annotations

import math
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import polars as pl

from barfinex_cli.detector.loader import StrategyFactory
from barfinex_cli.detector.params import ParamValue, Space
from barfinex_cli.detector.strategy import Strategy
from barfinex_cli.errors import StrategyError
from barfinex_cli.kernel.backtest.metrics import metrics_of_arrays
from barfinex_cli.kernel.backtest.result import Metrics
from barfinex_cli.kernel.backtest.vector import run_vector
from barfinex_cli.kernel.optimize.plan import (
    OptimizeRequest,
    Window,
    metric_value,
    metrics_dict,
)
from barfinex_cli.market.candles import timeframe_ms

if TYPE_CHECKING:
    import optuna

Progress = Callable[[int, float | None], None]
"""Called after each finished trial with the trial count so far and its value (None: pruned)."""


def window_frame(frame: pl.DataFrame, window: Window, strategy: Strategy) -> pl.DataFrame:
    """Return the window's candles, led by the warm-up candles before it that the rules need.

    The first signal can then fire on the window's first candle, as it would have live, and a
    test window is never scored on a cold start.
    """
    lead = strategy.effective_warmup * timeframe_ms(strategy.timeframe)
    return frame.filter(
        (pl.col("open_ms") >= window.start_ms - lead) & (pl.col("open_ms") < window.end_ms)
    )


def evaluate(
    strategy: Strategy, frame: pl.DataFrame, window: Window, request: OptimizeRequest
) -> Metrics:
    """Return the metrics of a detector-only backtest of `strategy` over one window.

    The warm-up lead is backtested too (no signal can fire in it: it is exactly the warm-up),
    but scored out: the metrics cover the window's candles only.
    """
    result = run_vector(
        strategy,
        window_frame(frame, window, strategy),
        exchange=request.exchange,
        fees_bps=request.fees_bps,
        slippage_bps=request.slippage_bps,
        objects=False,  # the tables are enough to score; no Fill/Trade object per row
    )
    curve = result.curve
    if curve is None or not len(curve) or int(curve.time_ms[0]) >= window.start_ms:
        return result.metrics
    inside = curve.time_ms >= window.start_ms
    trades = result.trades_table
    assert trades is not None  # run_vector always fills it
    return metrics_of_arrays(
        curve.equity[inside],
        trades["pnl"].to_numpy(),
        trades["entry_ms"].to_numpy(),
        trades["exit_ms"].to_numpy(),
        result.metrics.fees,
        strategy.timeframe,
        initial_equity=float(curve.equity[~inside][-1]),
    )


def suggest(trial: optuna.Trial, space: Space) -> ParamValue:
    """Return optuna's value for one parameter; ranges stay ranges so TPE can model them."""
    if space.choices:
        value = trial.suggest_categorical(space.name, list(space.choices))
        assert value is not None  # the choices hold no None
        return value
    assert space.low is not None and space.high is not None
    if space.kind == "int":
        return trial.suggest_int(
            space.name, int(space.low), int(space.high), step=int(space.step or 1)
        )
    return trial.suggest_float(space.name, float(space.low), float(space.high), step=space.step)


def make_sampler(request: OptimizeRequest, worker: int) -> optuna.samplers.BaseSampler:
    """Return the sampler of one worker; workers get different seeds or they would repeat."""
    import optuna

    seed = None if request.seed is None else request.seed + worker
    if request.sampler == "grid":
        grid = {name: space.grid() for name, space in request.spaces.items()}
        return optuna.samplers.GridSampler(grid, seed=seed)
    if request.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    # constant liar: a trial still running elsewhere counts as a poor one, so processes sharing
    # the study do not all sample the same promising point at once
    return optuna.samplers.TPESampler(seed=seed, constant_liar=True)


@dataclass
class Evaluator:
    """What every trial in one process shares: the factory and the frame, loaded once."""

    factory: StrategyFactory
    frame: pl.DataFrame
    request: OptimizeRequest
    window: Window

    def objective(self, trial: optuna.Trial) -> float:
        """Build the trial's strategy, backtest it on the search window, return the metric."""
        import optuna

        params = {name: suggest(trial, space) for name, space in self.request.spaces.items()}
        try:
            strategy = self.factory.build(**params)
        except StrategyError as exc:
            trial.set_user_attr("refused", str(exc))
            raise optuna.TrialPruned(str(exc)) from None
        metrics = evaluate(strategy, self.frame, self.window, self.request)
        trial.set_user_attr("metrics", metrics_dict(metrics))
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        value = metric_value(metrics, self.request.metric)
        if math.isnan(value):
            trial.set_user_attr("refused", f"{self.request.metric} is undefined")
            raise optuna.TrialPruned(f"{self.request.metric} is undefined")
        return value


def run_trials(
    evaluator: Evaluator,
    study: optuna.Study,
    claims: Claims,
    progress: Progress | None,
) -> None:
    """Run trials of `study` in this process while `claims` grants one, calling `progress`.

    One `optimize(n_trials=1)` per claimed trial: the claim comes before the trial exists, so
    processes sharing a counter run exactly the trials asked for, and a grid sampler may still
    stop the study from inside the loop.
    """
    import optuna

    done = 0

    def callback(_study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        nonlocal done
        done += 1
        if progress is not None:
            value = trial.value if trial.state == optuna.trial.TrialState.COMPLETE else None
            progress(done, value)

    while claims.claim():
        try:
            study.optimize(evaluator.objective, n_trials=1, callbacks=[callback], catch=())
        finally:
            claims.release()


class Claims(Protocol):
    """Grants trials one at a time; `release` says a granted trial is finished and stored."""

    def claim(self) -> bool:
        """Return whether one more trial may run."""

    def release(self) -> None:
        """Record that a claimed trial finished."""


class Countdown:
    """Grants `trials` trials in this process."""

    def __init__(self, trials: int) -> None:
        self.left = trials

    def claim(self) -> bool:
        """Return whether one more trial may run."""
        self.left -= 1
        return self.left >= 0

    def release(self) -> None:
        """Nothing to record in one process."""
