"""Scorers that put a win probability on a signal, and the model file that carries a trained one.

Stage 3 of the advisor asks a `Scorer` for the probability that a signal's trade reaches its target
before its stop. With no trained model it asks `RuleScorer`, a formula anyone can check; with one,
the fitted scikit-learn model's *parameters*, evaluated here directly:

- logistic regression: one dot product and a sigmoid over the scaler-folded coefficients;
- histogram gradient boosting: the fitted trees walked in Python, exactly as sklearn's predictor
  walks them (NaN follows the learned missing side, else `x <= threshold` goes left), leaf values
  added to the baseline in sklearn's order.

A single-row `predict_proba` costs 75 µs (logistic) to 0.5 ms (HGB, and 11 to 82 ms when OpenMP
threads are left on); this costs a few µs and no thread pool. Tests prove the result equal to
sklearn's own `predict_proba` to 1e-9.

The model file (`save_model` / `load_model`) is JSON in a versioned envelope: the fitted
parameters, the feature list, the library versions, the data window, the label settings, the
metrics and the per-regime calibrators. JSON rather than pickle or joblib because loading a pickle
runs code: a model file is data that may be copied between machines, so reading one must not be
able to do anything but fail. That is also why skops is not needed: its trusted-types audit exists
to make pickles safe, and these files hold no objects at all. A file written with another
scikit-learn major.minor is still refused: the equality with sklearn was proved for the version
that fitted the model, and a retrain is one command.
"""

from __future__ import annotations

import json
import math
import os
import platform
from collections.abc import Mapping, Sequence
from datetime import datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Protocol

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, PrivateAttr, ValidationError

from barfinex_cli.advisor.calibration import CalibrationSet, ReliabilityBin
from barfinex_cli.errors import ConfigError, NotFound

if TYPE_CHECKING:
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.pipeline import Pipeline

FORMAT = "bfx-advisor-model"
FORMAT_VERSION = 1
RETRAIN = "retrain it with `bfx advisor train STRATEGY.py`"


class Scorer(Protocol):
    """What stage 3 asks for a signal's win probability.

    `features` is `advisor.features.signal_features(...)`: the market features, the side and the
    detector's score. `kind` is "ml" for a trained model and "rule" for the formula.
    """

    @property
    def name(self) -> str: ...

    @property
    def kind(self) -> Literal["ml", "rule"]: ...

    @property
    def features(self) -> tuple[str, ...]: ...

    def probability(self, features: Mapping[str, float]) -> float: ...


def sigmoid(z: float) -> float:
    """Return 1 / (1 + e^-z) without overflow for large |z|."""
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


def missing_features(scorer: Scorer, features: Mapping[str, float]) -> list[str]:
    """Return the features `scorer` reads that are absent or not finite in `features`."""
    return [n for n in scorer.features if not math.isfinite(features.get(n, math.nan))]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class RuleScorer(_Frozen):
    """The scorer with no training: trades with the recent move, not into an overstretched one.

    p = sigmoid(momentum_weight * m - stretch_weight * s), where
    m = ret_20_sided / (vol_20 * sqrt(20)) clipped to [-3, 3] — the last 20 candles' move in the
    trade's direction, in units of the move noise alone would make (0 when vol_20 is 0); and
    s = max(0, rsi_14_sided - 0.4) / 0.6 — how far the RSI is past 70 (a long) or below 30 (a
    short), 0 to 1. A trade with a 1-sigma move behind it and a calm RSI scores sigmoid(0.6) = 0.65.
    """

    momentum_weight: float = 0.6
    stretch_weight: float = 0.8

    @property
    def name(self) -> str:
        return "rule"

    @property
    def kind(self) -> Literal["ml", "rule"]:
        return "rule"

    @property
    def features(self) -> tuple[str, ...]:
        return ("ret_20_sided", "vol_20", "rsi_14_sided")

    def terms(self, features: Mapping[str, float]) -> dict[str, float]:
        """Return the formula's two terms (log-odds), for the attribution."""
        vol = features["vol_20"]
        m = features["ret_20_sided"] / (vol * math.sqrt(20.0)) if vol > 0 else 0.0
        s = max(0.0, features["rsi_14_sided"] - 0.4) / 0.6
        return {
            "momentum": self.momentum_weight * min(3.0, max(-3.0, m)),
            "stretch": -self.stretch_weight * s,
        }

    def probability(self, features: Mapping[str, float]) -> float:
        return sigmoid(sum(self.terms(features).values()))


class _Fitted(_Frozen):
    """What every fitted scorer is: a named algorithm over named features, an "ml" scorer."""

    algorithm: str
    feature_names: tuple[str, ...] = Field(min_length=1)

    @property
    def name(self) -> str:
        return self.algorithm

    @property
    def kind(self) -> Literal["ml", "rule"]:
        return "ml"

    @property
    def features(self) -> tuple[str, ...]:
        return self.feature_names


