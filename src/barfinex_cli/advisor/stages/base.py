"""What every stage hands back: its outcome and the events it emits, and the shared signal view."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from barfinex_cli.contracts.advisor import Stage, StageOutcome
from barfinex_cli.contracts.detector import SignalGenerated
from barfinex_cli.contracts.types import Payload

Events = tuple[Payload, ...]


@dataclass(frozen=True, slots=True)
class SignalView:
    """The signal a run is about: its event id and payload."""

    id: str
    signal: SignalGenerated

    @property
    def side(self) -> int:
        """+1 for a long, -1 for a short."""
        return 1 if self.signal.direction == "long" else -1


def passed(stage: Stage, detail: str = "") -> StageOutcome:
    """Return a passed outcome of `stage`."""
    return StageOutcome(stage=stage, outcome="passed", detail=detail)


def blocked(stage: Stage, detail: str) -> StageOutcome:
    """Return a blocked outcome of `stage`: the run stops there."""
    return StageOutcome(stage=stage, outcome="blocked", detail=detail)


def skipped(stage: Stage, detail: str) -> StageOutcome:
    """Return a skipped outcome of `stage`: the run goes on without its contribution."""
    return StageOutcome(stage=stage, outcome="skipped", detail=detail)


Outcome = Literal["passed", "blocked", "skipped"]
