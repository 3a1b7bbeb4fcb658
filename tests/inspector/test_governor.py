"""The governor: sizing, the strictest-wins rule, exits past entry-only policies, account checks."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from textwrap import dedent

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from barfinex_cli.inspector.governor import Governor
from barfinex_cli.inspector.model import STRICTNESS, Intent, Portfolio, Position, stricter
from barfinex_cli.inspector.policies import (
    ALL_POLICIES,
    Context,
    default_policy_path,
    load_policies,
    parse_policies,
)
from barfinex_cli.inspector.policies.base import Book
from barfinex_cli.inspector.policies.sizing import size_intent
from inspector.samples import FLAT, INTENT, NOW, D


def governor(text: str = "") -> Governor:
    return Governor(parse_policies(dedent(text).encode(), "policies.toml"))


def held(symbol: str = "BTC/USDT", side: str = "long", size: str = "1", strategy: str = "trend",
         runtime: bool = True, age: timedelta = timedelta(hours=1)) -> Position:  # fmt: skip
    return Position(symbol, strategy, side, D(size), D(100), NOW - age, runtime)  # type: ignore[arg-type]


# --- sizing ---------------------------------------------------------------------------------


def test_an_entry_is_sized_from_risk_per_trade_over_the_stop_distance() -> None:
    verdict = governor("[risk]\nper_trade_pct = 2\n").evaluate(INTENT, FLAT, NOW)
    assert (verdict.action, verdict.policy) == ("ALLOW", "risk_per_trade")
    assert verdict.size == D(100)  # 200 at risk / 2 per unit
    assert verdict.figures["risk_budget"] == 200.0
    assert verdict.figures["stop_distance"] == 2.0
    short = replace(INTENT, side="sell", entry=D(100), stop=D(104))
    assert governor().evaluate(short, FLAT, NOW).size == D(25)


@pytest.mark.parametrize(
    ("text", "hint", "size", "bound"),
    [
        ("[size]\nmax_notional = 2000\n", None, D(20), "max_notional 2000"),
        ("[size]\nmax_equity_pct = 10\n", None, D(10), "max_equity_pct 10%"),
        ("[size]\nmax_notional = 2000\n", D(7), D(7), "the advisor's size hint"),
        ("[size]\nstep = 0.1\n[risk]\nper_trade_pct = 0.5\n", D("33.333"), D("25.0"),
         "risk budget"),
        ("[size]\nstep = 0.1\n", D("33.333"), D("33.3"), "the advisor's size hint"),
    ],
)  # fmt: skip
def test_the_size_is_capped_by_the_hint_notional_and_equity_share_then_rounded(
    text: str, hint: Decimal | None, size: Decimal, bound: str
) -> None:
    verdict = governor(text).evaluate(replace(INTENT, size_hint=hint), FLAT, NOW)
    assert verdict.action == "ALLOW"
    assert verdict.size == size
    assert verdict.figures["bound_by"] == bound


def test_an_unrounded_size_is_rounded_down_to_8_decimals_and_the_reason_reads_plainly() -> None:
    odd = replace(INTENT, entry=D("33969.61"), stop=D("33800.03"))  # 100 / 169.58 is endless
    verdict = governor("[risk]\nper_trade_pct = 1\n").evaluate(odd, FLAT, NOW)
    assert verdict.action == "ALLOW" and verdict.size is not None
    assert verdict.size == D("0.58969218") and verdict.size.as_tuple().exponent == -8
    assert verdict.size * (odd.entry - D("33800.03")) <= D(100)  # never over the risk cap
    assert verdict.reason == "size 0.58969218 (20031.61 notional) set by the risk budget"
    hinted = governor().evaluate(replace(INTENT, size_hint=D(7)), FLAT, NOW)
    assert hinted.reason == "size 7 (700.00 notional) set by the advisor's size hint"


def test_an_entry_sized_below_the_minimum_is_refused() -> None:
    verdict = governor("[size]\nmin_notional = 100\nmax_notional = 5000\n").evaluate(
        replace(INTENT, size_hint=D("0.5")), FLAT, NOW
    )
    assert (verdict.action, verdict.policy) == ("BLOCK", "position_size")
    assert (
        verdict.reason == "sized at 50.00 notional (the advisor's size hint), below the minimum 100"
    )


def test_a_decision_with_no_stop_is_blocked_with_the_reason() -> None:
    verdict = governor().evaluate(replace(INTENT, stop=None), FLAT, NOW)
    assert (verdict.action, verdict.policy, verdict.size) == ("BLOCK", "risk_per_trade", None)
    assert "the decision has no stop" in verdict.reason


@pytest.mark.parametrize(
    ("intent", "portfolio", "reason"),
    [
        (replace(INTENT, stop=D(101)), FLAT, "stop 101 is at or above the entry 100 for a buy"),
        (replace(INTENT, side="sell", stop=D(99)), FLAT,
         "stop 99 is at or below the entry 100 for a sell"),
        (INTENT, replace(FLAT, equity=D(0)), "equity is 0: nothing to risk"),
    ],
)  # fmt: skip
def test_an_entry_that_cannot_be_sized_is_blocked(
    intent: Intent, portfolio: Portfolio, reason: str
) -> None:
    verdict = governor().evaluate(intent, portfolio, NOW)
    assert (verdict.action, verdict.policy, verdict.reason) == ("BLOCK", "risk_per_trade", reason)


# --- exits ----------------------------------------------------------------------------------

EVERYTHING_SHUT = """
    [assets]
    excluded = ["BTC/USDT"]
    [market]
    max_spread_bps = 1
    [cooldown]
    after_loss_minutes = 60
    [activity]
    max_trades_per_day = 1
    [[windows.allow]]
    days = ["sun"]
    start = "00:00"
    end = "01:00"
