"""Scorers equal sklearn's own predictions; model files round-trip and refuse what they must."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from barfinex_cli.advisor.calibration import CalibrationSet, PlattCalibrator
from barfinex_cli.advisor.features import SIGNAL_FEATURES
from barfinex_cli.advisor.models import (
    DataWindow,
    LabelConfig,
    LogisticScorer,
    Metrics,
    ModelBundle,
    RuleScorer,
    Scorer,
    TreeScorer,
    Versions,
    load_model,
    missing_features,
    save_model,
)
from barfinex_cli.errors import ConfigError, NotFound

NAMES = [f"f{i}" for i in range(9)]


def data(n: int = 4_000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Features on wildly different scales and offsets, with a learnable outcome."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, len(NAMES))) * rng.uniform(0.001, 500, len(NAMES)) + rng.normal(
        0, 50, len(NAMES)
    )
    z = (x[:, 0] - x[:, 0].mean()) / x[:, 0].std() - (x[:, 3] > np.median(x[:, 3]))
    return x, (z + rng.normal(size=n) > 0).astype(int)


def boosted(x: np.ndarray, y: np.ndarray, rounds: int) -> HistGradientBoostingClassifier:
    """Fit on one OpenMP thread: on a busy shared machine threads spin-wait for each other."""
    with threadpool_limits(limits=1, user_api="openmp"):
        return HistGradientBoostingClassifier(max_iter=rounds, random_state=0).fit(x, y)


def probe(seed: int) -> np.ndarray:
    x, _ = data(300, seed)
    return x * np.random.default_rng(seed).uniform(0.5, 2.0, x.shape)  # off the training points


def scored(scorer: Scorer, x: np.ndarray) -> np.ndarray:
    return np.array([scorer.probability(dict(zip(NAMES, row, strict=True))) for row in x])


def test_logistic_scorer_equals_sklearn_predict_proba_on_random_inputs() -> None:
    x, y = data()
    pipe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(x, y)
    scorer = LogisticScorer.from_sklearn(pipe, NAMES)
    for seed in (1, 2, 3):
        inputs = probe(seed)
        assert np.abs(scored(scorer, inputs) - pipe.predict_proba(inputs)[:, 1]).max() < 1e-9
    assert (scorer.name, scorer.kind) == ("logistic", "ml")


def test_logistic_contributions_add_up_to_the_log_odds_against_the_mean() -> None:
    x, y = data()
    pipe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(x, y)
    scorer = LogisticScorer.from_sklearn(pipe, NAMES)
    row = dict(zip(NAMES, probe(4)[0], strict=True))
    center = dict(zip(NAMES, scorer.centers, strict=True))
    log_odds = math.log(scorer.probability(row) / (1 - scorer.probability(row)))
    base = math.log(scorer.probability(center) / (1 - scorer.probability(center)))
    assert sum(scorer.contributions(row).values()) == pytest.approx(log_odds - base, abs=1e-9)


def test_tree_scorer_equals_sklearn_predict_proba_including_missing_values() -> None:
    x, y = data()
    x[::11, 2] = np.nan  # the trees learn a side for missing values
    hgb = boosted(x, y, 60)
    scorer = TreeScorer.from_sklearn(hgb, NAMES)
    assert len(scorer.trees) == hgb.n_iter_
    for seed in (1, 2):
        inputs = probe(seed)
        inputs[::5, 2] = np.nan
        inputs[::7, 0] = np.nan
        assert np.abs(scored(scorer, inputs) - hgb.predict_proba(inputs)[:, 1]).max() < 1e-9


def test_a_multiclass_boosting_model_is_refused() -> None:
    x, y = data(600)
    hgb = boosted(x, y + (x[:, 1] > 0), 5)
    with pytest.raises(ValueError, match="binary"):
        TreeScorer.from_sklearn(hgb, NAMES)


def rule_input(ret: float, vol: float, rsi_sided: float) -> dict[str, float]:
    return {"ret_20_sided": ret, "vol_20": vol, "rsi_14_sided": rsi_sided}


def test_the_rule_scorer_follows_its_documented_formula() -> None:
    rule = RuleScorer()
    assert (rule.name, rule.kind) == ("rule", "rule")
    one_sigma = 0.01 * math.sqrt(20)
    assert rule.probability(rule_input(one_sigma, 0.01, 0.0)) == pytest.approx(
        1 / (1 + math.exp(-0.6))
    )
    assert rule.probability(rule_input(0.0, 0.0, 0.0)) == 0.5  # no volatility: no momentum term
    # with the move more likely than against it; an overstretched RSI costs
    assert (
        rule.probability(rule_input(0.02, 0.01, 0.0))
        > 0.5
        > rule.probability(rule_input(-0.02, 0.01, 0.0))
    )
    assert rule.probability(rule_input(0.0, 0.01, 1.0)) == pytest.approx(1 / (1 + math.exp(0.8)))
    # momentum is capped at 3 noise units
    assert rule.probability(rule_input(1.0, 0.01, 0.0)) == pytest.approx(1 / (1 + math.exp(-1.8)))


def test_missing_or_non_finite_features_are_named() -> None:
    rule = RuleScorer()
    assert missing_features(rule, rule_input(0.1, 0.01, 0.0)) == []
    assert missing_features(rule, {"ret_20_sided": math.nan, "vol_20": 0.1}) == [
        "ret_20_sided",
        "rsi_14_sided",
    ]


def bundle(scorer: LogisticScorer | TreeScorer) -> ModelBundle:
    table = ()
    return ModelBundle(
        name="s-20240101T000000Z", strategy="s", created=datetime(2024, 1, 1, tzinfo=UTC),
        versions=Versions.here(), features=scorer.features,
        window=DataWindow(start_ms=0, end_ms=60_000, symbols=("BTC/USDT",), timeframe="1m",
                          candles=2, signals=1),
        labels=LabelConfig(), method="platt",
        metrics=Metrics(
            train_samples=1, calibration_samples=1, test_samples=1, win_rate=0.5, auc=0.5,
            ml_brier=0.25, ml_log_loss=0.69,
            brier_before=0.25, brier_after=0.25, log_loss_before=0.69, log_loss_after=0.69,
            ece_before=0.0, ece_after=0.0, reliability_before=table, reliability_after=table,
            regimes={},
        ),
        scorer=scorer,
        calibrators=CalibrationSet(by_regime={"trend": PlattCalibrator(a=1.1, b=0.2, samples=9)}),
    )  # fmt: skip


@pytest.fixture
def saved(tmp_path: Path) -> tuple[Path, ModelBundle]:
    x, y = data(2_000)
    hgb = boosted(x, y, 20)
    original = bundle(TreeScorer.from_sklearn(hgb, NAMES))
    path = tmp_path / "models" / "s-20240101T000000Z.model"
    save_model(original, path)
    return path, original


def test_a_saved_model_loads_equal_and_scores_the_same(saved: tuple[Path, ModelBundle]) -> None:
    path, original = saved
    loaded = load_model(path)
    assert loaded == original
    inputs = probe(7)
    assert np.array_equal(scored(loaded.scorer, inputs), scored(original.scorer, inputs))
    assert loaded.calibrators.for_regime("trend") == PlattCalibrator(a=1.1, b=0.2, samples=9)
    assert not list(path.parent.glob(".*.tmp"))


def rewrite(path: Path, change: dict[str, object]) -> None:
    data = json.loads(path.read_text())
    for key, value in change.items():
        target = data
        *parents, last = key.split(".")
        for p in parents:
            target = target[p]
        target[last] = value
    path.write_text(json.dumps(data))


def test_a_model_from_another_sklearn_minor_version_is_refused_with_the_fix(
    saved: tuple[Path, ModelBundle],
) -> None:
    path, _ = saved
    rewrite(path, {"versions.sklearn": "0.24.2"})
    with pytest.raises(ConfigError) as caught:
        load_model(path)
    message = str(caught.value)
    assert str(path) in message and "scikit-learn 0.24.2" in message
    assert "retrain it with `bfx advisor train" in message


def test_a_model_from_another_sklearn_patch_release_loads(saved: tuple[Path, ModelBundle]) -> None:
    path, original = saved
    major, minor = original.versions.sklearn.split(".")[:2]
    rewrite(path, {"versions.sklearn": f"{major}.{minor}.99"})
    assert load_model(path).scorer == original.scorer


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"\x80\x04\x95\x00\x00pickle", "not a bfx advisor model"),
        (b'{"format": "bfx-advisor-model", "format_vers', "not a bfx advisor model"),
        (b'{"weights": [1, 2]}', "no bfx-advisor-model header"),
        (b"[1, 2, 3]", "no bfx-advisor-model header"),
        (b"", "not a bfx advisor model"),
        (b'{"format": "bfx-advisor-model", "format_version": 7}', "model format 7"),
    ],
    ids=["pickle", "truncated", "foreign-json", "json-list", "empty", "future-format"],
)
def test_a_corrupt_or_foreign_file_is_refused_naming_it(
    tmp_path: Path, content: bytes, reason: str
) -> None:
    path = tmp_path / "bad.model"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=reason) as caught:
        load_model(path)
    assert str(path) in str(caught.value) and "retrain" in str(caught.value)


def test_a_damaged_field_is_refused_naming_it(saved: tuple[Path, ModelBundle]) -> None:
    path, _ = saved
    rewrite(path, {"scorer.baseline": "not a number"})
    with pytest.raises(ConfigError, match=r"damaged model file \(scorer\.hgb\.baseline"):
        load_model(path)


def test_a_missing_model_file_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="bfx advisor models"):
        load_model(tmp_path / "nope.model")


def test_the_bundle_records_this_installations_library_versions() -> None:
    import platform

    import sklearn

    here = Versions.here()
    assert (here.sklearn, here.numpy, here.python) == (
        sklearn.__version__, np.__version__, platform.python_version()
    )  # fmt: skip
    assert bundle(LogisticScorer(feature_names=SIGNAL_FEATURES[:1], weights=(1.0,), intercept=0.0,
                                 centers=(0.0,))).versions == here  # fmt: skip