class LogisticScorer(_Fitted):
    """A fitted logistic regression (after its standard scaler), folded into one weight vector.

    probability = sigmoid(intercept + sum(weights[i] * x[features[i]])); `centers` (the training
    means) only serve `contributions`.
    """

    algorithm: Literal["logistic"] = "logistic"
    weights: tuple[float, ...]
    intercept: float
    centers: tuple[float, ...]

    def probability(self, features: Mapping[str, float]) -> float:
        z = self.intercept
        for name, w in zip(self.feature_names, self.weights, strict=True):
            z += w * features[name]
        return sigmoid(z)

    def contributions(self, features: Mapping[str, float]) -> dict[str, float]:
        """Return each feature's push on the log-odds against an average training signal."""
        return {
            n: w * (features[n] - c)
            for n, w, c in zip(self.feature_names, self.weights, self.centers, strict=True)
        }

    @classmethod
    def from_sklearn(cls, pipeline: Pipeline, names: Sequence[str]) -> LogisticScorer:
        """Fold a fitted `StandardScaler` + `LogisticRegression` pipeline into one scorer."""
        scaler, lr = pipeline.steps[0][1], pipeline.steps[-1][1]
        mean, scale = scaler.mean_, scaler.scale_
        w = lr.coef_[0] / scale
        b = float(lr.intercept_[0]) - float((w * mean).sum())
        return cls(
            feature_names=tuple(names), weights=tuple(w.tolist()), intercept=b,
            centers=tuple(mean.tolist()),
        )  # fmt: skip


class Tree(_Frozen):
    """One fitted regression tree, as parallel tuples indexed by node (node 0 is the root)."""

    feature: tuple[int, ...]
    threshold: tuple[float, ...]
    missing_left: tuple[bool, ...]
    left: tuple[int, ...]
    right: tuple[int, ...]
    leaf: tuple[bool, ...]
    value: tuple[float, ...]


class TreeScorer(_Fitted):
    """A fitted `HistGradientBoostingClassifier` (binary), as its baseline and its trees."""

    algorithm: Literal["hgb"] = "hgb"
    baseline: float
    trees: tuple[Tree, ...]

    _flat: tuple[_FlatTree, ...] = PrivateAttr(default=())

    def model_post_init(self, context: Any, /) -> None:
        # plain tuples bound once: the walk below then costs no attribute lookups per node
        self._flat = tuple(
            (t.feature, t.threshold, t.missing_left, t.left, t.right, t.leaf, t.value)
            for t in self.trees
        )

    def probability(self, features: Mapping[str, float]) -> float:
        x = [features[n] for n in self.feature_names]
        raw = self.baseline
        for feature, threshold, missing_left, left, right, leaf, value in self._flat:
            i = 0
            while not leaf[i]:
                v = x[feature[i]]
                if v != v:  # NaN: the side the tree learned for missing values
                    i = left[i] if missing_left[i] else right[i]
                elif v <= threshold[i]:
                    i = left[i]
                else:
                    i = right[i]
            raw += value[i]
        return sigmoid(raw)

    @classmethod
    def from_sklearn(
        cls, model: HistGradientBoostingClassifier, names: Sequence[str]
    ) -> TreeScorer:
        """Read the trees out of a fitted binary HGB classifier with numeric features only.

        Raises:
            ValueError: more than two classes, or categorical splits.
        """
        if model.n_trees_per_iteration_ != 1:
            raise ValueError("only a binary HistGradientBoostingClassifier can be scored directly")
        trees = []
        for (predictor,) in model._predictors:
            nodes = predictor.nodes
            if nodes["is_categorical"].any():
                raise ValueError("categorical splits cannot be scored directly")
            trees.append(Tree(
                feature=tuple(nodes["feature_idx"].tolist()),
                threshold=tuple(nodes["num_threshold"].tolist()),
                missing_left=tuple(bool(b) for b in nodes["missing_go_to_left"]),
                left=tuple(nodes["left"].tolist()), right=tuple(nodes["right"].tolist()),
                leaf=tuple(bool(b) for b in nodes["is_leaf"]),
                value=tuple(nodes["value"].tolist()),
            ))  # fmt: skip
        baseline = float(model._baseline_prediction.ravel()[0])
        return cls(feature_names=tuple(names), baseline=baseline, trees=tuple(trees))


_FlatTree = tuple[
    tuple[int, ...], tuple[float, ...], tuple[bool, ...], tuple[int, ...], tuple[int, ...],
    tuple[bool, ...], tuple[float, ...],
]  # fmt: skip

MlScorer = Annotated[LogisticScorer | TreeScorer, Field(discriminator="algorithm")]


class Versions(_Frozen):
    """The library versions a model was trained with."""

    sklearn: str
    numpy: str
    python: str
    bfx: str

    @classmethod
    def here(cls) -> Versions:
        """Return this installation's versions (read from package metadata: nothing imported)."""
        return cls(
            sklearn=_installed("scikit-learn"), numpy=_installed("numpy"),
            python=platform.python_version(), bfx=_installed("barfinex-cli"),
        )  # fmt: skip


