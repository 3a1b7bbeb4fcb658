"""Each stage alone, on typed inputs: what it computes, when it blocks, and what it emits."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from barfinex_cli.advisor.calibration import CalibrationSet, PlattCalibrator
from barfinex_cli.advisor.context import MarketContext
from barfinex_cli.advisor.features import features_at
from barfinex_cli.advisor.models import RuleScorer
from barfinex_cli.advisor.stages.base import SignalView
from barfinex_cli.advisor.stages.calibration import calibrate
from barfinex_cli.advisor.stages.context import MarketView, atr, build_context
from barfinex_cli.advisor.stages.conviction import detector_strength, score_conviction
from barfinex_cli.advisor.stages.intent import Inputs, make_intent
from barfinex_cli.advisor.stages.quality import gate_quality
from barfinex_cli.advisor.stages.scoring import score_signal
from barfinex_cli.advisor.stages.synthesis import llm_inputs
from barfinex_cli.advisor.stages.validation import Plan, plan_trade, validate
from barfinex_cli.contracts.advisor import (
    ContextFetched,
    ConvictionCalibrated,
    MlScored,
    MlSkipped,
    QualityBlocked,
    RegimeRotated,
    ValidationBlocked,
)
from barfinex_cli.contracts.market import IncidentOpened
from barfinex_cli.contracts.rest import ConnectorStatus
from barfinex_cli.contracts.times import from_ms

KEY = ("paper", "BTC/USDT", "1m")
Ctx = Callable[..., MarketContext]
Sig = Callable[..., SignalView]


def _view(ctx: MarketContext, sig: SignalView, period: int = 14) -> MarketView:
    result = build_context(sig, ctx.snapshot(KEY), period)
    assert result.view is not None
    return result.view


# -- 1 context ----------------------------------------------------------------------------------


def test_context_reads_price_spread_atr_and_lag_from_the_snapshot(
    make_context: Ctx, make_signal: Sig
) -> None:
    ctx = make_context(200, spread_pct=0.1, equity=5000)
    result = build_context(make_signal(201), ctx.snapshot(KEY), 14)
    assert result.outcome.outcome == "passed" and result.view is not None
    assert result.view.lag == 2  # the context holds up to candle 199; the signal is on 201
    assert result.view.spread_pct == pytest.approx(0.1, rel=1e-6)
    assert result.view.atr == pytest.approx(atr(ctx.snapshot(KEY).candles, 14))
    (event,) = result.events
    assert isinstance(event, ContextFetched)
    assert event.candles == 150 and float(event.equity or 0) == 5000  # a snapshot shows KEEP


def test_context_of_a_series_never_seen_blocks(make_signal: Sig) -> None:
    result = build_context(make_signal(), MarketContext().snapshot(KEY), 14)
    assert result.outcome.outcome == "blocked" and result.view is None
    assert "no BTC/USDT 1m candles" in result.outcome.detail


def test_atr_is_the_mean_true_range_and_none_with_too_few_candles() -> None:
    rows = tuple(
        {"open_ms": float(i), "open": 10.0, "high": 11.0, "low": 9.0, "close": 10.0,
         "volume": 1.0}
        for i in range(20)
    )  # fmt: skip
    assert atr(rows, 14) == pytest.approx(2.0)
    assert atr(rows[:10], 14) is None


def test_a_snapshot_never_shows_candles_after_the_signal() -> None:
    ctx = MarketContext()
    ctx.warm(KEY, [{"open_ms": i, "open": 1, "high": 1, "low": 1, "close": i, "volume": 1}
                   for i in range(50)])  # fmt: skip
    assert ctx.snapshot(KEY, until_ms=20).candles[-1]["close"] == 20


# -- 2 quality ----------------------------------------------------------------------------------


def _gate(view: MarketView, sig: SignalView, **bounds: Any) -> Any:
    options = {"min_quality": 0.6, "max_staleness": 3, "max_spread_pct": 0.4, **bounds}
    return gate_quality(sig, view, **options)


def test_quality_passes_clean_data(make_context: Ctx, make_signal: Sig) -> None:
    sig = make_signal()
    result = _gate(_view(make_context(), sig), sig)
    assert result.outcome.outcome == "passed" and result.score > 0.9


def test_quality_blocks_a_stale_context_whatever_the_score(
    make_context: Ctx, make_signal: Sig
) -> None:
    sig = make_signal(199 + 5)
    result = _gate(_view(make_context(), sig), sig, min_quality=0.0)
    assert result.outcome.outcome == "blocked"
    (event,) = result.events
    assert isinstance(event, QualityBlocked) and "stale context" in event.reason
    assert event.components["staleness"] == 0.0


def test_quality_follows_the_providers_integrity_score(make_context: Ctx, make_signal: Sig) -> None:
    ctx = make_context()
    ctx.apply(IncidentOpened(
        incident_id="i1", exchange=KEY[0], symbol=KEY[1], timeframe="1m", action="TARGETED_REPAIR",
        quality_score=10.0, reason="gap storm", opened_at=from_ms(0),
    ))  # fmt: skip
    sig = make_signal()
    result = _gate(_view(ctx, sig), sig, min_quality=0.8)
    assert result.outcome.outcome == "blocked"
    assert result.events[0].components["integrity"] == pytest.approx(0.1)


def test_quality_scores_a_spread_twice_the_limit_as_zero(
    make_context: Ctx, make_signal: Sig
) -> None:
    sig = make_signal()
    wide = _gate(_view(make_context(spread_pct=0.8), sig), sig)
    assert wide.events[0].components["spread"] == 0.0


# -- 3 ml ---------------------------------------------------------------------------------------


def test_scoring_uses_the_rule_scorer_named_as_such(make_context: Ctx, make_signal: Sig) -> None:
    sig = make_signal()
    view = _view(make_context(), sig)
    result = score_signal(sig, view, RuleScorer())
    (event,) = result.events
    assert isinstance(event, MlScored) and (event.model, event.kind) == ("rule", "rule")
    assert result.market_features == features_at(view.snapshot.candles)
    assert event.features["side"] == 1.0 and event.features["score"] == 2.0


def test_scoring_is_skipped_when_the_features_window_is_short(
    make_context: Ctx, make_signal: Sig
) -> None:
    sig = make_signal(59)
    result = score_signal(sig, _view(make_context(60), sig), RuleScorer())
    (event,) = result.events
    assert isinstance(event, MlSkipped) and event.reason == "missing_features"
    assert result.probability is None and result.outcome.outcome == "skipped"


# -- 4 conviction -------------------------------------------------------------------------------


def test_conviction_blends_detector_strength_and_probability(make_signal: Sig) -> None:
    sig = make_signal(score=2.0)
    assert detector_strength(sig) == pytest.approx(2 / 3)  # 2 of its side's 3 rules
    result = score_conviction(sig, 0.9, detector_weight=0.4)
    assert result.conviction == pytest.approx(0.4 * 2 / 3 + 0.6 * 0.9)
    alone = score_conviction(sig, None, detector_weight=0.4)
    assert alone.conviction == pytest.approx(2 / 3) and alone.weights["ml"] == 0.0


# -- 5 calibration ------------------------------------------------------------------------------


def test_calibration_applies_the_regimes_calibrator_and_reports_a_rotation(
    make_context: Ctx, make_signal: Sig
) -> None:
    sig = make_signal()
    features = features_at(make_context(shape="trend").snapshot(KEY).candles)
    halve = PlattCalibrator(a=1.0, b=-1.0, samples=100)
    calibrators = CalibrationSet(by_regime={"trend": halve})
    result = calibrate(sig, features, 0.7, previous="range", calibrators=calibrators,
                       min_conviction=0.0)  # fmt: skip
    assert result.regime == "trend" and result.method == "platt"
    assert result.calibrated == pytest.approx(halve.apply(0.7))
    assert any(isinstance(e, RegimeRotated) and e.previous == "range" for e in result.events)
    calibrated = next(e for e in result.events if isinstance(e, ConvictionCalibrated))
    assert calibrated.raw == 0.7
    assert calibrated.calibrated == pytest.approx(halve.apply(0.7))


def test_calibration_with_no_calibrator_is_identity_and_blocks_under_the_floor(
    make_signal: Sig,
) -> None:
    result = calibrate(make_signal(), None, 0.3, previous=None, calibrators=None,
                       min_conviction=0.5)  # fmt: skip
    assert result.method == "identity" and result.calibrated == 0.3
    assert result.outcome.outcome == "blocked" and "below 0.500" in result.outcome.detail


# -- 6 llm inputs -------------------------------------------------------------------------------


def test_the_llm_sees_rounded_facts_and_the_evidence_of_each_input(
    make_context: Ctx, make_signal: Sig
) -> None:
    sig = make_signal()
    view = _view(make_context(), sig)
    features = features_at(view.snapshot.candles)
    inputs = llm_inputs(sig, view, features, 0.3, 0.5, 0.5, "trend")
    assert inputs.evidence == {"detector": 1, "ml_probability": -1, "ret_20": 1}
    assert inputs.context["numbers"]["last_price"] == inputs.facts["last_price"]
    assert inputs.context["signal"]["rules_held"] == ["a", "b"]


# -- 7 validation -------------------------------------------------------------------------------


def _validate(view: MarketView, sig: SignalView, **bounds: Any) -> Any:
    options = {"max_spread_pct": 0.4, "min_risk_reward": 1.2, "stop_atr": 1.5,
               "take_profit_atr": 2.5, **bounds}  # fmt: skip
    return validate(sig, view, **options)


def test_validation_plans_from_the_atr_and_passes_a_good_trade(
    make_context: Ctx, make_signal: Sig
) -> None:
    sig = make_signal()
    view = _view(make_context(), sig)
    result = _validate(view, sig)
    assert result.outcome.outcome == "passed" and result.plan is not None
    assert result.plan.entry == view.ask
    assert result.plan.stop == pytest.approx(view.snapshot.mid - 1.5 * (view.atr or 0))
    assert result.plan.risk_reward > 1.2


def test_validation_blocks_a_spread_over_the_limit(make_context: Ctx, make_signal: Sig) -> None:
    sig = make_signal()
    result = _validate(_view(make_context(spread_pct=0.5), sig), sig)
    (event,) = result.events
    assert isinstance(event, ValidationBlocked) and event.check == "spread"
    assert event.observed == pytest.approx(0.5, rel=1e-4) and event.limit == 0.4


def test_validation_blocks_a_poor_reward_to_risk(make_context: Ctx, make_signal: Sig) -> None:
    sig = make_signal()
    result = _validate(_view(make_context(), sig), sig, stop_atr=2.0, take_profit_atr=2.0)
    (event,) = result.events
    assert isinstance(event, ValidationBlocked) and event.check == "risk_reward"
    assert (event.observed or 0) < 1.2


def test_a_short_is_planned_below_the_bid(make_context: Ctx, make_signal: Sig) -> None:
    sig = make_signal(direction="short")
    view = _view(make_context(), sig)
    plan = plan_trade(-1, view, 2.0, 1.5, 2.5)
    assert plan.entry == view.bid and plan.stop > plan.entry > plan.take_profit


# -- 8 intent -----------------------------------------------------------------------------------


def _inputs(**changes: Any) -> Inputs:
    base: dict[str, Any] = {
        "plan": Plan(entry=100.0, stop=98.0, take_profit=104.0, risk_reward=2.0),
        "equity": 10_000.0, "default_equity": 1_000.0, "risk_fraction": 0.01,
        "max_position_fraction": 1.0, "strength": 0.5, "probability": 0.6,
        "weights": {"detector": 0.4, "ml": 0.6}, "raw": 0.56, "calibrated": 0.6,
        "regime": "trend", "multiplier": 1.0, "ml_model": "rule", "llm_model": None,
        "reasoning": ("why",), "stages": (),
    }  # fmt: skip
    return Inputs(**{**base, **changes})


def test_intent_sizes_the_risk_budget_over_the_stop_distance(make_signal: Sig) -> None:
    result = make_intent(make_signal(), _inputs())
    sized, attribution, decision = result.events
    assert float(decision.size) == pytest.approx(10_000 * 0.01 / 2)  # type: ignore[attr-defined]
    assert sized.capped_by == "none"  # type: ignore[attr-defined]
    assert attribution.contributions == {  # type: ignore[attr-defined]
        "detector": 0.2, "ml": 0.36, "calibration": 0.04, "llm_sizing": 0.0,
    }  # fmt: skip
    assert decision.side == "buy" and decision.stages[-1].stage == "intent"  # type: ignore[attr-defined]


def test_intent_caps_the_notional_and_applies_the_llm_multiplier(make_signal: Sig) -> None:
    capped = make_intent(make_signal(), _inputs(max_position_fraction=0.01))
    assert float(capped.decision.size) == pytest.approx(1.0)  # 1 % of 10 000 at 100
    assert capped.events[0].capped_by == "max_position"  # type: ignore[attr-defined]
    halved = make_intent(make_signal(), _inputs(multiplier=0.5, equity=None))
    assert float(halved.decision.size) == pytest.approx(1_000 * 0.01 * 0.5 / 2)


def test_quality_blocks_when_the_connector_reports_itself_disconnected(
    make_context: Ctx, make_signal: Sig
) -> None:
    ctx = make_context()
    ctx.apply(ConnectorStatus(
        name="paper", connector="paper", exchange=KEY[0], connected=False, lag_ms=0,
        messages_per_s=0, reconnects=3, gaps=0, rate_limit_waits=0,
    ))  # fmt: skip
    sig = make_signal()
    result = _gate(_view(ctx, sig), sig, min_quality=0.0)
    assert result.outcome.outcome == "blocked" and "disconnected" in result.outcome.detail
    assert result.events[0].components["integrity"] == 0.0


def test_scoring_is_skipped_not_crashed_when_a_price_is_zero(
    make_context: Ctx, make_signal: Sig
) -> None:
    ctx = MarketContext()
    rows = [{"open_ms": 1_704_067_200_000 + i * 60_000, "open": 1.0, "high": 1.0, "low": 0.0,
             "close": 0.0 if i == 150 else 1.0, "volume": 1.0} for i in range(200)]  # fmt: skip
    ctx.warm(KEY, rows)
    sig = make_signal(199)
    result = score_signal(sig, build_context(sig, ctx.snapshot(KEY), 14).view, RuleScorer())  # type: ignore[arg-type]
    (event,) = result.events
    assert isinstance(event, MlSkipped) and event.reason == "missing_features"
    assert result.probability is None
