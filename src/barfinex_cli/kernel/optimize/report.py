"""What an optimisation reports: the ranked trials of each fold and its out-of-sample test.

Plain dataclasses the CLI renders as tables or JSON (`cli/optimize_view.py`); `run.py` fills them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from barfinex_cli.detector.params import ParamValue
from barfinex_cli.kernel.optimize.plan import Window


@dataclass(frozen=True)
class TrialRow:
    """A finished trial: its parameters, its score and its in-sample metrics."""

    number: int
    params: dict[str, ParamValue]
    value: float
    metrics: dict[str, float | int]


@dataclass(frozen=True)
class FoldReport:
    """One fold's search and the out-of-sample test of its best trial."""

    label: str
    study: str
    search: Window
    test: Window
    trials_run: int
    """Trials this run added."""
    trials_total: int
    """Completed trials in the study, this run's and earlier ones'."""
    pruned: int
    top: list[TrialRow] = field(default_factory=list)
    test_metrics: dict[str, float | int] | None = None
    refused: str | None = None
    """Why `build` refused a parameter set (the first reason seen), if it did."""

    @property
    def best(self) -> TrialRow | None:
        """Return the best trial of the study, if any completed."""
        return self.top[0] if self.top else None


@dataclass(frozen=True)
class OptimizeReport:
    """The whole run: every fold, the final one last."""

    study: str
    storage: str
    metric: str
    direction: str
    sampler: str
    jobs: int
    folds: list[FoldReport]
    elapsed_s: float
    """Wall time spent running trials (not loading, not testing the best)."""

    @property
    def final(self) -> FoldReport:
        """Return the fold searched on all but the holdout."""
        return self.folds[-1]

    @property
    def trials_run(self) -> int:
        """Return the trials this run added, over every fold."""
        return sum(f.trials_run for f in self.folds)

    @property
    def trials_per_s(self) -> float:
        """Return trials per second of trial wall time."""
        return self.trials_run / self.elapsed_s if self.elapsed_s > 0 else 0.0
