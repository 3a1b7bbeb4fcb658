"""Training: forward-outcome labels, a purged time-ordered split, no look-ahead, honest scores."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import polars as pl
import pytest

from barfinex_cli.advisor.calibration import brier
from barfinex_cli.advisor.features import SIGNAL_FEATURES, WINDOW
from barfinex_cli.advisor.models import LabelConfig, load_model, save_model
from barfinex_cli.advisor.regime import detect_regime
from barfinex_cli.advisor.training import (
    TrainConfig,
    TrainingSignal,
    label_signals,
    split,
    train,
)
from barfinex_cli.contracts.advisor import CalibrationTrained, ModelTrained
from barfinex_cli.errors import UsageError
from barfinex_cli.market.history import rows_frame
from barfinex_cli.market.synthetic import generate_candles

MINUTE = 60_000
NOW = datetime(2024, 2, 1, 12, 0, tzinfo=UTC)


def flat(n: int) -> pl.DataFrame:
    """Candles at 100 with a true range of 1 each: the ATR is 1, entry 100, target/stop known."""
    return pl.DataFrame({
        "open_ms": np.arange(n, dtype=np.int64) * MINUTE, "open": np.full(n, 100.0),
        "high": np.full(n, 100.5), "low": np.full(n, 99.5), "close": np.full(n, 100.0),
        "volume": np.ones(n),
    })  # fmt: skip


def with_candles(frame: pl.DataFrame, changes: dict[int, tuple[float, float]]) -> pl.DataFrame:
    """Return `frame` with the (high, low) of some candles replaced."""
    high, low = frame["high"].to_numpy().copy(), frame["low"].to_numpy().copy()
    for i, (h, lo) in changes.items():
        high[i], low[i] = h, lo
    return frame.with_columns(pl.Series("high", high), pl.Series("low", low))


T = WINDOW + 5  # the signal's candle: entry 100, ATR 1; target 101.5, stop 99 (1.5 and 1 ATR)


@pytest.mark.parametrize(
    ("direction", "changes", "won"),
    [
        ("long", {T + 3: (101.6, 99.5)}, 1),  # target first
        ("long", {T + 2: (100.5, 98.9), T + 3: (101.6, 99.5)}, 0),  # stop first
        ("long", {T + 2: (101.6, 98.9)}, 0),  # both in one candle: a loss
        ("long", {}, 0),  # neither within the horizon
        ("long", {T + 11: (101.6, 99.5)}, 0),  # target after the horizon (10)
        ("short", {T + 4: (100.5, 98.4)}, 1),  # short target 98.5 first
        ("short", {T + 1: (101.1, 99.5), T + 4: (100.5, 98.4)}, 0),  # short stop 101 first
    ],
)
def test_a_signal_is_won_when_its_target_comes_before_its_stop_within_the_horizon(
    direction: str, changes: dict[int, tuple[float, float]], won: int
) -> None:
    frame = with_candles(flat(T + 30), changes)
    signal = TrainingSignal(T * MINUTE, direction, 1.0)  # type: ignore[arg-type]
    rows, left = label_signals(frame, [signal], LabelConfig(horizon=10))
    assert rows["won"].to_list() == [won]
    assert rows["side"].to_list() == [1.0 if direction == "long" else -1.0]
    assert left == {"no_candle": 0, "warm_up": 0, "horizon": 0}


def test_the_label_ends_at_the_candle_that_decided_it() -> None:
    frame = with_candles(flat(T + 30), {T + 3: (101.6, 99.5)})
    rows, _ = label_signals(
        frame, [TrainingSignal(T * MINUTE, "long", 1.0)], LabelConfig(horizon=10)
    )
    assert rows["label_end_ms"].to_list() == [(T + 3) * MINUTE]
    rows, _ = label_signals(
        flat(T + 30), [TrainingSignal(T * MINUTE, "long", 1.0)], LabelConfig(horizon=10)
    )
    assert rows["label_end_ms"].to_list() == [(T + 10) * MINUTE]  # undecided: the whole horizon


def test_signals_without_a_candle_a_full_window_or_a_full_horizon_are_left_out() -> None:
    frame = flat(T + 10)
    signals = [
        TrainingSignal(T * MINUTE + 7, "long", 1.0),  # no candle opens then
        TrainingSignal((WINDOW - 2) * MINUTE, "long", 1.0),  # warm-up: one candle short
        TrainingSignal((WINDOW - 1) * MINUTE, "long", 1.0),  # the first with full features
        TrainingSignal(T * MINUTE, "long", 1.0),  # horizon 10 ends on the last candle
        TrainingSignal((T + 1) * MINUTE, "short", 1.0),  # horizon runs past the history
    ]
    rows, left = label_signals(frame, signals, LabelConfig(horizon=9))
    assert rows["open_ms"].to_list() == [(WINDOW - 1) * MINUTE, T * MINUTE]
    assert left == {"no_candle": 1, "warm_up": 1, "horizon": 1}
    assert rows.select(SIGNAL_FEATURES).null_count().sum_horizontal().item() == 0


def market(minutes: int = 6_000) -> pl.DataFrame:
    return rows_frame(generate_candles("BTC/USDT", minutes=minutes))


def every(frame: pl.DataFrame, step: int, seed: int = 0) -> list[TrainingSignal]:
    """A signal every `step` candles after the warm-up, sides and scores drawn at random."""
    rng = np.random.default_rng(seed)
    opens = frame["open_ms"].to_list()[WINDOW:]
    return [
        TrainingSignal(t, "long" if rng.random() < 0.5 else "short", float(rng.integers(1, 4)))
        for t in opens[::step]
    ]


def test_a_label_reads_no_candle_after_the_one_that_decided_it() -> None:
    frame = market(3_000)
    signals = every(frame, 7)
    labels = LabelConfig(horizon=15)
    full = label_signals(frame, signals, labels)[0].drop("strength")  # NaN: unknown strength
    for row in full.sample(40, seed=1).iter_rows(named=True):
        end = frame["open_ms"].to_list().index(row["label_end_ms"])
        at = [s for s in signals if s.open_ms == row["open_ms"]]
        cut = label_signals(frame[: end + 1], at, labels)[0].drop("strength")
        if cut.height:  # a horizon cut short is left out, never labelled from part of it
            assert cut.row(0, named=True) == row
        else:
            assert row["label_end_ms"] < row["open_ms"] + labels.horizon * MINUTE


def test_the_regime_of_each_labelled_signal_is_what_detect_regime_reads() -> None:
    frame = market(3_000)
    rows, _ = label_signals(frame, every(frame, 5), LabelConfig())
    assert rows["regime"].to_list() == [detect_regime(r).regime for r in rows.iter_rows(named=True)]


def test_future_candles_cannot_change_the_trained_model() -> None:
    """Change every candle from the first calibration signal on: the fitted model must not move.

    Signals every 2 candles with a 40-candle horizon and wide stops: the newest training labels
    run into the calibration period unless purged, so a leak would show here as changed weights.
    """
    frame = market()
    signals = every(frame, 2)
    config = TrainConfig(labels=LabelConfig(horizon=40, stop_atr=4.0, target_atr=5.0))
    first = train(frame, signals, strategy="s", timeframe="1m", now=NOW, config=config)
    assert first.left_out["purged"] > 0
    boundary = first.split_ms[0]
    rng = np.random.default_rng(99)
    after = frame["open_ms"] >= boundary
    shaken = frame.with_columns(
        pl.when(after).then(pl.col(c) * pl.lit(rng.uniform(0.9, 1.1, frame.height)))
        .otherwise(pl.col(c)) for c in ("open", "high", "low", "close", "volume")
    )  # fmt: skip
    shaken = shaken.with_columns(
        pl.max_horizontal("open", "high", "low", "close").alias("high"),
        pl.min_horizontal("open", "high", "low", "close").alias("low"),
    )
    second = train(shaken, signals, strategy="s", timeframe="1m", now=NOW, config=config)
    assert second.split_ms == first.split_ms
    assert second.bundle.scorer == first.bundle.scorer
    assert second.bundle.metrics.train_samples == first.bundle.metrics.train_samples
    # and the check can fail: moving candles just before the boundary does change the model
    before = (frame["open_ms"] >= boundary - 60 * MINUTE) & ~after
    nudged = frame.with_columns(
        pl.when(before).then(pl.col("high") * 1.01).otherwise(pl.col("high"))
    )
    third = train(nudged, signals, strategy="s", timeframe="1m", now=NOW, config=config)
    assert third.bundle.scorer != first.bundle.scorer


def test_the_split_is_time_ordered_and_purged_of_overlapping_labels() -> None:
    frame = market(3_000)
    rows, _ = label_signals(
        frame, every(frame, 3), LabelConfig(horizon=30, stop_atr=3, target_atr=3)
    )
    train_rows, calib, test = split(rows, TrainConfig())
    assert train_rows["open_ms"].max() < calib["open_ms"].min()  # type: ignore[operator]
    assert calib["open_ms"].max() < test["open_ms"].min()  # type: ignore[operator]
    assert train_rows["label_end_ms"].max() < calib["open_ms"].min()  # type: ignore[operator]
    assert calib["label_end_ms"].max() < test["open_ms"].min()  # type: ignore[operator]
    assert train_rows.height + calib.height + test.height < rows.height  # some were purged


def test_too_few_signals_or_one_outcome_only_are_refused_with_the_fix() -> None:
    frame = market(2_000)
    with pytest.raises(UsageError, match=r"too few to train on.*longer history"):
        train(frame, every(frame, 200), strategy="s", timeframe="1m", now=NOW)
    rows = flat(T + 400)
    signals = [TrainingSignal(t * MINUTE, "long", 1.0) for t in range(WINDOW, T + 350)]
    with pytest.raises(UsageError, match="training signals lost: nothing to learn"):
        train(rows, signals, strategy="s", timeframe="1m", now=NOW)


@pytest.mark.parametrize(("algorithm", "method"), [("logistic", "platt"), ("hgb", "isotonic")])
def test_a_trained_bundle_reproduces_its_own_held_out_scores(
    algorithm: str, method: str, tmp_path: object
) -> None:
    frame = market()
    signals = every(frame, 3, seed=4)
    config = TrainConfig(method=method, algorithm=algorithm, min_regime_samples=30)  # type: ignore[arg-type]
    steps: list[str] = []
    result = train(frame, signals, strategy="trend", timeframe="1m", now=NOW, config=config,
                   progress=lambda step, done, total: steps.append(step))  # fmt: skip
    bundle, m = result.bundle, result.bundle.metrics
    assert steps == ["features", "labels", "fit", "calibrate", "evaluate", "done"]
    assert bundle.name == "trend-20240201T120000Z" and bundle.method == method
    assert bundle.scorer.name == algorithm and bundle.features == SIGNAL_FEATURES
    assert bundle.window.start_ms == 0 + frame["open_ms"][0]
    assert (
        bundle.window.signals
        == m.train_samples + m.calibration_samples + m.test_samples + (result.left_out["purged"])
    )
    # the saved model, scored signal by signal, gives back the test split's Brier before calibration
    path = tmp_path / "m.model"  # type: ignore[operator]
    save_model(bundle, path)
    loaded = load_model(path)
    rows, _ = label_signals(frame, signals, config.labels, config.regime)
    test = split(rows, config)[2]
    raw = [loaded.scorer.probability(r) for r in test.iter_rows(named=True)]
    assert brier(test["won"].to_numpy(), raw) == pytest.approx(m.brier_before, abs=1e-9)
    after = []
    for r, p in zip(test.iter_rows(named=True), raw, strict=True):
        c = loaded.calibrators.for_regime(r["regime"])
        after.append(c.apply(p) if c is not None else p)
    assert brier(test["won"].to_numpy(), after) == pytest.approx(m.brier_after, abs=1e-9)
    assert sum(b.count for b in m.reliability_before) == m.test_samples
    assert sum(b.count for b in m.reliability_after) == m.test_samples
    assert sum(r.test_samples for r in m.regimes.values()) == m.test_samples
    trained = [e for e in result.events if isinstance(e, ModelTrained)]
    calibrated = [e for e in result.events if isinstance(e, CalibrationTrained)]
    assert len(trained) == 1 and trained[0].samples == m.train_samples
    assert trained[0].features == len(SIGNAL_FEATURES) and trained[0].version == bundle.name
    assert len(calibrated) == len(bundle.calibrators.by_regime) + 1  # and the fallback
    assert {e.method for e in calibrated} == {method}


def test_signals_on_several_symbols_are_labelled_on_their_own_series() -> None:
    btc = flat(T + 30).with_columns(pl.lit("BTC/USDT").alias("symbol"))
    eth = with_candles(flat(T + 30), {T + 3: (101.6, 99.5)}).with_columns(
        pl.lit("ETH/USDT").alias("symbol")
    )
    both = pl.concat([eth, btc])  # one frame, series interleaved by symbol, as history loads them
    signals = [
        TrainingSignal(T * MINUTE, "long", 1.0, "BTC/USDT"),
        TrainingSignal(T * MINUTE, "long", 2.0, "ETH/USDT"),
        TrainingSignal(T * MINUTE, "long", 1.0, "SOL/USDT"),  # no such series
    ]
    rows, left = label_signals(both, signals, LabelConfig(horizon=10))
    won = dict(zip(rows["symbol"].to_list(), rows["won"].to_list(), strict=True))
    assert won == {"BTC/USDT": 0, "ETH/USDT": 1}
    assert left["no_candle"] == 1
    with pytest.raises(UsageError, match="several symbols"):
        label_signals(both, [TrainingSignal(T * MINUTE, "long", 1.0)], LabelConfig(horizon=10))


def test_calibrators_are_fitted_on_the_conviction_the_calibration_stage_receives() -> None:
    """With a detector share w, stage 5 gets w * strength + (1 - w) * p: that is what is fitted."""
    frame = market()
    rng = np.random.default_rng(8)
    signals = [
        TrainingSignal(s.open_ms, s.direction, s.score, strength=float(rng.uniform(0.3, 1.0)))
        for s in every(frame, 3, seed=5)
    ]
    config = TrainConfig(detector_weight=0.4)
    result = train(frame, signals, strategy="s", timeframe="1m", now=NOW, config=config)
    bundle, m = result.bundle, result.bundle.metrics
    assert bundle.detector_weight == 0.4
    rows, _ = label_signals(frame, signals, config.labels, config.regime)
    test = split(rows, config)[2]
    won = test["won"].to_numpy()
    p = np.array([bundle.scorer.probability(r) for r in test.iter_rows(named=True)])
    blend = 0.4 * test["strength"].to_numpy() + 0.6 * p
    assert m.ml_brier == pytest.approx(brier(won, p), abs=1e-9)
    assert m.brier_before == pytest.approx(brier(won, blend), abs=1e-9)
    after = [
        c.apply(b) if (c := bundle.calibrators.for_regime(r)) is not None else b
        for r, b in zip(test["regime"].to_list(), blend, strict=True)
    ]
    assert m.brier_after == pytest.approx(brier(won, after), abs=1e-9)
    unknown = train(frame, [TrainingSignal(s.open_ms, s.direction, s.score) for s in signals],
                    strategy="s", timeframe="1m", now=NOW, config=config)  # fmt: skip
    assert unknown.bundle.metrics.brier_before == pytest.approx(unknown.bundle.metrics.ml_brier)
