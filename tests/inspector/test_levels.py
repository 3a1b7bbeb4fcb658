"""Price levels (pure): an entry's stop and take-profit on their own sides of its price."""

from __future__ import annotations

from dataclasses import replace

import pytest

from barfinex_cli.inspector.levels import wrong_side
from inspector.samples import INTENT, D


@pytest.mark.parametrize(
    ("side", "stop", "take_profit", "wrong"),
    [
        ("buy", "98", "106", None),
        ("sell", "102", "94", None),
        ("buy", "98", "99", "take-profit"),
        ("sell", "102", "104", "take-profit"),
        ("buy", "101", "106", "stop"),
        ("sell", "99", "94", "stop"),
        ("buy", "101", "99", "stop and take-profit"),
        ("buy", "98", "100", "take-profit"),  # at the price is as wrong: it fills at once
    ],
)
def test_a_stop_or_take_profit_on_the_wrong_side_blocks_the_entry_naming_both(
    side: str, stop: str, take_profit: str, wrong: str | None
) -> None:
    intent = replace(INTENT, side=side, stop=D(stop), take_profit=D(take_profit))  # type: ignore[arg-type]
    verdict = wrong_side(intent)
    if wrong is None:
        assert verdict is None
        return
    assert verdict is not None and (verdict.action, verdict.policy) == ("BLOCK", "price_levels")
    assert verdict.reason.startswith(f"{wrong} on the wrong side of the price: a {side} at 100")
    assert f"(stop {stop}, take-profit {take_profit})" in verdict.reason


def test_an_entry_without_a_take_profit_is_judged_by_its_stop_alone() -> None:
    assert wrong_side(replace(INTENT, take_profit=None)) is None
    blocked = wrong_side(replace(INTENT, stop=D(101), take_profit=None))
    assert blocked is not None and "(stop 101, take-profit none)" in blocked.reason


def test_exits_carry_no_levels_and_are_never_judged_here() -> None:
    for kind in ("close", "reduce"):
        assert wrong_side(replace(INTENT, kind=kind, stop=D(0), take_profit=D(0))) is None  # type: ignore[arg-type]
