"""Calibrators fix a known miscalibration, equal sklearn's own fits, and the metrics are right."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import brier_score_loss
from sklearn.metrics import log_loss as sk_log_loss

from barfinex_cli.advisor.calibration import (
    CalibrationSet,
    IsotonicCalibrator,
    PlattCalibrator,
    brier,
    ece,
    fit_calibrator,
    log_loss,
    reliability,
)


def miscalibrated(n: int = 20_000, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """True probabilities, outcomes drawn from them, and a model's underconfident, biased view.

    raw = sigmoid(0.5 * logit(true) + 1.0): squeezed toward the middle and shifted up.
    """
    rng = np.random.default_rng(seed)
    true = np.clip(rng.beta(0.5, 0.5, n), 0.01, 0.99)
    won = (rng.random(n) < true).astype(np.float64)
    raw = 1 / (1 + np.exp(-(0.5 * np.log(true / (1 - true)) + 1.0)))
    return true, won, raw


@pytest.mark.parametrize("method", ["platt", "isotonic"])
def test_the_calibrator_fixes_a_known_miscalibration(method: str) -> None:
    true, won, raw = miscalibrated()
    half = won.size // 2
    calibrator = fit_calibrator(method, raw[:half], won[:half])  # type: ignore[arg-type]
    fixed = np.array([calibrator.apply(p) for p in raw[half:]])
    before, after = brier(won[half:], raw[half:]), brier(won[half:], fixed)
    best = brier(won[half:], true[half:])
    # held out: Brier at least 20% lower, and 95% of the gap to the true probabilities closed
    assert after <= 0.8 * before
    assert before - after >= 0.95 * (before - best)
    table_before, table_after = reliability(won[half:], raw[half:]), reliability(won[half:], fixed)
    assert ece(table_after) < 0.02 < 0.1 < ece(table_before)


def test_platt_applies_its_fitted_parameters_exactly_as_sklearn_predicts() -> None:
    _, won, raw = miscalibrated(4_000, seed=1)
    calibrator = fit_calibrator("platt", raw, won)
    assert isinstance(calibrator, PlattCalibrator)
    logit = np.log(raw / (1 - raw)).reshape(-1, 1)
    reference = LogisticRegression(C=1e6, max_iter=1000).fit(logit, won)
    rng = np.random.default_rng(2)
    probe = rng.uniform(0.001, 0.999, 500)
    expected = reference.predict_proba(np.log(probe / (1 - probe)).reshape(-1, 1))[:, 1]
    got = np.array([calibrator.apply(p) for p in probe])
    assert np.abs(got - expected).max() < 1e-9


def test_isotonic_interpolates_its_thresholds_exactly_as_sklearn_predicts() -> None:
    _, won, raw = miscalibrated(4_000, seed=3)
    calibrator = fit_calibrator("isotonic", raw, won)
    assert isinstance(calibrator, IsotonicCalibrator)
    reference = IsotonicRegression(y_min=0, y_max=1, out_of_bounds="clip").fit(raw, won)
    probe = np.r_[np.random.default_rng(4).uniform(0, 1, 500), 0.0, 1.0, raw.min(), raw.max()]
    got = np.array([calibrator.apply(p) for p in probe])
    assert np.abs(got - reference.predict(probe)).max() < 1e-12
    assert all(0.0 <= g <= 1.0 for g in got)


def test_platt_with_identity_parameters_changes_nothing() -> None:
    identity = PlattCalibrator(a=1.0, b=0.0, samples=0)
    for p in (0.01, 0.3, 0.5, 0.77, 0.99):
        assert identity.apply(p) == pytest.approx(p, abs=1e-12)
    assert 0.0 <= identity.apply(0.0) < 1e-5 and 1 - 1e-5 < identity.apply(1.0) <= 1.0


def test_one_outcome_only_cannot_be_calibrated() -> None:
    with pytest.raises(ValueError, match="one outcome"):
        fit_calibrator("platt", [0.2, 0.4, 0.6], [1, 1, 1])
    with pytest.raises(ValueError, match="one outcome"):
        fit_calibrator("isotonic", [0.2], [0])


def test_brier_and_log_loss_equal_sklearn() -> None:
    _, won, raw = miscalibrated(2_000, seed=5)
    assert brier(won, raw) == pytest.approx(brier_score_loss(won, raw), abs=1e-12)
    assert log_loss(won, raw) == pytest.approx(sk_log_loss(won, raw), abs=1e-12)
    assert math.isfinite(log_loss([1, 0], [0.0, 1.0]))  # certain and wrong: clipped, not inf


def test_the_reliability_table_bins_counts_and_frequencies() -> None:
    p = [0.05, 0.08, 0.55, 0.58, 0.59, 1.0]
    y = [0, 1, 1, 1, 0, 1]
    table = reliability(y, p, bins=10)
    assert [(b.low, b.high, b.count) for b in table] == [
        (0.0, 0.1, 2),
        (0.5, 0.6, 3),
        (0.9, 1.0, 1),
    ]
    assert table[0].observed == 0.5 and table[0].mean_predicted == pytest.approx(0.065)
    assert table[1].observed == pytest.approx(2 / 3)
    expected = (2 * abs(0.065 - 0.5) + 3 * abs(0.573333333 - 2 / 3) + 0) / 6
    assert ece(table) == pytest.approx(expected, abs=1e-8)
    assert ece(()) == 0.0


def test_a_regime_without_its_own_calibrator_gets_the_fallback_or_none() -> None:
    trend = PlattCalibrator(a=1.2, b=0.1, samples=80)
    fallback = IsotonicCalibrator(x=(0.0, 1.0), y=(0.1, 0.9), samples=300)
    calibrators = CalibrationSet(by_regime={"trend": trend}, fallback=fallback)
    assert calibrators.for_regime("trend") is trend
    assert calibrators.for_regime("range") is fallback
    assert CalibrationSet(by_regime={"trend": trend}).for_regime("range") is None
    again = CalibrationSet.model_validate_json(calibrators.model_dump_json())
    assert again == calibrators
    assert again.for_regime("range").apply(0.5) == pytest.approx(0.5)  # type: ignore[union-attr]


def test_the_version_names_the_parameters() -> None:
    a = PlattCalibrator(a=1.2, b=0.1, samples=80)
    assert a.version == PlattCalibrator(a=1.2, b=0.1, samples=5).version
    assert a.version != PlattCalibrator(a=1.2, b=0.2, samples=80).version


def test_isotonic_points_must_pair_up_and_rise() -> None:
    with pytest.raises(ValueError, match="differ in length"):
        IsotonicCalibrator(x=(0.0, 1.0), y=(0.5,), samples=1)
    with pytest.raises(ValueError, match="non-decreasing"):
        IsotonicCalibrator(x=(0.5, 0.1), y=(0.2, 0.3), samples=1)


@pytest.mark.parametrize("method", ["platt", "isotonic"])
def test_the_vectorised_apply_equals_the_per_signal_one(method: str) -> None:
    _, won, raw = miscalibrated(3_000, seed=6)
    calibrator = fit_calibrator(method, raw, won)  # type: ignore[arg-type]
    probe = np.r_[np.random.default_rng(7).uniform(0, 1, 1_000), 0.0, 1.0]
    one_by_one = np.array([calibrator.apply(p) for p in probe])
    assert np.abs(calibrator.apply_array(probe) - one_by_one).max() < 1e-12
