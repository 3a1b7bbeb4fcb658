"""Stage 4, conviction: one number in [0, 1] from the detector's score and the model's probability.

The detector's strength is its score over the most its rules could give the signal's side (the
sum of the weights of the rules that argue for that side or for neither); the conviction is
`detector_weight * strength + (1 - detector_weight) * probability`, or the strength alone when
the scoring stage was skipped.
"""

from __future__ import annotations

from dataclasses import dataclass

from barfinex_cli.advisor.stages.base import Events, SignalView, passed
from barfinex_cli.contracts.advisor import ConvictionScored, StageOutcome


@dataclass(frozen=True, slots=True)
class ConvictionResult:
    outcome: StageOutcome
    events: Events
    conviction: float
    strength: float
    weights: dict[str, float]


def detector_strength(view: SignalView) -> float:
    """Return the signal's score as a share of the most its side could score, in [0, 1]."""
    signal = view.signal
    most = sum(
        abs(rule.weight)
        for rule in signal.attribution
        if rule.direction is None or rule.direction == signal.direction
    )
    if most <= 0:
        most = max(abs(signal.threshold), abs(signal.score), 1e-12)
    return min(1.0, max(0.0, signal.score / most))


def score_conviction(
    view: SignalView, probability: float | None, detector_weight: float
) -> ConvictionResult:
    """Blend the detector's strength and the probability into the raw conviction."""
    strength = detector_strength(view)
    if probability is None:
        weights = {"detector": 1.0, "ml": 0.0}
        conviction = strength
    else:
        weights = {"detector": detector_weight, "ml": 1.0 - detector_weight}
        conviction = detector_weight * strength + (1.0 - detector_weight) * probability
    conviction = min(1.0, max(0.0, conviction))
    components = {"detector": round(strength, 6)}
    if probability is not None:
        components["ml"] = round(probability, 6)
    event = ConvictionScored(
        signal_id=view.id, conviction=conviction, components=components, weights=weights
    )
    detail = f"conviction {conviction:.3f} (detector {strength:.2f})"
    return ConvictionResult(passed("conviction", detail), (event,), conviction, strength, weights)
