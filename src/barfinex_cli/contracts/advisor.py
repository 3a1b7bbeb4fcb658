"""Advisor events: one or more per pipeline stage, so every decision can be replayed and explained.

The advisor turns a `detector.signal` into a `advisor.decision` (the execution intent) or a
rejection. Each stage reports its outcome as its own type; `signal_id` is the id of the
`detector.signal` event that started the run, and the envelope's `trace_id` ties the run together.
Training and model switches happen outside a run and carry no `signal_id`.

The module runs past 400 lines because it is the whole advisor vocabulary, one small model per
type; splitting it would scatter the stages of one pipeline across files.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Literal

from pydantic import Field, NonNegativeFloat, NonNegativeInt, PositiveInt

from barfinex_cli.contracts.detector import Direction
from barfinex_cli.contracts.market import QualityScore, Timeframe
from barfinex_cli.contracts.orders import Amount, OrderSide, OrderType
from barfinex_cli.contracts.types import Payload, UtcDatetime

Unit = Annotated[float, Field(ge=0.0, le=1.0)]
Stage = Literal[
    "intake", "context", "quality", "ml", "conviction", "regime", "calibration", "llm",
    "sizing", "validation", "attribution", "decision",
]  # fmt: skip
Regime = Literal["trend_up", "trend_down", "range", "volatile", "quiet"]


class _RunEvent(Payload):
    """Fields of every event inside one advisor run."""

    signal_id: str


class SignalReceived(_RunEvent):
    """A detector signal the advisor took in and will run through its pipeline."""

    event_type = "advisor.signal.received"

    strategy: str
    symbol: str
    direction: Direction
    score: float


class SignalDropped(_RunEvent):
    """A detector signal the advisor dropped at intake, before any stage ran."""

    event_type = "advisor.signal.dropped"

    reason: Literal["duplicate", "stale", "cooldown", "position_open", "throttled"]
    detail: str = ""


class StageStarted(_RunEvent):
    """A pipeline stage that began work on a signal."""

    event_type = "advisor.stage.started"

    stage: Stage
    attempt: PositiveInt = 1


class StageCompleted(_RunEvent):
    """A pipeline stage that finished; `outcome` names the event it produced."""

    event_type = "advisor.stage.completed"

    stage: Stage
    duration_ms: NonNegativeFloat
    outcome: str


class StageFailed(_RunEvent):
    """A pipeline stage that raised; `retryable` says whether the advisor will try again."""

    event_type = "advisor.stage.failed"

    stage: Stage
    duration_ms: NonNegativeFloat
    error_type: str
    message: str
    retryable: bool


class ContextFetched(_RunEvent):
    """The market and account context gathered for a signal."""

    event_type = "advisor.context.fetched"

    symbol: str
    timeframe: Timeframe
    candles: NonNegativeInt
    last_price: Decimal
    spread_bps: NonNegativeFloat
    atr: Decimal | None = None
    volume_24h: Amount | None = None
    funding_rate: float | None = None
    position_size: Decimal
    equity: Decimal
    duration_ms: NonNegativeFloat


class QualityPassed(_RunEvent):
    """The data under a signal passed every quality check."""

    event_type = "advisor.quality.passed"

    quality_score: QualityScore
    checks: list[str]


class QualityBlocked(_RunEvent):
    """The data under a signal failed a quality check; the run stops here."""

    event_type = "advisor.quality.blocked"

    quality_score: QualityScore
    failed_checks: list[str]
    reason: str


class MlScored(_RunEvent):
    """The machine-learning model's probability that the signal's trade wins."""

    event_type = "advisor.ml.scored"

    model: str
    model_version: str
    probability: Unit
    features: NonNegativeInt
    top_features: dict[str, float]
    duration_ms: NonNegativeFloat


class MlSkipped(_RunEvent):
    """The machine-learning stage did not score this signal, and why."""

    event_type = "advisor.ml.skipped"

    reason: Literal["disabled", "no_model", "stale_model", "missing_features"]
    detail: str = ""


class ConvictionScored(_RunEvent):
    """The raw conviction blended from the signal score, the ML probability and the context."""

    event_type = "advisor.conviction.scored"

    conviction: Unit
    components: dict[str, float]
    weights: dict[str, float]


class RegimeDetected(_RunEvent):
    """The market regime the advisor sees on the signal's series."""

    event_type = "advisor.regime.detected"

    symbol: str
    timeframe: Timeframe
    regime: Regime
    confidence: Unit
    since: UtcDatetime


class RegimeRotated(Payload):
    """The regime of a series changed, and with it the strategies the advisor trusts there."""

    event_type = "advisor.regime.rotated"

    symbol: str
    timeframe: Timeframe
    previous: Regime
    current: Regime
    confidence: Unit
    strategies_enabled: list[str]
    strategies_disabled: list[str]


class ConvictionCalibrated(_RunEvent):
    """The raw conviction mapped to a calibrated win probability."""

    event_type = "advisor.conviction.calibrated"

    raw: Unit
    calibrated: Unit
    method: Literal["isotonic", "platt", "identity"]
    calibrator_version: str


class LlmRequested(_RunEvent):
    """A prompt sent to a language model for a second opinion on the trade."""

    event_type = "advisor.llm.requested"

    request_id: str
    provider: str
    model: str
    prompt_tokens: NonNegativeInt
    prompt_sha256: str
    temperature: NonNegativeFloat


