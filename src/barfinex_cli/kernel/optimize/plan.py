"""What an optimisation is asked to do: the metric, the search, and the windows it scores on.

The over-fitting guard is decided here, before any trial runs: the last `holdout` share of the
candles is never seen by the search, and the best trial is scored on it afterwards. With
`walk_forward` N, the rest is cut into N+1 equal parts and fold k searches on parts 0..k-1
(anchored: the start never moves) and is tested on part k; the final fold searches on all of it
and is tested on the holdout. Windows are cut by candle time, so several symbols stay aligned.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import polars as pl

from barfinex_cli.detector.params import Space
from barfinex_cli.errors import UsageError
from barfinex_cli.kernel.backtest.result import Metrics

Direction = Literal["maximize", "minimize"]
SamplerName = Literal["grid", "random", "tpe"]
METRICS: dict[str, tuple[str, Direction]] = {
    "sharpe": ("sharpe", "maximize"),
    "sortino": ("sortino", "maximize"),
    "return": ("total_return_pct", "maximize"),
    "cagr": ("cagr_pct", "maximize"),
    "profit_factor": ("profit_factor", "maximize"),
    "max_drawdown": ("max_drawdown_pct", "minimize"),
}
"""`--metric` name -> (the `Metrics` field it reads, the direction it is optimised in)."""
SAMPLERS: tuple[SamplerName, ...] = ("grid", "random", "tpe")
MIN_CANDLES = 20
"""A window shorter than this scores noise: refuse the split instead."""


def metric_value(metrics: Metrics, metric: str) -> float:
    """Return the figure `metric` names from a run's metrics."""
    return float(getattr(metrics, METRICS[metric][0]))


@dataclass(frozen=True, slots=True)
class Window:
    """Candles with `start_ms <= open_ms < end_ms`."""

    start_ms: int
    end_ms: int
    candles: int
    """Distinct candle times inside (per symbol)."""


@dataclass(frozen=True, slots=True)
class Fold:
    """One search: trials scored on `search`, the best one then tested on `test`."""

    label: str
    """`final`, or `wf2/3` for the second of three walk-forward folds."""
    search: Window
    test: Window


@dataclass(frozen=True)
class OptimizeRequest:
    """Everything `bfx optimize` was asked, checked; the frame travels separately."""

    strategy_path: Path
    spaces: dict[str, Space]
    metric: str = "sharpe"
    sampler: SamplerName = "tpe"
    trials: int | None = None
    """Trials to add per fold (default: every grid point not yet run, or 50)."""
    jobs: int = 1
    study: str | None = None
    storage: str | None = None
    walk_forward: int = 0
    holdout: float = 0.3
    fees_bps: float = 10.0
    slippage_bps: float = 0.0
    exchange: str = "file"
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise UsageError(f"--metric {self.metric}: use one of {', '.join(METRICS)}")
        if self.sampler not in SAMPLERS:
            raise UsageError(f"--sampler {self.sampler}: use one of {', '.join(SAMPLERS)}")
        if not self.spaces:
            raise UsageError("give at least one --param, e.g. --param fast=5:30:5")
        if self.trials is not None and self.trials < 1:
            raise UsageError("--trials must be at least 1")
        if self.jobs < 1:
            raise UsageError("--jobs must be at least 1")
        if not 0 < self.holdout < 1:
            raise UsageError(f"--holdout {self.holdout}: give a share between 0 and 1, e.g. 0.3")
        if self.walk_forward < 0:
            raise UsageError("--walk-forward must be 0 (off) or a number of folds")
        if self.fees_bps < 0 or self.slippage_bps < 0:
            raise UsageError("--fees and --slippage are basis points >= 0")
        if self.sampler == "grid":
            for space in self.spaces.values():
                space.grid()  # a float range without a step is refused here, by name

    @property
    def direction(self) -> Direction:
        """Return whether the metric is maximised or minimised."""
        return METRICS[self.metric][1]

    def grid_size(self) -> int:
        """Return how many parameter combinations a grid search visits."""
        size = 1
        for space in self.spaces.values():
            size *= len(space.grid())
        return size


def plan_folds(frame: pl.DataFrame, holdout: float, walk_forward: int) -> list[Fold]:
    """Return the folds to search, walk-forward ones first, the final (holdout) one last.

    Raises:
        UsageError: A window would hold fewer than `MIN_CANDLES` candles.
    """
    times = frame.get_column("open_ms").unique().sort()
    n = len(times)
    cut = round(n * (1 - holdout))
    parts = walk_forward + 1
    bounds = [round(cut * k / parts) for k in range(parts + 1)]
    shortest = min(n - cut, *(b - a for a, b in itertools.pairwise(bounds)))
    if shortest < MIN_CANDLES:
        raise UsageError(
            f"{n} candles cut into {parts} search part(s) and a {holdout:g} holdout leaves "
            f"{shortest} in a window; give more candles, fewer --walk-forward folds or another "
            f"--holdout (each window needs {MIN_CANDLES})"
        )
    step = int(times[1] - times[0]) if n > 1 else 60_000
    end = int(times[-1]) + step

    def at(index: int) -> int:
        return int(times[index]) if index < n else end

    def window(lo: int, hi: int) -> Window:
        return Window(at(lo), at(hi), hi - lo)

    folds = [
        Fold(f"wf{k}/{walk_forward}", window(0, bounds[k]), window(bounds[k], bounds[k + 1]))
        for k in range(1, parts)
    ]
    folds.append(Fold("final", window(0, cut), window(cut, n)))
    return folds


def study_key(request: OptimizeRequest, strategy: str, frame: pl.DataFrame) -> dict[str, object]:
    """Return what makes trials of one study comparable: strategy, metric, data and split.

    A study resumed with a different key would mix incomparable scores; `run.py` refuses it.
    """
    times = frame.get_column("open_ms")
    symbols = sorted(frame.get_column("symbol").unique().to_list())
    return {
        "strategy": strategy,
        "metric": request.metric,
        "symbols": symbols,
        "first_ms": int(times.min()),  # type: ignore[arg-type]
        "last_ms": int(times.max()),  # type: ignore[arg-type]
        "rows": frame.height,
        "holdout": request.holdout,
        "walk_forward": request.walk_forward,
        "fees_bps": request.fees_bps,
        "slippage_bps": request.slippage_bps,
    }


def default_study(key: dict[str, object]) -> str:
    """Return the study name a run gets without `--study`: rerunning the same command resumes."""
    digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode(), usedforsecurity=False)
    return f"{key['strategy']}-{key['metric']}-{digest.hexdigest()[:8]}"


def fold_study(study: str, fold: Fold) -> str:
    """Return the optuna study name of one fold (the final fold keeps the plain name)."""
    return study if fold.label == "final" else f"{study}.{fold.label.replace('/', 'of')}"


def metrics_dict(metrics: Metrics) -> dict[str, float | int]:
    """Return metrics as plain data (a trial's user attribute, a JSON report)."""
    return asdict(metrics)
