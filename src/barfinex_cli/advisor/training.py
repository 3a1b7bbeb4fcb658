"""Train the advisor's model from history: label each signal by its outcome, fit, calibrate, score.

`bfx advisor train` scans a history with a strategy (in the CLI: the advisor may not import the
detector) and hands the signals here with the candles. Then, with no look-ahead anywhere:

1. **Features** of each signal's candle from `advisor.features` (candles up to it only).
2. **Labels**: entry at the signal candle's close; stop and target `stop_atr` / `target_atr` ATRs
   away; won (1) if a later candle reaches the target before any reaches the stop, within
   `horizon` candles; a candle that touches both is a loss. A signal whose horizon runs past the
   history is left out rather than labelled from a partial window.
3. **Time-ordered split**: the oldest 60% fit the model, the next 20% fit the calibrators, the
   newest 20% are the test. A sample whose label reads a candle at or after the first signal of
   the next split is purged, so nothing fitted has seen a price of the data it is judged on.
4. **Fit** the model (logistic regression, or histogram gradient boosting) and read its parameters
   out into a `Scorer`; fit one calibrator per regime (`advisor.regime`) with enough samples of
   both outcomes, and a fallback on all of them.
5. **Score** the test split: AUC, Brier, log loss, expected calibration error and the reliability
   table, before and after calibration, overall and per regime.

The result is a `ModelBundle` ready for `save_model`, and the `advisor.model.trained` /
`advisor.calibration.trained` payloads for the caller to publish or record.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Literal

import numpy as np
import polars as pl

from barfinex_cli.advisor.calibration import (
    CalibrationSet,
    IsotonicCalibrator,
    Method,
    PlattCalibrator,
    brier,
    ece,
    fit_calibrator,
    log_loss,
    reliability,
)
from barfinex_cli.advisor.features import SIDED, SIGNAL_FEATURES, WINDOW, feature_frame
from barfinex_cli.advisor.models import (
    DataWindow,
    LabelConfig,
    LogisticScorer,
    Metrics,
    ModelBundle,
    RegimeMetrics,
    TreeScorer,
    Versions,
    utc_stamp,
)
from barfinex_cli.advisor.regime import REGIMES, RegimeConfig
from barfinex_cli.contracts.advisor import CalibrationTrained, ModelTrained
from barfinex_cli.contracts.times import from_ms
from barfinex_cli.errors import UsageError

if TYPE_CHECKING:
    from numpy.typing import NDArray

Algorithm = Literal["logistic", "hgb"]
Progress = Callable[[str, int, int], None]
"""Called as progress(step, done, total) while training runs; steps are named in STEPS."""
STEPS = ("features", "labels", "fit", "calibrate", "evaluate")
MIN_SAMPLES = {"train": 50, "calibration": 20, "test": 20}


@dataclass(frozen=True, slots=True)
class TrainingSignal:
    """A signal to learn from: its candle, side and the detector's score."""

    open_ms: int
    direction: Literal["long", "short"]
    score: float
    symbol: str = ""
    """Which series of the candles it fired on ("" when the candles hold one series)."""
    strength: float | None = None
    """The detector's strength in [0, 1] as the conviction stage computes it (None: unknown)."""


@dataclass(frozen=True, slots=True)
class TrainConfig:
    """How to label, fit and calibrate."""

    labels: LabelConfig = field(default_factory=LabelConfig)
    method: Method = "platt"
    algorithm: Algorithm = "logistic"
    regime: RegimeConfig = field(default_factory=RegimeConfig)
    train_fraction: float = 0.6
    calibration_fraction: float = 0.2
    min_regime_samples: int = 50
    """A regime gets its own calibrator from this many calibration samples (of both outcomes)."""
    bins: int = 10
    detector_weight: float = 0.0
    """The conviction stage's detector share w: the calibrators are fitted on what the
    calibration stage receives, w * strength + (1 - w) * probability (the probability alone for
    a signal of unknown strength)."""


@dataclass(frozen=True, slots=True)
class TrainResult:
    """A trained bundle, the events that announce it, and what was left out and why."""

    bundle: ModelBundle
    events: tuple[ModelTrained | CalibrationTrained, ...]
    left_out: dict[str, int]
    split_ms: tuple[int, int]
    """The open times of the first calibration and the first test signal."""
    duration_s: float


