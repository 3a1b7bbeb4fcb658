"""What every policy is: a named, pure function of one `Context` to an `Outcome`.

Policies are modelled on freqtrade's protections: small, named, typed, each blind to the others.
A policy reads the intent, the portfolio, the clock and its limits (already merged for the
intent's symbol and strategy) and answers an action, a reason in words and the figures it saw.
The governor runs them all and keeps the strictest; a policy never sizes, stores or publishes.

`entry_only` policies guard new risk: the governor skips them for closes and reduces, so a
window, a cooldown or a spread never stops a position from being made smaller.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from types import MappingProxyType
from zoneinfo import ZoneInfo

from barfinex_cli.inspector.model import Action, Intent, Portfolio, Position
from barfinex_cli.inspector.policies.config import Limits, PolicyFile

Figures = Mapping[str, float | str]
NO_FIGURES: Figures = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Outcome:
    """One policy's answer: the action, why, what it saw and, for a pause, when it ends."""

    action: Action
    reason: str = ""
    figures: Figures = field(default_factory=lambda: NO_FIGURES)
    until: datetime | None = None


ALLOW = Outcome("ALLOW")
"""The shared answer of a policy with nothing to say (no figures: the hot path stays cheap)."""


@dataclass(frozen=True, slots=True)
class Book:
    """The open positions summed once per portfolio: what the exposure policies read.

    Positions are valued at their entry price and netted per symbol, as a netting venue holds them.
    """

    by_symbol: Mapping[str, Decimal]
    """Signed notional per symbol: + long, - short."""
    net: Decimal
    gross: Decimal

    @classmethod
    def of(cls, positions: Iterable[Position]) -> Book:
        """Sum `positions` into a book."""
        by_symbol: dict[str, Decimal] = {}
        for p in positions:
            value = abs(p.size) * p.entry
            signed = value if p.side == "long" else -value
            by_symbol[p.symbol] = by_symbol.get(p.symbol, _ZERO) + signed
        values = by_symbol.values()
        return cls(by_symbol, sum(values, _ZERO), sum(map(abs, values), _ZERO))


_ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class Context:
    """Everything a policy may look at for one intent.

    `book` sums the portfolio's positions (once per positions tuple, not once per policy);
    `order_notional` is the notional the sizing step arrived at (0 when sizing refused), so the
    exposure policies judge the book as it would stand after the order.
    """

    intent: Intent
    portfolio: Portfolio
    now: datetime
    limits: Limits
    rules: PolicyFile
    day_zone: ZoneInfo
    book: Book
    order_notional: Decimal = Decimal(0)
    order_signed: Decimal = Decimal(0)
    """Signed change to net exposure: + buys, - sells (a flip counts the close and the open)."""


@dataclass(frozen=True, slots=True)
class Policy:
    """A named evaluator and whether it guards entries only."""

    name: str
    evaluate: Callable[[Context], Outcome] = field(repr=False)
    entry_only: bool = True


def day_start(now: datetime, zone: ZoneInfo) -> datetime:
    """Return the UTC instant the trading day holding `now` began (local midnight in `zone`)."""
    local = now.astimezone(zone)
    return datetime.combine(local.date(), datetime.min.time(), tzinfo=zone).astimezone(UTC)


def next_day_start(now: datetime, zone: ZoneInfo) -> datetime:
    """Return the UTC instant the next trading day begins (the next local midnight in `zone`).

    Computed on the local calendar, so a 23- or 25-hour day at a DST change is respected.
    """
    local = now.astimezone(zone)
    tomorrow = local.date() + timedelta(days=1)
    return datetime.combine(tomorrow, datetime.min.time(), tzinfo=zone).astimezone(UTC)


def pct(part: Decimal, whole: Decimal) -> float:
    """Return `part` as a percentage of `whole` (infinity when `whole` is not positive)."""
    if whole <= 0:
        return float("inf")
    return float(part * 100 / whole)
