"""Advisor events: one or more per pipeline stage, so every decision can be replayed and explained.

The advisor turns a `detector.signal` into an `advisor.decision` (the execution intent) or an
`advisor.decision.rejected`. Each of its eight stages (context, quality, ml, conviction,
calibration, llm, validation, intent) reports its outcome as its own type; `signal_id` is the id
of the `detector.signal` event that started the run, and the envelope's `trace_id` ties the run
to the signal and the candle under it. Training happens outside a run and carries no `signal_id`.

Every type here is emitted by the advisor in some real situation (a test enumerates them); a type
the pipeline had no use for was removed rather than left as decoration.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Literal

from pydantic import Field, NonNegativeFloat, NonNegativeInt

from barfinex_cli.contracts.detector import Direction, SignalAction
from barfinex_cli.contracts.market import Timeframe
from barfinex_cli.contracts.orders import Amount, OrderSide, OrderType
from barfinex_cli.contracts.types import Model, Payload, UtcDatetime

Unit = Annotated[float, Field(ge=0.0, le=1.0)]
Stage = Literal[
    "intake", "context", "quality", "ml", "conviction", "calibration", "llm", "validation",
    "intent",
]  # fmt: skip
Regime = Literal["trend", "range", "high_vol"]
Bias = Literal["long", "short", "neutral"]
Multiplier = Annotated[float, Field(ge=0.0, le=2.0)]


class StageOutcome(Model):
    """One stage's outcome in a run: passed, blocked or skipped, and the reason in words."""

    stage: Stage
    outcome: Literal["passed", "blocked", "skipped"]
    detail: str = ""


class _RunEvent(Payload):
    """Fields of every event inside one advisor run."""

    signal_id: str


class SignalReceived(_RunEvent):
    """A detector signal the advisor took in and will run through its pipeline."""

    event_type = "advisor.signal.received"

    strategy: str
    exchange: str
    symbol: str
    direction: Direction
    score: float


class SignalDropped(_RunEvent):
    """A detector signal the advisor dropped at intake, before any stage ran, and why."""

    event_type = "advisor.signal.dropped"

    reason: Literal["unknown_symbol", "stale_signal", "unsupported_action"]
    detail: str = ""


class StageFailed(_RunEvent):
    """A stage that could not run; `retryable` says whether the signal stays pending for later."""

    event_type = "advisor.stage.failed"

    stage: Stage
    error_type: str
    message: str
    retryable: bool


class ContextFetched(_RunEvent):
    """The market and account context gathered for a signal, from the advisor's own memory."""

    event_type = "advisor.context.fetched"

    exchange: str
    symbol: str
    timeframe: Timeframe
    candles: NonNegativeInt
    last_price: Decimal
    bid: Decimal | None = None
    ask: Decimal | None = None
    spread_pct: NonNegativeFloat | None = None
    atr: Decimal | None = None
    position_size: Decimal
    equity: Decimal | None = None
    age_s: NonNegativeFloat
    """How old the newest candle is against the signal's time."""
    duration_us: NonNegativeFloat


class QualityPassed(_RunEvent):
    """The data under a signal scored at or above the threshold on every measure."""

    event_type = "advisor.quality.passed"

    quality: Unit
    threshold: Unit
    components: dict[str, float]


class QualityBlocked(_RunEvent):
    """The data under a signal scored below the threshold; the run stops here."""

    event_type = "advisor.quality.blocked"

    quality: Unit
    threshold: Unit
    components: dict[str, float]
    reason: str


class MlScored(_RunEvent):
    """The advisor's own probability that the signal's trade wins, and which scorer gave it."""

    event_type = "advisor.ml.scored"

    model: str
    kind: Literal["ml", "rule"]
    probability: Unit
    features: dict[str, float]
    duration_us: NonNegativeFloat


class MlSkipped(_RunEvent):
    """The scoring stage did not score this signal, and why; conviction uses the detector alone."""

    event_type = "advisor.ml.skipped"

    reason: Literal["missing_features", "scorer_error"]
    detail: str = ""


class ConvictionScored(_RunEvent):
    """The raw conviction blended from the detector's score and the advisor's probability."""

    event_type = "advisor.conviction.scored"

    conviction: Unit
    components: dict[str, float]
    weights: dict[str, float]


class RegimeDetected(_RunEvent):
    """The market regime the advisor sees on the signal's series, with the measures behind it."""

    event_type = "advisor.regime.detected"

    symbol: str
    timeframe: Timeframe
    regime: Regime
    measures: dict[str, float]


class RegimeRotated(_RunEvent):
    """The regime of a series changed since its previous signal; its calibrator changes too."""

    event_type = "advisor.regime.rotated"

    symbol: str
    timeframe: Timeframe
    previous: Regime
    current: Regime


