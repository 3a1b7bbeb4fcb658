"""One trial, and the processes that run them: build the strategy, backtest it, score it.

An `Evaluator` holds what every trial of a process shares, loaded once: the strategy file's
factory and the candle frame. A trial asks optuna for a value of each `Space`, rebuilds the
strategy with them, runs the vectorised detector-only backtest on the search window and returns
the chosen metric; the run's metrics stay on the trial as a user attribute, for the ranked table.
A parameter set the strategy's `build` refuses (say fast >= slow) is pruned with its reason and
the search goes on. `--jobs N` starts N worker processes (spawned, never forked: polars and
SQLAlchemy hold threads and locks) that open the same storage and share the study; each reports
its finished trials on a queue so the parent can draw one progress bar.
"""

from __future__ import annotations

import math
import os
import queue
import socket
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from barfinex_cli.detector.loader import StrategyFactory, load_strategy_factory
from barfinex_cli.detector.params import ParamValue, Space
from barfinex_cli.detector.strategy import Strategy
from barfinex_cli.errors import BfxError, StrategyError
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
    import multiprocessing as mp

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
    claim: Callable[[], bool],
    progress: Progress | None,
) -> None:
    """Run trials of `study` in this process while `claim()` grants one, calling `progress`.

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

    while claim():
        study.optimize(evaluator.objective, n_trials=1, callbacks=[callback], catch=())


def countdown(trials: int) -> Callable[[], bool]:
    """Return a claim that grants `trials` trials in this process."""
    left = trials

    def claim() -> bool:
        nonlocal left
        left -= 1
        return left >= 0

    return claim


def shared_claim(remaining: Any) -> Callable[[], bool]:
    """Return a claim on a counter shared by processes (a `multiprocessing.Value`)."""

    def claim() -> bool:
        with remaining.get_lock():
            if remaining.value <= 0:
                return False
            remaining.value -= 1
            return True

    return claim


@dataclass(frozen=True)
class WorkerJob:
    """What a spawned worker needs to join a study (pickled to it)."""

    worker: int
    request: OptimizeRequest
    frame_path: Path
    """The candles as an Arrow IPC file the parent wrote once; the worker maps it."""
    window: Window
    storage: str
    namespace: str
    study: str


def work(job: WorkerJob, remaining: Any, events: mp.Queue[tuple[Any, ...]]) -> None:
    """Worker process entry: load once, run trials while the shared counter grants them.

    Puts ("trial", value | None) after each trial, then ("done",) — or ("error", message,
    exit code) for a mistake the user can fix, ("crash", traceback) for a bug.
    """
    try:
        import optuna

        from barfinex_cli.kernel.optimize.storage import open_storage

        optuna.logging.set_verbosity(optuna.logging.ERROR)
        factory = load_strategy_factory(job.request.strategy_path)
        frame = pl.read_ipc(job.frame_path)
        evaluator = Evaluator(factory, frame, job.request, job.window)
        study = optuna.load_study(
            study_name=job.study,
            storage=open_storage(job.storage, job.namespace),
            sampler=make_sampler(job.request, job.worker),
        )
        claim = shared_claim(remaining)
        run_trials(evaluator, study, claim, lambda _n, v: events.put(("trial", v)))
        events.put(("done",))
    except BfxError as exc:
        events.put(("error", str(exc), exc.exit_code))
    except BaseException:  # a bug: the parent prints it with the worker's traceback
        events.put(("crash", traceback.format_exc()))


class WorkerFailed(BfxError):
    """A worker process stopped on a mistake the user can fix; carries its exit code."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass
class Pool:
    """This process and `len(jobs)` spawned workers running one study's trials together.

    The parent runs trials too (it has the factory and the frame already, so it starts at
    once while the workers import); all of them claim trials from one shared counter, so a
    slow starter simply gets fewer. Workers that reported done are left to exit on their own
    and joined by `close`, after the parent has moved on.
    """

    evaluator: Evaluator
    study: optuna.Study
    trials: int
    jobs: list[WorkerJob]
    progress: Progress | None
    procs: list[Any] = field(default_factory=list)

    def run(self) -> None:
        """Run every trial; return when all are done.

        Raises:
            WorkerFailed: A worker stopped on a user mistake (the others are stopped too).
            RuntimeError: A worker crashed (a bug), with its traceback.
        """
        import multiprocessing

        context = multiprocessing.get_context("spawn")  # never fork: polars holds threads
        remaining = context.Value("i", self.trials)
        events: mp.Queue[tuple[Any, ...]] = context.Queue()
        self.procs = [
            context.Process(target=work, args=(job, remaining, events), daemon=True)
            for job in self.jobs
        ]
        for proc in self.procs:
            proc.start()
        done, running = 0, len(self.procs)

        def report(value: float | None) -> None:
            nonlocal done
            done += 1
            if self.progress is not None:
                self.progress(done, value)

        def drain(wait: float | None) -> None:
            nonlocal running
            while True:
                try:
                    event = events.get(timeout=wait) if wait else events.get_nowait()
                except queue.Empty:
                    if wait and not any(p.is_alive() for p in self.procs) and running:
                        codes = [p.exitcode for p in self.procs]
                        raise RuntimeError(
                            f"optimize workers ended without reporting: exit codes {codes}"
                        ) from None
                    return
                if event[0] == "trial":
                    report(event[1])
                elif event[0] == "done":
                    running -= 1
                elif event[0] == "error":
                    raise WorkerFailed(event[1], event[2])
                else:
                    raise RuntimeError(f"an optimize worker crashed:\n{event[1]}")
                if wait and not running:
                    return

        def mine(_done: int, value: float | None) -> None:
            report(value)
            drain(None)  # the workers' trials so far, between two of ours

        try:
            run_trials(self.evaluator, self.study, shared_claim(remaining), mine)
            while running:
                drain(0.5)
        except BaseException:
            with remaining.get_lock():
                remaining.value = 0  # the others stop after their current trial
            for proc in self.procs:
                proc.terminate()
            raise

    def close(self) -> None:
        """Wait for the workers to exit (they have finished their trials)."""
        for proc in self.procs:
            proc.join(timeout=30)