"""
SHUT_BOOK = replace(FLAT, positions=(held(size="2"),), trades_today=5,
                    last_loss_at=NOW, stand_down_until=NOW + timedelta(hours=3))  # fmt: skip


def test_closes_and_reduces_pass_every_entry_only_policy() -> None:
    gov = governor(EVERYTHING_SHUT)
    close = replace(INTENT, side="sell", kind="close", stop=None, spread_bps=50.0)
    verdict = gov.evaluate(close, SHUT_BOOK, NOW)
    assert (verdict.action, verdict.policy, verdict.size) == ("ALLOW", "exit", D(2))
    reduce = replace(close, kind="reduce", size_hint=D("0.5"))
    assert gov.evaluate(reduce, SHUT_BOOK, NOW).size == D("0.5")
    assert gov.evaluate(replace(reduce, size_hint=D(9)), SHUT_BOOK, NOW).size == D(2)
    odd = gov.evaluate(replace(reduce, size_hint=D("0.123456789123")), SHUT_BOOK, NOW)
    assert odd.size == D("0.12345678") and odd.reason == "reduce 0.12345678 of 2 held"
    opening = gov.evaluate(INTENT, SHUT_BOOK, NOW)
    assert opening.action == "STAND_DOWN"  # the same book refuses an entry


@pytest.mark.parametrize(
    ("intent", "reason"),
    [
        (replace(INTENT, kind="close"), "no short position of trend in BTC/USDT to close"),
        (replace(INTENT, side="sell", kind="close", strategy="other"),
         "no long position of other in BTC/USDT to close"),
        (replace(INTENT, side="sell", kind="reduce"),
         "a reduce needs a positive size_hint (how much to take off)"),
        (replace(INTENT, side="sell", kind="reduce", size_hint=D("0.000000001")),
         "a reduce needs a positive size_hint (how much to take off)"),
    ],
)  # fmt: skip
def test_an_exit_with_nothing_to_exit_is_blocked(intent: Intent, reason: str) -> None:
    verdict = governor().evaluate(intent, replace(FLAT, positions=(held(),)), NOW)
    assert (verdict.action, verdict.policy, verdict.reason) == ("BLOCK", "exit", reason)


def test_a_flip_closes_the_held_side_and_opens_the_other_as_one_order() -> None:
    book = replace(FLAT, positions=(held(side="short", size="3"),))
    flip = replace(INTENT, kind="flip")
    verdict = governor().evaluate(flip, book, NOW)
    assert verdict.action == "ALLOW"
    assert verdict.size == D(53)  # 3 to close + 50 sized from the stop
    assert verdict.figures["close_size"] == 3.0
    refused = governor("[assets]\nexcluded = ['BTC/USDT']\n").evaluate(flip, book, NOW)
    assert refused.action == "BLOCK"  # a flip opens risk, so entry policies judge it


# --- strictest wins -------------------------------------------------------------------------


def test_strictness_order_is_allow_block_throttle_stand_down_close_all() -> None:
    assert sorted(STRICTNESS, key=STRICTNESS.__getitem__) == [
        "ALLOW", "BLOCK", "THROTTLE", "STAND_DOWN", "CLOSE_ALL"
    ]  # fmt: skip
    assert stricter("THROTTLE", "BLOCK") == "THROTTLE"
    assert stricter("BLOCK", "CLOSE_ALL") == "CLOSE_ALL"


def test_the_strictest_action_wins_and_the_others_are_named() -> None:
    text = """
        [market]
        max_spread_bps = 1
        [cooldown]
        after_loss_minutes = 60
        [activity]
        max_loss_streak = 2
        [drawdown]
        from_peak_pct = 50
    """
    book = replace(FLAT, loss_streak=2, last_loss_at=NOW - timedelta(minutes=1))
    verdict = governor(text).evaluate(INTENT, book, NOW)
    assert (verdict.action, verdict.policy) == ("STAND_DOWN", "loss_streak")
    assert verdict.figures["also"] == "cooldown, spread"
    assert verdict.size is None
    crashed = replace(book, peak_equity=D(25_000))
    worst = governor(text).evaluate(INTENT, crashed, NOW)
    assert (worst.action, worst.policy) == ("CLOSE_ALL", "peak_drawdown")
    assert worst.figures["also"] == "loss_streak, cooldown, spread"


def test_on_a_tie_the_earlier_policy_names_the_verdict() -> None:
    text = "[assets]\nexcluded = ['BTC/USDT']\n[market]\nmax_spread_bps = 1\n"
    verdict = governor(text).evaluate(INTENT, FLAT, NOW)
    assert (verdict.action, verdict.policy, verdict.figures["also"]) == (
        "BLOCK", "excluded_asset", "spread"
    )  # fmt: skip


def test_a_close_all_breach_applies_to_exits_but_a_stand_down_does_not() -> None:
    close = replace(INTENT, side="sell", kind="close")
    book = replace(FLAT, positions=(held(),), equity=D(8_000))
    closing = governor("[drawdown]\nfrom_peak_pct = 10\n").evaluate(close, book, NOW)
    assert closing.action == "CLOSE_ALL"
    standing = governor("[drawdown]\ndaily_loss_pct = 10\n").evaluate(close, book, NOW)
    assert (standing.action, standing.size) == ("ALLOW", D(1))


def test_every_entry_runs_at_least_fifteen_named_policies() -> None:
    names = governor().names
    assert len(names) == len(set(names)) >= 15
    assert {p.name for p in ALL_POLICIES if not p.entry_only} == {"daily_loss", "peak_drawdown"}


# --- account checks -------------------------------------------------------------------------


def test_check_closes_all_on_a_peak_breach_while_runtime_positions_are_open() -> None:
    gov = governor("[drawdown]\nfrom_peak_pct = 10\n")
    book = replace(FLAT, equity=D(8_900), positions=(held(), held("ETH/USDT", runtime=False)))
    verdict = gov.check(book, NOW)
    assert verdict is not None
    assert (verdict.action, verdict.policy, verdict.until) == ("CLOSE_ALL", "peak_drawdown", None)
    assert verdict.figures["drawdown_pct"] == pytest.approx(11.0)
    legacy_only = replace(book, positions=(held("ETH/USDT", runtime=False),))
    flat = gov.check(legacy_only, NOW)
    assert flat is not None and flat.action == "STAND_DOWN"
    assert "no runtime position left to close" in flat.reason
    assert gov.check(replace(FLAT, equity=D(9_100)), NOW) is None


def test_check_stands_down_on_daily_loss_once_and_not_again_while_in_force() -> None:
    gov = governor("[drawdown]\ndaily_loss_pct = 2\nstand_down_minutes = 30\n")
    down = replace(FLAT, equity=D(9_750))
    verdict = gov.check(down, NOW)
    assert verdict is not None
    assert (verdict.action, verdict.policy) == ("STAND_DOWN", "daily_loss")
    assert verdict.until == NOW + timedelta(minutes=30)
    assert gov.check(replace(down, stand_down_until=verdict.until), NOW) is None
    later = NOW + timedelta(minutes=31)
    assert gov.check(replace(down, stand_down_until=verdict.until), later) is not None


def test_check_reports_the_strictest_breach() -> None:
    gov = governor("[drawdown]\ndaily_loss_pct = 2\nfrom_peak_pct = 5\non_peak = 'STAND_DOWN'\n"
                   "on_daily_loss = 'CLOSE_ALL'\n")  # fmt: skip
    verdict = gov.check(replace(FLAT, equity=D(9_000), positions=(held(),)), NOW)
    assert verdict is not None and (verdict.action, verdict.policy) == ("CLOSE_ALL", "daily_loss")


def test_check_stands_down_at_the_daily_profit_cap() -> None:
    gov = governor("timezone = 'Asia/Tokyo'\n[drawdown]\ndaily_profit_cap_pct = 4\n")
    verdict = gov.check(replace(FLAT, realised_today=D(400)), NOW)
    assert verdict is not None and verdict.action == "STAND_DOWN"
    assert verdict.until == datetime(2026, 11, 26, 15, tzinfo=UTC)  # midnight in Tokyo


# --- hold time ------------------------------------------------------------------------------


def test_expired_lists_runtime_positions_held_past_their_limit() -> None:
    gov = governor(
        "[hold]\nmax_hold_minutes = 120\n[strategies.swing.hold]\nmax_hold_minutes = 600\n"
    )
    old = held(age=timedelta(hours=3))
    young = held("ETH/USDT", age=timedelta(minutes=30))
    legacy = held("SOL/USDT", runtime=False, age=timedelta(days=3))
    swing = held("DOGE/USDT", strategy="swing", age=timedelta(hours=3))
    assert gov.expired([old, young, legacy, swing], NOW) == [old]
    assert gov.expired([swing], NOW + timedelta(hours=7)) == [swing]
    assert governor().expired([old, legacy], NOW) == []


# --- the rule, over wide inputs -------------------------------------------------------------

DEFAULT = Governor(load_policies(default_policy_path()))
money = st.decimals(min_value=1, max_value=1_000_000, places=2)


@st.composite
def situations(draw: st.DrawFn) -> tuple[Intent, Portfolio, datetime]:
    now = NOW + timedelta(minutes=draw(st.integers(0, 60 * 24 * 14)))
    symbols = st.sampled_from(["BTC/USDT", "ETH/USDT", "SOL/USDT", "DOGE/USDT"])
    positions = tuple(
        Position(draw(symbols), draw(st.sampled_from(["trend", "swing"])),
                 draw(st.sampled_from(["long", "short"])), draw(money) / 1000, draw(money),
                 now - timedelta(minutes=draw(st.integers(0, 5000))), draw(st.booleans()))
        for _ in range(draw(st.integers(0, 6)))
    )  # fmt: skip
    equity = draw(money)
    book = Portfolio(
        equity=equity, peak_equity=equity + draw(money) / 10, day_start_equity=draw(money),
        positions=positions, open_orders_notional=draw(money) / 10,
        trades_today=draw(st.integers(0, 60)), losing_trades_today=draw(st.integers(0, 10)),
        loss_streak=draw(st.integers(0, 6)),
        last_loss_at=draw(st.none() | st.just(now - timedelta(minutes=draw(st.integers(0, 200))))),
        realised_today=draw(money) - 500_000 if draw(st.booleans()) else Decimal(0),
        stand_down_until=draw(st.none() | st.just(now + timedelta(minutes=5))),
    )  # fmt: skip
    entry = draw(money)
    side = draw(st.sampled_from(["buy", "sell"]))
    stop = draw(st.none() | st.just(entry * Decimal("0.98" if side == "buy" else "1.02")))
    intent = Intent(
        decision_id="d", strategy=draw(st.sampled_from(["trend", "swing"])), instance=None,
        symbol=draw(symbols), side=side,
        kind=draw(st.sampled_from(["open", "close", "reduce", "flip"])), entry=entry, stop=stop,
        take_profit=None, size_hint=draw(st.none() | money.map(lambda m: m / 100)),
        conviction=0.5, spread_bps=draw(st.none() | st.floats(0, 60)), at=now,
    )  # fmt: skip
    return intent, book, now


@settings(max_examples=300, deadline=None)
@given(situations())
def test_the_verdict_is_the_strictest_of_every_policy_evaluated(
    situation: tuple[Intent, Portfolio, datetime],
) -> None:
    intent, book, now = situation
    verdict = DEFAULT.evaluate(intent, book, now)
    policies = DEFAULT.policies
    limits = policies.limits(intent.symbol, intent.strategy)
    sized = size_intent(intent, book, limits)
    notional = (sized.size or 0) * intent.entry
    ctx = Context(intent, book, now, limits, policies.rules, policies.day_zone,
                  Book.of(book.positions), notional, sized.signed)  # fmt: skip
    judged = [p for p in ALL_POLICIES if intent.is_entry or not p.entry_only]
    actions = [sized.outcome.action, *(p.evaluate(ctx).action for p in judged)]
    assert verdict.action == max(actions, key=STRICTNESS.__getitem__)
    if verdict.action == "ALLOW":
        assert verdict.size is not None and verdict.size > 0
    else:
        assert verdict.size is None and verdict.reason
    if not intent.is_entry and verdict.action != "ALLOW":
        assert verdict.action == "CLOSE_ALL" or verdict.policy == "exit"
    json.dumps(dict(verdict.figures))


def test_the_policy_set_describes_itself_as_json() -> None:
    described = DEFAULT.policies.describe()
    assert described["source"] == str(default_policy_path())
    assert described["digest"] == DEFAULT.policies.digest
    assert described["drawdown"]["on_peak"] == "CLOSE_ALL"
    assert json.loads(json.dumps(described)) == described