class DataWindow(_Frozen):
    """The history a model was trained on."""

    start_ms: int
    end_ms: int
    symbols: tuple[str, ...]
    timeframe: str
    candles: int = Field(ge=0)
    signals: int = Field(ge=0)


class LabelConfig(_Frozen):
    """How a signal was labelled: won if the target is hit before the stop within `horizon`.

    Entry at the signal candle's close; stop and target `stop_atr` and `target_atr` ATRs (the
    14-candle mean true range at the signal) away. A candle that touches both counts as a loss.
    """

    horizon: int = Field(default=20, ge=1)
    stop_atr: float = Field(default=1.0, gt=0)
    target_atr: float = Field(default=1.5, gt=0)


class RegimeMetrics(_Frozen):
    """Held-out scores in one regime; `method` is None when it uses the fallback calibrator."""

    method: Literal["platt", "isotonic"] | None
    calibration_samples: int
    test_samples: int
    brier_before: float | None
    brier_after: float | None


class Metrics(_Frozen):
    """Held-out scores on the test split.

    `auc`, `ml_brier` and `ml_log_loss` judge the model's probability; the `_before` / `_after`
    pairs judge what the calibration stage receives (the probability, or its blend with the
    detector's strength: see `ModelBundle.detector_weight`) before and after calibration.
    """

    train_samples: int
    calibration_samples: int
    test_samples: int
    win_rate: float
    auc: float
    ml_brier: float
    ml_log_loss: float
    brier_before: float
    brier_after: float
    log_loss_before: float
    log_loss_after: float
    ece_before: float
    ece_after: float
    reliability_before: tuple[ReliabilityBin, ...]
    reliability_after: tuple[ReliabilityBin, ...]
    regimes: dict[str, RegimeMetrics]


class ModelBundle(_Frozen):
    """A trained model as the file holds it: scorer, calibrators and how they came to be."""

    format: Literal["bfx-advisor-model"] = "bfx-advisor-model"
    format_version: Literal[1] = 1
    name: str
    strategy: str
    created: AwareDatetime
    versions: Versions
    features: tuple[str, ...]
    window: DataWindow
    labels: LabelConfig
    method: Literal["platt", "isotonic"]
    detector_weight: float = Field(default=0.0, ge=0.0, le=1.0)
    """The conviction stage's detector share the calibrators were fitted for: they map
    w * strength + (1 - w) * probability, so a different `[advisor] detector_weight` feeds them a
    quantity they were not fitted on."""
    metrics: Metrics
    scorer: MlScorer
    calibrators: CalibrationSet


def save_model(bundle: ModelBundle, path: Path) -> None:
    """Write `bundle` to `path` (atomically: a reader never sees half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(bundle.model_dump_json(), encoding="utf-8")
    os.replace(tmp, path)


def load_model(path: Path) -> ModelBundle:
    """Return the model in `path`.

    Raises:
        NotFound: no such file.
        ConfigError: not a model file, a damaged one, or one from another scikit-learn
            major.minor; the message names the file and says to retrain.
    """
    data = read_header(path)
    problem = incompatibility(data)
    if problem:
        raise ConfigError(f"{path}: {problem} — {RETRAIN}")
    try:
        return ModelBundle.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ConfigError(
            f"{path}: damaged model file ({where}: {first['msg']}) — {RETRAIN}"
        ) from None


def read_header(path: Path) -> dict[str, Any]:
    """Return the parsed JSON of a model file, refusing anything that is not one.

    Raises:
        NotFound: no such file.
        ConfigError: unreadable, not JSON, or not a bfx advisor model.
    """
    if not path.is_file():
        raise NotFound(f"{path}: no such model file — list them with `bfx advisor models`")
    try:
        data = json.loads(path.read_bytes())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        reason = type(exc).__name__ if isinstance(exc, UnicodeDecodeError) else str(exc)
        raise ConfigError(f"{path}: not a bfx advisor model ({reason}) — {RETRAIN}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ConfigError(f"{path}: not a bfx advisor model (no {FORMAT} header) — {RETRAIN}")
    return data


def incompatibility(data: Mapping[str, Any]) -> str | None:
    """Return why a parsed model file cannot be used with this installation, or None."""
    if data.get("format_version") != FORMAT_VERSION:
        return (
            f"model format {data.get('format_version')!r}; this bfx reads format {FORMAT_VERSION}"
        )
    versions = data.get("versions")
    saved = versions.get("sklearn") if isinstance(versions, dict) else None
    here = _installed("scikit-learn")
    if not isinstance(saved, str):
        return "no scikit-learn version recorded"
    if _major_minor(saved) != _major_minor(here):
        return f"trained with scikit-learn {saved}, this installation has {here}"
    return None


def _major_minor(text: str) -> tuple[str, ...]:
    return tuple(text.split(".")[:2])


def _installed(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "unknown"


def utc_stamp(moment: datetime) -> str:
    """Return `moment` as the compact UTC stamp model file names carry (20240101T000000Z)."""
    return moment.strftime("%Y%m%dT%H%M%SZ")
