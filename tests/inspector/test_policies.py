"""The policy file and every policy family: loading, overrides, each evaluator, windows, reloads."""

from __future__ import annotations

import os
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from textwrap import dedent

import pytest

from barfinex_cli.errors import ConfigError
from barfinex_cli.inspector.governor import Governor
from barfinex_cli.inspector.model import Intent, Portfolio, Position, Verdict
from barfinex_cli.inspector.policies import (
    PolicySet,
    PolicyWatcher,
    default_policy_path,
    load_policies,
    parse_policies,
)
from barfinex_cli.inspector.policies.market import worst_price
from inspector.samples import FLAT, NOW, D
from inspector.samples import INTENT as _INTENT

INTENT = replace(_INTENT, instance=None)


INTENT = Intent(
    decision_id="d-1",
    strategy="trend",
    instance=None,
    symbol="BTC/USDT",
    side="buy",
    kind="open",
    entry=D(100),
    stop=D(98),
    take_profit=D(106),
    size_hint=None,
    conviction=0.7,
    spread_bps=2.0,
    at=NOW,
)


def policies(text: str) -> PolicySet:
    return parse_policies(dedent(text).encode(), "policies.toml")


def held(symbol: str = "BTC/USDT", side: str = "long", size: str = "1", entry: str = "100",
         strategy: str = "trend", runtime: bool = True) -> Position:  # fmt: skip
    return Position(symbol, strategy, side, D(size), D(entry), NOW - timedelta(hours=1), runtime)  # type: ignore[arg-type]


def judge(text: str, intent: Intent = INTENT, portfolio: Portfolio = FLAT,
          now: datetime = NOW) -> Verdict:  # fmt: skip
    return Governor(policies(text)).evaluate(intent, portfolio, now)


# --- the file -------------------------------------------------------------------------------


def test_default_policy_file_ships_inside_the_package_and_loads() -> None:
    path = default_policy_path()
    assert path.parent == Path(__file__).parents[2] / "src" / "barfinex_cli" / "inspector"
    loaded = load_policies(path)
    assert loaded.rules.risk.per_trade_pct == D("1.0")
    assert loaded.rules.drawdown.on_peak == "CLOSE_ALL"
    assert loaded.source == str(path)
    assert len(loaded.digest) == 12


def test_the_docs_show_the_shipped_default_file_verbatim() -> None:
    docs = (Path(__file__).parents[2] / "docs" / "inspector.md").read_text()
    assert f"```toml\n{default_policy_path().read_text()}```" in docs


def test_an_empty_file_turns_every_limit_off_but_risk_sizing() -> None:
    verdict = judge("")
    assert verdict.action == "ALLOW"
    assert verdict.size == D(50)  # 1% of 10,000 over a stop 2 away


@pytest.mark.parametrize(
    ("text", "key", "reason"),
    [
        ("[size]\nmax_notional_usd = 5\n", "'size.max_notional_usd'",
         "unknown key (known keys here: max_equity_pct, max_notional, min_notional, step)"),
        ("[risk]\nper_trade_pct = 150\n", "'risk.per_trade_pct'", "less than or equal to 100"),
        ("timezone = 'Mars/Olympus'\n", "'timezone'", "unknown timezone 'Mars/Olympus'"),
        ("[windows]\n[[windows.allow]]\nstart = '08:00'\nend = '08:00'\n", "'windows.allow.0'",
         "give a window of some length"),
        ("[windows]\n[[windows.allow]]\nstart = '08:00'\n", "'windows.allow.0.end'",
         "required key is missing"),
        ("[symbols.'BTC/USDT'.drawdown]\ndaily_loss_pct = 1\n",
         "'symbols.BTC/USDT.drawdown'", "[drawdown] is portfolio-wide and cannot be overridden"),
        ("[size]\nmax_notional = 1000\n[symbols.'BTC/USDT'.size]\nmin_notional = 5000\n",
         "'symbols.BTC/USDT.size'", "min_notional 5000 is above max_notional 1000"),
        ("[symbols.'BTC/USDT'.risk]\nper_trade_pct = -1\n", "'symbols.BTC/USDT.risk.per_trade_pct'",
         "greater than 0"),
        ("[drawdown]\non_peak = 'PANIC'\n", "'drawdown.on_peak'", "'CLOSE_ALL' or 'STAND_DOWN'"),
        ("[correlation.groups.majors]\nsymbols = ['BTC/USDT', 'ETH/USDT']\nmax_open = 0\n",
         "'correlation.groups.majors.max_open'", "greater than or equal to 1"),
    ],
)  # fmt: skip
def test_an_invalid_file_is_refused_naming_file_key_and_reason(
    tmp_path: Path, text: str, key: str, reason: str
) -> None:
    path = tmp_path / "policies.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_policies(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: key {key}: "), message
    assert reason in message
    assert "\n" not in message