def label_signals(
    candles: pl.DataFrame,
    signals: Sequence[TrainingSignal],
    labels: LabelConfig,
    regime: RegimeConfig | None = None,
) -> tuple[pl.DataFrame, dict[str, int]]:
    """Return one row per labelled signal, in time order, and the count left out per reason.

    Columns: `symbol`, `open_ms`, `label_end_ms` (the last candle the label read), `won`
    (0/1), `regime`, and `SIGNAL_FEATURES`. Reasons: `no_candle` (the signal's candle is not in
    the history), `warm_up` (fewer than `WINDOW` candles before it), `horizon` (its horizon runs
    past the history).
    """
    cfg = regime or RegimeConfig()
    left = {"no_candle": 0, "warm_up": 0, "horizon": 0}
    parts = []
    by_symbol: dict[str, list[TrainingSignal]] = {}
    for s in signals:
        by_symbol.setdefault(s.symbol, []).append(s)
    for symbol, group in by_symbol.items():
        frame = _series(candles, symbol)
        if frame is None:
            left["no_candle"] += len(group)
            continue
        part = _label_series(frame, group, labels, left)
        if part is not None:
            parts.append(part.with_columns(pl.lit(symbol).alias("symbol")))
    if not parts:
        return _empty(), left
    out = pl.concat(parts).sort("open_ms", "symbol", maintain_order=True)
    rank = out["atr_pct_rank_100"].to_numpy()
    er = out["efficiency_ratio_20"].to_numpy()
    names = np.where(rank >= cfg.high_vol_rank, "high_vol",
                     np.where(er >= cfg.trend_efficiency, "trend", "range"))  # fmt: skip
    return out.with_columns(pl.Series("regime", names, pl.String)), left


def _series(candles: pl.DataFrame, symbol: str) -> pl.DataFrame | None:
    if "symbol" in candles.columns:
        if symbol:
            candles = candles.filter(pl.col("symbol") == symbol)
        elif candles["symbol"].n_unique() > 1:
            raise UsageError("the candles hold several symbols: give each signal its symbol")
    return candles.sort("open_ms") if candles.height else None


def _label_series(
    frame: pl.DataFrame, signals: list[TrainingSignal], labels: LabelConfig, left: dict[str, int]
) -> pl.DataFrame | None:
    feats = feature_frame(frame)
    opens = frame["open_ms"].to_numpy()
    at = np.array([s.open_ms for s in signals], dtype=np.int64)
    pos = np.searchsorted(opens, at)
    found = (pos < len(opens)) & (opens[np.minimum(pos, len(opens) - 1)] == at)
    left["no_candle"] += int((~found).sum())
    warm = found & (pos >= WINDOW - 1)
    left["warm_up"] += int((found & ~warm).sum())
    n = labels.horizon
    fits = warm & (pos + n < len(opens))
    left["horizon"] += int((warm & ~fits).sum())
    keep = np.flatnonzero(fits)
    if not keep.size:
        return None
    t = pos[keep]
    side = np.array([1.0 if signals[i].direction == "long" else -1.0 for i in keep])
    high, low, close = (frame[c].to_numpy().astype(np.float64) for c in ("high", "low", "close"))
    atr = feats["atr_pct_14"].to_numpy()[t] * close[t]
    entry = close[t]
    target = entry + side * labels.target_atr * atr
    stop = entry - side * labels.stop_atr * atr
    ahead = t[:, None] + 1 + np.arange(n)[None, :]
    hi, lo = high[ahead], low[ahead]
    long = side[:, None] > 0
    hit_target = np.where(long, hi >= target[:, None], lo <= target[:, None])
    hit_stop = np.where(long, lo <= stop[:, None], hi >= stop[:, None])
    first_target = np.where(hit_target.any(axis=1), hit_target.argmax(axis=1), n)
    first_stop = np.where(hit_stop.any(axis=1), hit_stop.argmax(axis=1), n)
    won = (first_target < first_stop).astype(np.int8)
    end = t + 1 + np.minimum(np.minimum(first_target, first_stop), n - 1)
    rows: pl.DataFrame = feats[t.tolist()]
    scores = np.array([signals[i].score for i in keep], dtype=np.float64)
    strength = np.array([_or_nan(signals[i].strength) for i in keep], dtype=np.float64)
    sided = [
        (pl.col(name) - 50.0) / 50.0 * pl.col("side") if name == "rsi_14"
        else pl.col(name) * pl.col("side")
        for name in SIDED
    ]  # fmt: skip
    rows = rows.with_columns(
        pl.Series("side", side), pl.Series("score", scores), pl.Series("strength", strength),
        pl.Series("label_end_ms", opens[end]), pl.Series("won", won),
    )  # fmt: skip
    rows = rows.with_columns(e.alias(f"{n}_sided") for e, n in zip(sided, SIDED, strict=True))
    return rows.select("open_ms", "label_end_ms", "won", "strength", *SIGNAL_FEATURES)


