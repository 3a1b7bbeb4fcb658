"""Advisor training figures in one run: 100,000 labelled signals, end to end and step by step.

- `train()` over synthetic 1m candles with a signal every 2 candles after the warm-up
  (features, labels, purged split, fit, per-regime calibrators, held-out scores), per model
  (logistic, HGB) and calibrator (Platt, isotonic), timed per step with its progress callback;
- baseline in the same process: the bare scikit-learn fit of the same model on the same
  training matrix, so the ratio is what labelling, calibration and scoring add;
- per-signal scoring: the scorer evaluating fitted parameters vs sklearn's single-row
  `predict_proba`, microseconds per call.

Usage: python benchmarks/advisor_train.py [--signals N]
"""

from __future__ import annotations

import argparse
import functools
import itertools
import time
from datetime import UTC, datetime

import numpy as np
import polars as pl
from rich.console import Console
from rich.table import Table
from threadpoolctl import threadpool_limits

from barfinex_cli.advisor.features import WINDOW
from barfinex_cli.advisor.models import LabelConfig
from barfinex_cli.advisor.training import TrainConfig, TrainingSignal, label_signals, split, train
from barfinex_cli.market.history import rows_frame
from barfinex_cli.market.synthetic import generate_candles

STEP = 2
HORIZON = 20


def dataset(signals: int) -> tuple[pl.DataFrame, list[TrainingSignal]]:
    """Return candles and a signal every STEP candles, enough for `signals` labelled ones."""
    minutes = WINDOW + signals * STEP + HORIZON + 10
    frame = rows_frame(generate_candles("BTC/USDT", minutes=minutes))
    rng = np.random.default_rng(0)
    opens = frame["open_ms"].to_list()[WINDOW:]
    out = [
        TrainingSignal(t, "long" if rng.random() < 0.5 else "short", float(rng.integers(1, 4)))
        for t in opens[::STEP][:signals]
    ]
    return frame, out


def timed_train(
    frame: pl.DataFrame, signals: list[TrainingSignal], config: TrainConfig
) -> tuple[float, dict[str, float], object]:
    marks: list[tuple[str, float]] = []
    start = time.perf_counter()
    result = train(
        frame, signals, strategy="bench", timeframe="1m", now=datetime.now(UTC), config=config,
        progress=lambda step, done, total: marks.append((step, time.perf_counter())),
    )  # fmt: skip
    total = time.perf_counter() - start
    steps = {a: t2 - t1 for (a, t1), (_, t2) in itertools.pairwise(marks)}
    return total, steps, result


def bare_fit(algorithm: str, x: np.ndarray, y: np.ndarray) -> tuple[float, object]:
    """Fit the same model sklearn alone, as `training` does (HGB on one OpenMP thread)."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    start = time.perf_counter()
    if algorithm == "logistic":
        model: object = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(x, y)
    else:
        with threadpool_limits(limits=1, user_api="openmp"):
            model = HistGradientBoostingClassifier(
                max_iter=100, learning_rate=0.05, max_leaf_nodes=15, random_state=0
            ).fit(x, y)
    return time.perf_counter() - start, model


def per_call_us(fn: object, n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        fn()  # type: ignore[operator]
    return (time.perf_counter() - start) / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--signals", type=int, default=100_000)
    args = parser.parse_args()
    console = Console(width=120)  # the tables are wider than a default 80-column pipe
    small, few = dataset(2_000)  # warm-up: imports and first-call costs stay out of the figures
    for algorithm in ("logistic", "hgb"):
        timed_train(small, few, TrainConfig(algorithm=algorithm))  # type: ignore[arg-type]
        bare_fit(algorithm, np.random.default_rng(0).normal(size=(200, 3)), np.arange(200) % 2)
    frame, signals = dataset(args.signals)
    console.print(f"{frame.height:,} candles, {len(signals):,} signals (one every {STEP} candles)")

    table = Table(title=f"advisor training, {len(signals):,} signals", title_justify="left")
    for column in ("model", "labelled", "total", "feat+label", "fit", "calib", "eval",
                   "bare fit", "ratio"):  # fmt: skip
        table.add_column(column, justify="left" if column == "model" else "right", no_wrap=True)
    scoring = Table(title="per-signal scoring", title_justify="left")
    for column in ("model", "scorer", "predict_proba, 1 row", "ratio", "max |diff|"):
        scoring.add_column(column, justify="left" if column == "model" else "right", no_wrap=True)

    labels = LabelConfig(horizon=HORIZON)
    for algorithm, method in (("logistic", "platt"), ("logistic", "isotonic"), ("hgb", "platt")):
        config = TrainConfig(labels=labels, method=method, algorithm=algorithm)  # type: ignore[arg-type]
        total, steps, result = timed_train(frame, signals, config)
        rows, _ = label_signals(frame, signals, labels)
        fit_rows = split(rows, config)[0]
        names = result.bundle.features  # type: ignore[attr-defined]
        x = fit_rows.select(names).to_numpy()
        bare, model = bare_fit(algorithm, x, fit_rows["won"].to_numpy())
        table.add_row(
            f"{algorithm} + {method}", f"{rows.height:,}", f"{total:.2f} s",
            f"{steps.get('features', 0) + steps.get('labels', 0):.2f} s",
            f"{steps.get('fit', 0):.2f} s", f"{steps.get('calibrate', 0):.2f} s",
            f"{steps.get('evaluate', 0):.2f} s", f"{bare:.2f} s", f"{total / bare:.1f}x",
        )  # fmt: skip
        if method != "platt":
            continue
        scorer = result.bundle.scorer  # type: ignore[attr-defined]
        probe = fit_rows[:200]
        dicts = probe.select(names).rows(named=True)
        matrix = probe.select(names).to_numpy()
        ours = np.array([scorer.probability(d) for d in dicts])
        with threadpool_limits(limits=1, user_api="openmp"):
            theirs = model.predict_proba(matrix)[:, 1]  # type: ignore[attr-defined]
            sk_us = per_call_us(functools.partial(model.predict_proba, matrix[:1]), 300)  # type: ignore[attr-defined]
        our_us = per_call_us(functools.partial(scorer.probability, dicts[0]), 2_000)
        scoring.add_row(
            algorithm, f"{our_us:.1f} µs", f"{sk_us:.1f} µs", f"{sk_us / our_us:.0f}x faster",
            f"{np.abs(ours - theirs).max():.1e}",
        )  # fmt: skip
    console.print(table)
    console.print(scoring)
    console.print(
        "feat+label: features and labels; calib: per-regime calibrators; eval: held-out scores; "
        "bare fit: sklearn alone fitting the same model on the same training rows; ratio: total "
        "/ bare fit. max |diff|: the scorer against that fit's predict_proba (deterministic refit)."
    )


if __name__ == "__main__":
    main()
