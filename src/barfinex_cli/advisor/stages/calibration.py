"""Stage 5, calibration: read the regime, then map the raw conviction through its calibrator.

The regime comes from the series' features (`advisor.regime`); a change since the series' last
signal is an `advisor.regime.rotated`. The calibrator is the loaded model's for that regime (Platt
or isotonic, fitted by `bfx advisor train`); with none, the conviction passes unchanged and the
event says `identity`. A calibrated conviction under `min_conviction` blocks the run.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from barfinex_cli.advisor.regime import Regime, detect_regime
from barfinex_cli.advisor.stages.base import Events, SignalView, blocked, passed
from barfinex_cli.contracts.advisor import (
    ConvictionCalibrated,
    RegimeDetected,
    RegimeRotated,
    StageOutcome,
)
from barfinex_cli.contracts.types import Payload


class CalibratorLike(Protocol):
    """What the stage needs of a calibrator (see `advisor.calibration`)."""

    @property
    def method(self) -> str: ...

    def apply(self, p: float) -> float: ...


class CalibrationsLike(Protocol):
    """One calibrator per regime (see `advisor.calibration.CalibrationSet`)."""

    def for_regime(self, regime: str) -> CalibratorLike | None: ...


@dataclass(frozen=True, slots=True)
class CalibrationResult:
    outcome: StageOutcome
    events: Events
    regime: Regime
    calibrated: float
    method: str


def calibrate(
    view: SignalView,
    features: Mapping[str, float] | None,
    raw: float,
    *,
    previous: Regime | None,
    calibrators: CalibrationsLike | None,
    min_conviction: float,
) -> CalibrationResult:
    """Detect the regime, calibrate `raw`; block under `min_conviction`.

    With no features (too few candles) the regime is the series' previous one, else `range`.
    """
    signal = view.signal
    events: list[Payload] = []
    if features is not None:
        reading = detect_regime(features)
        regime: Regime = reading.regime
        measures = {
            "efficiency_ratio": round(reading.efficiency_ratio, 6),
            "atr_pct_rank": round(reading.atr_pct_rank, 6),
            "confidence": round(reading.confidence, 6),
        }
    else:
        regime = previous or "range"
        measures = {}
    events.append(
        RegimeDetected(
            signal_id=view.id,
            symbol=signal.symbol,
            timeframe=signal.timeframe,
            regime=regime,
            measures=measures,
        )
    )
    if previous is not None and previous != regime:
        events.append(
            RegimeRotated(
                signal_id=view.id,
                symbol=signal.symbol,
                timeframe=signal.timeframe,
                previous=previous,
                current=regime,
            )
        )
    calibrator = calibrators.for_regime(regime) if calibrators is not None else None
    if calibrator is None:
        calibrated, method = raw, "identity"
    else:
        calibrated = min(1.0, max(0.0, float(calibrator.apply(raw))))
        method = calibrator.method
    events.append(
        ConvictionCalibrated(
            signal_id=view.id, regime=regime, raw=raw, calibrated=calibrated, method=method
        )
    )
    detail = f"{regime}: {raw:.3f} -> {calibrated:.3f} ({method})"
    if calibrated < min_conviction:
        reason = f"calibrated conviction {calibrated:.3f} below {min_conviction:.3f} ({regime})"
        return CalibrationResult(
            blocked("calibration", reason), tuple(events), regime, calibrated, method
        )
    return CalibrationResult(
        passed("calibration", detail), tuple(events), regime, calibrated, method
    )