def test_a_file_that_is_not_toml_or_not_there_is_refused(tmp_path: Path) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text("[size\nmax_notional = 1\n")
    with pytest.raises(ConfigError, match=rf"^{broken}: not valid TOML: "):
        load_policies(broken)
    with pytest.raises(ConfigError, match="does not exist — check the --policy path"):
        load_policies(tmp_path / "absent.toml")


def test_overrides_merge_over_defaults_symbol_over_strategy() -> None:
    loaded = policies("""
        [size]
        max_notional = 1000
        min_notional = 10
        [risk]
        per_trade_pct = 1
        [symbols."ETH/USDT".size]
        max_notional = 3000
        [strategies.scalp.size]
        max_notional = 500
        [strategies.scalp.risk]
        per_trade_pct = 0.25
    """)
    assert loaded.limits("BTC/USDT", "trend").size.max_notional == 1000
    assert loaded.limits("ETH/USDT", "trend").size.max_notional == 3000
    assert loaded.limits("ETH/USDT", "trend").size.min_notional == 10  # untouched key kept
    assert loaded.limits("BTC/USDT", "scalp").size.max_notional == 500
    pair = loaded.limits("ETH/USDT", "scalp")
    assert pair.size.max_notional == 3000  # the symbol wins over the strategy
    assert pair.risk.per_trade_pct == D("0.25")  # the strategy's other keys still apply


def test_an_override_changes_the_verdict_for_its_symbol_only() -> None:
    text = """
        [size]
        max_notional = 1000
        [symbols."ETH/USDT".size]
        max_notional = 3000
    """
    assert judge(text).size == D(10)
    assert judge(text, replace(INTENT, symbol="ETH/USDT")).size == D(30)


# --- market ---------------------------------------------------------------------------------


def test_excluded_asset_blocks_entries() -> None:
    verdict = judge("[assets]\nexcluded = ['BTC/USDT']\n")
    assert (verdict.action, verdict.policy) == ("BLOCK", "excluded_asset")
    assert verdict.reason == "BTC/USDT is in [assets] excluded"
    assert judge("[assets]\nexcluded = ['LUNA/USDT']\n").action == "ALLOW"


def test_spread_wider_than_tolerance_blocks_entries() -> None:
    text = "[market]\nmax_spread_bps = 10\n"
    verdict = judge(text, replace(INTENT, spread_bps=12.5))
    assert (verdict.action, verdict.policy) == ("BLOCK", "spread")
    assert verdict.figures["spread_bps"] == 12.5
    assert judge(text, replace(INTENT, spread_bps=10.0)).action == "ALLOW"
    assert judge(text, replace(INTENT, spread_bps=None)).action == "ALLOW"


def test_slippage_tolerance_blocks_a_half_spread_past_it_and_bounds_the_price() -> None:
    text = "[market]\nmax_slippage_bps = 5\n"
    verdict = judge(text, replace(INTENT, spread_bps=12.0))
    assert (verdict.action, verdict.policy) == ("BLOCK", "slippage")
    assert verdict.figures["expected_slippage_bps"] == 6.0
    assert judge(text, replace(INTENT, spread_bps=10.0)).action == "ALLOW"
    limits = policies(text).limits("BTC/USDT", "trend")
    assert worst_price(INTENT, limits) == D("100.05")
    assert worst_price(replace(INTENT, side="sell", stop=D(102)), limits) == D("99.95")
    assert worst_price(INTENT, policies("").limits("BTC/USDT", "trend")) is None


# --- exposure -------------------------------------------------------------------------------


def test_net_exposure_blocks_an_entry_past_the_limit_but_not_a_hedge() -> None:
    text = "[exposure]\nmax_net_pct = 50\n"
    book = replace(FLAT, positions=(held("ETH/USDT", size="45"),))  # 4,500 long
    verdict = judge(text, replace(INTENT, size_hint=D(10)), book)  # +1,000 -> 55%
    assert (verdict.action, verdict.policy) == ("BLOCK", "net_exposure")
    assert verdict.figures["net_exposure_pct"] == 55.0
    assert judge(text, replace(INTENT, size_hint=D(5)), book).action == "ALLOW"  # 50%
    over = replace(FLAT, positions=(held("ETH/USDT", size="80"),))  # already 80% long
    hedge = replace(INTENT, side="sell", stop=D(102), size_hint=D(10))
    assert judge(text, hedge, over).action == "ALLOW"  # lowers net exposure


