"""The inspector end to end: real provider and paper broker over loopback HTTP, Redis, SQLite."""

from __future__ import annotations

from decimal import Decimal

from barfinex_cli.contracts.inspector import ProtectiveTriggered
from inspector.conftest import Market, StartInspector, until


async def test_an_allowed_decision_opens_a_position_guarded_by_a_stop_and_a_take_profit(
    market: Market, start_inspector: StartInspector
) -> None:
    inspector, _, _ = await start_inspector()
    decision = await market.decide()

    async def armed() -> bool:
        return len(await market.client.orders("paper", open_only=True)) == 2

    await until(armed)
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
    await until(lambda: inspector.store.position("BTC/USDT") is not None
                and inspector.store.position("BTC/USDT").tp_order is not None)  # fmt: skip
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
    await until(lambda: inspector.store.position("BTC/USDT") is not None
                and inspector.store.position("BTC/USDT").stop_order is not None)  # fmt: skip
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
