"""Reconciliation: the inspector's store against the provider's orders, positions and balances.

`diff` is pure: it compares what the store expects with what the provider reports and returns
each difference with what the configured rule does about it:

- an open order at the provider the store never sent (placed behind the inspector's back):
  kind `order`, rule `divergence_order`;
- an order the store holds live that the provider reports otherwise (a missed event): the
  provider is the truth about its own orders, so the store takes its state (`adopted_remote`);
- a runtime position whose size differs from the provider's, or that the provider no longer
  holds, and a position the store knows nothing of: kind `position`, rule `divergence_position`;
- a balance whose total moved without a fill the store saw: kind `balance`, rule
  `divergence_balance` (checked only when the store saw a balance before).

Rules: `alert` flags it (an `inspector.divergence` and an `inspector.alert`), `adopt` takes the
provider's figure into the store, `stand_down` flags it and stops new entries until cleared.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

from barfinex_cli.contracts.orders import OrderState, PositionChanged
from barfinex_cli.store.inspector import OrderRecord, PositionRecord

Rule = Literal["alert", "adopt", "stand_down"]
Kind = Literal["order", "position", "balance"]


@dataclass(frozen=True, slots=True)
class Difference:
    """One record where the store and the provider disagree, and the rule that applies."""

    kind: Kind
    key: str
    local: str | None
    remote: str | None
    rule: Rule | Literal["sync"]
    """`sync`: the store simply takes the provider's state of its own order."""
    remote_order: OrderState | None = None
    remote_position: PositionChanged | None = None

    @property
    def action(self) -> Literal["flagged", "adopted_remote"]:
        """What the inspector does, in `inspector.divergence` terms."""
        return "adopted_remote" if self.rule in ("adopt", "sync") else "flagged"


def _order_text(symbol: str, side: str, amount: Decimal, status: str | None) -> str:
    return f"{status or '?'} {side} {amount.normalize():f} {symbol}"


def _signed(position: PositionChanged) -> Decimal:
    return -position.size if position.side == "short" else position.size


def diff(
    *,
    orders: Sequence[OrderRecord],
    positions: Sequence[PositionRecord],
    remote_orders: Sequence[OrderState],
    remote_positions: Sequence[PositionChanged],
    rules: Mapping[Kind, Rule],
    balance: tuple[Decimal, Decimal] | None = None,
) -> list[Difference]:
    """Return every difference between the store and the provider.

    `balance` is (the total the store last saw, the provider's total) of the account's currency.
    """
    out: list[Difference] = []
    local = {o.client_order_id: o for o in orders}
    remote = {o.client_order_id: o for o in remote_orders}
    for cid, foreign in remote.items():
        if cid not in local and foreign.status == "open":
            text = _order_text(foreign.symbol, foreign.side, foreign.amount, foreign.status)
            out.append(Difference("order", cid, None, text, rules["order"], remote_order=foreign))
    for cid, order in local.items():
        if not order.live:
            continue
        state = remote.get(cid)
        mine = _order_text(order.symbol, order.side, order.amount, order.status)
        if state is None:
            if order.status == "open":
                out.append(Difference("order", cid, mine, None, rules["order"]))
            continue
        if state.status != order.status or state.filled != order.filled:
            theirs = _order_text(state.symbol, state.side, state.amount, state.status)
            out.append(Difference("order", cid, mine, theirs, "sync", remote_order=state))
    held = {p.symbol: p for p in remote_positions if p.size > 0 and p.side != "flat"}
    known = {p.symbol: p for p in positions}
    for symbol, position in known.items():
        want = position.size if position.side == "long" else -position.size
        found = held.get(symbol)
        have = _signed(found) if found is not None else Decimal(0)
        if want != have:
            out.append(Difference(
                "position", symbol, f"{want.normalize():f}", f"{have.normalize():f}",
                rules["position"], remote_position=found,
            ))  # fmt: skip
    for symbol, stranger in held.items():
        if symbol not in known:
            out.append(Difference(
                "position", symbol, None, f"{_signed(stranger).normalize():f}", rules["position"],
                remote_position=stranger,
            ))  # fmt: skip
    if balance is not None and balance[0] != balance[1]:
        expected, reported = balance
        out.append(Difference(
            "balance", "total", f"{expected.normalize():f}", f"{reported.normalize():f}",
            rules["balance"],
        ))  # fmt: skip
    return out


def describe(difference: Difference) -> str:
    """Return one line: what differs and what the rule does."""
    does = {
        "alert": "alert only",
        "adopt": "take the provider's figure",
        "stand_down": "alert and stand down",
        "sync": "take the provider's state of our order",
    }[difference.rule]
    return (
        f"{difference.kind} {difference.key}: store {difference.local or '-'}, provider "
        f"{difference.remote or '-'} -> {does}"
    )
