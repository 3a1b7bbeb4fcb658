"""Run an optimisation: one optuna study per fold, the best trial tested out of sample.

For each fold of the plan (`plan.py`) the study is created or resumed in the storage, checked
to be the same search (strategy, metric, candles, split: a resumed study that mixed those would
rank incomparable scores), given its trials in this process or across `--jobs` worker processes
(`trials.py`), and then its best trial is rebuilt and backtested on the fold's test window, which
no trial saw. The report holds the ranked trials and each fold's in-sample vs out-of-sample
figures; the CLI only renders it.
"""

from __future__ import annotations

import itertools
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import polars as pl

from barfinex_cli.detector.loader import StrategyFactory
from barfinex_cli.errors import UsageError, mask_url
from barfinex_cli.kernel.optimize.plan import (
    Fold,
    OptimizeRequest,
    default_study,
    fold_study,
    metric_value,
    metrics_dict,
    plan_folds,
    study_key,
)
from barfinex_cli.kernel.optimize.pool import Pool, WorkerJob
from barfinex_cli.kernel.optimize.report import FoldReport, OptimizeReport, TrialRow
from barfinex_cli.kernel.optimize.storage import open_storage, storage_url
from barfinex_cli.kernel.optimize.trials import (
    Countdown,
    Evaluator,
    evaluate,
    make_sampler,
    run_trials,
)

if TYPE_CHECKING:
    import optuna

DEFAULT_TRIALS = 50
TOP = 10


class Reporter(Protocol):
    """Where progress goes (the CLI's progress bar; nothing in tests)."""

    def fold(self, label: str, study: str, trials: int) -> None:
        """A fold's search starts with this many trials to run."""

    def trial(self, done: int, value: float | None) -> None:
        """A trial finished (value None: pruned)."""


def run_optimize(
    request: OptimizeRequest,
    factory: StrategyFactory,
    frame: pl.DataFrame,
    *,
    home: Path,
    namespace: str,
    reporter: Reporter | None = None,
) -> OptimizeReport:
    """Run every fold of the request's plan and return the report (see the module doc).

    Raises:
        UsageError: A resumed study of another search, or a bad storage URL.
        RedisUnreachable: A `redis://` storage that does not answer.
        WorkerFailed: A worker process stopped on a user mistake.
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    key = study_key(request, factory.strategy.name, frame)
    name = request.study or default_study(key)
    url = storage_url(request.storage, home)
    storage = open_storage(url, namespace)
    folds = plan_folds(frame, request.holdout, request.walk_forward)
    reports, elapsed, pools = [], 0.0, []
    with tempfile.TemporaryDirectory(prefix="bfx-optimize-") as tmp:
        frame_path = Path(tmp) / "candles.arrow"
        if request.jobs > 1:
            frame.write_ipc(frame_path)
        try:
            for fold in folds:
                fold_key = {**key, "fold": fold.label}
                study = _open_study(request, storage, fold_study(name, fold), fold_key)
                trials = _trials_to_run(request, study)
                if reporter is not None:
                    reporter.fold(fold.label, study.study_name, trials)
                started = time.perf_counter()
                if trials:
                    where = (url, namespace, frame_path)
                    pool = _search(request, factory, frame, fold, study, trials, where, reporter)
                    if pool is not None:
                        pools.append(pool)
                elapsed += time.perf_counter() - started
                reports.append(_fold_report(request, factory, frame, fold, study, trials))
        finally:  # workers exit while the best trials are tested; wait for them now
            for pool in pools:
                pool.close()
    return OptimizeReport(
        study=name,
        storage=mask_url(url),
        metric=request.metric,
        direction=request.direction,
        sampler=request.sampler,
        jobs=request.jobs,
        folds=reports,
        elapsed_s=elapsed,
    )


def _open_study(
    request: OptimizeRequest,
    storage: optuna.storages.BaseStorage,
    name: str,
    key: dict[str, object],
) -> optuna.Study:
    import optuna

    try:
        study = optuna.create_study(
            study_name=name,
            storage=storage,
            direction=request.direction,
            load_if_exists=True,
            sampler=make_sampler(request, 0),
        )
    except ValueError as exc:  # an existing study optimised in the other direction
        raise UsageError(f"study {name}: {exc} — pass a new --study NAME") from None
    found = study.user_attrs.get("bfx")
    if found is None:
        study.set_user_attr("bfx", key)
    elif found != key:
        differ = ", ".join(
            f"{k} {found.get(k)!r} (now {v!r})" for k, v in key.items() if found.get(k) != v
        )
        raise UsageError(
            f"study {name} was made for another search ({differ}); resuming it would mix "
            "incomparable trials — pass a new --study NAME, or the same data and options"
        )
    return study


def _trials_to_run(request: OptimizeRequest, study: optuna.Study) -> int:
    """Return this run's trials: `--trials`, else 50, and never past the end of a grid."""
    if request.sampler != "grid":
        return request.trials or DEFAULT_TRIALS
    import optuna

    names = list(request.spaces)
    grid = {tuple(c) for c in itertools.product(*(request.spaces[n].grid() for n in names))}
    seen = {
        tuple(t.params.get(n) for n in names)
        for t in study.get_trials(deepcopy=False)
        if t.state.is_finished() and t.state != optuna.trial.TrialState.FAIL
    }
    left = len(grid - seen)
    return left if request.trials is None else min(request.trials, left)


