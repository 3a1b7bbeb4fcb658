"""One position per symbol, kept from the inspector's own fills: adds, reduces, closes and flips.

The venue nets every fill of an account into one position per symbol, so the inspector keeps
exactly that too. A position is opened by a decision's entry and keeps that decision as its
identity (its guards and its close are named after it); a later entry on the same side adds to
it, an entry on the other side reduces it, closes it or, past its size, flips it, and a guard or
a close reduces it. Its size is the sum of those fills, never a position event's snapshot: an
event read late (a flat one from before an add) would otherwise close what is held.

Adding takes the tighter stop of the two (a stop the trailing stop or break-even already moved
is never loosened, and neither part risks more than it was sized for) and the newer decision's
take-profit, except a level the add's fill price already passed (it would close everything at
once); the guards then move to the next generation for the whole size (`positions`).

Pure: values in, values out; the service applies them (`positions`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from decimal import Decimal

from barfinex_cli.inspector.levels import crossed
from barfinex_cli.store.inspector import PositionRecord

ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class Reduced:
    """What a fill against a position did: the position after it, and what was left over."""

    position: PositionRecord
    """The position with the closed part taken off (size 0 when it is flat now)."""
    closed: Decimal
    """How much of the position the fill closed."""
    rest: Decimal
    """How much of the fill was beyond the position's size (opens the other side: a flip)."""


def side_of(order_side: str) -> str:
    """Return the position side a fill of `order_side` builds: long for a buy."""
    return "long" if order_side == "buy" else "short"


def tighter(side: str, a: Decimal | None, b: Decimal | None) -> Decimal | None:
    """Return the stop that risks less: the higher one for a long, the lower for a short."""
    if a is None or b is None:
        return a if b is None else b
    return max(a, b) if side == "long" else min(a, b)


def add(
    held: PositionRecord,
    amount: Decimal,
    price: Decimal,
    stop: Decimal | None,
    take_profit: Decimal | None,
) -> PositionRecord:
    """Return `held` grown by a same-side fill of `amount` at `price` (entry averaged).

    `stop` and `take_profit` are the adding decision's: the tighter stop wins, the newer
    take-profit replaces the old one (kept when the decision named none). A level the add's own
    fill price already passed (a stop at or beyond it, a take-profit reached) is ignored: it
    would fire at once and close the whole position, the part held before included.
    """
    bad_stop, bad_target = crossed(held.side == "long", price, stop, take_profit)
    stop = None if bad_stop else stop
    take_profit = None if bad_target else take_profit
    size = held.size + amount
    entry = (held.size * held.entry + amount * price) / size if size > 0 else price
    return replace(
        held,
        size=size,
        entry=entry.quantize(Decimal("1e-8")),
        stop=tighter(held.side, held.stop, stop),
        take_profit=take_profit if take_profit is not None else held.take_profit,
    )


def reduce(held: PositionRecord, amount: Decimal, price: Decimal) -> Reduced:
    """Return `held` after an opposite fill of `amount` at `price`, with its realised P&L."""
    closed = min(amount, held.size)
    direction = 1 if held.side == "long" else -1
    realised = (price - held.entry) * closed * direction
    after = replace(held, size=held.size - closed, realised=held.realised + realised)
    return Reduced(after, closed, amount - closed)


def fill_price(
    filled: Decimal,
    average: Decimal | None,
    filled_before: Decimal,
    average_before: Decimal | None,
    fallback: Decimal,
) -> Decimal:
    """Return the price of the newest part of an order's fills from its running averages."""
    amount = filled - filled_before
    if average is None or amount <= 0:
        return fallback
    if filled_before <= 0 or average_before is None:
        return average
    return (filled * average - filled_before * average_before) / amount