def test_leverage_counts_positions_open_orders_and_the_new_order() -> None:
    text = "[exposure]\nmax_leverage = 1.0\n"
    book = replace(FLAT, positions=(held("ETH/USDT", side="short", size="50"),),
                   open_orders_notional=D(4000))  # fmt: skip
    verdict = judge(text, replace(INTENT, size_hint=D(15)), book)  # 5,000 + 4,000 + 1,500
    assert (verdict.action, verdict.policy) == ("BLOCK", "leverage")
    assert verdict.figures["leverage"] == pytest.approx(1.05)
    assert judge(text, replace(INTENT, size_hint=D(10)), book).action == "ALLOW"  # exactly 1.0x


def test_correlated_group_caps_how_many_of_its_symbols_are_held() -> None:
    text = """
        [correlation.groups.majors]
        symbols = ["BTC/USDT", "ETH/USDT", "SOL/USDT"]
        max_open = 2
    """
    two = replace(FLAT, positions=(held("ETH/USDT"), held("SOL/USDT")))
    verdict = judge(text, INTENT, two)
    assert (verdict.action, verdict.policy) == ("BLOCK", "correlated_group")
    assert "'majors' already holds 2 of max_open 2 (ETH/USDT, SOL/USDT)" in verdict.reason
    adding = replace(FLAT, positions=(held("BTC/USDT"), held("SOL/USDT")))
    assert judge(text, INTENT, adding).action == "ALLOW"  # adds to a symbol already held
    assert judge(text, replace(INTENT, symbol="DOGE/USDT"), two).action == "ALLOW"


# --- drawdown -------------------------------------------------------------------------------


def test_daily_loss_stands_down_to_the_next_trading_day() -> None:
    text = "[drawdown]\ndaily_loss_pct = 3\n"
    down = replace(FLAT, equity=D(9_690))
    verdict = judge(text, INTENT, down)
    assert (verdict.action, verdict.policy) == ("STAND_DOWN", "daily_loss")
    assert verdict.until == datetime(2026, 11, 27, tzinfo=UTC)
    assert verdict.figures["daily_loss_pct"] == pytest.approx(3.1)
    assert judge(text, INTENT, replace(FLAT, equity=D(9_710))).action == "ALLOW"


def test_daily_loss_can_close_everything_instead() -> None:
    verdict = judge("[drawdown]\ndaily_loss_pct = 3\non_daily_loss = 'CLOSE_ALL'\n", INTENT,
                    replace(FLAT, equity=D(9_600)))  # fmt: skip
    assert (verdict.action, verdict.policy) == ("CLOSE_ALL", "daily_loss")


def test_peak_drawdown_closes_all_by_default() -> None:
    text = "[drawdown]\nfrom_peak_pct = 10\n"
    fallen = replace(FLAT, peak_equity=D(12_000), equity=D(10_700))  # 10.8% below
    verdict = judge(text, INTENT, fallen)
    assert (verdict.action, verdict.policy) == ("CLOSE_ALL", "peak_drawdown")
    assert verdict.until is None  # held until `bfx inspector resume`
    assert judge(text, INTENT, replace(fallen, equity=D(10_900))).action == "ALLOW"


def test_daily_profit_cap_stands_down_once_realised_profit_reaches_it() -> None:
    text = "[drawdown]\ndaily_profit_cap_pct = 5\n"
    verdict = judge(text, INTENT, replace(FLAT, realised_today=D(500)))
    assert (verdict.action, verdict.policy) == ("STAND_DOWN", "daily_profit_cap")
    assert judge(text, INTENT, replace(FLAT, realised_today=D(499))).action == "ALLOW"


# --- activity -------------------------------------------------------------------------------


def test_a_stand_down_in_force_refuses_entries_until_it_ends() -> None:
    until = NOW + timedelta(hours=2)
    standing = replace(FLAT, stand_down_until=until)
    verdict = judge("", INTENT, standing)
    assert (verdict.action, verdict.policy, verdict.until) == ("STAND_DOWN", "stand_down", until)
    assert judge("", INTENT, standing, until).action == "ALLOW"


def test_max_trades_per_day_throttles_to_the_next_trading_day() -> None:
    text = "[activity]\nmax_trades_per_day = 20\n"
    verdict = judge(text, INTENT, replace(FLAT, trades_today=20))
    assert (verdict.action, verdict.policy) == ("THROTTLE", "trades_per_day")
    assert verdict.until == datetime(2026, 11, 27, tzinfo=UTC)
    assert judge(text, INTENT, replace(FLAT, trades_today=19)).action == "ALLOW"


