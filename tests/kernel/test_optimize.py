"""`kernel.optimize`: optuna studies over vectorised backtests, on real SQLite files and Redis."""

from __future__ import annotations

import itertools
import os
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import polars as pl
import pytest
import redis

from barfinex_cli.detector.loader import StrategyFactory, load_strategy_factory
from barfinex_cli.detector.params import parse_params
from barfinex_cli.errors import RedisUnreachable, UsageError
from barfinex_cli.kernel.optimize.plan import OptimizeRequest, plan_folds
from barfinex_cli.kernel.optimize.report import OptimizeReport
from barfinex_cli.kernel.optimize.run import run_optimize
from barfinex_cli.kernel.optimize.storage import journal_prefix, open_storage
from conftest import REDIS_URL

SMA = Path(__file__).resolve().parents[2] / "strategies" / "sma_cross.py"
T0 = 1_704_067_200_000


def candles(n: int = 1_500, seed: int = 5) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.003, n)))
    open_ = np.r_[close[0], close[:-1]]
    return pl.DataFrame({
        "open_ms": T0 + np.arange(n, dtype=np.int64) * 60_000,
        "open": open_,
        "high": np.maximum(open_, close) * 1.001,
        "low": np.minimum(open_, close) * 0.999,
        "close": close,
        "volume": np.ones(n),
        "symbol": ["BTC/USDT"] * n,
    })  # fmt: skip


@pytest.fixture(scope="module")
def frame() -> pl.DataFrame:
    return candles()


@pytest.fixture(scope="module")
def sma() -> StrategyFactory:
    return load_strategy_factory(SMA)


def request(factory: StrategyFactory, *params: str, **options: Any) -> OptimizeRequest:
    return OptimizeRequest(
        strategy_path=factory.path, spaces=parse_params(params, factory.params), **options
    )


def study_of(report: OptimizeReport, url: str, namespace: str = "test") -> optuna.Study:
    return optuna.load_study(study_name=report.study, storage=open_storage(url, namespace))


def test_grid_sampler_visits_every_combination(
    tmp_path: Path, sma: StrategyFactory, frame: pl.DataFrame
) -> None:
    asked = request(sma, "fast=5:15:5", "slow=30:40:10", sampler="grid")
    report = run_optimize(asked, sma, frame, home=tmp_path, namespace="test")
    study = study_of(report, f"sqlite:///{tmp_path / 'optuna.db'}")
    seen = sorted((t.params["fast"], t.params["slow"]) for t in study.trials)
    assert seen == sorted(itertools.product([5, 10, 15], [30, 40]))
    assert (report.trials_run, report.final.trials_total) == (6, 6)
    # the ranking is by the metric, best first, and the best is the study's best
    values = [row.value for row in report.final.top]
    assert values == sorted(values, reverse=True)
    assert report.final.top[0].params == study.best_params
    again = run_optimize(asked, sma, frame, home=tmp_path, namespace="test")
    assert again.trials_run == 0  # the grid is done: nothing is run twice
    assert again.final.top[0].params == study.best_params


def test_a_grid_cut_short_by_trials_is_finished_by_the_next_run(
    tmp_path: Path, sma: StrategyFactory, frame: pl.DataFrame
) -> None:
    part = run_optimize(request(sma, "fast=5:15:5", "slow=30:40:10", sampler="grid", trials=4),
                        sma, frame, home=tmp_path, namespace="test")  # fmt: skip
    rest = run_optimize(request(sma, "fast=5:15:5", "slow=30:40:10", sampler="grid"),
                        sma, frame, home=tmp_path, namespace="test")  # fmt: skip
    assert (part.trials_run, rest.trials_run, rest.final.trials_total) == (4, 2, 6)
    study = study_of(rest, f"sqlite:///{tmp_path / 'optuna.db'}")
    assert len({(t.params["fast"], t.params["slow"]) for t in study.trials}) == 6


