"""The eight stages in order, on one signal and one context snapshot: events in, events out.

`Pipeline.run` is what the service calls per signal and what the benchmark times. It touches no
bus and no network (the LLM stage aside, when models are configured): it returns the payloads of
every stage in the order they happened, ending with `advisor.decision` or
`advisor.decision.rejected`, which carry each stage's outcome so a decision explains itself.
The only state it keeps is the last regime of each series (to report a rotation).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from barfinex_cli.advisor.context import SeriesKey, Snapshot
from barfinex_cli.advisor.llm import LlmOptions, LlmStage
from barfinex_cli.advisor.regime import Regime
from barfinex_cli.advisor.stages.base import SignalView
from barfinex_cli.advisor.stages.calibration import CalibrationsLike, calibrate
from barfinex_cli.advisor.stages.context import build_context
from barfinex_cli.advisor.stages.conviction import score_conviction
from barfinex_cli.advisor.stages.intent import Inputs, make_intent
from barfinex_cli.advisor.stages.quality import gate_quality
from barfinex_cli.advisor.stages.scoring import ScorerLike, score_signal
from barfinex_cli.advisor.stages.synthesis import llm_inputs
from barfinex_cli.advisor.stages.validation import validate
from barfinex_cli.contracts.advisor import (
    DecisionMade,
    DecisionRejected,
    SignalReceived,
    StageOutcome,
)
from barfinex_cli.contracts.types import Payload
from barfinex_cli.runtime.config import AdvisorConfig


@dataclass
class RunResult:
    """One signal's run: every payload emitted, and how it ended."""

    events: list[Payload] = field(default_factory=list)
    stages: list[StageOutcome] = field(default_factory=list)
    decision: DecisionMade | None = None
    rejected: DecisionRejected | None = None
    regime: Regime | None = None


def llm_options(config: AdvisorConfig, extra: Mapping[str, Any] | None = None) -> LlmOptions:
    """Return the LLM stage's options from `[advisor]`."""
    key = config.llm_api_key.get_secret_value() if config.llm_api_key is not None else None
    return LlmOptions(
        models=config.llm_models,
        api_base=config.llm_api_base,
        api_key=key or None,
        timeout_s=config.llm_timeout_s,
        retries=config.llm_retries,
        temperature=config.llm_temperature,
        tolerance_pct=config.llm_tolerance_pct,
        extra=dict(extra or {}),
    )


class Pipeline:
    """The advisor's decision pipeline over a scorer, calibrators and an LLM stage."""

    def __init__(
        self,
        config: AdvisorConfig,
        *,
        scorer: ScorerLike,
        calibrators: CalibrationsLike | None = None,
        llm: LlmStage | None = None,
    ) -> None:
        self.config = config
        self.scorer = scorer
        self.calibrators = calibrators
        self.llm = llm or LlmStage(llm_options(config))
        self.regimes: dict[SeriesKey, Regime] = {}

    async def run(self, view: SignalView, snapshot: Snapshot) -> RunResult:
        """Run every stage on `view`; stop at the first that blocks."""
        cfg = self.config
        signal = view.signal
        result = RunResult()
        result.events.append(
            SignalReceived(
                signal_id=view.id,
                strategy=signal.strategy,
                exchange=signal.exchange,
                symbol=signal.symbol,
                direction=signal.direction,
                score=signal.score,
            )
        )

        def step(outcome: StageOutcome, events: tuple[Payload, ...]) -> bool:
            result.events.extend(events)
            result.stages.append(outcome)
            return outcome.outcome == "blocked"

        ctx = build_context(view, snapshot, cfg.atr_period)
        if step(ctx.outcome, ctx.events) or ctx.view is None:
            return self._reject(view, result, ctx.outcome, None)
        market = ctx.view
        quality = gate_quality(
            view,
            market,
            min_quality=cfg.min_quality,
            max_staleness=cfg.max_staleness,
            max_spread_pct=cfg.max_spread_pct,
        )
        if step(quality.outcome, quality.events):
            return self._reject(view, result, quality.outcome, None)
        scored = score_signal(view, market, self.scorer)
        step(scored.outcome, scored.events)
        conviction = score_conviction(view, scored.probability, cfg.detector_weight)
        step(conviction.outcome, conviction.events)
        key = (signal.exchange, signal.symbol, signal.timeframe)
        calibration = calibrate(
            view,
            scored.market_features,
            conviction.conviction,
            previous=self.regimes.get(key),
            calibrators=self.calibrators,
            min_conviction=cfg.min_conviction,
        )
        self.regimes[key] = result.regime = calibration.regime
        if step(calibration.outcome, calibration.events):
            return self._reject(view, result, calibration.outcome, calibration.calibrated)
        if not self.llm.configured:
            synthesis = self.llm.not_configured(view)
        else:
            inputs = llm_inputs(
                view,
                market,
                scored.market_features,
                scored.probability,
                conviction.conviction,
                calibration.calibrated,
                calibration.regime,
            )
            synthesis = await self.llm.synthesize(
                view, inputs.context, inputs.facts, inputs.evidence
            )
        step(synthesis.outcome, synthesis.events)
        checked = validate(
            view,
            market,
            max_spread_pct=cfg.max_spread_pct,
            min_risk_reward=cfg.min_risk_reward,
            stop_atr=cfg.stop_atr,
            take_profit_atr=cfg.take_profit_atr,
        )
        if step(checked.outcome, checked.events) or checked.plan is None:
            return self._reject(view, result, checked.outcome, calibration.calibrated)
        answer = synthesis.answer
        multiplier = answer.sizing_multiplier if answer is not None else 1.0
        if answer is not None and answer.bias not in ("neutral", signal.direction):
            multiplier = min(multiplier, 0.5)  # the model disagrees: trade smaller, not blind
        reasoning = [o.detail for o in result.stages if o.detail]
        if answer is not None:
            reasoning.append(f"LLM: {answer.reasoning}")
        intent = make_intent(
            view,
            Inputs(
                plan=checked.plan,
                equity=snapshot.equity,
                default_equity=cfg.default_equity,
                risk_fraction=cfg.risk_fraction,
                max_position_fraction=cfg.max_position_fraction,
                strength=conviction.strength,
                probability=scored.probability,
                weights=conviction.weights,
                raw=conviction.conviction,
                calibrated=calibration.calibrated,
                regime=calibration.regime,
                multiplier=multiplier,
                ml_model=self.scorer.name if scored.probability is not None else None,
                llm_model=synthesis.model if answer is not None else None,
                reasoning=tuple(reasoning),
                stages=tuple(result.stages),
            ),
        )
        step(intent.outcome, intent.events)
        result.decision = intent.decision
        return result

    @staticmethod
    def _reject(
        view: SignalView, result: RunResult, outcome: StageOutcome, conviction: float | None
    ) -> RunResult:
        rejected = DecisionRejected(
            signal_id=view.id,
            stage=outcome.stage,
            reason=outcome.detail,
            conviction=conviction,
            stages=list(result.stages),
        )
        result.events.append(rejected)
        result.rejected = rejected
        return result