def test_max_losing_trades_per_day_stands_down() -> None:
    text = "[activity]\nmax_losing_trades_per_day = 4\n"
    verdict = judge(text, INTENT, replace(FLAT, losing_trades_today=4))
    assert (verdict.action, verdict.policy) == ("STAND_DOWN", "losing_trades_per_day")


def test_a_loss_streak_stands_down_for_its_minutes_after_the_last_loss() -> None:
    text = "[activity]\nmax_loss_streak = 3\nloss_streak_stand_down_minutes = 60\n"
    streak = replace(FLAT, loss_streak=3, last_loss_at=NOW - timedelta(minutes=20))
    verdict = judge(text, INTENT, streak)
    assert (verdict.action, verdict.policy) == ("STAND_DOWN", "loss_streak")
    assert verdict.until == NOW + timedelta(minutes=40)
    assert judge(text, INTENT, streak, NOW + timedelta(minutes=40)).action == "ALLOW"
    assert judge(text, INTENT, replace(streak, loss_streak=2)).action == "ALLOW"


def test_cooldown_throttles_entries_after_a_loss() -> None:
    text = "[cooldown]\nafter_loss_minutes = 15\n"
    lost = replace(FLAT, last_loss_at=NOW - timedelta(minutes=5))
    verdict = judge(text, INTENT, lost)
    assert (verdict.action, verdict.policy) == ("THROTTLE", "cooldown")
    assert verdict.until == NOW + timedelta(minutes=10)
    assert verdict.figures["minutes_left"] == pytest.approx(10.0)
    assert judge(text, INTENT, lost, NOW + timedelta(minutes=10)).action == "ALLOW"


def test_a_per_strategy_cooldown_override() -> None:
    text = (
        "[cooldown]\nafter_loss_minutes = 15\n[strategies.scalp.cooldown]\nafter_loss_minutes = 2\n"
    )
    lost = replace(FLAT, last_loss_at=NOW - timedelta(minutes=5))
    assert judge(text, INTENT, lost).action == "THROTTLE"
    assert judge(text, replace(INTENT, strategy="scalp"), lost).action == "ALLOW"


def test_the_trading_day_follows_local_midnight_across_dst() -> None:
    text = "timezone = 'Europe/London'\n[activity]\nmax_trades_per_day = 1\n"
    busy = replace(FLAT, trades_today=1)
    winter = judge(text, INTENT, busy, datetime(2026, 3, 28, 12, tzinfo=UTC))  # GMT
    assert winter.until == datetime(2026, 3, 29, 0, tzinfo=UTC)
    summer = judge(text, INTENT, busy, datetime(2026, 3, 29, 12, tzinfo=UTC))  # BST from 01:00
    assert summer.until == datetime(2026, 3, 29, 23, tzinfo=UTC)


def test_the_policy_set_says_when_the_trading_day_began() -> None:
    london = policies("timezone = 'Europe/London'\n")
    summer, winter = datetime(2026, 7, 1, 12, tzinfo=UTC), datetime(2026, 1, 1, 12, tzinfo=UTC)
    assert london.day_start(summer) == datetime(2026, 6, 30, 23, tzinfo=UTC)  # BST midnight
    assert london.day_start(winter) == datetime(2026, 1, 1, tzinfo=UTC)


# --- windows --------------------------------------------------------------------------------

LONDON = """
    [windows]
    timezone = "Europe/London"
    [[windows.allow]]
    days = ["mon", "tue", "wed", "thu", "fri"]
    start = "08:00"
    end = "16:30"
"""


@pytest.mark.parametrize(
    ("now", "action"),
    [
        (datetime(2026, 3, 27, 7, 30, tzinfo=UTC), "BLOCK"),  # Fri 07:30 GMT
        (datetime(2026, 3, 27, 15, 45, tzinfo=UTC), "ALLOW"),  # Fri 15:45 GMT
        (datetime(2026, 3, 30, 7, 30, tzinfo=UTC), "ALLOW"),  # Mon 08:30 BST
        (datetime(2026, 3, 30, 15, 45, tzinfo=UTC), "BLOCK"),  # Mon 16:45 BST
        (datetime(2026, 10, 26, 7, 30, tzinfo=UTC), "BLOCK"),  # Mon 07:30 GMT again
        (datetime(2026, 3, 28, 12, 0, tzinfo=UTC), "BLOCK"),  # Saturday
    ],
)
def test_trading_windows_are_local_wall_clock_across_dst(now: datetime, action: str) -> None:
    verdict = judge(LONDON, INTENT, FLAT, now)
    assert verdict.action == action
    if action == "BLOCK":
        assert verdict.policy == "trading_window"