def _or_nan(value: float | None) -> float:
    return float("nan") if value is None else float(value)


def _empty() -> pl.DataFrame:
    schema: dict[str, type[pl.DataType]] = {"symbol": pl.String, "open_ms": pl.Int64,
              "label_end_ms": pl.Int64, "won": pl.Int8, "strength": pl.Float64,
              "regime": pl.String}  # fmt: skip
    schema.update(dict.fromkeys(SIGNAL_FEATURES, pl.Float64))
    return pl.DataFrame(schema=schema)


def split(labelled: pl.DataFrame, config: TrainConfig) -> tuple[pl.DataFrame, ...]:
    """Return the (train, calibration, test) splits, oldest first, purged of label overlap.

    Raises:
        UsageError: a split is too small to fit or judge anything.
    """
    n = labelled.height
    cut1 = int(n * config.train_fraction)
    cut2 = int(n * (config.train_fraction + config.calibration_fraction))
    train, calib, test = labelled[:cut1], labelled[cut1:cut2], labelled[cut2:]
    if calib.height and test.height:
        train = train.filter(pl.col("label_end_ms") < calib["open_ms"][0])
        calib = calib.filter(pl.col("label_end_ms") < test["open_ms"][0])
    sizes = {"train": train.height, "calibration": calib.height, "test": test.height}
    short = [f"{k} {v} < {MIN_SAMPLES[k]}" for k, v in sizes.items() if v < MIN_SAMPLES[k]]
    if short:
        raise UsageError(
            f"{n} labelled signals are too few to train on ({', '.join(short)}); use a longer "
            "history (--data with more candles) or a strategy that fires more often"
        )
    if train["won"].n_unique() < 2:
        raise UsageError(
            f"all {train.height} training signals {'won' if train['won'][0] else 'lost'}: "
            "nothing to learn — change --horizon or the stop/target multiples"
        )
    return train, calib, test