def test_rerunning_the_same_study_continues_it(
    tmp_path: Path, sma: StrategyFactory, frame: pl.DataFrame
) -> None:
    asked = request(sma, "fast=5:20", "slow=25:60", sampler="tpe", trials=3, seed=1)
    first = run_optimize(asked, sma, frame, home=tmp_path, namespace="test")
    second = run_optimize(asked, sma, frame, home=tmp_path, namespace="test")
    assert first.study == second.study  # the default name comes from strategy, metric, data
    assert (first.final.trials_total, second.final.trials_total) == (3, 6)
    study = study_of(second, f"sqlite:///{tmp_path / 'optuna.db'}")
    assert [t.number for t in study.trials] == list(range(6))


BARRIER = """
import os, pathlib, time
from barfinex_cli.detector import indicators as ta
from barfinex_cli.detector.strategy import Rule, Strategy
MARKS = pathlib.Path(__file__).with_name("marks")

def build(fast: int = 10, slow: int = 30) -> Strategy:
    if (fast, slow) != (10, 30):  # a trial: wait until two processes are building trials
        MARKS.mkdir(exist_ok=True)
        (MARKS / str(os.getpid())).touch()
        deadline = time.monotonic() + 60
        while len(list(MARKS.iterdir())) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
    return Strategy(name="barrier", symbols=["BTC/USDT"], timeframe="1m", threshold=1.0,
        rules=[Rule("up", ta.crosses_above(ta.sma("close", fast), ta.sma("close", slow)),
                    direction="long")])

strategy = build()
"""


def test_two_jobs_run_two_processes_and_the_study_gets_every_trial_once(
    tmp_path: Path, frame: pl.DataFrame
) -> None:
    path = tmp_path / "barrier.py"
    path.write_text(BARRIER)  # every trial waits until both processes are running trials
    factory = load_strategy_factory(path)
    asked = request(factory, "fast=11:20", "slow=25:60", sampler="random", trials=6, jobs=2)
    report = run_optimize(asked, factory, frame, home=tmp_path, namespace="test")
    study = study_of(report, f"sqlite:///{tmp_path / 'optuna.db'}")
    assert [t.number for t in study.trials] == list(range(6))
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    workers = {t.user_attrs["worker"] for t in study.trials}
    assert len(workers) == 2
    assert any(w.endswith(f":{os.getpid()}") for w in workers)  # this process and one spawned
    assert sorted(p.name for p in (tmp_path / "marks").iterdir()) == sorted(
        w.rsplit(":", 1)[1] for w in workers
    )
    assert report.trials_run == 6


@pytest.mark.redis
def test_a_redis_storage_keeps_the_study_in_the_journal_under_the_namespace(
    tmp_path: Path, sma: StrategyFactory, frame: pl.DataFrame, namespace: str
) -> None:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        asked = request(sma, "fast=5:20", "slow=25:60", trials=2, storage=REDIS_URL, seed=2)
        first = run_optimize(asked, sma, frame, home=tmp_path, namespace=namespace)
        second = run_optimize(asked, sma, frame, home=tmp_path, namespace=namespace)
        assert (first.final.trials_total, second.final.trials_total) == (2, 4)
        assert client.exists(f"{journal_prefix(namespace)}:log_number")
        assert not (tmp_path / "optuna.db").exists()  # nothing went to the default SQLite
        assert second.storage == REDIS_URL
    finally:
        keys = list(client.scan_iter(f"{journal_prefix(namespace)}:*"))
        if keys:
            client.delete(*keys)
        client.close()


def test_an_unreachable_redis_storage_is_one_line(
    tmp_path: Path, sma: StrategyFactory, frame: pl.DataFrame
) -> None:
    asked = request(sma, "fast=5:20", trials=1, storage="redis://127.0.0.1:1/0")
    with pytest.raises(RedisUnreachable, match=r"Redis not reachable at redis://127\.0\.0\.1:1/0"):
        run_optimize(asked, sma, frame, home=tmp_path, namespace="test")


