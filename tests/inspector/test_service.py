"""The inspector end to end: real provider and paper broker over loopback HTTP, Redis, SQLite."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from barfinex_cli.contracts.inspector import ProtectiveTriggered
from barfinex_cli.errors import ConfigError
from barfinex_cli.kernel.parts import Kernel
from barfinex_cli.runtime.client import GatewayClient
from barfinex_cli.runtime.config import InspectorConfig
from inspector.conftest import Market, StartInspector, armed, until


async def test_an_allowed_decision_opens_a_position_guarded_by_a_stop_and_a_take_profit(
    market: Market, start_inspector: StartInspector
) -> None:
    inspector, _, _ = await start_inspector()
    decision = await market.decide()

    async def both_open() -> bool:
        return len(await market.client.orders("paper", open_only=True)) == 2

    await until(both_open)
    verdicts = await market.published("inspector.verdict")
    assert [v.payload.verdict for v in verdicts] == ["ALLOW"]
    assert verdicts[0].parent_id == decision.id and verdicts[0].trace_id == decision.trace_id
    orders = {o.client_order_id: o for o in await market.client.orders("paper")}
    entry = orders[f"i-{decision.id}-e"]
    assert entry.status == "filled" and entry.decision_id == decision.id
    stop, take = orders[f"i-{decision.id}-sl1"], orders[f"i-{decision.id}-tp1"]
    assert (stop.type, stop.stop_price, stop.reduce_only) == ("stop_market", Decimal(98), True)
    assert (take.type, take.price, take.reduce_only) == ("limit", Decimal(104), True)
    assert stop.amount == take.amount == entry.filled
    placed = await market.published("inspector.protective.placed")
    assert sorted(p.payload.kind for p in placed) == ["stop_loss", "take_profit"]
    assert inspector.positions_view()[0]["managed"] == "runtime"


async def test_a_take_profit_fills_at_its_limit_and_the_stop_is_cancelled(
    market: Market, start_inspector: StartInspector
) -> None:
    inspector, _, _ = await start_inspector()
    decision = await market.decide()
    await until(lambda: armed(inspector, "BTC/USDT"))
    await market.candle("BTC/USDT", 100, 103, 99, 102)  # touches neither
    await market.candle("BTC/USDT", 102, 104.5, 101, 104)  # high >= 104: the limit fills

    async def triggered() -> list[ProtectiveTriggered]:
        return [e.payload for e in await market.published("inspector.protective.triggered")]

    await until(triggered)
    fired = (await triggered())[0]
    # the paper broker fills a resting limit at its limit price, as a maker
    assert fired.kind == "take_profit" and fired.fill_price == Decimal(104)
    orders = {o.client_order_id: o for o in await market.client.orders("paper")}
    assert orders[f"i-{decision.id}-sl1"].status == "cancelled"
    await until(lambda: inspector.store.position("BTC/USDT").status == "closed")
    assert inspector.store.counters().wins == 1


async def test_a_stop_that_the_market_gaps_through_fills_at_the_slipped_open(
    market: Market, start_inspector: StartInspector
) -> None:
    inspector, _, _ = await start_inspector()
    decision = await market.decide()
    await until(lambda: armed(inspector, "BTC/USDT"))
    await market.candle("BTC/USDT", 99, 99.5, 98.5, 99)  # low 98.5 > 98: nothing
    await market.candle("BTC/USDT", 97, 97.5, 96, 96.5)  # opens below the stop: a gap

    async def triggered() -> list[ProtectiveTriggered]:
        return [e.payload for e in await market.published("inspector.protective.triggered")]

    await until(triggered)
    fired = (await triggered())[0]
    # a stop the candle opened beyond fills at the open, slipped 1 bp against the seller
    assert fired.kind == "stop_loss" and fired.fill_price == Decimal("96.9903")
    orders = {o.client_order_id: o for o in await market.client.orders("paper")}
    assert orders[f"i-{decision.id}-tp1"].status == "cancelled"
    await until(lambda: inspector.store.counters().losses == 1)
    assert inspector.store.counters().loss_streak == 1


async def test_a_decision_with_no_stop_is_blocked_with_the_reason_and_places_nothing(
    market: Market, start_inspector: StartInspector
) -> None:
    await start_inspector()
    decision = await market.decide(stop="0")

    async def verdicts() -> list[Any]:
        return await market.published("inspector.verdict")

    await until(verdicts)
    verdict = (await verdicts())[0].payload
    assert verdict.decision_id == decision.id and verdict.verdict == "BLOCK"
    assert "no stop" in verdict.reason
    assert await market.client.orders("paper") == []


async def test_a_second_decision_of_one_signal_is_blocked_and_places_no_second_order(
    market: Market, start_inspector: StartInspector
) -> None:
    # an advisor killed after publishing a decision but before acking its signal decides it again
    await start_inspector()
    first = await market.decide(signal_id="sig-once")
    again = await market.decide(signal_id="sig-once")

    async def both_judged() -> list[Any]:
        verdicts = await market.published("inspector.verdict")
        return verdicts if len(verdicts) == 2 else []

    await until(both_judged)
    by_decision = {v.payload.decision_id: v.payload for v in await both_judged()}
    assert by_decision[first.id].verdict == "ALLOW"
    assert by_decision[again.id].verdict == "BLOCK"
    assert by_decision[again.id].policy == "duplicate_signal"
    assert first.id in by_decision[again.id].reason
    entries = [o for o in await market.client.orders("paper") if o.client_order_id.endswith("-e")]
    assert [o.client_order_id for o in entries] == [f"i-{first.id}-e"]


async def test_close_all_flattens_every_runtime_position_and_cancels_their_protection(
    market: Market, start_inspector: StartInspector
) -> None:
    inspector, _, _ = await start_inspector()
    await market.decide("BTC/USDT")
    await market.decide("ETH/USDT", entry="50", stop="49", take_profit="52")

    def open_orders(n: int) -> Callable[[], Awaitable[bool]]:
        async def check() -> bool:
            return len(await market.client.orders("paper", open_only=True)) == n

        return check

    await until(lambda: len(inspector.store.positions()) == 2)
    await until(open_orders(4))
    assert inspector.api_url is not None
    async with httpx.AsyncClient() as http:
        answer = await http.post(inspector.api_url + "/api/v1/close-all")
    assert answer.status_code == 200
    assert sorted(answer.json()["closed"]) == ["BTC/USDT", "ETH/USDT"]

    async def flat() -> bool:
        held = await market.client.positions("paper")
        return all(p.side == "flat" for p in held) and len(held) == 2

    await until(flat)
    await until(open_orders(0))
    await until(lambda: inspector.store.positions() == [])
    alerts = [e.payload for e in await market.published("inspector.alert")]
    assert any("close all: 2 positions" in a.message for a in alerts)


async def test_decisions_stay_pending_while_the_provider_is_unreachable_announced_not_judged(
    market: Market, start_inspector: StartInspector, tmp_path: Path
) -> None:
    down = GatewayClient("http://127.0.0.1:9", "t0ken", retries=0)
    try:
        inspector, _, _ = await start_inspector(
            client=down, clock="wall", join_registry=False, home=tmp_path / "other"
        )
        decision = await market.decide()
        await until(lambda: market.published("inspector.verdict.pending"))
        notice = (await market.published("inspector.verdict.pending"))[0]
        assert notice.payload.decision_id == decision.id and notice.parent_id == decision.id
        assert "no order placed" in notice.payload.reason
        # a notice, not a verdict: the decision's one verdict comes when the provider answers
        assert await market.published("inspector.verdict") == []
        assert inspector.status()["pending"] == 1 and not inspector.entries_open
        assert inspector.store.orders() == []
        pending = await market.bus.redis.xpending(
            market.bus.key("advisor.decision"), "inspector.inspector"
        )
        assert pending["pending"] == 1  # not acknowledged: it is judged when the provider answers
    finally:
        await down.aclose()


async def test_an_invalid_policy_file_stops_the_inspector_before_it_starts(
    market: Market, tmp_path: Path
) -> None:
    bad = tmp_path / "policies.toml"
    bad.write_text("[risk]\nper_trade_pct = 250\n")
    with pytest.raises(ConfigError) as caught:
        async with Kernel(market.settings) as kernel:
            await kernel.inspector(InspectorConfig(policy=bad, provider_url=market.url))
    assert str(bad) in str(caught.value) and "risk.per_trade_pct" in str(caught.value)


async def test_a_drawdown_past_its_limit_closes_every_runtime_position_and_stands_down(
    market: Market, start_inspector: StartInspector, tmp_path: Path
) -> None:
    policy = tmp_path / "policies.toml"
    policy.write_text("[risk]\nper_trade_pct = 1\n\n[drawdown]\nfrom_peak_pct = 0.5\n")
    inspector, _, _ = await start_inspector(policy=policy)
    await market.decide(stop="95", take_profit="120", size_hint="100")
    await until(lambda: armed(inspector, "BTC/USDT"))
    size = inspector.store.position("BTC/USDT").size
    assert size == Decimal(20)  # 1% of 10,000 risked over a 5.00 stop distance
    await market.candle("BTC/USDT", 100, 100, 96.5, 97)  # 20 x -3 = -60: past 0.5% of the peak

    async def flat() -> bool:
        return all(p.side == "flat" for p in await market.client.positions("paper"))

    await until(flat)
    await until(lambda: inspector.store.positions() == [])
    # the close's own fill closes the position in the store; the stand-down follows the close
    await until(lambda: inspector.store.counters().stand_down_until_ms is not None)
    alerts = [e.payload.message for e in await market.published("inspector.alert")]
    assert any("close all: 1 positions" in a and "peak_drawdown" in a for a in alerts)


async def test_a_trailing_stop_follows_the_best_close_and_the_old_stop_is_cancelled(
    market: Market, start_inspector: StartInspector
) -> None:
    inspector, _, _ = await start_inspector(trailing_stop_pct=2)
    decision = await market.decide(take_profit="130")
    await until(lambda: armed(inspector, "BTC/USDT"))
    await market.candle("BTC/USDT", 100, 110.5, 100, 110)  # best close 110: stop to 107.8

    async def moved() -> list[Any]:
        return [e.payload for e in await market.published("inspector.protective.moved")]

    await until(moved)
    move = (await moved())[0]
    assert (move.previous_price, move.price) == (Decimal(98), Decimal("107.8"))
    assert move.reason == "trailing 2%"

    async def replaced() -> bool:
        orders = {o.client_order_id: o for o in await market.client.orders("paper")}
        old = orders.get(f"i-{decision.id}-sl1")
        new = orders.get(f"i-{decision.id}-sl2")
        return (
            old is not None and old.status == "cancelled"
            and new is not None and new.status == "open" and new.stop_price == Decimal("107.8")
        )  # fmt: skip

    await until(replaced)
    await market.candle("BTC/USDT", 110, 110, 108, 108.5)  # lower close: the stop stays
    await market.candle("BTC/USDT", 108.5, 109, 107, 107.5)  # low 107 <= 107.8: stopped out
    await until(lambda: inspector.store.counters().wins == 1)  # locked in a profit


async def test_a_stop_that_fills_at_once_closes_the_position_and_its_sibling_raises_no_alarm(
    market: Market, start_inspector: StartInspector
) -> None:
    await start_inspector()
    # The price already sits below the stop when the entry fills: the stop fills at once, the
    # position is closed, and the take-profit is refused for want of a position. That is the
    # protection working, not a position left unprotected.
    decision = await market.decide(entry="103", stop="101", take_profit="107")

    async def settled() -> bool:
        orders = {o.client_order_id: o for o in await market.client.orders("paper")}
        tp = orders.get(f"i-{decision.id}-tp1")
        return tp is not None and tp.status == "rejected"

    await until(settled)
    orders = {o.client_order_id: o for o in await market.client.orders("paper")}
    assert orders[f"i-{decision.id}-sl1"].status == "filled"
    alerts = [e.payload.message for e in await market.published("inspector.alert")]
    assert not any("not protected" in text for text in alerts), alerts


async def test_an_entry_is_blocked_while_the_providers_book_is_wider_than_max_spread(
    market: Market, start_inspector: StartInspector, tmp_path: Path
) -> None:
    policy = tmp_path / "policies.toml"
    policy.write_text("[risk]\nper_trade_pct = 1\n\n[market]\nmax_spread_bps = 25\n")
    await start_inspector(policy=policy)
    await market.book("BTC/USDT", "99.5", "100.5")  # 100 bps wide
    first = await market.decide()
    await until(lambda: market.published("inspector.verdict"))
    verdict = (await market.published("inspector.verdict"))[0].payload
    assert (verdict.decision_id, verdict.verdict, verdict.policy) == (first.id, "BLOCK", "spread")
    assert "spread 100.0 bps is wider than max_spread_bps 25" in verdict.reason
    await market.book("BTC/USDT", "99.99", "100.01")  # 2 bps
    await market.decide()

    async def allowed() -> bool:
        return [v.payload.verdict for v in await market.published("inspector.verdict")] == [
            "BLOCK", "ALLOW"
        ]  # fmt: skip

    await until(allowed)