def _search(
    request: OptimizeRequest,
    factory: StrategyFactory,
    frame: pl.DataFrame,
    fold: Fold,
    study: optuna.Study,
    trials: int,
    where: tuple[str, str, Path],
    reporter: Reporter | None,
) -> Pool | None:
    """Run the fold's trials here, or spread over `--jobs` workers; `where` is (storage URL,
    namespace, the candles' Arrow file) for the workers. Return the pool, whose workers are
    joined once the report is made."""
    progress = None if reporter is None else reporter.trial
    evaluator = Evaluator(factory, frame, request, fold.search)
    jobs = min(request.jobs, trials)
    if jobs == 1:
        run_trials(evaluator, study, Countdown(trials), progress)
        return None
    url, namespace, frame_path = where
    pool = Pool(
        evaluator,
        study,
        trials,
        [
            WorkerJob(w, request, frame_path, fold.search, url, namespace, study.study_name)
            for w in range(1, jobs)
        ],
        progress,
    )
    pool.run()
    return pool


def _fold_report(
    request: OptimizeRequest,
    factory: StrategyFactory,
    frame: pl.DataFrame,
    fold: Fold,
    study: optuna.Study,
    trials_run: int,
) -> FoldReport:
    import optuna

    states = optuna.trial.TrialState
    every = study.get_trials(deepcopy=False)
    done = [t for t in every if t.state == states.COMPLETE and t.value is not None]
    sign = -1.0 if request.direction == "maximize" else 1.0
    done.sort(key=lambda t: (sign * float(t.value or 0.0), t.number))
    top = [
        TrialRow(t.number, dict(t.params), float(t.value or 0.0), t.user_attrs.get("metrics", {}))
        for t in done[:TOP]
    ]
    refused = next((t.user_attrs["refused"] for t in every if "refused" in t.user_attrs), None)
    test = None
    if top:
        best = factory.build(**top[0].params)
        test = metrics_dict(evaluate(best, frame, fold.test, request))
    return FoldReport(
        label=fold.label,
        study=study.study_name,
        search=fold.search,
        test=fold.test,
        trials_run=trials_run,
        trials_total=len(done),
        pruned=sum(1 for t in every if t.state == states.PRUNED),
        top=top,
        test_metrics=test,
        refused=refused,
    )


def score(metrics: dict[str, float | int] | None, metric: str) -> float | None:
    """Return the metric's figure from a metrics dict (a trial's or a test's)."""
    if not metrics:
        return None
    from barfinex_cli.kernel.backtest.result import Metrics

    return metric_value(Metrics(**metrics), metric)  # type: ignore[arg-type]