def test_the_best_trial_is_tested_on_the_holdout_no_trial_saw(
    tmp_path: Path, sma: StrategyFactory, frame: pl.DataFrame
) -> None:
    asked = request(sma, "fast=5:15:5", "slow=30:40:10", sampler="grid", holdout=0.25)
    report = run_optimize(asked, sma, frame, home=tmp_path, namespace="test")
    final = report.final
    assert final.search.end_ms == final.test.start_ms
    assert (final.search.candles, final.test.candles) == (1_125, 375)
    assert final.test_metrics is not None and final.best is not None
    assert final.test_metrics != final.best.metrics
    assert final.test_metrics["trades"] > 0


def test_walk_forward_folds_are_anchored_and_test_the_next_part(
    tmp_path: Path, sma: StrategyFactory, frame: pl.DataFrame
) -> None:
    folds = plan_folds(frame, holdout=0.2, walk_forward=3)
    assert [f.label for f in folds] == ["wf1/3", "wf2/3", "wf3/3", "final"]
    assert {f.search.start_ms for f in folds} == {T0}
    assert [f.search.end_ms for f in folds] == [f.test.start_ms for f in folds]
    assert folds[2].test.end_ms == folds[3].test.start_ms  # the last fold ends at the holdout
    asked = request(sma, "fast=5:15:5", "slow=30:40:10", sampler="grid", walk_forward=3)
    report = run_optimize(asked, sma, frame, home=tmp_path, namespace="test")
    assert [f.trials_total for f in report.folds] == [6, 6, 6, 6]
    assert all(f.test_metrics is not None for f in report.folds)
    assert len({f.study for f in report.folds}) == 4


def test_parameter_sets_build_refuses_are_pruned_with_the_reason(
    tmp_path: Path, frame: pl.DataFrame
) -> None:
    path = tmp_path / "guarded.py"
    path.write_text(
        SMA.read_text().replace(
            '    """Return the SMA(fast)/SMA(slow) cross strategy."""\n',
            "    if fast >= slow:\n        raise ValueError('fast must be below slow')\n",
        )
    )
    factory = load_strategy_factory(path)
    asked = request(factory, "fast=10:30:10", "slow=20:30:10", sampler="grid")
    report = run_optimize(asked, factory, frame, home=tmp_path, namespace="test")
    assert (report.final.trials_total, report.final.pruned) == (3, 3)
    assert report.final.refused is not None and "fast must be below slow" in report.final.refused


def test_resuming_a_study_with_another_metric_is_refused(
    tmp_path: Path, sma: StrategyFactory, frame: pl.DataFrame
) -> None:
    run_optimize(request(sma, "fast=5:20", trials=1, study="s"), sma, frame, home=tmp_path,
                 namespace="test")  # fmt: skip
    other = request(sma, "fast=5:20", trials=1, study="s", metric="return")
    with pytest.raises(UsageError, match=r"study s was made for another search .*metric 'sharpe'"):
        run_optimize(other, sma, frame, home=tmp_path, namespace="test")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"holdout": 0.0}, "--holdout 0.0: give a share between 0 and 1"),
        ({"jobs": 0}, "--jobs must be at least 1"),
        ({"trials": 0}, "--trials must be at least 1"),
        ({"metric": "alpha"}, "--metric alpha: use one of sharpe, sortino, return"),
        ({"sampler": "cma"}, "--sampler cma: use one of grid, random, tpe"),
        ({"walk_forward": -1}, "--walk-forward must be 0"),
    ],
)
def test_bad_options_are_refused_before_any_trial(
    sma: StrategyFactory, options: dict[str, Any], message: str
) -> None:
    with pytest.raises(UsageError, match=message):
        request(sma, "fast=5:20", **options)


def test_too_few_candles_for_the_split_names_the_fix(sma: StrategyFactory) -> None:
    with pytest.raises(UsageError, match="fewer --walk-forward folds"):
        plan_folds(candles(100), holdout=0.3, walk_forward=4)
