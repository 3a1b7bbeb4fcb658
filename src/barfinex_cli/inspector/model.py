"""The inspector's plain value types: what the governor judges and what it answers.

The governor (`inspector.governor`) and every policy (`inspector.policies`) are pure functions over
these frozen types, so they are tested and benchmarked with no bus, store or HTTP; the service
(the inspector's edge module) builds an `Intent` from each `advisor.decision`, a `Portfolio` from
its store and the provider, and turns the `Verdict` into an `inspector.verdict` event and, on
ALLOW, an order of `Verdict.size`.

The governor's surface, for the service:

    Governor(policies: PolicySet)
    Governor.evaluate(intent, portfolio, now) -> Verdict    # every policy; the strictest wins
    Governor.check(portfolio, now) -> Verdict | None        # a portfolio breach with no intent
    Governor.expired(positions, now) -> list[Position]      # runtime positions held too long
    load_policies(path: Path) -> PolicySet                  # ConfigError: file, key, reason
    PolicyWatcher(path, policies).poll() -> PolicyReload | None   # reload a changed file

Plain dataclasses (frozen, slotted) rather than pydantic: they are built per decision on the hot
path and never cross a process boundary; the events that do are in `contracts.inspector`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Literal

Action = Literal["ALLOW", "BLOCK", "THROTTLE", "STAND_DOWN", "CLOSE_ALL"]
"""The five verdicts, listed from the mildest to the strictest."""

IntentKind = Literal["open", "close", "reduce", "flip"]
Side = Literal["buy", "sell"]
PositionSide = Literal["long", "short"]

STRICTNESS: Mapping[Action, int] = {
    "ALLOW": 0,
    "BLOCK": 1,
    "THROTTLE": 2,
    "STAND_DOWN": 3,
    "CLOSE_ALL": 4,
}
"""Rank of each action; when policies disagree the highest rank wins."""


def stricter(a: Action, b: Action) -> Action:
    """Return the stricter of two actions (the first on a tie)."""
    return b if STRICTNESS[b] > STRICTNESS[a] else a


@dataclass(frozen=True, slots=True)
class Intent:
    """An execution intent from the advisor: what it wants to do to one symbol, and why.

    `kind` says what the order does to the position: `open` a new one (or add to it), `close` or
    `reduce` it, or `flip` it (close and open the other side). Closes and reduces only lower
    risk, so entry-only policies never block them. `entry` is the intended price; `stop` the
    stop-loss that sizing divides the risk budget by.
    """

    decision_id: str
    strategy: str
    instance: str | None
    symbol: str
    side: Side
    kind: IntentKind
    entry: Decimal
    stop: Decimal | None
    take_profit: Decimal | None
    size_hint: Decimal | None
    conviction: float
    spread_bps: float | None
    at: datetime

    @property
    def is_entry(self) -> bool:
        """Whether the intent adds risk (an open or a flip) rather than only lowering it."""
        return self.kind in ("open", "flip")


@dataclass(frozen=True, slots=True)
class Position:
    """An open position: `runtime` when the inspector opened it, else legacy (alert only)."""

    symbol: str
    strategy: str
    side: PositionSide
    size: Decimal
    entry: Decimal
    opened_at: datetime
    runtime: bool

    @property
    def notional(self) -> Decimal:
        """Size times entry price, in the quote currency."""
        return abs(self.size) * self.entry


@dataclass(frozen=True, slots=True)
class Portfolio:
    """The account as the governor sees it when it judges an intent.

    Counters (`trades_today`, `losing_trades_today`, `realised_today`) are for the trading day
    the service keeps in market time; `loss_streak` counts consecutive losing trades;
    `stand_down_until` is set while a STAND_DOWN holds (a far-future time for one cleared only by
    `bfx inspector resume`).
    """

    equity: Decimal
    peak_equity: Decimal
    day_start_equity: Decimal
    positions: tuple[Position, ...]
    open_orders_notional: Decimal
    trades_today: int
    losing_trades_today: int
    loss_streak: int
    last_loss_at: datetime | None
    realised_today: Decimal
    stand_down_until: datetime | None


@dataclass(frozen=True, slots=True)
class Verdict:
    """The governor's ruling: the action, the policy that decided it, why, and what it saw.

    `size` is the order amount on ALLOW (None otherwise); `until` is when a THROTTLE or
    STAND_DOWN ends (None when it lasts until cleared).
    """

    action: Action
    policy: str
    reason: str
    figures: Mapping[str, float | str] = field(default_factory=dict)
    size: Decimal | None = None
    until: datetime | None = None
