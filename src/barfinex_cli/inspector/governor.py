"""The governor: every policy judges an intent, the strictest answer is the verdict.

Pure decision code, no IO: the service hands it an intent, the portfolio and the clock's `now`
(market time in a replay) and publishes what it returns. An entry is sized first (risk per trade
over the stop distance, within the size caps) so the exposure policies can judge the book as it
would stand after the order; then every policy runs — none short-circuits, so the figures of a
refusal are complete — and the strictest action wins: ALLOW < BLOCK < THROTTLE < STAND_DOWN <
CLOSE_ALL, the earlier policy naming the verdict on a tie. Closes and reduces skip the entry-only
policies: nothing but a CLOSE_ALL stands in the way of making a position smaller.

`check` runs the account-level limits with no intent, for the service to call on its clock: a
drawdown past its limit answers CLOSE_ALL or STAND_DOWN (as the file says) before any decision
arrives. Policies are immutable; on a reload the service builds a new Governor.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

from barfinex_cli.inspector.model import STRICTNESS, Intent, Portfolio, Position, Verdict
from barfinex_cli.inspector.policies import ALL_POLICIES, Context, Outcome, Policy, PolicySet
from barfinex_cli.inspector.policies.base import Book
from barfinex_cli.inspector.policies.drawdown import (
    daily_loss_breach,
    peak_breach,
    profit_cap_reached,
)
from barfinex_cli.inspector.policies.hold import expired
from barfinex_cli.inspector.policies.sizing import size_intent


class Governor:
    """Judge intents and the account against one `PolicySet`."""

    def __init__(self, policies: PolicySet, *, evaluators: Sequence[Policy] = ALL_POLICIES) -> None:
        """Judge with `policies`; `evaluators` is every policy family unless a test narrows it."""
        self._set = policies
        self._all = tuple(evaluators)
        self._exits = tuple(p for p in self._all if not p.entry_only)
        self._book_key: tuple[Position, ...] = ()
        self._book_cache = Book.of(())

    def _book(self, portfolio: Portfolio) -> Book:
        # The service hands the same positions tuple until a position changes: sum it once.
        positions = portfolio.positions
        if positions is not self._book_key:
            self._book_key, self._book_cache = positions, Book.of(positions)
        return self._book_cache

    @property
    def policies(self) -> PolicySet:
        """The policy set this governor judges with."""
        return self._set

    @property
    def names(self) -> tuple[str, ...]:
        """The names of the policies evaluated for an entry, sizing included, in order."""
        return ("risk_per_trade", "position_size", *(p.name for p in self._all))

    def evaluate(self, intent: Intent, portfolio: Portfolio, now: datetime) -> Verdict:
        """Return the verdict on `intent`: the strictest policy's answer, sized on ALLOW."""
        policies = self._set
        limits = policies.limits(intent.symbol, intent.strategy)
        sized = size_intent(intent, portfolio, limits)
        notional = sized.size * intent.entry if sized.size is not None else intent.entry * 0
        ctx = Context(
            intent,
            portfolio,
            now,
            limits,
            policies.rules,
            policies.day_zone,
            self._book(portfolio),
            notional,
            sized.signed,
        )
        name, worst = sized.policy, sized.outcome
        rank = STRICTNESS[worst.action]
        refusals = [name] if rank else []
        for policy in self._all if intent.is_entry else self._exits:
            outcome = policy.evaluate(ctx)
            if outcome.action == "ALLOW":
                continue
            refusals.append(policy.name)
            if STRICTNESS[outcome.action] > rank:
                name, worst, rank = policy.name, outcome, STRICTNESS[outcome.action]
        if not rank:
            return Verdict("ALLOW", name, worst.reason, worst.figures, sized.size)
        figures = dict(worst.figures)  # a plain dict: the service serialises it
        if len(refusals) > 1:
            figures["also"] = ", ".join(r for r in refusals if r != name)
        return Verdict(worst.action, name, worst.reason, figures, None, worst.until)

    def check(self, portfolio: Portfolio, now: datetime) -> Verdict | None:
        """Return the verdict an account-level breach calls for now, or None when there is none.

        A CLOSE_ALL with no runtime-managed position left to close becomes a STAND_DOWN (the
        breach still holds entries back), and a STAND_DOWN already in force for at least as
        long is not repeated, so the service can call this on every tick and act on what it gets.
        """
        policies = self._set
        found: list[tuple[str, Outcome]] = []
        for name, outcome in (
            ("peak_drawdown", peak_breach(portfolio, policies.rules, now)),
            ("daily_loss", daily_loss_breach(portfolio, policies.rules, policies.day_zone, now)),
            (
                "daily_profit_cap",
                profit_cap_reached(portfolio, policies.rules, policies.day_zone, now),
            ),
        ):
            if outcome is None:
                continue
            if outcome.action == "CLOSE_ALL" and not any(p.runtime for p in portfolio.positions):
                outcome = Outcome(
                    "STAND_DOWN",
                    outcome.reason + "; no runtime position left to close, standing down",
                    outcome.figures,
                    outcome.until,
                )
            if outcome.action == "STAND_DOWN" and _in_force(portfolio, now, outcome.until):
                continue
            found.append((name, outcome))
        if not found:
            return None
        name, worst = max(found, key=lambda item: STRICTNESS[item[1].action])
        return Verdict(worst.action, name, worst.reason, dict(worst.figures), None, worst.until)

    def expired(self, positions: Iterable[Position], now: datetime) -> list[Position]:
        """Return the runtime-managed positions held longer than their `hold.max_hold_minutes`."""
        return expired(positions, now, self._set.limits)


def _in_force(portfolio: Portfolio, now: datetime, until: datetime | None) -> bool:
    current = portfolio.stand_down_until
    if current is None or current <= now:
        return False
    return until is None or current >= until
