"""Guards the venue cannot hold, emulated on prices; closes deferred while the book is bad.

End to end on the real provider and paper broker over loopback HTTP, Redis and SQLite: the
policy's `execution.protective = "emulate"` stands in for a venue without stop or reduce-only
orders (the choice per venue is tested on the ccxt exchanges' own `has` flags in test_venues).
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx

from barfinex_cli.contracts.envelope import make_event
from barfinex_cli.contracts.market import TickerUpdated
from barfinex_cli.inspector.execution import client_order_id
from barfinex_cli.inspector.guard import guard_event_id
from barfinex_cli.store.market import TradeRow
from inspector.conftest import Market, StartInspector, until

EMULATE = '[risk]\nper_trade_pct = 1\n\n[execution]\nprotective = "emulate"\n'


def policy(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "policies.toml"
    path.write_text(text)
    return path


async def payloads(market: Market, pattern: str) -> list[Any]:
    return [e.payload for e in await market.published(pattern)]


async def order_of(market: Market, client_order_id: str) -> Any:
    return {o.client_order_id: o for o in await market.client.orders("paper")}[client_order_id]


def is_open(market_inspector: Any, symbol: str = "BTC/USDT") -> bool:
    position = market_inspector.store.position(symbol)
    return position is not None and position.status == "open"


async def test_an_emulated_stop_fires_on_the_candle_that_reaches_it_and_closes_at_market(
    market: Market, start_inspector: StartInspector, tmp_path: Path
) -> None:
    inspector, _, _ = await start_inspector(policy=policy(tmp_path, EMULATE))
    decision = await market.decide()  # long at 100, stop 98, take-profit 104
    await until(lambda: is_open(inspector))
    await until(lambda: payloads(market, "inspector.protective.placed"))
    placed = await payloads(market, "inspector.protective.placed")
    assert sorted((p.kind, p.price, p.emulated) for p in placed) == [
        ("stop_loss", Decimal(98), True), ("take_profit", Decimal(104), True)
    ]  # fmt: skip
    assert await market.client.orders("paper", open_only=True) == []  # nothing rests there
    assert [g["status"] for g in inspector.positions_view()[0]["protective"]] == ["emulated"] * 2
    await market.candle("BTC/USDT", 100, 100.5, 98.5, 99)  # low 98.5: above the stop
    await market.candle("BTC/USDT", 99, 99, 97.5, 97.8)  # low 97.5 <= 98: the stop fires

    await until(lambda: payloads(market, "inspector.protective.triggered"))
    fired = (await payloads(market, "inspector.protective.triggered"))[0]
    assert (fired.kind, fired.trigger_price, fired.emulated) == ("stop_loss", Decimal(98), True)
    assert fired.close_order_id == f"i-{decision.id}-x1" and "candle" in fired.reason
    # a market close after the candle fills at its close, slipped 1 bp against the seller
    assert fired.fill_price == Decimal("97.79022")
    close = {o.client_order_id: o for o in await market.client.orders("paper")}[
        f"i-{decision.id}-x1"
    ]
    assert (close.type, close.side, close.reduce_only, close.status) == (
        "market", "sell", True, "filled"
    )  # fmt: skip
    await until(lambda: inspector.store.counters().losses == 1)
    await market.candle("BTC/USDT", 97.8, 98, 96, 97)  # lower again: nothing is sent twice
    orders = await market.client.orders("paper")
    assert [o.client_order_id for o in orders] == [f"i-{decision.id}-e", f"i-{decision.id}-x1"]


async def test_an_emulated_take_profit_fires_when_the_high_reaches_it(
    market: Market, start_inspector: StartInspector, tmp_path: Path
) -> None:
    inspector, _, _ = await start_inspector(policy=policy(tmp_path, EMULATE))
    decision = await market.decide()
    await until(lambda: is_open(inspector))
    await market.candle("BTC/USDT", 100, 103.9, 99, 103)  # high 103.9 < 104: nothing
    await market.candle("BTC/USDT", 103, 104.5, 102.5, 104.2)  # high 104.5 >= 104: fires

    await until(lambda: payloads(market, "inspector.protective.triggered"))
    fired = (await payloads(market, "inspector.protective.triggered"))[0]
    assert (fired.kind, fired.trigger_price, fired.emulated) == ("take_profit", Decimal(104), True)
    assert fired.fill_price == Decimal("104.18958")  # the close 104.2, slipped 1 bp
    await until(lambda: inspector.store.counters().wins == 1)

    async def close_audit() -> Any:  # published once the close's fill event (its fee) is read
        audits = await payloads(market, "inspector.fill_audit")
        return next((a for a in audits if a.order_id == f"i-{decision.id}-x1"), None)

    await until(close_audit)
    close = await close_audit()
    assert close.intended_price == Decimal(104)  # slippage is measured against the trigger
    assert close.fees > 0  # the paper broker's fee, from the fill event


async def test_an_emulated_stop_fires_on_a_ticker_between_candles(
    market: Market, start_inspector: StartInspector, tmp_path: Path
) -> None:
    inspector, _, _ = await start_inspector(policy=policy(tmp_path, EMULATE))
    decision = await market.decide()
    await until(lambda: is_open(inspector))
    runtime = market.provider.runtime
    assert runtime is not None and runtime.fed is not None
    runtime.fed.on_trade("BTC/USDT", TradeRow(market.next_ms, "t-1", 97.9, 0.5, "sell"))
    ticker = TickerUpdated(
        exchange="replay", symbol="BTC/USDT", bid=Decimal("97.8"), ask=Decimal("97.9"),
        last=Decimal("97.9"), time=datetime.now(UTC),
    )  # fmt: skip
    await market.bus.publish(make_event(ticker, source="provider/replay"))

    await until(lambda: payloads(market, "inspector.protective.triggered"))
    fired = (await payloads(market, "inspector.protective.triggered"))[0]
    assert fired.kind == "stop_loss" and "ticker at 97.9" in fired.reason
    close = await order_of(market, f"i-{decision.id}-x1")
    assert close.average_price == Decimal("97.89021")  # the last trade 97.9, slipped 1 bp
    await until(lambda: inspector.store.counters().losses == 1)


async def test_an_emulated_stop_trails_without_an_order_and_fires_at_its_new_price(
    market: Market, start_inspector: StartInspector, tmp_path: Path
) -> None:
    inspector, _, _ = await start_inspector(policy=policy(tmp_path, EMULATE), trailing_stop_pct=2)
    decision = await market.decide(take_profit="130")
    await until(lambda: is_open(inspector))
    await market.candle("BTC/USDT", 100, 110.5, 100, 110)  # best close 110: stop to 107.8
    await until(lambda: payloads(market, "inspector.protective.moved"))
    moved = (await market.published("inspector.protective.moved"))[0]
    move = moved.payload
    assert (move.previous_price, move.price, move.emulated) == (
        Decimal(98), Decimal("107.8"), True
    )  # fmt: skip
    stop_id = client_order_id(decision.id, "stop_loss", 1)
    assert moved.id == guard_event_id(decision.id, stop_id, "moved", Decimal("107.8"))
    assert await market.client.orders("paper", open_only=True) == []
    await market.candle("BTC/USDT", 110, 110, 107.5, 107.6)  # low 107.5 <= 107.8
    await until(lambda: inspector.store.counters().wins == 1)


async def test_a_close_waits_while_the_spread_is_wide_and_goes_when_it_narrows(
    market: Market, start_inspector: StartInspector, tmp_path: Path
) -> None:
    text = EMULATE + "max_close_spread_bps = 20\nmax_close_defer_minutes = 30\n"
    inspector, _, _ = await start_inspector(policy=policy(tmp_path, text))
    decision = await market.decide()
    await until(lambda: is_open(inspector))
    await market.book("BTC/USDT", "99", "101")  # ~200 bps wide
    await market.candle("BTC/USDT", 99, 99, 97.5, 97.8)  # the emulated stop fires ...

    await until(lambda: payloads(market, "inspector.protective.triggered"))
    fired = (await payloads(market, "inspector.protective.triggered"))[0]
    assert "waits for a better book" in fired.reason and fired.fill_price is None
    assert "BTC/USDT" in inspector.status()["deferred_closes"]
    alerts = [a.message for a in await payloads(market, "inspector.alert")]
    assert any("close of BTC/USDT" in a and "deferred: spread" in a for a in alerts), alerts
    await market.candle("BTC/USDT", 97.8, 98, 97, 97.5)  # ... and more candles: it still waits
    await market.book("BTC/USDT", "97.4", "97.6")  # still ~205 bps
    assert f"i-{decision.id}-x1" not in {o.client_order_id for o in await market.client.orders()}

    await market.book("BTC/USDT", "97.5", "97.51")  # ~1 bp: the close goes into this book
    await until(lambda: inspector.store.counters().losses == 1)
    close = {o.client_order_id: o for o in await market.client.orders("paper")}[
        f"i-{decision.id}-x1"
    ]
    assert close.status == "filled" and close.average_price == Decimal("97.49025")  # bid, slipped
    assert inspector.status()["deferred_closes"] == {}
    assert len(await payloads(market, "inspector.protective.triggered")) == 1


async def test_a_close_all_deferred_past_its_longest_wait_is_sent_anyway_with_a_warning(
    market: Market, start_inspector: StartInspector, tmp_path: Path
) -> None:
    text = "[execution]\nmax_close_spread_bps = 20\nmax_close_defer_minutes = 0.02\n"
    inspector, _, _ = await start_inspector(policy=policy(tmp_path, text))  # guards at the venue
    decision = await market.decide()
    await until(lambda: len(inspector.store.orders(live_only=True)) == 2)  # stop, take-profit
    await market.book("BTC/USDT", "99", "101")
    assert inspector.api_url is not None
    async with httpx.AsyncClient() as http:
        answer = await http.post(inspector.api_url + "/api/v1/close-all")
    assert answer.json()["closed"] == ["BTC/USDT"]
    assert "BTC/USDT" in inspector.status()["deferred_closes"]
    # nothing narrows the book: 1.2 s on the kernel's (wall) clock later it closes anyway

    async def flat() -> bool:
        return all(p.side == "flat" for p in await market.client.positions("paper"))

    await until(flat, within_s=10)
    alerts = await payloads(market, "inspector.alert")
    deferred = [a for a in alerts if "deferred" in a.message and a.severity == "critical"]
    late = [a for a in alerts if "the longest allowed" in a.message]
    assert deferred and "1 deferred while the book is thin" in deferred[0].message
    assert late and late[0].severity == "warning" and "spread" in late[0].message
    close = {o.client_order_id: o for o in await market.client.orders("paper")}[
        f"i-{decision.id}-x1"
    ]
    assert close.status == "filled" and close.average_price == Decimal(
        "98.9901"
    )  # wide bid, slipped
    await until(lambda: inspector.store.counters().wins + inspector.store.counters().losses == 1)


async def test_a_restarted_inspector_keeps_emulating_the_guards_of_its_positions(
    market: Market, start_inspector: StartInspector, tmp_path: Path
) -> None:
    path = policy(tmp_path, EMULATE)
    first, stop, task = await start_inspector(policy=path)
    decision = await market.decide()
    await until(lambda: is_open(first))
    stop.set()
    await task
    second, _, _ = await start_inspector(policy=path)  # same data directory, same store
    assert "venue: stop_loss emulated, take_profit emulated" not in second.log  # policy, not venue
    assert any(line.startswith("venue: stop_loss venue") for line in second.log)
    await market.candle("BTC/USDT", 99, 99, 97.5, 97.8)
    await until(lambda: second.store.counters().losses == 1)
    ids = [o.client_order_id for o in await market.client.orders("paper")]
    assert ids == [f"i-{decision.id}-e", f"i-{decision.id}-x1"]
    placed = [e for e in await market.published("inspector.protective.placed")
              if e.payload.emulated]  # fmt: skip
    assert len(placed) == 4  # announced by the first, and again by the second at its start ...
    assert len({e.id for e in placed}) == 2  # ... under the same ids: one event per guard
    stop_id = client_order_id(decision.id, "stop_loss", 1)
    fired = (await market.published("inspector.protective.triggered"))[0]
    assert fired.payload.order_id == stop_id
    assert fired.id == guard_event_id(decision.id, stop_id, "triggered")


async def test_a_reload_from_emulate_to_auto_puts_the_guards_of_open_positions_at_the_venue(
    market: Market, start_inspector: StartInspector, tmp_path: Path
) -> None:
    path = policy(tmp_path, EMULATE)
    inspector, _, _ = await start_inspector(policy=path, policy_poll_s=0.1)
    decision = await market.decide()
    await until(lambda: is_open(inspector))
    assert await market.client.orders("paper", open_only=True) == []
    path.write_text('[risk]\nper_trade_pct = 1\n\n[execution]\nprotective = "auto"\n')

    async def at_the_venue() -> bool:
        live = {o.client_order_id for o in await market.client.orders("paper", open_only=True)}
        return live == {f"i-{decision.id}-sl2", f"i-{decision.id}-tp2"}

    await until(at_the_venue)
    assert [g["status"] for g in inspector.positions_view()[0]["protective"]] == ["open"] * 2


async def test_a_drawdown_close_all_waits_for_the_book_without_repeating_itself(
    market: Market, start_inspector: StartInspector, tmp_path: Path
) -> None:
    text = (
        "[risk]\nper_trade_pct = 1\n\n[drawdown]\nfrom_peak_pct = 0.5\n\n"
        "[execution]\nmax_close_spread_bps = 20\nmax_close_defer_minutes = 30\n"
    )
    inspector, _, _ = await start_inspector(policy=policy(tmp_path, text))
    decision = await market.decide(stop="95", take_profit="120", size_hint="100")
    await until(lambda: len(inspector.store.orders(live_only=True)) == 2)
    await market.book("BTC/USDT", "96", "98")  # ~206 bps
    await market.candle("BTC/USDT", 100, 100, 96.5, 97)  # 20 x -3: past 0.5% from the peak
    await until(lambda: "BTC/USDT" in inspector.status()["deferred_closes"])
    await market.candle("BTC/USDT", 97, 97.2, 96.8, 97)  # still breached, still waiting
    await market.candle("BTC/USDT", 97, 97.2, 96.8, 97)
    await market.book("BTC/USDT", "96.99", "97.01", size="100")  # ~2 bps: the close goes

    async def flat() -> bool:
        return all(p.side == "flat" for p in await market.client.positions("paper"))

    await until(flat)
    alerts = [a.message for a in await payloads(market, "inspector.alert")]
    assert len([a for a in alerts if a.startswith("close all:")]) == 1, alerts
    assert len([a for a in alerts if "deferred: spread" in a]) == 1
    assert len([a for a in alerts if a.startswith("stand down")]) == 1
    assert inspector.store.counters().stand_down_until_ms is not None
    close = await order_of(market, f"i-{decision.id}-x1")
    assert close.average_price == Decimal("96.980301")  # the narrow bid, slipped 1 bp


async def test_a_max_hold_close_waits_for_the_book_too(
    market: Market, start_inspector: StartInspector, tmp_path: Path
) -> None:
    text = (
        "[risk]\nper_trade_pct = 1\n\n[hold]\nmax_hold_minutes = 0.01\n\n"
        "[execution]\nmax_close_spread_bps = 20\nmax_close_defer_minutes = 30\n"
    )
    inspector, _, _ = await start_inspector(policy=policy(tmp_path, text))
    decision = await market.decide()
    await until(lambda: len(inspector.store.orders(live_only=True)) == 2)
    await market.book("BTC/USDT", "99", "101")
    await until(
        lambda: inspector.governor.expired(inspector.portfolio().positions, inspector.clock.now())
    )
    await market.candle("BTC/USDT", 100, 100.5, 99.5, 100)  # held past 0.6 s: close, but wide
    await until(lambda: "BTC/USDT" in inspector.status()["deferred_closes"])
    assert inspector.status()["deferred_closes"]["BTC/USDT"]["reason"] == "max hold time"
    await market.book("BTC/USDT", "99.99", "100.01", size="100")

    async def flat() -> bool:
        return all(p.side == "flat" for p in await market.client.positions("paper"))

    await until(flat)
    assert (await order_of(market, f"i-{decision.id}-x1")).status == "filled"