class ConvictionCalibrated(_RunEvent):
    """The raw conviction mapped to a calibrated win probability by the regime's calibrator."""

    event_type = "advisor.conviction.calibrated"

    regime: Regime
    raw: Unit
    calibrated: Unit
    method: Literal["isotonic", "platt", "identity"]


class LlmRequested(_RunEvent):
    """A prompt sent to a language model for a synthesis of the structured context."""

    event_type = "advisor.llm.requested"

    request_id: str
    model: str
    attempt: Annotated[int, Field(ge=1)]
    prompt_chars: NonNegativeInt
    prompt_sha256: str


class LlmResponded(_RunEvent):
    """A language model's answer, parsed: its bias, sizing multiplier and reasoning."""

    event_type = "advisor.llm.responded"

    request_id: str
    model: str
    bias: Bias
    sizing_multiplier: Multiplier
    reasoning: str
    accepted: bool
    """False when the hallucination check discarded the answer."""
    latency_ms: NonNegativeFloat
    completion_tokens: NonNegativeInt = 0


class LlmFailed(_RunEvent):
    """A language-model call that failed; `will_retry` says whether another attempt follows."""

    event_type = "advisor.llm.failed"

    request_id: str
    model: str
    error: Literal["timeout", "unreachable", "provider_error", "unparseable"]
    message: str
    attempt: Annotated[int, Field(ge=1)]
    will_retry: bool


class LlmSkipped(_RunEvent):
    """The language-model stage gave no contribution to this signal, and why."""

    event_type = "advisor.llm.skipped"

    reason: Literal["not_configured", "unavailable"]
    detail: str = ""


class LlmHallucinated(_RunEvent):
    """An answer that cited a number the context does not hold, or argued against all evidence."""

    event_type = "advisor.llm.hallucination"

    request_id: str
    model: str
    field: str
    claimed: str
    actual: str


class ModelSwitched(_RunEvent):
    """The stage fell back to the next model of its list after the previous one failed."""

    event_type = "advisor.model.switched"

    kind: Literal["llm", "ml"]
    previous: str
    current: str
    reason: str
    failures: NonNegativeInt = 0


class ValidationPassed(_RunEvent):
    """The planned trade passed the spread and reward-to-risk checks."""

    event_type = "advisor.validation.passed"

    entry: Decimal
    stop: Decimal
    take_profit: Decimal
    spread_pct: NonNegativeFloat
    risk_reward: NonNegativeFloat


class ValidationBlocked(_RunEvent):
    """The planned trade failed a pre-trade check; the run stops here."""

    event_type = "advisor.validation.blocked"

    check: Literal["spread", "risk_reward", "atr"]
    reason: str
    observed: float | None = None
    limit: float | None = None


class PositionSized(_RunEvent):
    """The size suggested for the trade: the risk budget over the stop distance, and its caps."""

    event_type = "advisor.sizing.computed"

    equity: Decimal
    risk_fraction: Unit
    risk_amount: Amount
    stop_distance: Amount
    multiplier: Multiplier
    size: Amount
    capped_by: Literal["none", "max_position"]


class AttributionRecorded(_RunEvent):
    """How much each input moved the final conviction, for the studio and for training."""

    event_type = "advisor.attribution"

    contributions: dict[str, float]
    dominant: str


class DecisionMade(_RunEvent):
    """The execution intent: what to trade, where to enter, stop and take profit, and why."""

    event_type = "advisor.decision"

    kind: SignalAction = "open"
    """What the order does to the strategy's position: `open` (or add to) one, `close` or
    `reduce` it (`side` is the exit's side, `size` the amount a reduce takes off, no stop and no
    take-profit), or `flip` it. Decisions from before the field read as `open`, which the
    inspector judges as a flip when the other side is held, as it always did."""
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
    raw_conviction: Unit | None = None
    regime: Regime | None = None
    risk_reward: NonNegativeFloat | None = None
    strategy: str | None = None
    ml_model: str | None = None
    llm_model: str | None = None
    stages: list[StageOutcome] = Field(default_factory=list)
    expires_at: UtcDatetime | None = None


class DecisionRejected(_RunEvent):
    """A run that ended without a trade; `stage` is where it stopped."""

    event_type = "advisor.decision.rejected"

    stage: Stage
    reason: str
    conviction: Unit | None = None
    stages: list[StageOutcome] = Field(default_factory=list)


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
    ValidationPassed,
    ValidationBlocked,
    PositionSized,
    AttributionRecorded,
    DecisionMade,
    DecisionRejected,
    CalibrationTrained,
    ModelTrained,
)

TRAINING_EVENTS: tuple[type[Payload], ...] = (CalibrationTrained, ModelTrained)
"""The types `bfx advisor train` emits; every other type here comes out of a pipeline run."""