def train(
    candles: pl.DataFrame,
    signals: Sequence[TrainingSignal],
    *,
    strategy: str,
    timeframe: str,
    now: datetime,
    config: TrainConfig | None = None,
    progress: Progress | None = None,
) -> TrainResult:
    """Label `signals` on `candles`, fit and calibrate a model, and score it on held-out data.

    Args:
        candles: The history the signals fired on: `open_ms`, `high`, `low`, `close`, `volume`,
            and a `symbol` column when it holds several series.
        signals: The strategy's signals on that history.
        strategy: The strategy's name (the bundle is named after it).
        timeframe: The candles' timeframe.
        now: When the model is made (names the bundle).
        config: Labels, method, algorithm (default `TrainConfig()`).
        progress: Called after each step (see `STEPS`).

    Raises:
        UsageError: too few labelled signals, or only one outcome among them.
    """
    cfg = config or TrainConfig()
    started = time.perf_counter()
    report = progress or (lambda step, done, total: None)
    report("features", 0, len(STEPS))
    labelled, left_out = label_signals(candles, signals, cfg.labels, cfg.regime)
    report("labels", 1, len(STEPS))
    tr, ca, te = split(labelled, cfg)
    left_out["purged"] = labelled.height - tr.height - ca.height - te.height
    report("fit", 2, len(STEPS))
    scorer, predict = _fit(cfg.algorithm, _matrix(tr), tr["won"].to_numpy())
    report("calibrate", 3, len(STEPS))
    w = cfg.detector_weight
    raw_ca = conviction(ca, predict(_matrix(ca)), w)
    y_ca, reg_ca = ca["won"].to_numpy(), ca["regime"].to_numpy()
    calibrators = _calibrate(cfg, raw_ca, y_ca, reg_ca)
    report("evaluate", 4, len(STEPS))
    p_te = predict(_matrix(te))
    raw_te, y_te, reg_te = conviction(te, p_te, w), te["won"].to_numpy(), te["regime"].to_numpy()
    after = calibrated(calibrators, reg_te, raw_te)
    metrics = _metrics(
        cfg, calibrators, (tr, ca, te), raw_ca, y_ca, reg_ca, raw_te, y_te, reg_te, after, p_te
    )
    first, last = candles.select(pl.col("open_ms").min().alias("a"), pl.col("open_ms").max()).row(0)
    symbols = tuple(sorted({s.symbol for s in signals} - {""})) or ("",)
    name = f"{strategy}-{utc_stamp(now)}"
    bundle = ModelBundle(
        name=name, strategy=strategy, created=now, versions=Versions.here(),
        features=scorer.features,
        window=DataWindow(start_ms=int(first), end_ms=int(last), symbols=symbols,
                          timeframe=timeframe, candles=candles.height, signals=labelled.height),
        labels=cfg.labels, method=cfg.method, detector_weight=w, metrics=metrics, scorer=scorer,
        calibrators=calibrators,
    )  # fmt: skip
    duration = time.perf_counter() - started
    events = _events(bundle, duration, (raw_te, y_te, reg_te), (raw_ca, y_ca, reg_ca))
    report("done", len(STEPS), len(STEPS))
    split_ms = (int(ca["open_ms"][0]), int(te["open_ms"][0]))
    return TrainResult(bundle, events, left_out, split_ms, duration)


def _matrix(rows: pl.DataFrame) -> NDArray[np.float64]:
    return rows.select(SIGNAL_FEATURES).to_numpy().astype(np.float64)


def _fit(
    algorithm: Algorithm, x: NDArray[np.float64], y: NDArray[np.int8]
) -> tuple[LogisticScorer | TreeScorer, Callable[[NDArray[np.float64]], NDArray[np.float64]]]:
    """Fit the model; return its scorer and a bulk predictor (sklearn's, proven equal)."""
    if algorithm == "logistic":
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        pipe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(x, y)
        return LogisticScorer.from_sklearn(pipe, SIGNAL_FEATURES), lambda m: pipe.predict_proba(m)[
            :, 1
        ]
    from sklearn.ensemble import HistGradientBoostingClassifier
    from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

    # one OpenMP thread: on a shared machine its threads spin-wait for each other (10x slower)
    with threadpool_limits(limits=1, user_api="openmp"):
        hgb = HistGradientBoostingClassifier(
            max_iter=100, learning_rate=0.05, max_leaf_nodes=15, random_state=0
        ).fit(x, y)

    def predict(m: NDArray[np.float64]) -> NDArray[np.float64]:
        with threadpool_limits(limits=1, user_api="openmp"):
            return hgb.predict_proba(m)[:, 1]  # type: ignore[no-any-return]

    return TreeScorer.from_sklearn(hgb, SIGNAL_FEATURES), predict


def _calibrate(
    cfg: TrainConfig, raw: NDArray[np.float64], won: NDArray[np.int8], regimes: NDArray[np.str_]
) -> CalibrationSet:
    by_regime: dict[str, PlattCalibrator | IsotonicCalibrator] = {}
    for regime in REGIMES:
        mask = regimes == regime
        if mask.sum() >= cfg.min_regime_samples and np.unique(won[mask]).size == 2:
            by_regime[regime] = fit_calibrator(cfg.method, raw[mask], won[mask])
    fallback = fit_calibrator(cfg.method, raw, won) if np.unique(won).size == 2 else None
    return CalibrationSet(by_regime=by_regime, fallback=fallback)


