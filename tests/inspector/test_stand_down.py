"""Stand-downs: bounded ends, durations on the inspector's clock, one alert each, the trading day.

Found by an audit of issue 10: a stand-down until 9999-12-31T23:59:59-14:00 was stored, then every
reader of the store crashed (500s, the next decision killed the process, each restart died again);
`--until 2h` against a replay stood down until two wall-clock hours later (years of market time);
each refused decision raised another alert; the daily counters rolled at UTC midnight whatever the
policy file's `timezone`.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from barfinex_cli.cli.main import app
from barfinex_cli.contracts.times import from_ms, to_ms
from barfinex_cli.inspector.api import stand_down_end
from barfinex_cli.store.inspector import STAND_DOWN_LATEST_MS, InspectorStore
from inspector.conftest import MINUTE, START_MS, Market, StartInspector, armed, until

NOW = datetime(2024, 1, 1, 5, tzinfo=UTC)


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"until": "9999-12-31T23:59:59-14:00"}, "outside the calendar"),
        ({"until": "0001-01-01T00:00:00+01:00"}, "outside the calendar"),
        ({"until": "2023-12-31T23:00:00Z"}, "is not after the inspector's clock"),
        ({"until": "2025-06-01T00:00:00Z"}, "more than 366 days after the inspector's clock"),
        ({"until": "2024-01-02T00:00:00"}, "give a time zone"),
        ({"until": "soon"}, "expected an ISO 8601 time"),
        ({"for": 1e30}, "give more than 0, at most 366 days ahead"),
        ({"for": float("nan")}, "give more than 0"),
        ({"for": -5}, "give more than 0"),
        ({"for": True}, "expected a number of seconds"),
        ({"for": "2h"}, "expected a number of seconds"),
        ({"for": 60, "until": "2024-01-02T00:00:00Z"}, "not both"),
    ],
)
def test_a_stand_down_end_no_clock_can_hold_or_already_past_is_refused(
    body: dict[str, Any], says: str
) -> None:
    with pytest.raises(ValueError, match=says):
        stand_down_end(body, NOW)


def test_a_stand_down_duration_counts_from_the_clock_it_is_given() -> None:
    assert stand_down_end({"for": 7200}, NOW) == NOW + timedelta(hours=2)
    assert stand_down_end({"until": "2024-01-01T07:00:00+02:00"}, NOW - timedelta(hours=1)) == NOW
    assert stand_down_end({}, NOW) is None


async def _alerts(market: Market, text: str) -> list[str]:
    return [
        e.payload.message
        for e in await market.published("inspector.alert")
        if text in e.payload.message
    ]


async def test_an_out_of_range_stand_down_is_a_422_and_the_inspector_keeps_running(
    market: Market, start_inspector: StartInspector
) -> None:
    inspector, _, task = await start_inspector()
    assert inspector.api_url is not None
    async with httpx.AsyncClient(base_url=inspector.api_url) as http:
        for body in ({"until": "9999-12-31T23:59:59-14:00"}, {"until": "0001-01-01T00:00:00+01:00"},
                     {"for": 1e300}):  # fmt: skip
            answer = await http.post("/api/v1/stand-down", json=body)
            assert answer.status_code == 422, answer.text
            assert answer.json()["detail"].startswith(("until: ", "for: "))
        assert (await http.get("/health")).status_code == 200
    assert inspector.store.counters().stand_down_until_ms is None
    await market.decide()
    await until(lambda: armed(inspector, "BTC/USDT"))
    assert not task.done()


async def test_a_stand_down_stored_past_the_calendar_is_read_as_until_resumed_with_an_alert(
    market: Market, start_inspector: StartInspector
) -> None:
    # what an earlier version stored for {"until": "9999-12-31T23:59:59-14:00"}
    poisoned = to_ms(datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone(timedelta(hours=-14))))
    with InspectorStore(market.settings.home / "inspector.db") as store:
        store.update_counters(stand_down_until_ms=poisoned, stand_down_reason="operator")
    inspector, _, task = await start_inspector()
    await until(lambda: _alerts(market, "outside the times a clock can hold"))
    assert inspector.store.counters().stand_down_until_ms == STAND_DOWN_LATEST_MS
    assert inspector.api_url is not None
    async with httpx.AsyncClient(base_url=inspector.api_url) as http:
        assert (await http.get("/health")).status_code == 200
        await market.decide()  # fails closed: refused, and the process lives on
        await until(lambda: inspector.verdicts == 1)
        verdicts = [e.payload for e in await market.published("inspector.verdict")]
        assert [(v.verdict, v.policy) for v in verdicts] == [("STAND_DOWN", "stand_down")]
        assert not task.done()
        assert (await http.post("/api/v1/resume")).status_code == 200
    await market.decide()
    await until(lambda: armed(inspector, "BTC/USDT"))


async def test_bfx_inspector_stand_down_for_a_duration_counts_on_a_replay_s_market_clock(
    market: Market, start_inspector: StartInspector
) -> None:
    inspector, _, _ = await start_inspector(clock="market")
    await market.candle("BTC/USDT", 100, 100.5, 99.5, 100)  # market time: 2024-01-01 05:01
    market_now = START_MS + 301 * MINUTE
    await until(lambda: inspector.clock.now_ms() == market_now)
    assert inspector.api_url is not None
    runner = CliRunner()
    argv = ["--data-dir", str(market.settings.home), "inspector", "stand-down", "--until", "2h",
            "--url", inspector.api_url]  # fmt: skip
    result = await asyncio.to_thread(runner.invoke, app, argv)
    assert result.exit_code == 0, result.output
    end = market_now + 2 * 60 * MINUTE
    assert inspector.store.counters().stand_down_until_ms == end
    assert f"until {from_ms(end).isoformat()} (running inspector)" in result.output
    past = await asyncio.to_thread(
        runner.invoke, app, [*argv[:-3], "2023-12-31T00:00:00Z", *argv[-2:]]
    )
    assert past.exit_code == 2, past.output
    assert "is not after the inspector's clock (2024-01-01T05:01:00+00:00)" in past.output
    assert len(past.output.strip().splitlines()) == 1
    assert inspector.store.counters().stand_down_until_ms == end


async def test_a_stand_down_alerts_once_however_many_decisions_it_refuses(
    market: Market, start_inspector: StartInspector
) -> None:
    inspector, _, _ = await start_inspector()
    assert inspector.api_url is not None
    async with httpx.AsyncClient(base_url=inspector.api_url) as http:
        assert (await http.post("/api/v1/stand-down", json={"for": 3600})).status_code == 200
    for _ in range(3):
        await market.decide()
    await until(lambda: inspector.verdicts == 3)
    verdicts = [e.payload.verdict for e in await market.published("inspector.verdict")]
    assert verdicts == ["STAND_DOWN"] * 3
    assert len(await _alerts(market, "stand down until")) == 1


async def test_a_verdict_never_shortens_a_longer_stand_down(
    market: Market, start_inspector: StartInspector, tmp_path: Path
) -> None:
    policy = tmp_path / "policies.toml"
    policy.write_text("[activity]\nmax_trades_per_day = 1\nmax_losing_trades_per_day = 1\n")
    inspector, _, _ = await start_inspector(policy=policy)
    await inspector.stand_down(None, "operator")
    inspector.store.update_counters(losing_trades_today=1)
    await market.decide()  # refused by the losing-trades limit as well, until tomorrow only
    await until(lambda: inspector.verdicts == 1)
    assert inspector.store.counters().stand_down_until_ms == STAND_DOWN_LATEST_MS
    assert len(await _alerts(market, "stand down")) == 1


async def test_the_daily_counters_roll_at_midnight_of_the_policy_timezone_in_market_time(
    market: Market, start_inspector: StartInspector, tmp_path: Path
) -> None:
    policy = tmp_path / "policies.toml"
    policy.write_text("timezone = 'America/Los_Angeles'\n[activity]\nmax_trades_per_day = 1\n")
    inspector, _, _ = await start_inspector(policy=policy, clock="market")
    await market.candle("BTC/USDT", 100, 100.5, 99.5, 100)  # 05:01 UTC: 21:01 the day before in LA
    await until(lambda: inspector.clock.now_ms() == START_MS + 301 * MINUTE)
    await market.decide()
    await until(lambda: armed(inspector, "BTC/USDT"))
    counters = inspector.store.counters()
    assert (counters.day, counters.trades_today) == ("2023-12-31", 1)
    await market.decide(symbol="ETH/USDT", entry="50", stop="49", take_profit="52")
    await until(lambda: inspector.verdicts == 2)
    market.next_ms = START_MS + 479 * MINUTE  # 07:59 UTC; this candle closes at LA midnight
    await market.candle("ETH/USDT", 50, 50.2, 49.8, 50)
    await until(lambda: inspector.clock.now_ms() == START_MS + 480 * MINUTE)
    await market.decide(symbol="ETH/USDT", entry="50", stop="49", take_profit="52")
    await until(lambda: armed(inspector, "ETH/USDT"))
    verdicts = [(e.payload.verdict, e.payload.policy)
                for e in await market.published("inspector.verdict")]  # fmt: skip
    assert verdicts[1] == ("THROTTLE", "trades_per_day")
    assert verdicts[2][0] == "ALLOW"
    counters = inspector.store.counters()
    assert (counters.day, counters.trades_today) == ("2024-01-01", 1)
    assert inspector.reports.kpi().period_start == datetime(2024, 1, 1, 8, tzinfo=UTC)
