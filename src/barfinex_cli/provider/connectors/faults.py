"""What a live connector's exchange did wrong, counted as it happens, and whether it is failing now.

`FaultLog` is pure bookkeeping (no ccxt, no IO): the connector reports each fault, each answer
and each repaired hole, and `health()` reads the counts, the time and text of the latest fault
of each kind, and the state. The rule for the state, in one place:

- `degraded` while the latest REST calls failed with a fault (a 5xx or maintenance answer, a
  timeout, an unreachable exchange, a rate limit that outlasted its retries) and the last of those
  failures is younger than `memory_s` (120 s by default) — a lone failure is not held against an
  exchange nobody has asked anything since;
- `degraded` while any websocket stream is down (dropped, not yet receiving again);
- `ok` otherwise: the next REST answer of any kind resets the run of failures (an exchange that
  answers "insufficient funds" is serving), and a stream counts as up again once it receives.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime

from barfinex_cli.contracts.market import ConnectorState, FaultKind, LastFault

FAULT_MEMORY_S = 120.0
"""How long the last of a run of REST failures keeps a connector degraded with nothing newer."""
_MAX_ERROR = 240


@dataclass
class FaultLog:
    """Counts of each fault kind, the latest of each, and the current run of failed REST calls."""

    memory_s: float = FAULT_MEMORY_S
    counts: Counter[FaultKind] = field(default_factory=Counter)
    last: dict[FaultKind, LastFault] = field(default_factory=dict)
    streak: int = 0
    """REST calls in a row that failed with a fault."""
    last_failure: float | None = None
    """`time.monotonic()` of the latest failed REST call."""
    lost_orders_resolved: int = 0
    gaps_repaired: int = 0

    def noted(self, kind: FaultKind, error: str) -> None:
        """Count one fault of `kind` and remember it as the latest of its kind."""
        self.counts[kind] += 1
        self.remember(kind, error)

    def remember(self, kind: FaultKind, error: str) -> None:
        """Keep `error` as the latest of its kind without counting it (a follow-up of a fault)."""
        text = " ".join(error.split())
        if len(text) > _MAX_ERROR:
            text = text[: _MAX_ERROR - 1] + "…"
        self.last[kind] = LastFault(at=datetime.now(UTC), error=text)

    def failed(self) -> None:
        """Note a REST call that ended in a fault (counted by kind with `noted`): the run grows."""
        self.streak += 1
        self.last_failure = time.monotonic()

    def answered(self) -> None:
        """Note a REST call the exchange answered (success or a refusal): the run ends."""
        self.streak = 0

    def state(self, streams_down: bool, now: float | None = None) -> ConnectorState:
        """Return `degraded` or `ok` by the rule in the module docstring."""
        if streams_down:
            return "degraded"
        if self.streak == 0 or self.last_failure is None:
            return "ok"
        age = (time.monotonic() if now is None else now) - self.last_failure
        return "degraded" if age < self.memory_s else "ok"
