"""Price levels: an entry's stop and take-profit must lie on their own sides of its price.

A buy's stop is below the entry and its take-profit above it; a sell's the other way round. A
take-profit on the wrong side is a resting limit order the market already passed: it fills the
moment it is placed and closes the trade at once (a sell at 2332 with a take-profit at 2632 was
allowed and closed by its own take-profit). A stop on the wrong side fires at once the same way.
Such an intent is refused before any policy sizes it, with a reason naming the price and both
levels. Exits (close, reduce) carry no levels and are never judged here.
"""

from __future__ import annotations

from decimal import Decimal

from barfinex_cli.inspector.model import Intent, Verdict

POLICY = "price_levels"


def _text(value: Decimal | None) -> str:
    return "none" if value is None else f"{value:f}"


def crossed(
    long: bool, price: Decimal, stop: Decimal | None, target: Decimal | None
) -> tuple[bool, bool]:
    """Tell whether the stop and the take-profit are on the wrong side of `price` (fire at once)."""
    bad_stop = stop is not None and (stop >= price if long else stop <= price)
    bad_target = target is not None and (target <= price if long else target >= price)
    return bad_stop, bad_target


def wrong_side(intent: Intent) -> Verdict | None:
    """Return a BLOCK naming the levels when the stop or take-profit is on the wrong side."""
    if not intent.is_entry:
        return None
    buy = intent.side == "buy"
    entry, stop, target = intent.entry, intent.stop, intent.take_profit
    bad_stop, bad_target = crossed(buy, entry, stop, target)
    if not (bad_stop or bad_target):
        return None
    wrong = " and ".join(
        name for name, bad in (("stop", bad_stop), ("take-profit", bad_target)) if bad
    )
    want = "below" if buy else "above"
    other = "above" if buy else "below"
    figures: dict[str, float | str] = {"entry": float(entry)}
    if stop is not None:
        figures["stop"] = float(stop)
    if target is not None:
        figures["take_profit"] = float(target)
    return Verdict(
        action="BLOCK",
        policy=POLICY,
        reason=(
            f"{wrong} on the wrong side of the price: a {intent.side} at {_text(entry)} needs "
            f"its stop {want} and its take-profit {other} it (stop {_text(stop)}, take-profit "
            f"{_text(target)}); it would fill at once"
        ),
        figures=figures,
    )
