"""Detector events: signals with the rules that made them, health metrics, and throttling.

A signal says why it fired: each rule of the strategy reports whether it held, its weight and the
indicator values it looked at, so the advisor and the studio can explain a trade without rerunning
the strategy.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, NonNegativeFloat, NonNegativeInt

from barfinex_cli.contracts.market import Timeframe
from barfinex_cli.contracts.types import Model, Payload, UtcDatetime

Direction = Literal["long", "short"]
SignalAction = Literal["open", "close", "reduce", "flip"]
Rate = Annotated[float, Field(ge=0.0, le=1.0)]


class RuleAttribution(Model):
    """One rule's part in a signal: whether it held, its weight, and the values it saw."""

    rule: str
    held: bool
    weight: float
    direction: Direction | None = None
    """The side the rule argues for; None for a filter that argues for neither."""
    values: dict[str, float | None]


class SignalGenerated(Payload):
    """A strategy instance whose score crossed its threshold on a closed candle."""

    event_type = "detector.signal"

    strategy: str
    instance: str
    exchange: str
    symbol: str
    timeframe: Timeframe
    candle_time: UtcDatetime
    direction: Direction
    action: SignalAction = "open"
    score: float
    threshold: float
    attribution: list[RuleAttribution]


class DetectorMetricsReported(Payload):
    """A periodic report of one detector instance: volume, rule firing rates and latency."""

    event_type = "detector.metrics"

    instance: str
    strategy: str
    window_s: NonNegativeFloat
    evaluations: NonNegativeInt
    signals: NonNegativeInt
    firing_rate: dict[str, Rate]
    latency_p50_us: NonNegativeFloat
    latency_p99_us: NonNegativeFloat
    broken_rules: list[str]
    """Rules that raised or returned no value in the window; their strategy keeps running."""


class DetectorThrottled(Payload):
    """A detector instance that muted its signals on the inspector's order, until `until`."""

    event_type = "detector.throttled"

    instance: str
    until: UtcDatetime
    reason: str
    suppressed: NonNegativeInt = 0


EVENTS: tuple[type[Payload], ...] = (SignalGenerated, DetectorMetricsReported, DetectorThrottled)