def conviction(
    rows: pl.DataFrame, probability: NDArray[np.float64], detector_weight: float
) -> NDArray[np.float64]:
    """Return what the calibration stage receives for these signals (see `TrainConfig`)."""
    strength = rows["strength"].to_numpy().astype(np.float64)
    blend = np.clip(detector_weight * strength + (1.0 - detector_weight) * probability, 0.0, 1.0)
    return np.where(np.isfinite(strength), blend, probability)


def calibrated(
    calibrators: CalibrationSet, regimes: NDArray[np.str_], raw: NDArray[np.float64]
) -> NDArray[np.float64]:
    """Return each raw probability through its regime's calibrator (unchanged where none)."""
    out = raw.astype(np.float64).copy()
    for regime in np.unique(regimes):
        calibrator = calibrators.for_regime(str(regime))
        if calibrator is not None:
            mask = regimes == regime
            out[mask] = calibrator.apply_array(raw[mask])
    return out


def _metrics(
    cfg: TrainConfig, calibrators: CalibrationSet, splits: tuple[pl.DataFrame, ...],
    raw_ca: NDArray[np.float64], y_ca: NDArray[np.int8], reg_ca: NDArray[np.str_],
    raw: NDArray[np.float64], won: NDArray[np.int8], regimes: NDArray[np.str_],
    after: NDArray[np.float64], probability: NDArray[np.float64],
) -> Metrics:  # fmt: skip
    from sklearn.metrics import roc_auc_score

    auc = float(roc_auc_score(won, probability)) if np.unique(won).size == 2 else 0.5
    per: dict[str, RegimeMetrics] = {}
    for regime in REGIMES:
        mask = regimes == regime
        own = calibrators.by_regime.get(regime)
        per[regime] = RegimeMetrics(
            method=own.method if own is not None else None,
            calibration_samples=int((reg_ca == regime).sum()), test_samples=int(mask.sum()),
            brier_before=brier(won[mask], raw[mask]) if mask.any() else None,
            brier_after=brier(won[mask], after[mask]) if mask.any() else None,
        )  # fmt: skip
    table_before, table_after = reliability(won, raw, cfg.bins), reliability(won, after, cfg.bins)
    return Metrics(
        train_samples=splits[0].height, calibration_samples=splits[1].height,
        test_samples=splits[2].height, win_rate=float(np.mean(won)), auc=auc,
        ml_brier=brier(won, probability), ml_log_loss=log_loss(won, probability),
        brier_before=brier(won, raw), brier_after=brier(won, after),
        log_loss_before=log_loss(won, raw), log_loss_after=log_loss(won, after),
        ece_before=ece(table_before), ece_after=ece(table_after),
        reliability_before=table_before, reliability_after=table_after, regimes=per,
    )  # fmt: skip


def _events(
    bundle: ModelBundle,
    duration: float,
    test: tuple[NDArray[np.float64], NDArray[np.int8], NDArray[np.str_]],
    calib: tuple[NDArray[np.float64], NDArray[np.int8], NDArray[np.str_]],
) -> tuple[ModelTrained | CalibrationTrained, ...]:
    m = bundle.metrics
    out: list[ModelTrained | CalibrationTrained] = [ModelTrained(
        model=bundle.scorer.name, version=bundle.name, samples=m.train_samples,
        features=len(bundle.features), auc=m.auc, log_loss=m.ml_log_loss,
        data_start=from_ms(bundle.window.start_ms), data_end=from_ms(bundle.window.end_ms),
        duration_s=duration,
    )]  # fmt: skip
    named = [(r, c) for r, c in bundle.calibrators.by_regime.items()]
    if bundle.calibrators.fallback is not None:
        named.append(("all", bundle.calibrators.fallback))
    for regime, calibrator in named:
        # judged on the test signals of its regime; with none there, on its own calibration data
        raw, won, regimes = test
        mask = regimes == regime if regime != "all" else np.ones(raw.size, bool)
        if not mask.any():
            raw, won, regimes = calib
            mask = regimes == regime
        after = calibrator.apply_array(raw[mask])
        out.append(CalibrationTrained(
            method=calibrator.method, version=f"{bundle.name}/{regime}/{calibrator.version}",
            samples=calibrator.samples, brier_before=brier(won[mask], raw[mask]),
            brier_after=brier(won[mask], after), ece=ece(reliability(won[mask], after)),
        ))  # fmt: skip
    return tuple(out)