def test_outside_the_windows_the_verdict_says_when_the_next_one_opens() -> None:
    verdict = judge(LONDON, INTENT, FLAT, datetime(2026, 3, 28, 12, tzinfo=UTC))  # Sat, GMT
    assert verdict.figures["next_open"] == "2026-03-30T08:00:00+01:00"  # Mon, already BST
    assert "outside the trading windows (Sat 12:00 Europe/London)" in verdict.reason


def test_a_window_past_midnight_belongs_to_the_day_it_opens() -> None:
    text = """
        [windows]
        timezone = "America/New_York"
        [[windows.allow]]
        days = ["fri"]
        start = "22:00"
        end = "02:00"
    """
    at = lambda d, h: datetime(2026, 11, d, h, tzinfo=UTC)  # noqa: E731  (EST = UTC-5)
    assert judge(text, INTENT, FLAT, at(28, 3)).action == "ALLOW"  # Fri 22:00 EST
    assert judge(text, INTENT, FLAT, at(28, 6)).action == "ALLOW"  # Sat 01:00 EST
    assert judge(text, INTENT, FLAT, at(28, 8)).action == "BLOCK"  # Sat 03:00 EST
    assert judge(text, INTENT, FLAT, at(27, 6)).action == "BLOCK"  # Fri 01:00: Thu not listed


def test_windows_never_hold_back_an_exit() -> None:
    close = replace(INTENT, side="sell", kind="close", stop=None)
    book = replace(FLAT, positions=(held(),))
    verdict = judge(LONDON, close, book, datetime(2026, 3, 28, 12, tzinfo=UTC))
    assert (verdict.action, verdict.size) == ("ALLOW", D(1))


# --- the watcher ----------------------------------------------------------------------------


def test_an_edit_is_reloaded_and_validated_first(tmp_path: Path) -> None:
    path = tmp_path / "policies.toml"
    path.write_text("[risk]\nper_trade_pct = 1\n")
    watcher = PolicyWatcher(path)
    assert watcher.poll() is None
    path.write_text("[risk]\nper_trade_pct = 0.5\n")
    found = watcher.poll()
    assert found is not None and found.alert is None and found.policies is not None
    assert found.policies.rules.risk.per_trade_pct == D("0.5")
    assert watcher.policies is found.policies
    assert watcher.poll() is None


def test_a_bad_edit_keeps_the_old_policies_and_alerts_once(tmp_path: Path) -> None:
    path = tmp_path / "policies.toml"
    path.write_text("[risk]\nper_trade_pct = 1\n")
    watcher = PolicyWatcher(path)
    before = watcher.policies
    path.write_text("[risk]\nper_trade_pct = 1000\n")
    found = watcher.poll()
    assert found is not None and found.policies is None and found.alert is not None
    assert f"{path}: key 'risk.per_trade_pct': " in found.alert
    assert f"keeping the policies in force (digest {before.digest})" in found.alert
    assert watcher.policies is before
    assert watcher.poll() is None  # the same bad file is not alerted on every poll
    path.write_text("[risk]\nper_trade_pct = 2\n")
    fixed = watcher.poll()
    assert fixed is not None and fixed.policies is not None
    assert watcher.policies.rules.risk.per_trade_pct == 2


def test_touching_the_file_reloads_nothing_and_a_deleted_file_alerts(tmp_path: Path) -> None:
    path = tmp_path / "policies.toml"
    path.write_text("[risk]\nper_trade_pct = 1\n")
    watcher = PolicyWatcher(path)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert watcher.poll() is None
    path.unlink()
    gone = watcher.poll()
    assert gone is not None and gone.policies is None
    assert gone.alert == (f"policy file {path} is gone; keeping the policies in force "
                          f"(digest {watcher.policies.digest})")  # fmt: skip


def test_the_watcher_fails_closed_on_an_invalid_file_at_start(tmp_path: Path) -> None:
    path = tmp_path / "policies.toml"
    path.write_text("[sizing]\n")
    with pytest.raises(ConfigError, match=r"key 'sizing': unknown key"):
        PolicyWatcher(path)


async def test_watch_yields_a_reload_when_the_file_changes(tmp_path: Path) -> None:
    path = tmp_path / "policies.toml"
    path.write_text("[risk]\nper_trade_pct = 1\n")
    watcher = PolicyWatcher(path)
    stream = watcher.watch(interval_s=0.01)
    path.write_text("[risk]\nper_trade_pct = 0.75\n")
    found = await anext(stream)
    await stream.aclose()  # type: ignore[attr-defined]
    assert found.policies is not None
    assert found.policies.rules.risk.per_trade_pct == D("0.75")