class LlmResponded(_RunEvent):
    """A language model's parsed answer, with its cost."""

    event_type = "advisor.llm.responded"

    request_id: str
    model: str
    stance: Literal["agree", "disagree", "abstain"]
    confidence: Unit
    summary: str
    completion_tokens: NonNegativeInt
    latency_ms: NonNegativeFloat
    cost_usd: Amount


class LlmFailed(_RunEvent):
    """A language-model call that failed; `will_retry` says whether another attempt follows."""

    event_type = "advisor.llm.failed"

    request_id: str
    model: str
    error: Literal["timeout", "rate_limited", "provider_error", "unparseable", "budget_exceeded"]
    message: str
    attempt: PositiveInt
    will_retry: bool


class LlmSkipped(_RunEvent):
    """The language-model stage was not run for this signal, and why."""

    event_type = "advisor.llm.skipped"

    reason: Literal["disabled", "budget_exhausted", "below_threshold", "circuit_open", "cached"]
    detail: str = ""


class LlmHallucinated(_RunEvent):
    """A language-model answer that stated a fact contradicting the context it was given."""

    event_type = "advisor.llm.hallucination"

    request_id: str
    model: str
    field: str
    claimed: str
    actual: str


class ModelSwitched(Payload):
    """The advisor moved to another model after failures or on an operator's order."""

    event_type = "advisor.model.switched"

    kind: Literal["llm", "ml"]
    previous: str
    current: str
    reason: str
    failures: NonNegativeInt = 0


class PositionSized(_RunEvent):
    """The size the risk budget allows for the trade, and what capped it if anything did."""

    event_type = "advisor.sizing.computed"

    equity: Decimal
    risk_fraction: Unit
    risk_amount: Amount
    stop_distance: Amount
    size: Amount
    capped_by: Literal["none", "max_position", "max_leverage", "min_notional", "max_exposure"]


class SpreadChecked(_RunEvent):
    """The bid-ask spread measured against the limit the trade can bear."""

    event_type = "advisor.spread.checked"

    bid: Decimal
    ask: Decimal
    spread_bps: NonNegativeFloat
    limit_bps: NonNegativeFloat
    ok: bool


class RiskRewardChecked(_RunEvent):
    """The reward-to-risk ratio of the planned entry, stop and take-profit against the minimum."""

    event_type = "advisor.rr.checked"

    entry: Decimal
    stop: Decimal
    take_profit: Decimal
    ratio: NonNegativeFloat
    minimum: NonNegativeFloat
    ok: bool


class ValidationPassed(_RunEvent):
    """The planned trade passed every pre-trade check."""

    event_type = "advisor.validation.passed"

    checks: list[str]
    risk_reward: NonNegativeFloat
    risk_amount: Amount


class ValidationBlocked(_RunEvent):
    """The planned trade failed a pre-trade check; the run stops here."""

    event_type = "advisor.validation.blocked"

    check: str
    reason: str
    observed: float | None = None
    limit: float | None = None


class AttributionRecorded(_RunEvent):
    """How much each input moved the final conviction, for the studio and for training."""

    event_type = "advisor.attribution"

    contributions: dict[str, float]
    dominant: str


class DecisionMade(_RunEvent):
    """The execution intent: what to trade, where to enter, stop and take profit, and why."""

    event_type = "advisor.decision"

    exchange: str
    symbol: str
    side: OrderSide
    order_type: OrderType = "limit"
    entry: Decimal
    stop: Decimal
    take_profit: Decimal
    size: Amount
    conviction: Unit
    reasoning: str
    ml_model: str | None = None
    llm_model: str | None = None
    expires_at: UtcDatetime | None = None


class DecisionRejected(_RunEvent):
    """A run that ended without a trade; `stage` is where it stopped."""

    event_type = "advisor.decision.rejected"

    stage: Stage
    reason: str
    conviction: Unit | None = None


class CalibrationTrained(Payload):
    """A conviction calibrator fitted on closed trades, with its error before and after."""

    event_type = "advisor.calibration.trained"

    method: Literal["isotonic", "platt"]
    version: str
    samples: NonNegativeInt
    brier_before: Unit
    brier_after: Unit
    ece: Unit


class ModelTrained(Payload):
    """A machine-learning model trained on labelled signals, with its held-out scores."""

    event_type = "advisor.model.trained"

    model: str
    version: str
    samples: NonNegativeInt
    features: NonNegativeInt
    auc: Unit
    log_loss: NonNegativeFloat
    data_start: UtcDatetime
    data_end: UtcDatetime
    duration_s: NonNegativeFloat


EVENTS: tuple[type[Payload], ...] = (
    SignalReceived,
    SignalDropped,
    StageStarted,
    StageCompleted,
    StageFailed,
    ContextFetched,
    QualityPassed,
    QualityBlocked,
    MlScored,
    MlSkipped,
    ConvictionScored,
    RegimeDetected,
    RegimeRotated,
    ConvictionCalibrated,
    LlmRequested,
    LlmResponded,
    LlmFailed,
    LlmSkipped,
    LlmHallucinated,
    ModelSwitched,
    PositionSized,
    SpreadChecked,
    RiskRewardChecked,
    ValidationPassed,
    ValidationBlocked,
    AttributionRecorded,
    DecisionMade,
    DecisionRejected,
    CalibrationTrained,
    ModelTrained,
)
