"""Netting fills into one position: adds, reduces, flips and the levels an add keeps. Pure."""

from __future__ import annotations

from decimal import Decimal

from barfinex_cli.inspector.netting import add, fill_price, reduce, tighter
from barfinex_cli.store.inspector import PositionRecord

LONG = PositionRecord(
    symbol="BTC/USDT", side="long", size=Decimal(1), entry=Decimal(100), opened_ms=0,
    decision_id="d", stop=Decimal(98), take_profit=Decimal(104),
)  # fmt: skip


def test_an_add_averages_the_entry_keeps_the_tighter_stop_and_takes_the_newer_take_profit() -> None:
    grown = add(LONG, Decimal(1), Decimal(102), Decimal(99), Decimal(106))
    assert (grown.size, grown.entry) == (Decimal(2), Decimal(101))
    assert (grown.stop, grown.take_profit) == (Decimal(99), Decimal(106))
    looser = add(LONG, Decimal(1), Decimal(100), Decimal(95), None)
    assert (looser.stop, looser.take_profit) == (Decimal(98), Decimal(104))
    assert grown.decision_id == "d"  # the position keeps the name of the decision that opened it


def test_levels_an_adds_own_fill_already_passed_leave_the_positions_levels_as_they_were() -> None:
    stale = add(LONG, Decimal(1), Decimal(101), Decimal("101.5"), Decimal("100.5"))
    assert (stale.stop, stale.take_profit) == (Decimal(98), Decimal(104))


def test_the_tighter_stop_is_the_higher_for_a_long_and_the_lower_for_a_short() -> None:
    assert tighter("long", Decimal(98), Decimal(99)) == Decimal(99)
    assert tighter("short", Decimal(102), Decimal(101)) == Decimal(101)
    assert tighter("long", None, Decimal(99)) == Decimal(99)


def test_an_opposite_fill_reduces_closes_or_flips_and_books_the_closed_parts_pnl() -> None:
    part = reduce(LONG, Decimal("0.4"), Decimal(105))
    assert (part.position.size, part.closed, part.rest) == (Decimal("0.6"), Decimal("0.4"), 0)
    assert part.position.realised == Decimal(2)
    flip = reduce(LONG, Decimal("1.5"), Decimal(97))
    assert (flip.position.size, flip.closed, flip.rest) == (0, Decimal(1), Decimal("0.5"))
    assert flip.position.realised == Decimal(-3)


def test_the_price_of_an_orders_newest_fill_comes_from_its_running_averages() -> None:
    # 1 at 100, then 1 more: the average 101 means the second filled at 102
    assert fill_price(Decimal(2), Decimal(101), Decimal(1), Decimal(100), Decimal(0)) == Decimal(
        102
    )
    assert fill_price(Decimal(1), Decimal(100), Decimal(0), None, Decimal(0)) == Decimal(100)
    assert fill_price(Decimal(1), None, Decimal(0), None, Decimal(99)) == Decimal(99)
