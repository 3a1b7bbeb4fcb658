"""How `bfx optimize` shows its work: a progress bar on stderr, tables on stdout, or JSON.

The ranked table lists the study's best trials (this run's and earlier ones'), a walk-forward
run adds one row per fold, and the best trial's in-sample figures stand beside its out-of-sample
ones: the over-fitting guard is the last thing printed, not an option to ask for. JSON carries
the same, with non-finite ratios (a profit factor with no loss) as the strings "inf"/"-inf".
"""

from __future__ import annotations

import math
from dataclasses import asdict
from types import TracebackType
from typing import TYPE_CHECKING, Any

from barfinex_cli.cli.render import err, out

if TYPE_CHECKING:
    from barfinex_cli.kernel.optimize.plan import Window
    from barfinex_cli.kernel.optimize.report import FoldReport, OptimizeReport, TrialRow

FIGURES = (
    ("total_return_pct", "return %"),
    ("cagr_pct", "CAGR %"),
    ("sharpe", "Sharpe"),
    ("sortino", "Sortino"),
    ("max_drawdown_pct", "max DD %"),
    ("win_rate_pct", "win rate %"),
    ("profit_factor", "profit factor"),
    ("exposure_pct", "exposure %"),
    ("trades", "trades"),
    ("fees", "fees"),
)


class ProgressBar:
    """A rich progress bar on stderr, one task per fold (drawn only on a terminal)."""

    def __init__(self) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

        self.bar = Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            "{task.fields[best]}",
            TimeElapsedColumn(),
            console=err(),
            transient=True,
            disable=not err().is_terminal,
        )
        self.task: Any = None

    def __enter__(self) -> ProgressBar:
        self.bar.__enter__()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.bar.__exit__(kind, exc, tb)

    def fold(self, label: str, study: str, trials: int) -> None:
        """Start a task for a fold's search."""
        self.task = self.bar.add_task(f"{study} ({label})", total=trials, best="")

    def trial(self, done: int, value: float | None) -> None:
        """Advance the current fold's task."""
        shown = "" if value is None else f"last {_num(value)}"
        self.bar.update(self.task, completed=done, best=shown)


def render(report: OptimizeReport) -> None:
    """Print the ranked trials, the walk-forward folds and the best trial's IS vs OOS."""
    from rich.table import Table

    final = report.final
    best = final.best
    assert best is not None
    names = list(best.params)
    arrow = "lowest" if report.direction == "minimize" else "highest"
    table = Table(
        title=f"top trials of {final.study} by {report.metric} ({arrow} first)",
        title_justify="left",
    )
    for column in ("#", "trial", *names, report.metric, "return %", "max DD %", "trades"):
        table.add_column(column, justify="right", no_wrap=True)
    for rank, row in enumerate(final.top, 1):
        m = row.metrics
        table.add_row(
            str(rank),
            str(row.number),
            *(_num(row.params.get(n)) for n in names),
            _num(row.value),
            _num(m.get("total_return_pct")),
            _num(m.get("max_drawdown_pct")),
            _num(m.get("trades")),
        )
    out().print(table)
    if len(report.folds) > 1:
        out().print(_folds_table(report))
    out().print(_guard_table(report, best))
    err().print(
        f"{report.trials_run} trials run in {report.elapsed_s:.1f} s "
        f"({report.trials_per_s:.2f} trials/s, {report.jobs} job(s), sampler {report.sampler}); "
        f"the study holds {final.trials_total} completed, {final.pruned} pruned · storage "
        f"{report.storage} · rerun with --study {report.study} to continue it",
        markup=False,
    )
    if final.refused:
        err().print(f"build refused some parameter sets, e.g. {final.refused}", markup=False)


def _folds_table(report: OptimizeReport) -> Any:
    from rich.table import Table

    table = Table(
        title="walk-forward: each fold searches from the start up to its test part",
        title_justify="left",
    )
    table.add_column("fold", no_wrap=True)
    table.add_column("search to", no_wrap=True)
    table.add_column("test to", no_wrap=True)
    table.add_column("best", overflow="fold")
    table.add_column(f"IS {report.metric}", justify="right", no_wrap=True)
    table.add_column("OOS", justify="right", no_wrap=True)
    for fold in report.folds:
        table.add_row(
            fold.label,
            _when(fold.search.end_ms),
            _when(fold.test.end_ms),
            _params(fold.best.params) if fold.best else "-",
            _num(fold.best.value) if fold.best else "-",
            _num(_score(fold, report.metric)),
        )
    return table


def _guard_table(report: OptimizeReport, best: TrialRow) -> Any:
    from rich.table import Table

    final = report.final
    table = Table(
        title=f"best: {_params(best.params)} (trial {best.number}) — in-sample vs held-out",
        title_justify="left",
        caption=f"in-sample {_span(final.search)} · out-of-sample {_span(final.test)}",
        caption_justify="left",
    )
    table.add_column("", no_wrap=True)
    table.add_column("in-sample", justify="right", no_wrap=True)
    table.add_column("out-of-sample", justify="right", no_wrap=True)
    test = final.test_metrics or {}
    for key, label in FIGURES:
        table.add_row(label, _num(best.metrics.get(key)), _num(test.get(key)))
    return table


def report_json(report: OptimizeReport) -> dict[str, Any]:
    """Return the report as plain JSON-safe data."""
    final = report.final
    best = final.best
    data: dict[str, Any] = _safe({
        "study": report.study,
        "storage": report.storage,
        "metric": report.metric,
        "direction": report.direction,
        "sampler": report.sampler,
        "jobs": report.jobs,
        "trials_run": report.trials_run,
        "elapsed_s": report.elapsed_s,
        "trials_per_s": report.trials_per_s,
        "best": None if best is None else {"trial": best.number, "params": best.params,
                                            "value": best.value},
        "in_sample": None if best is None else best.metrics,
        "out_of_sample": final.test_metrics,
        "folds": [_fold_json(f, report.metric) for f in report.folds],
    })  # fmt: skip
    return data


def _fold_json(fold: FoldReport, metric: str) -> dict[str, Any]:
    return {
        "label": fold.label,
        "study": fold.study,
        "search": asdict(fold.search),
        "test": asdict(fold.test),
        "trials_run": fold.trials_run,
        "trials_completed": fold.trials_total,
        "pruned": fold.pruned,
        "refused": fold.refused,
        "top": [asdict(row) for row in fold.top],
        "test_metrics": fold.test_metrics,
        "test_value": _score(fold, metric),
    }


def _score(fold: FoldReport, metric: str) -> float | None:
    from barfinex_cli.kernel.optimize.plan import METRICS

    if not fold.test_metrics:
        return None
    return float(fold.test_metrics[METRICS[metric][0]])


def _safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {k: _safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_safe(v) for v in value]
    return value


def _num(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool | str):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if not math.isfinite(value):
            return "∞" if value > 0 else ("-∞" if value < 0 else "nan")
        return f"{value:,.2f}" if abs(value) >= 100 else f"{value:.3g}"
    return str(value)


def _params(params: dict[str, Any]) -> str:
    return " ".join(f"{k}={_num(v)}" for k, v in params.items())


def _span(window: Window) -> str:
    return f"{_when(window.start_ms)} → {_when(window.end_ms)}"


def _when(ms: int) -> str:
    from barfinex_cli.detector.engine import open_time

    return open_time(ms).strftime("%Y-%m-%d %H:%M")
