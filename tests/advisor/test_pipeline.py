"""The whole pipeline on typed inputs: with a trained model, with an LLM's answer, and blocked."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from barfinex_cli.advisor.context import MarketContext
from barfinex_cli.advisor.features import WINDOW
from barfinex_cli.advisor.llm import LlmOptions, LlmStage
from barfinex_cli.advisor.models import ModelBundle, RuleScorer, save_model
from barfinex_cli.advisor.pipeline import Pipeline
from barfinex_cli.advisor.stages.base import SignalView
from barfinex_cli.advisor.training import TrainConfig, TrainingSignal, train
from barfinex_cli.contracts.advisor import ConvictionCalibrated, MlScored
from barfinex_cli.kernel.parts import Kernel
from barfinex_cli.market.history import rows_frame
from barfinex_cli.market.synthetic import generate_candles
from barfinex_cli.runtime.config import AdvisorConfig
from barfinex_cli.runtime.settings import load_settings

KEY = ("paper", "BTC/USDT", "1m")
Ctx = Callable[..., MarketContext]
Sig = Callable[..., SignalView]


@pytest.fixture(scope="module")
def bundle() -> ModelBundle:
    """A logistic model with Platt calibrators, trained on synthetic history."""
    frame = rows_frame(generate_candles("BTC/USDT", minutes=3000))
    rng = np.random.default_rng(3)
    opens = frame["open_ms"].to_list()[WINDOW:]
    signals = [TrainingSignal(t, "long" if rng.random() < 0.5 else "short", 2.0)
               for t in opens[::3]]  # fmt: skip
    now = datetime(2024, 2, 1, tzinfo=UTC)
    config = TrainConfig(min_regime_samples=30)
    return train(frame, signals, strategy="s", timeframe="1m", now=now, config=config).bundle


async def test_a_trained_model_scores_and_its_regimes_calibrator_calibrates(
    bundle: ModelBundle, make_context: Ctx, make_signal: Sig
) -> None:
    pipeline = Pipeline(AdvisorConfig(), scorer=bundle.scorer, calibrators=bundle.calibrators)
    result = await pipeline.run(make_signal(), make_context().snapshot(KEY))
    scored = next(e for e in result.events if isinstance(e, MlScored))
    assert scored.kind == "ml" and scored.model == bundle.scorer.name
    calibrated = next(e for e in result.events if isinstance(e, ConvictionCalibrated))
    calibrator = bundle.calibrators.for_regime(calibrated.regime)
    assert calibrator is not None and calibrated.method == calibrator.method
    assert calibrated.calibrated == pytest.approx(calibrator.apply(calibrated.raw))
    assert result.decision is not None and result.decision.ml_model == bundle.scorer.name


async def test_the_kernel_loads_the_model_file_the_config_names(
    bundle: ModelBundle, tmp_path: Path, namespace: str
) -> None:
    path = tmp_path / "s.model"
    save_model(bundle, path)
    settings = load_settings(home=tmp_path, namespace=namespace, bus="memory")
    async with Kernel(settings) as kernel:
        advisor = await kernel.advisor(AdvisorConfig(model=path, clock="wall"))
    assert advisor.pipeline.scorer.kind == "ml" and advisor.model is not None


async def test_a_kept_llm_answer_sizes_the_trade_and_joins_the_reasoning(
    make_context: Ctx, make_signal: Sig
) -> None:
    answer = {"bias": "long", "sizing_multiplier": 0.5, "reasoning": "The trend holds."}
    llm = LlmStage(LlmOptions(models=("gpt-4o-mini",),
                              extra={"mock_response": json.dumps(answer)}))  # fmt: skip
    config = AdvisorConfig(max_position_fraction=10)  # no notional cap in the way
    plain = Pipeline(config, scorer=RuleScorer())
    advised = Pipeline(config, scorer=RuleScorer(), llm=llm)
    ctx = make_context()
    base = await plain.run(make_signal(), ctx.snapshot(KEY))
    halved = await advised.run(make_signal(), ctx.snapshot(KEY))
    assert base.decision is not None and halved.decision is not None, halved.stages
    assert float(halved.decision.size) == pytest.approx(float(base.decision.size) * 0.5)
    assert halved.decision.llm_model == "gpt-4o-mini"
    assert "LLM: The trend holds." in halved.decision.reasoning


async def test_a_blocked_run_ends_in_a_rejection_carrying_the_stages_so_far(
    make_context: Ctx, make_signal: Sig
) -> None:
    pipeline = Pipeline(AdvisorConfig(max_spread_pct=0.1), scorer=RuleScorer())
    result = await pipeline.run(make_signal(), make_context(spread_pct=0.3).snapshot(KEY))
    assert result.decision is None and result.rejected is not None
    assert result.rejected.stage == "validation" and "spread" in result.rejected.reason
    assert [s.stage for s in result.rejected.stages][-1] == "validation"
    assert result.events[-1] is result.rejected


async def test_a_zero_price_in_the_context_ends_the_run_cleanly(make_signal: Sig) -> None:
    ctx = MarketContext()
    rows = [{"open_ms": 1_704_067_200_000 + i * 60_000, "open": 1.0, "high": 1.0, "low": 0.0,
             "close": 0.0 if i == 150 else 1.0, "volume": 1.0} for i in range(200)]  # fmt: skip
    ctx.warm(KEY, rows)
    sig = make_signal(199)
    result = await Pipeline(AdvisorConfig(), scorer=RuleScorer()).run(sig, ctx.snapshot(KEY))
    assert (result.decision is None) != (result.rejected is None)
    assert [s.outcome for s in result.stages][:3] == ["passed", "passed", "skipped"]
